"""Registration of the on-disk data sets in ``slimdet/data/catalog.py``.

``imagenet_train`` / ``imagenet_val`` read ``cfg.DATASETS.ROOT`` in the format named by
``cfg.DATASETS.FORMAT``, at conventional paths under the root:

  ======== ==================================== ============================
  FORMAT   train                                val
  ======== ==================================== ============================
  folder   ROOT/train/<class>/<image>           ROOT/val/<class>/<image>
  lmdb     ROOT/train.lmdb                      ROOT/val.lmdb
  recordio ROOT/train.rec + ROOT/train.idx      ROOT/val.rec + ROOT/val.idx
  ======== ==================================== ============================

so switching format is a one-key config change. Other locations: ``register_folder``,
``register_lmdb`` and ``register_recordio`` register a name for any path.
"""
from __future__ import annotations

import os
from typing import Callable

from ...config import ConfigError
from ..catalog import register_dataset
from .base import EncodedImageDataset
from .folder import FolderDataset
from .lmdb_dataset import LMDBDataset
from .recordio import RecordIODataset

FORMATS = ("folder", "lmdb", "recordio")


def _finish(dataset: EncodedImageDataset, cfg, subset_key: str) -> EncodedImageDataset:
    n = getattr(cfg.DATASETS, subset_key, 0)
    return dataset.stratified_subset(n) if n else dataset


def build_imagenet(cfg, split: str) -> EncodedImageDataset:
    """The ``split`` of the ImageNet-style data set at ``cfg.DATASETS.ROOT``."""
    fmt, root, policy = cfg.DATASETS.FORMAT, cfg.DATASETS.ROOT, cfg.DATALOADER.ON_BAD_IMAGE
    if fmt == "folder":
        return FolderDataset(os.path.join(root, split), on_bad_image=policy)
    if fmt == "lmdb":
        return LMDBDataset(os.path.join(root, f"{split}.lmdb"), on_bad_image=policy)
    if fmt == "recordio":
        return RecordIODataset(os.path.join(root, f"{split}.rec"),
                               os.path.join(root, f"{split}.idx"), on_bad_image=policy)
    raise ConfigError(f"DATASETS.FORMAT must be one of {', '.join(FORMATS)}, got {fmt!r}")


def _builder(make: Callable[[object], EncodedImageDataset], subset_key: str):
    return lambda cfg: _finish(make(cfg), cfg, subset_key)


def register_folder(name: str, root: str, subset_key: str = "TRAIN_SUBSET") -> None:
    """Register ``name`` as the image folder ``root/<class>/<image>``."""
    register_dataset(name, _builder(
        lambda cfg: FolderDataset(root, on_bad_image=cfg.DATALOADER.ON_BAD_IMAGE), subset_key))


def register_lmdb(name: str, path: str, subset_key: str = "TRAIN_SUBSET") -> None:
    """Register ``name`` as the LMDB at ``path`` (written by datasets/prepare_lmdb.py)."""
    register_dataset(name, _builder(
        lambda cfg: LMDBDataset(path, on_bad_image=cfg.DATALOADER.ON_BAD_IMAGE), subset_key))


def register_recordio(name: str, rec_path: str, idx_path: str,
                      subset_key: str = "TRAIN_SUBSET") -> None:
    """Register ``name`` as the RecordIO pair ``rec_path`` + ``idx_path``."""
    register_dataset(name, _builder(
        lambda cfg: RecordIODataset(rec_path, idx_path, on_bad_image=cfg.DATALOADER.ON_BAD_IMAGE),
        subset_key))


register_dataset("imagenet_train", _builder(lambda cfg: build_imagenet(cfg, "train"),
                                            "TRAIN_SUBSET"))
register_dataset("imagenet_val", _builder(lambda cfg: build_imagenet(cfg, "val"), "TEST_SUBSET"))
