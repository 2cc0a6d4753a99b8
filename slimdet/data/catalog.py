"""Data sets by name, like Detectron2's ``DatasetCatalog``, or by ``FORMAT:PATH``.

``DATASETS.TRAIN`` / ``DATASETS.TEST`` hold either a registered name (``fashion_mnist_train``,
``imagenet_train`` ...: a function of the config) or a storage format and a path, e.g.
``folder:/data/mine/train`` (``PATH/<class>/<image>``), ``lmdb:/data/mine/train.lmdb`` or
``recordio:/data/mine/train.rec`` (``.idx`` beside it), so a user's data is a config away.

Two kinds of data set exist: in-memory sets (``InMemoryImageDataset``: a uint8 image tensor,
augmented as whole batches on the training device) and per-image sets whose items are
``(PIL.Image, label)`` (augmented in loader workers by the recipes of
``slimdet/data/transforms.py``).
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

from torch.utils.data import Dataset

from ..config import ConfigError

_REGISTRY: Dict[str, Callable] = {}
_FORMATS: Dict[str, Callable] = {}


def register_dataset(name: str, fn: Callable) -> None:
    """Register ``fn(cfg) -> Dataset`` under ``name`` (re-registering the same name replaces it)."""
    _REGISTRY[name] = fn


def register_format(prefix: str, fn: Callable) -> None:
    """Make ``prefix:PATH`` a data set name: ``fn(path, cfg) -> Dataset``."""
    _FORMATS[prefix] = fn


def registered_datasets() -> List[str]:
    return sorted(_REGISTRY)


def registered_formats() -> List[str]:
    return sorted(_FORMATS)


def split_format(name: str) -> Optional[Tuple[str, str]]:
    """``("folder", "/data/x")`` for ``"folder:/data/x"``; ``None`` for any other name."""
    prefix, sep, path = name.partition(":")
    return (prefix, path) if sep and prefix in _FORMATS else None


def dataset_key(name: str, cfg) -> str:
    """The config key that names ``name`` in ``cfg`` (for error messages)."""
    if name == cfg.DATASETS.TRAIN:
        return "DATASETS.TRAIN"
    if name == cfg.DATASETS.TEST:
        return "DATASETS.TEST"
    return "data set"


def subset_size(name: str, cfg) -> int:
    """``DATASETS.TRAIN_SUBSET`` for the training set, ``TEST_SUBSET`` for the test set (a
    ``FORMAT:PATH`` name named by both keys is the training set)."""
    if name == cfg.DATASETS.TRAIN:
        return cfg.DATASETS.TRAIN_SUBSET
    if name == cfg.DATASETS.TEST:
        return cfg.DATASETS.TEST_SUBSET
    return 0


def get_dataset(name: str, cfg) -> Dataset:
    """The data set ``name`` (registered, or ``FORMAT:PATH``); a missing path or an unknown name
    is one error naming the config key and the value."""
    key = dataset_key(name, cfg)
    by_format = split_format(name)
    if name in _REGISTRY:
        build = _REGISTRY[name]
    elif by_format is not None and by_format[1]:
        fmt, path = by_format
        build = lambda cfg: _FORMATS[fmt](path, cfg)  # noqa: E731
    else:
        raise ConfigError(
            f"{key}: {name!r} is neither a registered data set ({', '.join(registered_datasets())}) "
            f"nor FORMAT:PATH with FORMAT one of {', '.join(registered_formats())} "
            "(e.g. folder:/data/mine/train)")
    try:
        return build(cfg)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{key} {name!r}: {e}") from e
