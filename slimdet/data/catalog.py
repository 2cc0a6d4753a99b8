"""Data sets registered by name, like Detectron2's ``DatasetCatalog``.

A registered function takes the config and returns a ``torch.utils.data.Dataset``. Two kinds
exist: in-memory sets (``InMemoryImageDataset``: a uint8 image tensor, augmented as whole batches
on the training device) and per-image sets whose items are ``(PIL.Image, label)`` (augmented in
loader workers by the recipes of ``slimdet/data/transforms.py``).
"""
from __future__ import annotations

from typing import Callable, Dict, List

from torch.utils.data import Dataset

from ..config import ConfigError

_REGISTRY: Dict[str, Callable] = {}


def register_dataset(name: str, fn: Callable) -> None:
    """Register ``fn(cfg) -> Dataset`` under ``name`` (re-registering the same name replaces it)."""
    _REGISTRY[name] = fn


def registered_datasets() -> List[str]:
    return sorted(_REGISTRY)


def get_dataset(name: str, cfg) -> Dataset:
    if name not in _REGISTRY:
        raise ConfigError(f"dataset {name!r} is not registered; registered: "
                          f"{', '.join(registered_datasets())}")
    return _REGISTRY[name](cfg)
