"""Image folders and LMDB: equality of decoded pixels, worker safety, bad images, config switch."""
import hashlib
import importlib.util
import logging
import os
import pathlib

import numpy as np
import pytest
import torch

from image_helpers import make_folder
from slimdet.config import ConfigError, get_cfg
from slimdet.data.catalog import get_dataset
from slimdet.data.datasets import BadImageError, FolderDataset, LMDBDataset, write_lmdb
from slimdet.data.datasets.lmdb_dataset import _READERS

REPO = pathlib.Path(__file__).resolve().parents[2]


def _prepare_lmdb_main():
    spec = importlib.util.spec_from_file_location("prepare_lmdb", REPO / "datasets" / "prepare_lmdb.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


def _digest(img) -> str:
    return hashlib.sha1(np.asarray(img).tobytes()).hexdigest()


def _hash_collate(batch):
    return [(_digest(img), label) for img, label in batch]


def test_folder_classes_and_labels(image_folder):
    ds = FolderDataset(image_folder)
    assert ds.classes == ["cat", "dog", "eel"]
    assert len(ds) == 18
    assert ds.labels == [0] * 6 + [1] * 6 + [2] * 6
    img, label = ds[7]
    assert img.mode == "RGB" and label == 1
    assert ds.samples[7][0].startswith("dog/")


def test_missing_and_empty_folders_name_the_path(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="nope"):
        FolderDataset(missing)
    empty = tmp_path / "empty"
    (empty / "cls").mkdir(parents=True)
    (empty / "cls" / "readme.txt").write_text("not an image")
    with pytest.raises(FileNotFoundError, match=str(empty)):
        FolderDataset(str(empty))


def test_folders_tools_leave_are_not_classes_and_misplaced_images_are_named(tmp_path):
    """.ipynb_checkpoints in a split was a class (label 0, every other label moved up one);
    macOS's ._name.jpg were read as images; a class whose images lie one folder deeper, or
    carry an extension that is not read, was silently empty."""
    root = tmp_path / "train"
    make_folder(str(root), ["cat", "dog"], 2)
    (root / ".ipynb_checkpoints").mkdir()
    (root / "cat" / "._cat_000.JPEG").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (root / "empty").mkdir()  # a class this split lacks: kept, so labels stay aligned
    ds = FolderDataset(str(root))
    assert ds.classes == ["cat", "dog", "empty"] and len(ds) == 4
    assert ds.labels == [0, 0, 1, 1]

    nested = tmp_path / "nested"
    make_folder(str(nested), ["cat"], 1)
    make_folder(str(nested / "dog"), ["photos"], 2)
    with pytest.raises(FileNotFoundError) as err:
        FolderDataset(str(nested))
    assert str(err.value) == (
        f"class folder {nested / 'dog'} holds no image itself but 2 in its subfolders (e.g. "
        f"dog/photos/photos_000.JPEG): images must lie directly in {nested}/<class>/, one "
        "folder level per class")

    other = tmp_path / "other_ext"
    make_folder(str(other), ["cat"], 1)
    (other / "dog").mkdir()
    (other / "dog" / "a.heic").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match=r"class folder .*other_ext/dog holds 1 file\(s\) "
                       r"\(e.g. a.heic\) but no image: .* these have .heic$"):
        FolderDataset(str(other))


def test_folder_to_lmdb_is_pixel_equal_and_resumable(image_folder, tmp_path):
    out = str(tmp_path / "train.lmdb")
    main = _prepare_lmdb_main()
    # An interrupted conversion: 7 of 18 images, committed 3 at a time.
    assert main([image_folder, out, "--commit-every", "3", "--max-new", "7", "--no-progress"]) == 0
    with pytest.raises(RuntimeError, match="incomplete"):
        LMDBDataset(out)
    assert main([image_folder, out, "--commit-every", "3", "--no-progress"]) == 0

    folder, lmdb_ds = FolderDataset(image_folder), LMDBDataset(out)
    assert len(lmdb_ds) == len(folder) and lmdb_ds.classes == folder.classes
    assert lmdb_ds.labels == folder.labels
    for i in range(len(folder)):
        (a, la), (b, lb) = folder[i], lmdb_ds[i]
        assert la == lb
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # A different source list must not be appended to an existing LMDB.
    lmdb_ds.close()
    other = FolderDataset(make_folder(str(tmp_path / "other"), ["ant", "bee"], 2, seed=1))
    with pytest.raises(RuntimeError, match="different image list"):
        write_lmdb(other, out, progress=False)


