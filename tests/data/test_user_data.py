"""A user's own data from the config alone: FORMAT:PATH names, grey images, start-up checks."""
import os
import pathlib

import numpy as np
import pytest
import torch
from PIL import Image

from slimdet.config import ConfigError
from slimdet.data.build import build_test_loader, build_train_loader, verify_dataset
from slimdet.data.catalog import get_dataset
from slimdet.data.datasets import BadImageError, FolderDataset, write_lmdb

from image_helpers import data_cfg


def _grey_folder(root: str, classes=("a", "b"), per_class: int = 5, size: int = 20) -> str:
    rng = np.random.default_rng(1)
    for c in classes:
        os.makedirs(os.path.join(root, c), exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size, size), dtype=np.uint8)
            Image.fromarray(pixels, "L").save(os.path.join(root, c, f"{i}.png"))
    return root


def test_format_path_names_read_any_folder_lmdb_or_recordio(image_folder, tmp_path):
    from slimdet.data.datasets import write_recordio

    write_lmdb(FolderDataset(image_folder), str(tmp_path / "mine.lmdb"), progress=False)
    write_recordio(FolderDataset(image_folder), str(tmp_path / "mine.rec"), str(tmp_path / "mine.idx"))
    cfg = data_cfg(TRAIN=f"folder:{image_folder}", TEST=f"lmdb:{tmp_path / 'mine.lmdb'}")
    folder, lmdb = get_dataset(cfg.DATASETS.TRAIN, cfg), get_dataset(cfg.DATASETS.TEST, cfg)
    rec = get_dataset(f"recordio:{tmp_path / 'mine.rec'}", cfg)
    assert len(folder) == len(lmdb) == len(rec) == 18 and folder.classes == ["cat", "dog", "eel"]
    assert [folder[i][1] for i in range(18)] == [rec[i][1] for i in range(18)] == lmdb.labels
    # Each set takes the subset key of its role.
    cfg.DATASETS.TRAIN_SUBSET, cfg.DATASETS.TEST_SUBSET = 6, 3
    assert len(get_dataset(cfg.DATASETS.TRAIN, cfg)) == 6
    assert len(get_dataset(cfg.DATASETS.TEST, cfg)) == 3


def test_unknown_name_and_missing_path_name_the_key(tmp_path):
    cfg = data_cfg(TRAIN="zip:/data/x", TEST=f"folder:{tmp_path / 'nope'}")
    with pytest.raises(ConfigError, match=r"DATASETS\.TRAIN: 'zip:/data/x' is neither.*folder"):
        get_dataset(cfg.DATASETS.TRAIN, cfg)
    with pytest.raises(FileNotFoundError, match=r"DATASETS\.TEST 'folder:.*nope'.*not found"):
        get_dataset(cfg.DATASETS.TEST, cfg)


def test_grey_folder_trains_and_evaluates_with_one_channel(tmp_path):
    root = _grey_folder(str(tmp_path / "grey"))
    cfg = data_cfg(TRAIN=f"folder:{root}", TEST=f"folder:{root}")
    cfg.MODEL.BACKBONE.IN_CHANNELS = 1
    cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD = [0.5], [0.25]
    cfg.INPUT.CROP_SIZE, cfg.SOLVER.IMS_PER_BATCH = 16, 4
    assert verify_dataset(cfg, cfg.DATASETS.TRAIN)[0][0].mode == "L"
    batch = next(iter(build_train_loader(cfg)))
    assert [tuple(v.shape) for v in batch["views"]] == [(4, 1, 16, 16)] * 2
    test = next(iter(build_test_loader(cfg, cfg.DATASETS.TEST)))
    assert test["image"].shape == (10, 1, 16, 16)
    # The same grey folder read as colour (the default) is fine: three equal channels.
    cfg.MODEL.BACKBONE.IN_CHANNELS = 3
    cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD = [0.5] * 3, [0.25] * 3
    image = next(iter(build_test_loader(cfg, cfg.DATASETS.TEST)))["image"]
    assert image.shape == (10, 3, 16, 16) and torch.equal(image[:, 0], image[:, 2])


