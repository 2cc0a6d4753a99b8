"""Shared behaviour of the on-disk image data sets: decoding and the bad-image policy.

Every format (folders, LMDB, RecordIO) stores *encoded* images. A subclass only says how to read
the raw bytes of item ``i`` (``read_encoded``); decoding, the ``DATALOADER.ON_BAD_IMAGE`` policy
and subsetting live here, so the three formats behave identically and the DALI pipelines can
read the very same bytes without decoding them in Python.
"""
from __future__ import annotations

import copy
import io
import logging
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ...config import ConfigError

logger = logging.getLogger(__name__)

BAD_IMAGE_POLICIES = ("skip", "error")
# PIL modes decoded for MODEL.BACKBONE.IN_CHANNELS.
CHANNEL_MODES = {1: "L", 3: "RGB"}


class DatasetError(RuntimeError):
    """A data set on disk cannot be used as it is; the message names it and what to do."""

    def __init__(self, message: str):
        # A DataLoader worker's error comes back rebuilt from a message that holds the worker's
        # traceback; keep only its last line (the original message), so the error stays one line.
        if "Traceback (most recent call last)" in message:
            last = message.rstrip().splitlines()[-1]
            message = last.split(": ", 1)[1] if ": " in last else last
        super().__init__(message)


class BadImageError(DatasetError):
    """An image could not be read or decoded; the message names the file (or record), ``name``
    holds it alone when known."""

    def __init__(self, message: str, name: Optional[str] = None):
        super().__init__(message)
        self.name = name


def check_bad_image_policy(policy: str) -> str:
    if policy not in BAD_IMAGE_POLICIES:
        raise ConfigError(f"DATALOADER.ON_BAD_IMAGE must be one of {BAD_IMAGE_POLICIES}, "
                          f"got {policy!r}")
    return policy


# Pillow's modes of 16-bit grey pixels (16-bit PNG and TIFF open as "I;16", 16-bit PGM as "I").
# ``convert("L")`` clips them at 255 instead of scaling, which turns most of a 16-bit image white.
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def to_8bit(img: Image.Image, name: str) -> Image.Image:
    """``img`` with 8-bit channels: 16-bit grey scaled to "L" (value / 257, rounded, so 65535 is
    255), other modes unchanged. Pixels without a known range are refused with
    ``BadImageError`` naming ``name`` rather than clipped: float ("F") and 32-bit integer ("I"
    with values outside 0..65535; within it, "I" is how Pillow holds 16-bit files)."""
    if img.mode == "F":
        raise BadImageError(f"cannot decode image {name}: its pixels are 32-bit floats (mode F), "
                            "which have no fixed 8-bit scale; save it as an 8-bit image", name)
    if img.mode not in SIXTEEN_BIT_MODES and img.mode != "I":
        return img
    pixels = np.asarray(img)
    if img.mode == "I" and pixels.size and (pixels.min() < 0 or pixels.max() > 65535):
        raise BadImageError(f"cannot decode image {name}: its pixels are 32-bit integers (mode I) "
                            f"from {pixels.min()} to {pixels.max()}, which have no fixed 8-bit "
                            "scale; save it as an 8-bit (or 16-bit) image", name)
    grey = (pixels.astype(np.uint32) + 128) // 257
    return Image.fromarray(grey.astype(np.uint8), "L")


def decode_image(data: bytes, name: str, mode: str = "RGB") -> Image.Image:
    """Decode encoded bytes to a PIL image of ``mode`` ("RGB" or "L"), or raise
    ``BadImageError`` naming ``name``.

    ``Image.open`` only parses the header, so ``load()`` is forced here: a truncated JPEG must
    fail inside the data set (where the policy applies), not later inside an augmentation op.
    16-bit grey images are scaled to 8 bits (``to_8bit``), not clipped.
    """
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
        img = to_8bit(img, name)
        return img if img.mode == mode else img.convert(mode)  # convert() would copy
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise BadImageError(f"cannot decode image {name}: {e}", name) from e


def is_colour(img: Image.Image, tolerance: int = 8) -> bool:
    """Whether a decoded image has colour: some pixel's R, G, B differ by more than
    ``tolerance`` levels (grey photos saved as RGB JPEGs differ by a level or two)."""
    if img.mode in ("1", "L", "LA", "La", "I", "F") + SIXTEEN_BIT_MODES:
        return False
    rgb = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.int16).copy())
    return bool((rgb.amax(-1) - rgb.amin(-1)).max() > tolerance)


