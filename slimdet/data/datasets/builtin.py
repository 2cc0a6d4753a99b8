"""Registration of the on-disk data sets in ``slimdet/data/catalog.py``.

Any folder, LMDB or RecordIO file is a data set name ``FORMAT:PATH``:

  ========================== ==========================================================
  ``folder:PATH``            ``PATH/<class>/<image>`` (classes in sorted order)
  ``lmdb:PATH``              the LMDB at ``PATH`` (``datasets/prepare_lmdb.py``)
  ``recordio:PATH``          ``PATH`` (``.rec``) and the ``.idx`` of the same stem
  ========================== ==========================================================

``imagenet_train`` / ``imagenet_val`` read ``cfg.DATASETS.ROOT`` in the format named by
``cfg.DATASETS.FORMAT``, at conventional paths under the root:

  ======== ==================================== ============================
  FORMAT   train                                val
  ======== ==================================== ============================
  folder   ROOT/train/<class>/<image>           ROOT/val/<class>/<image>
  lmdb     ROOT/train.lmdb                      ROOT/val.lmdb
  recordio ROOT/train.rec + ROOT/train.idx      ROOT/val.rec + ROOT/val.idx
  ======== ==================================== ============================

Images are decoded to ``MODEL.BACKBONE.IN_CHANNELS`` channels (3: RGB, 1: grey) and
``DATASETS.TRAIN_SUBSET`` / ``TEST_SUBSET`` apply to the training / test set.
``register_folder``, ``register_lmdb`` and ``register_recordio`` register a name for a path
from Python.
"""
from __future__ import annotations

import os
from typing import Callable, Optional

from ...config import ConfigError
from ..catalog import register_dataset, register_format, subset_size
from .base import EncodedImageDataset
from .folder import FolderDataset
from .lmdb_dataset import LMDBDataset
from .recordio import RecordIODataset

FORMATS = ("folder", "lmdb", "recordio")


def _policy(cfg) -> dict:
    return dict(on_bad_image=cfg.DATALOADER.ON_BAD_IMAGE, channels=cfg.MODEL.BACKBONE.IN_CHANNELS)


def open_folder(path: str, cfg) -> EncodedImageDataset:
    return FolderDataset(path, **_policy(cfg))


def open_lmdb(path: str, cfg) -> EncodedImageDataset:
    return LMDBDataset(path, **_policy(cfg))


def open_recordio(path: str, cfg, idx_path: Optional[str] = None) -> EncodedImageDataset:
    return RecordIODataset(path, idx_path, **_policy(cfg))


_OPENERS = {"folder": open_folder, "lmdb": open_lmdb, "recordio": open_recordio}


def _subset(dataset: EncodedImageDataset, n: int) -> EncodedImageDataset:
    return dataset.stratified_subset(n) if n else dataset


def build_imagenet(cfg, split: str) -> EncodedImageDataset:
    """The ``split`` of the ImageNet-style data set at ``cfg.DATASETS.ROOT``."""
    fmt, root = cfg.DATASETS.FORMAT, cfg.DATASETS.ROOT
    if fmt == "folder":
        return open_folder(os.path.join(root, split), cfg)
    if fmt == "lmdb":
        return open_lmdb(os.path.join(root, f"{split}.lmdb"), cfg)
    if fmt == "recordio":
        return open_recordio(os.path.join(root, f"{split}.rec"), cfg)
    raise ConfigError(f"DATASETS.FORMAT must be one of {', '.join(FORMATS)}, got {fmt!r}")


def _builder(make: Callable[[object], EncodedImageDataset], subset_key: str):
    return lambda cfg: _subset(make(cfg), getattr(cfg.DATASETS, subset_key, 0))


def register_folder(name: str, root: str, subset_key: str = "TRAIN_SUBSET") -> None:
    """Register ``name`` as the image folder ``root/<class>/<image>``."""
    register_dataset(name, _builder(lambda cfg: open_folder(root, cfg), subset_key))


def register_lmdb(name: str, path: str, subset_key: str = "TRAIN_SUBSET") -> None:
    """Register ``name`` as the LMDB at ``path`` (written by datasets/prepare_lmdb.py)."""
    register_dataset(name, _builder(lambda cfg: open_lmdb(path, cfg), subset_key))


def register_recordio(name: str, rec_path: str, idx_path: str,
                      subset_key: str = "TRAIN_SUBSET") -> None:
    """Register ``name`` as the RecordIO pair ``rec_path`` + ``idx_path``."""
    register_dataset(name, _builder(lambda cfg: open_recordio(rec_path, cfg, idx_path),
                                    subset_key))


def _format_builder(fmt: str):
    def build(path: str, cfg) -> EncodedImageDataset:
        name = f"{fmt}:{path}"
        return _subset(_OPENERS[fmt](path, cfg), subset_size(name, cfg))
    return build


for _fmt in FORMATS:
    register_format(_fmt, _format_builder(_fmt))
register_dataset("imagenet_train", _builder(lambda cfg: build_imagenet(cfg, "train"),
                                            "TRAIN_SUBSET"))
register_dataset("imagenet_val", _builder(lambda cfg: build_imagenet(cfg, "val"), "TEST_SUBSET"))
