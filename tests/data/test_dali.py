"""DALI pipelines on the CPU (``device_id=None``); skipped when DALI is not installed."""
import os

import pytest
import torch

pytest.importorskip("nvidia.dali")

from slimdet.config import ConfigError, get_cfg  # noqa: E402
from slimdet.data.recipes import views_of  # noqa: E402
from slimdet.data.dali import DaliTrainLoader, build_dali_train_loader, looks_complete  # noqa: E402
from slimdet.data.datasets import FolderDataset, write_lmdb  # noqa: E402

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _loader(ds, recipe="MoCoV2", batch=6, rank=0, world=1, crop=32):
    return DaliTrainLoader(ds, views_of(recipe, crop, (0.2, 1.0)), batch, MEAN, STD,
                           device="cpu", num_threads=1, seed=0, rank=rank, world_size=world)


def _epoch(loader):
    it = iter(loader)
    return [next(it) for _ in range(loader.iters_per_epoch)]


def test_batches_format_and_epoch_coverage(image_folder):
    ds = FolderDataset(image_folder)
    batches = _epoch(_loader(ds))
    assert len(batches) == 3
    for b in batches:
        assert len(b["views"]) == 2
        for v in b["views"]:
            assert v.dtype == torch.float32 and v.shape == (6, 3, 32, 32)
            rgb = v * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)
            assert rgb.min() > -0.01 and rgb.max() < 1.01  # both views normalised
        assert b["label"].dtype == torch.int64 and b["index"].dtype == torch.int64
        assert b["label"].tolist() == [ds.labels[i] for i in b["index"].tolist()]
        assert not torch.equal(b["views"][0], b["views"][1])
    seen = sorted(i for b in batches for i in b["index"].tolist())
    assert seen == list(range(len(ds)))


def test_ranks_read_disjoint_shards(image_folder):
    ds = FolderDataset(image_folder)
    shards = [sorted(i for b in _epoch(_loader(ds, batch=6, rank=r, world=2))
                     for i in b["index"].tolist()) for r in range(2)]
    assert all(len(s) == 9 for s in shards)
    assert sorted(shards[0] + shards[1]) == list(range(len(ds)))


def test_byol_and_linear_eval_pipelines_run(image_folder):
    ds = FolderDataset(image_folder)
    byol = next(iter(_loader(ds, "BYOL", crop=24)))
    assert [tuple(v.shape) for v in byol["views"]] == [(6, 3, 24, 24)] * 2
    lin = next(iter(_loader(ds, "LinearEval", crop=24)))
    assert len(lin["views"]) == 1


def test_truncated_image_skipped_or_named(image_folder, caplog):
    victim = os.path.join(image_folder, "eel", sorted(os.listdir(os.path.join(image_folder, "eel")))[0])
    data = open(victim, "rb").read()
    assert looks_complete(data)
    open(victim, "wb").write(data[: len(data) // 2])
    assert not looks_complete(open(victim, "rb").read())
    batches = _epoch(_loader(FolderDataset(image_folder, on_bad_image="skip")))
    assert sum(len(b["index"]) for b in batches) == 18
    assert victim in caplog.text
    strict = _loader(FolderDataset(image_folder, on_bad_image="error"), batch=18)
    with pytest.raises(Exception, match="eel_000"):
        next(iter(strict))


def test_build_from_config_reads_lmdb(image_folder):
    root = os.path.dirname(image_folder)
    write_lmdb(FolderDataset(image_folder), os.path.join(root, "train.lmdb"), progress=False)
    cfg = get_cfg()
    cfg.DATASETS.ROOT, cfg.DATASETS.FORMAT = root, "lmdb"
    cfg.DATALOADER.BACKEND, cfg.DATALOADER.NUM_WORKERS = "dali", 1
    cfg.SOLVER.IMS_PER_BATCH, cfg.INPUT.CROP_SIZE, cfg.MODEL.DEVICE = 9, 32, "cpu"
    loader = build_dali_train_loader(cfg)
    assert loader.iters_per_epoch == 2
    b = next(iter(loader))
    assert b["views"][0].shape == (9, 3, 32, 32) and b["views"][0].device.type == "cpu"
    cfg.DATASETS.TRAIN = "fashion_mnist_train"
    with pytest.raises(ConfigError, match="on-disk image data set"):
        build_dali_train_loader(cfg)


def test_start_iter_set_after_construction_resumes_sample_order(image_folder):
    """SlimTrainer.resume_or_load sets ``start_iter`` after building the loader."""
    ds = FolderDataset(image_folder)
    uninterrupted = _epoch(_loader(ds))
    resumed = _loader(ds)
    resumed.start_iter = 2
    first = next(iter(resumed))
    assert first["index"].tolist() == uninterrupted[2]["index"].tolist()


def test_training_continues_the_stream_after_the_queue_prefill(image_folder):
    """The MoCo queue prefill reads iterations -2, -1 through the same pipeline; training's
    iterator then gets iteration 0 on, not the prefill's continuation at iteration 2."""
    ds = FolderDataset(image_folder)
    loader = _loader(ds)
    loader.start_iter = -2
    prefill = iter(loader)
    before = [next(prefill)["index"].tolist() for _ in range(2)]
    prefill.close()
    loader.start_iter = 0
    train = iter(loader)
    after = [next(train)["index"].tolist() for _ in range(4)]
    assert before == [loader.indices.batch(it).tolist() for it in (-2, -1)]
    assert after == [loader.indices.batch(it).tolist() for it in range(4)]
    loader.start_iter = 0  # the stream is at iteration 4 now
    with pytest.raises(ValueError, match="one stream, already prefetching from iteration 4"):
        next(iter(loader))
