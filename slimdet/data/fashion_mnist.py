"""The embedded default data set: Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package.

70,000 real 28x28 grey photos of clothes in 10 balanced classes (MIT licence). Images are padded
to 32x32 (so the CIFAR-stem ResNets see the usual size) and kept in memory as one uint8 tensor.
"""
from __future__ import annotations

import gzip
import os
import struct
from functools import lru_cache

import numpy as np
import torch

from .catalog import register_dataset
from .in_memory import InMemoryImageDataset, stratified_subset

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot"]
_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def fashion_mnist_dir() -> str:
    return os.environ.get("SLIMDET_FMNIST_DIR", DEFAULT_DIR)


def _read_idx(path: str) -> np.ndarray:
    """Read a gzipped IDX file (big-endian header: magic, then one uint32 per dimension)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack(">I", data[:4])[0]
    if magic >> 8 != 0x08:  # 0x08 = unsigned byte
        raise ValueError(f"{path}: not a uint8 IDX file (magic {magic:#x})")
    ndim = magic & 0xFF
    shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise ValueError(f"{path}: truncated ({arr.size} bytes for shape {shape})")
    return arr.reshape(shape)


@lru_cache(maxsize=4)
def load_fashion_mnist(split: str, root: str | None = None):
    """(images uint8 [N, 1, 32, 32], labels int64 [N]) of ``split`` ("train" or "test")."""
    root = root or fashion_mnist_dir()
    img_file, lbl_file = (os.path.join(root, f) for f in _FILES[split])
    for f in (img_file, lbl_file):
        if not os.path.isfile(f):
            raise FileNotFoundError(
                f"Fashion-MNIST file missing: {f} (run `make setup`, or `apt-get install "
                f"dataset-fashion-mnist`, or set SLIMDET_FMNIST_DIR)")
    images = torch.from_numpy(_read_idx(img_file).copy()).unsqueeze(1)
    labels = torch.from_numpy(_read_idx(lbl_file).astype(np.int64))
    if len(images) != len(labels):
        raise ValueError(f"{img_file}: {len(images)} images but {len(labels)} labels")
    images = torch.nn.functional.pad(images, (2, 2, 2, 2))  # 28 -> 32, background is 0
    return images, labels


def _builder(split: str, subset_key: str):
    def build(cfg) -> InMemoryImageDataset:
        images, labels = load_fashion_mnist(split)
        n = getattr(cfg.DATASETS, subset_key)
        if n:
            keep = stratified_subset(labels, n)
            images, labels = images[keep], labels[keep]
        if cfg.MODEL.BACKBONE.IN_CHANNELS == 3:
            images = images.expand(-1, 3, -1, -1)
        return InMemoryImageDataset(images, labels, classes=CLASSES)
    return build


register_dataset("fashion_mnist_train", _builder("train", "TRAIN_SUBSET"))
register_dataset("fashion_mnist_test", _builder("test", "TEST_SUBSET"))