def test_lmdb_num_workers_two_yields_each_sample_once(image_folder, tmp_path):
    out = str(tmp_path / "train.lmdb")
    write_lmdb(FolderDataset(image_folder), out, commit_every=4, progress=False)
    ds = LMDBDataset(out)
    expected = sorted(_hash_collate([ds[i] for i in range(len(ds))]))
    # The main process has the LMDB open: forked workers must not reuse its environment.
    assert _READERS[ds._key][0] == os.getpid()
    assert len({h for h, _ in expected}) == len(ds)  # all images distinct
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, collate_fn=_hash_collate)
    for _ in range(2):  # two epochs, fresh workers each
        got = sorted(x for batch in loader for x in batch)
        assert got == expected


def _truncate_one(folder: str) -> str:
    bad = os.path.join(folder, "dog", sorted(os.listdir(os.path.join(folder, "dog")))[2])
    data = pathlib.Path(bad).read_bytes()
    pathlib.Path(bad).write_bytes(data[: len(data) // 2])
    return bad


def test_truncated_jpeg_skipped_counted_and_named(image_folder, caplog):
    bad = _truncate_one(image_folder)
    ds = FolderDataset(image_folder, on_bad_image="skip")
    bad_index = [os.path.join(image_folder, s) for s, _ in ds.samples].index(bad)
    with caplog.at_level(logging.WARNING):
        loader = torch.utils.data.DataLoader(ds, batch_size=5, num_workers=0,
                                             collate_fn=_hash_collate)
        items = [x for batch in loader for x in batch]
    assert len(items) == len(ds)  # iteration went on; the hole was filled by the next image
    assert ds.bad_images == [bad]
    assert bad in caplog.text
    # The substitute is the next image in order, with its own label.
    assert items[bad_index] == items[bad_index + 1]

    strict = FolderDataset(image_folder, on_bad_image="error")
    with pytest.raises(BadImageError, match=os.path.basename(bad)):
        strict[bad_index]


def test_bad_policy_value_is_a_config_error(image_folder):
    with pytest.raises(ConfigError, match="ON_BAD_IMAGE.*'ignore'"):
        FolderDataset(image_folder, on_bad_image="ignore")


def test_config_switches_format_only(image_folder):
    from slimdet.data.datasets import write_recordio

    root = os.path.dirname(image_folder)
    write_lmdb(FolderDataset(image_folder), os.path.join(root, "train.lmdb"), progress=False)
    write_recordio(FolderDataset(image_folder), os.path.join(root, "train.rec"),
                   os.path.join(root, "train.idx"))
    cfg = get_cfg()
    cfg.DATASETS.ROOT = root
    decoded = {}
    for fmt in ("folder", "lmdb", "recordio"):
        cfg.DATASETS.FORMAT = fmt
        ds = get_dataset("imagenet_train", cfg)
        decoded[fmt] = [(_digest(img), label) for img, label in (ds[i] for i in range(len(ds)))]
    assert decoded["folder"] == decoded["lmdb"] == decoded["recordio"]

    cfg.DATASETS.FORMAT = "lmdb"
    cfg.DATASETS.TRAIN_SUBSET = 6  # stratified: 2 per class
    assert get_dataset("imagenet_train", cfg).labels == [0, 0, 1, 1, 2, 2]
    cfg.DATASETS.FORMAT = "tfrecord"
    with pytest.raises(ConfigError, match="DATASETS.FORMAT.*tfrecord"):
        get_dataset("imagenet_train", cfg)


def test_train_loader_over_lmdb_with_two_workers(image_folder):
    from slimdet.data.build import build_train_loader

    root = os.path.dirname(image_folder)
    write_lmdb(FolderDataset(image_folder), os.path.join(root, "train.lmdb"), progress=False)
    cfg = get_cfg()
    cfg.DATASETS.ROOT, cfg.DATASETS.FORMAT, cfg.DATASETS.TRAIN = root, "lmdb", "imagenet_train"
    cfg.DATALOADER.NUM_WORKERS, cfg.SOLVER.IMS_PER_BATCH = 2, 6
    cfg.INPUT.AUGMENTATION, cfg.INPUT.CROP_SIZE = "MoCoV2", 32
    loader = build_train_loader(cfg)
    it = iter(loader)
    batches = [next(it) for _ in range(loader.iters_per_epoch)]
    assert sorted(i for b in batches for i in b["index"].tolist()) == list(range(18))
    b = batches[0]
    assert [tuple(v.shape) for v in b["views"]] == [(6, 3, 32, 32)] * 2
    assert b["label"].tolist() == [i // 6 for i in b["index"].tolist()]


def test_two_lmdb_datasets_on_one_path_share_the_process_environment(image_folder, tmp_path):
    from slimdet.data.build import build_test_loader, build_train_loader

    out = str(tmp_path / "train.lmdb")
    write_lmdb(FolderDataset(image_folder), out, progress=False)
    first, second = LMDBDataset(out), LMDBDataset(out)
    # py-lmdb refuses a second environment of the same files in one process.
    expected = [(_digest(img), label) for img, label in (first[i] for i in range(len(first)))]
    assert [(_digest(img), label) for img, label in (second[i] for i in range(18))] == expected
    os.symlink(out, tmp_path / "link.lmdb")
    third = LMDBDataset(str(tmp_path / "link.lmdb"))
    first.close()  # closes the shared environment: the others reopen it when they read
    assert (_digest(second[5][0]), second[5][1]) == expected[5] == (_digest(third[5][0]), third[5][1])
    # Workers open their own while the main process holds one.
    loader = torch.utils.data.DataLoader(second, batch_size=6, num_workers=2, collate_fn=_hash_collate)
    assert sorted(x for batch in loader for x in batch) == sorted(expected)
    # The reported run: an LMDB training set and its kNN memory bank with NUM_WORKERS 0.
    cfg = get_cfg()
    cfg.DATASETS.TRAIN = cfg.DATASETS.TEST = f"lmdb:{out}"
    cfg.DATALOADER.NUM_WORKERS, cfg.SOLVER.IMS_PER_BATCH, cfg.INPUT.CROP_SIZE = 0, 6, 16
    assert len(next(iter(build_train_loader(cfg)))["label"]) == 6
    bank = list(build_test_loader(cfg, cfg.DATASETS.TRAIN, batch_size=9))
    assert torch.cat([b["label"] for b in bank]).tolist() == [label for _, label in expected]


def test_a_path_that_is_not_an_lmdb_is_a_one_line_error(image_folder, tmp_path):
    import lmdb
    from slimdet.data.datasets import DatasetError

    text, empty_file, empty_dir = tmp_path / "notes.txt", tmp_path / "zero.lmdb", tmp_path / "e"
    text.write_text("not an lmdb\n" * 100)
    empty_file.write_bytes(b"")
    empty_dir.mkdir()
    foreign = tmp_path / "foreign.lmdb"
    env = lmdb.open(str(foreign))
    with env.begin(write=True) as txn:
        txn.put(b"some", b"thing")
    env.close()
    cfg = get_cfg()
    for path in (image_folder, text, empty_file, empty_dir, foreign):
        cfg.DATASETS.TEST = f"lmdb:{path}"
        with pytest.raises(DatasetError) as err:
            get_dataset(cfg.DATASETS.TEST, cfg)
        message = str(err.value)
        assert message.startswith(f"{path} is not an LMDB made by datasets/prepare_lmdb.py (")
        assert "\n" not in message