class EncodedImageDataset(Dataset):
    """Map-style data set of encoded images; items are ``(PIL.Image, int label)``, RGB for
    ``channels`` 3 and grey ("L") for 1 (other modes are converted).

    Subclasses implement ``_num_records()`` and ``_read_record(j) -> (bytes, label, name)`` for
    the underlying storage (raising ``BadImageError`` naming the record when its bytes cannot be
    read, e.g. a directory or a broken link named like an image); ``select(indices)`` gives a
    view of a subset without copying data.

    Bad images (unreadable or undecodable; ``on_bad_image``):
      * ``"skip"``: log a warning naming the file and count it in ``bad_images``. Indexing
        (``ds[i]``, for training) returns the next good item instead, so a DataLoader's default
        collate never sees a hole; ``load(i)`` (for evaluation, which must count every image
        once) returns ``None``. Counts are per process (each loader worker keeps its own list);
        the warnings are the global record.
      * ``"error"``: raise ``BadImageError`` naming the file.
    """

    # Class names in label order, when the format stores them (folders, LMDB).
    classes: Optional[List[str]] = None

    def __init__(self, on_bad_image: str = "skip", channels: int = 3):
        self.on_bad_image = check_bad_image_policy(on_bad_image)
        if channels not in CHANNEL_MODES:
            raise ConfigError(f"MODEL.BACKBONE.IN_CHANNELS must be 1 or 3, got {channels}")
        self.channels = channels
        self.bad_images: List[str] = []
        self._indices: Optional[List[int]] = None

    # -- storage interface -------------------------------------------------------------------
    def _num_records(self) -> int:
        raise NotImplementedError

    def _read_record(self, j: int) -> Tuple[bytes, int, str]:
        raise NotImplementedError

    def record_labels(self) -> Optional[List[int]]:
        """Labels of all records in storage order, when the format knows them cheaply."""
        return None

    # -- public API ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._indices) if self._indices is not None else self._num_records()

    def _record_index(self, i: int) -> int:
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} images")
        return self._indices[i] if self._indices is not None else i

    def read_encoded(self, i: int) -> Tuple[bytes, int, str]:
        """``(encoded bytes, label, name)`` of item ``i``, undecoded (used by LMDB/RecordIO
        writers and the DALI pipelines)."""
        return self._read_record(self._record_index(i))

    def colour_sample(self, n: int = 32) -> Optional[str]:
        """The name of a colour image among ``n`` items spread evenly over the whole data set,
        else ``None`` (a grey data set read as colour is fine; colour read as grey loses
        information). Items are stored class by class, so the first few would all be of the
        first class; ``n`` evenly spaced ones touch every region without reading many images."""
        total = len(self)
        picks = range(total) if total <= n else sorted({k * (total - 1) // (n - 1)
                                                        for k in range(n)})
        for i in picks:
            try:
                data, _, name = self.read_encoded(i)
                img = Image.open(io.BytesIO(data))
                img.load()
            except (BadImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
                continue  # the bad-image policy deals with it when it is read
            if is_colour(img):
                return name
        return None

    @property
    def num_classes(self) -> Optional[int]:
        """Number of classes when known without reading every record, else ``None``."""
        return len(self.classes) if self.classes is not None else None

    def close(self) -> None:
        """Release per-process handles (files, LMDB environments); reading reopens them."""

    @property
    def labels(self) -> Optional[List[int]]:
        labels = self.record_labels()
        if labels is None or self._indices is None:
            return labels
        return [labels[j] for j in self._indices]

    def select(self, indices: Sequence[int]) -> "EncodedImageDataset":
        """A view of items ``indices`` (of this data set) sharing the storage."""
        view = copy.copy(self)
        view._indices = [self._record_index(int(i)) for i in indices]
        view.bad_images = []
        return view

    def stratified_subset(self, n: int) -> "EncodedImageDataset":
        """``n`` items spread evenly over the classes (``DATASETS.*_SUBSET``;
        :func:`slimdet.data.in_memory.stratified_subset` says how)."""
        from ..in_memory import stratified_subset

        labels = self.labels
        if labels is None:
            raise ConfigError(f"{type(self).__name__} does not know its labels without reading "
                              "every record, so DATASETS.TRAIN_SUBSET/TEST_SUBSET cannot be used")
        return self.select(stratified_subset(torch.tensor(labels), n).tolist())

    def load(self, i: int) -> Optional[Tuple[Image.Image, int]]:
        """Item ``i`` decoded, or ``None`` when it is bad and the policy is ``"skip"`` (the
        warning names it); the policy ``"error"`` raises ``BadImageError`` naming it."""
        try:
            data, label, name = self.read_encoded(i)
            return decode_image(data, name, CHANNEL_MODES[self.channels]), int(label)
        except BadImageError as e:
            if self.on_bad_image == "error":
                raise
            self.bad_images.append(e.name or str(e))
            # The cause is the reader's or decoder's own words (the message repeats the name).
            logger.warning("skipping unreadable image %s (%d skipped so far in this process): %s",
                           e.name, len(self.bad_images), e.__cause__ or e)
            return None

    def __getitem__(self, i: int) -> Tuple[Image.Image, int]:
        """Item ``i``; under ``"skip"`` a bad item is replaced by the next good one (training:
        every batch stays full)."""
        n = len(self)
        for step in range(n):
            item = self.load((i + step) % n)
            if item is not None:
                return item
        raise BadImageError(f"none of the {n} images of {self!r} can be read and decoded")
