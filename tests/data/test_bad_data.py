"""Images that must not be read silently wrong: 16-bit and float pixels, grey-then-colour folders,
unreadable files (directories, broken links) and bad images in evaluation."""
import io
import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image

from slimdet.config import ConfigError, get_cfg
from slimdet.data.build import build_test_loader, verify_dataset
from slimdet.data.datasets import BadImageError, FolderDataset, decode_image
from slimdet.data.datasets.base import is_colour


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def _noise_folder(root, classes, per_class: int, colour=(), seed: int = 0) -> str:
    """``root/<class>/<i>.png`` of random pixels (every image distinct); classes in ``colour``
    are RGB, the others grey."""
    rng = np.random.default_rng(seed)
    for c in classes:
        os.makedirs(os.path.join(root, c), exist_ok=True)
        for i in range(per_class):
            shape = (12, 12, 3) if c in colour else (12, 12)
            pixels = rng.integers(0, 256, shape, dtype=np.uint8)
            Image.fromarray(pixels).save(os.path.join(root, c, f"{i}.png"))
    return str(root)


def _cfg(**datasets):
    cfg = get_cfg()
    for k, v in datasets.items():
        setattr(cfg.DATASETS, k, v)
    cfg.DATALOADER.NUM_WORKERS = 0
    return cfg


def test_16_bit_png_is_scaled_to_8_bit_not_clipped(tmp_path):
    values = np.linspace(0, 65535, 512).round().astype(np.uint16).reshape(2, 256)
    data = _png(Image.fromarray(values))
    assert Image.open(io.BytesIO(data)).mode == "I;16"  # what Pillow makes of a 16-bit PNG
    expected = values / 257.0
    for mode in ("L", "RGB"):
        img = decode_image(data, "grad16.png", mode)
        got = np.asarray(img).astype(np.float64)
        got = got if mode == "L" else got[..., 0]
        assert img.mode == mode and np.abs(got - expected).max() <= 0.5 + 1e-9
    # Big-endian 16-bit TIFF ("I;16B") and 16-bit PGM (opened as "I") the same.
    big = Image.frombytes("I;16B", (256, 2), values.astype(">u2").tobytes())
    buf = io.BytesIO()
    big.save(buf, "TIFF")
    pgm = b"P5\n256 2\n65535\n" + values.astype(">u2").tobytes()
    for data, mode in ((buf.getvalue(), "I;16B"), (pgm, "I")):
        assert Image.open(io.BytesIO(data)).mode == mode
        got = np.asarray(decode_image(data, "x", "L")).astype(np.float64)
        assert np.abs(got - expected).max() <= 0.5 + 1e-9
    assert not is_colour(Image.open(io.BytesIO(_png(Image.fromarray(values)))))


def test_pixels_without_an_8_bit_scale_are_refused_naming_the_file(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32)).save(buf, "TIFF")
    with pytest.raises(BadImageError, match=r"cannot decode image f\.tif: .*32-bit floats \(mode F\)"):
        decode_image(buf.getvalue(), "f.tif", "L")
    buf = io.BytesIO()
    Image.fromarray(np.array([[70000, 3]], dtype=np.int32)).save(buf, "TIFF")
    with pytest.raises(BadImageError, match=r"i\.tif: .*mode I\) from 3 to 70000"):
        decode_image(buf.getvalue(), "i.tif", "RGB")


def test_grey_first_class_then_colour_is_refused_for_one_channel(tmp_path):
    root = _noise_folder(tmp_path / "mixed", ["a_grey", "b", "c"], 12, colour=("b", "c"))
    cfg = _cfg(TRAIN=f"folder:{root}")
    cfg.MODEL.BACKBONE.IN_CHANNELS = 1
    with pytest.raises(ConfigError, match=r"IN_CHANNELS is 1 but DATASETS\.TRAIN .* colour images "
                                          r"\(e\.g\. .*/(b|c)/\d+\.png\)"):
        verify_dataset(cfg, cfg.DATASETS.TRAIN)


def test_colour_check_reads_few_images_spread_over_the_set(tmp_path, monkeypatch):
    ds = FolderDataset(_noise_folder(tmp_path / "grey", ["a", "b", "c"], 30), channels=1)
    read = []
    original = FolderDataset._read_record
    monkeypatch.setattr(FolderDataset, "_read_record",
                        lambda self, j: read.append(j) or original(self, j))
    assert ds.colour_sample() is None
    assert len(read) <= 32 and read[0] == 0 and read[-1] == 89
    assert {ds.labels[j] for j in read} == {0, 1, 2}
