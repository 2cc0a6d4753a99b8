"""Images that must not be read silently wrong: 16-bit and float pixels, grey-then-colour folders,
unreadable files (directories, broken links) and bad images in evaluation."""
import io
import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image

from slimdet.config import ConfigError
from slimdet.data.build import build_test_loader, verify_dataset
from slimdet.data.datasets import BadImageError, FolderDataset, decode_image
from slimdet.data.datasets.base import is_colour

from image_helpers import data_cfg


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
    cfg = data_cfg(TRAIN=f"folder:{root}")
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


def _folder_with_unreadable_files(root) -> tuple:
    root = _noise_folder(root, ["a", "b"], 3)
    as_dir = os.path.join(root, "a", "extra.png")
    os.makedirs(as_dir)  # a directory named like an image
    os.symlink(as_dir, os.path.join(root, "a", "link_to_dir.png"))
    broken = os.path.join(root, "b", "zz.png")
    os.symlink(os.path.join(root, "gone.png"), broken)  # a broken link
    return root, [as_dir, os.path.join(root, "a", "link_to_dir.png"), broken]


def test_unreadable_files_follow_the_bad_image_policy(tmp_path, caplog):
    root, bad = _folder_with_unreadable_files(tmp_path / "train")
    ds = FolderDataset(root, on_bad_image="skip")
    assert len(ds) == 9  # listed at scan time (no file is opened or stat'ed there)
    paths = [os.path.join(root, rel) for rel, _ in ds.samples]
    with caplog.at_level(logging.WARNING):
        items = [ds[i] for i in range(len(ds))]
    assert set(ds.bad_images) == set(bad)  # (a bad substitute is met, and counted, again)
    for path in bad:
        assert f"skipping unreadable image {path} " in caplog.text
    # Training substitutes the next good image (its own label): a broken link at the end of
    # class b wraps around to the first image of class a.
    assert items[paths.index(bad[2])][1] == 0
    assert all(img.size == (12, 12) for img, _ in items)

    strict = FolderDataset(root, on_bad_image="error")
    for path in bad:
        with pytest.raises(BadImageError, match=f"cannot read image {path}: "):
            strict[paths.index(path)]
    with pytest.raises(BadImageError, match="Is a directory"):
        strict[paths.index(bad[0])]


def test_dali_source_applies_the_policy_to_unreadable_files(tmp_path):
    from slimdet.data.dali import _ShardSource
    from slimdet.data.samplers import IterationIndices

    root, bad = _folder_with_unreadable_files(tmp_path / "train")
    skip = FolderDataset(root, on_bad_image="skip")
    source = _ShardSource(skip, IterationIndices(len(skip), 9, 0, 0, 1), 0)
    index = [os.path.join(root, rel) for rel, _ in skip.samples].index(bad[2])
    data, label = source._read(index)
    assert label == 0 and Image.open(io.BytesIO(data)).size == (12, 12)
    assert source.bad_images == [bad[2]]
    strict = _ShardSource(FolderDataset(root, on_bad_image="error"), source.indices, 0)
    with pytest.raises(BadImageError, match="zz.png"):
        strict._read(index)


@pytest.mark.parametrize("batch_size,workers", [(4, 0), (1, 0), (3, 2)])
def test_evaluation_leaves_bad_images_out_instead_of_counting_others_twice(
        tmp_path, caplog, batch_size, workers):
    root = _noise_folder(tmp_path / "test", ["a", "b", "c"], 4)
    corrupt = os.path.join(root, "a", "3.png")  # the next image is of class b
    with open(corrupt, "wb") as f:
        f.write(b"not a png")
    good = FolderDataset(root, channels=1)
    good_paths = [os.path.join(root, rel) for rel, _ in good.samples if rel != "a/3.png"]
    cfg = data_cfg(TEST=f"folder:{root}")
    cfg.MODEL.BACKBONE.IN_CHANNELS, cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD = 1, [0.5], [0.25]
    cfg.INPUT.AUGMENTATION, cfg.INPUT.CROP_SIZE = "LinearEval", 12
    cfg.DATALOADER.ON_BAD_IMAGE, cfg.DATALOADER.NUM_WORKERS = "skip", workers
    with caplog.at_level(logging.WARNING):
        batches = list(build_test_loader(cfg, cfg.DATASETS.TEST, batch_size=batch_size))
    labels = torch.cat([b["label"] for b in batches])
    images = torch.cat([b["image"] for b in batches]).flatten(1)
    assert len(labels) == len(good_paths) == 11
    assert labels.tolist() == [0] * 3 + [1] * 4 + [2] * 4  # class b is not counted five times
    assert len({tuple(row.tolist()) for row in images}) == 11  # no image twice
    if workers == 0:
        assert corrupt in caplog.text
    assert "evaluated 11 of the 12 images" in caplog.text
    cfg.DATALOADER.ON_BAD_IMAGE = "error"
    with pytest.raises(BadImageError, match="3.png"):
        list(build_test_loader(cfg, cfg.DATASETS.TEST, batch_size=batch_size))


@pytest.mark.parametrize("world_size", [2, 3])
def test_shares_of_a_test_set_with_a_bad_image_evaluate_every_good_image_once(
        tmp_path, caplog, world_size):
    """The processes of a distributed evaluation (``Shard``) read contiguous shares: together
    every good image exactly once, in order, the bad one left out by the share that holds it
    (whose warning names its images), so shares differ in size."""
    from slimdet.data import Shard

    root = _noise_folder(tmp_path / "test", ["a", "b", "c"], 4)
    with open(os.path.join(root, "a", "3.png"), "wb") as f:
        f.write(b"not a png")
    cfg = data_cfg(TEST=f"folder:{root}")
    cfg.MODEL.BACKBONE.IN_CHANNELS, cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD = 1, [0.5], [0.25]
    cfg.INPUT.AUGMENTATION, cfg.INPUT.CROP_SIZE = "LinearEval", 12
    cfg.DATALOADER.ON_BAD_IMAGE = "skip"
    whole = list(build_test_loader(cfg, cfg.DATASETS.TEST, batch_size=5))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        shares = [build_test_loader(cfg, cfg.DATASETS.TEST, batch_size=5,
                                    shard=Shard(rank, world_size)) for rank in range(world_size)]
        batches = [list(share) for share in shares]
    assert [share.max_images for share in shares] == [12 // world_size] * world_size
    sizes = [sum(len(b["label"]) for b in share) for share in batches]
    assert sizes[0] == 12 // world_size - 1 and sum(sizes) == 11  # a/3.png is in share 0
    for key in ("image", "label"):
        assert torch.equal(torch.cat([b[key] for share in batches for b in share]),
                           torch.cat([b[key] for b in whole]))
    first = 12 // world_size
    assert (f"evaluated {first - 1} of the {first} images [0, {first}) of the 12 of "
            f"folder:{root} that process 0 of {world_size} evaluates") in caplog.text
    assert caplog.text.count("evaluated") == 1  # the other shares had no bad image