def test_colour_images_read_as_grey_and_in_memory_channels_are_refused(image_folder):
    cfg = data_cfg(TRAIN=f"folder:{image_folder}")
    cfg.MODEL.BACKBONE.IN_CHANNELS = 1
    with pytest.raises(ConfigError, match=r"IN_CHANNELS is 1 but DATASETS\.TRAIN 'folder:.*colour"):
        verify_dataset(cfg, cfg.DATASETS.TRAIN)
    from slimdet.data import InMemoryImageDataset, register_dataset

    register_dataset("rgb_in_memory_test", lambda cfg: InMemoryImageDataset(
        torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.zeros(4, dtype=torch.long)))
    with pytest.raises(ConfigError, match=r"IN_CHANNELS is 1 but.*'rgb_in_memory_test' have 3"):
        verify_dataset(cfg, "rgb_in_memory_test")


def test_more_classes_than_the_classifier_and_batch_larger_than_data(image_folder):
    cfg = data_cfg(TRAIN=f"folder:{image_folder}")
    with pytest.raises(ConfigError, match=r"MODEL\.NUM_CLASSES is 2 but DATASETS\.TRAIN .* 3 classes"):
        verify_dataset(cfg, cfg.DATASETS.TRAIN, num_classes=2)
    cfg.SOLVER.IMS_PER_BATCH = 32
    with pytest.raises(ConfigError, match=r"SOLVER\.IMS_PER_BATCH 32 is larger than DATASETS\.TRAIN "
                                          r"'folder:.*18 images"):
        build_train_loader(cfg)
    cfg.DATASETS.TRAIN_SUBSET, cfg.SOLVER.IMS_PER_BATCH = 6, 8
    with pytest.raises(ConfigError, match=r"TRAIN_SUBSET 6\), which has 6 images"):
        build_train_loader(cfg)


def test_bad_image_from_a_loader_worker_is_one_line(image_folder):
    bad = sorted(pathlib.Path(image_folder).glob("dog/*"))[0]
    bad.write_bytes(bad.read_bytes()[:200])
    cfg = data_cfg(TRAIN=f"folder:{image_folder}")
    cfg.DATALOADER.ON_BAD_IMAGE, cfg.DATALOADER.NUM_WORKERS = "error", 1
    cfg.SOLVER.IMS_PER_BATCH, cfg.INPUT.CROP_SIZE = 18, 16
    with pytest.raises(BadImageError) as err:
        next(iter(build_train_loader(cfg)))
    message = str(err.value)
    assert "\n" not in message and message.startswith("cannot decode image") and str(bad) in message


def test_splits_with_other_class_folders_are_refused(tmp_path):
    from slimdet.data.build import check_same_classes

    train = _grey_folder(str(tmp_path / "train"), classes=("a", "b", "c"), per_class=2)
    cfg = data_cfg(TRAIN=f"folder:{train}")
    splits = {
        "lacks": (("a", "c"), r"has 2 classes, DATASETS\.TRAIN .* 3, and they differ from label 1 "
                              r"on \(it lacks \['b'\]\)"),
        "extra": (("a", "b", "c", "d"), r"DATASETS\.TRAIN .*differ from label 3 on \(it has \['d'\]\)"),
        "same": (("a", "b", "c"), None),
    }
    for split, (classes, message) in splits.items():
        cfg.DATASETS.TEST = f"folder:{_grey_folder(str(tmp_path / split), classes, per_class=2)}"
        opened = {n: get_dataset(n, cfg) for n in (cfg.DATASETS.TRAIN, cfg.DATASETS.TEST)}
        # Labels are sorted-folder indices: "c" is 1 in the split that lacks "b", 2 in training.
        c_label = {opened[n][i][1] for n in opened for i in range(len(opened[n]))
                   if opened[n].samples[i][0].startswith("c/")}
        if message is None:
            check_same_classes(cfg, opened)
            assert c_label == {2}
        else:
            assert c_label == ({1, 2} if split == "lacks" else {2})
            with pytest.raises(ConfigError, match=r"DATASETS\.TEST .*" + message):
                check_same_classes(cfg, opened)
    # An empty class folder keeps its class (and the labels after it).
    os.makedirs(tmp_path / "lacks" / "b")
    cfg.DATASETS.TEST = f"folder:{tmp_path / 'lacks'}"
    check_same_classes(cfg, {n: get_dataset(n, cfg) for n in (cfg.DATASETS.TRAIN, cfg.DATASETS.TEST)})
