"""Recipe configs match SPEC §4 and start training from ImageNet-style folders."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from slimdet.engine import load_cfg

ROOT = Path(__file__).resolve().parents[1]
SLIM = ["slimclr_mocov2_200ep", "slimclr_mocov2_800ep", "slimclr_mocov3_300ep", "slim_simclr_100ep"]
PLAIN = ["mocov2_r50_200ep", "mocov3_r50_300ep", "simclr_r50_100ep"]


def cfg_of(name):
    return load_cfg(str(ROOT / "configs" / f"{name}.yaml"))


@pytest.mark.parametrize("name", SLIM + PLAIN)
def test_recipe_hyper_parameters(name):
    cfg = cfg_of(name)
    s = cfg.SOLVER
    assert s.IMS_PER_BATCH == 1024 and s.AMP.ENABLED and cfg.MODEL.BACKBONE.DEPTH == 50
    assert cfg.MODEL.WIDTHS == ([1.0, 0.75, 0.5, 0.25] if name in SLIM else [1.0])
    if cfg.MODEL.METHOD == "MoCoV2":
        assert (s.OPTIMIZER, s.BASE_LR, s.WEIGHT_DECAY, s.WARMUP_EPOCHS) == ("SGD", 0.2, 1e-4, 10.0)
        assert cfg.MODEL.MOCO.QUEUE_SIZE == 65536 and cfg.MODEL.MOCO.TEMPERATURE == 0.2
        assert cfg.MODEL.MOCO.MOMENTUM == 0.999 and cfg.INPUT.AUGMENTATION == "MoCoV2"
        assert cfg.MODEL.SLIM.DISTILL_TEMPERATURE == 5.0
    elif cfg.MODEL.METHOD == "MoCoV3":
        assert (s.OPTIMIZER, s.BASE_LR, s.WEIGHT_DECAY, s.EPOCHS) == ("LARS", 1.2, 1e-6, 300)
        assert s.WEIGHT_DECAY_NORM == 0 and s.WEIGHT_DECAY_BIAS == 0 and cfg.MODEL.SYNC_BN
        assert cfg.INPUT.AUGMENTATION == "BYOL" and cfg.MODEL.SLIM.DISTILL_TEMPERATURE == 1.0
    else:
        assert (s.OPTIMIZER, s.BASE_LR, s.WEIGHT_DECAY, s.EPOCHS) == ("LARS", 2.4, 1e-6, 100)
        assert s.WARMUP_EPOCHS == 10.0 and cfg.MODEL.SIMCLR.TEMPERATURE == 0.1
        assert cfg.INPUT.MIN_SCALE == 0.08 and cfg.MODEL.SYNC_BN
    if name in SLIM:
        assert cfg.MODEL.SLIM.SLOW_START_EPOCH == s.EPOCHS // 2
        assert cfg.MODEL.SLIM.LOSS_WEIGHTING == "size" and cfg.MODEL.SLIM.DISTILL
    if name == "slimclr_mocov3_300ep":
        assert s.LR_SCHEDULER_NAME == "SlowStartSwapCosine" and s.BASE_LR_AFTER_SLOW_START == 3.2


def test_every_config_file_loads():
    files = [p for p in ROOT.glob("configs/**/*.yaml") if "detection" not in p.parts]
    assert len(files) >= 12
    for f in files:
        load_cfg(str(f))


def _image_folder(root: Path, per_class: int):
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", 2)):
        for c in ("n01440764", "n01443537"):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 255, (40 + 4 * i, 56, 3), dtype=np.uint8)
                Image.fromarray(img).save(d / f"img_{i}.JPEG")


def test_mocov2_800ep_recipe_trains_from_an_image_folder(tmp_path):
    _image_folder(tmp_path / "imagenet", 8)
    cmd = [sys.executable, str(ROOT / "tools/train_net.py"), "--config-file",
           str(ROOT / "configs/slimclr_mocov2_800ep.yaml"),
           "DATASETS.ROOT", str(tmp_path / "imagenet"), "MODEL.BACKBONE.DEPTH", "18",
           "SOLVER.IMS_PER_BATCH", "8", "INPUT.CROP_SIZE", "32", "SOLVER.MAX_ITER", "2",
           "DATALOADER.NUM_WORKERS", "1", "MODEL.MOCO.QUEUE_SIZE", "64", "TEST.EVALUATORS", "[]",
           "MODEL.SLIM.SLOW_START_EPOCH", "0", "OUTPUT_DIR", str(tmp_path / "out")]
    res = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "out" / "model_final.pth").exists()
    log = (tmp_path / "out" / "log.txt").read_text()
    assert "loss_distill/w0.25" in log  # all four widths trained


def test_missing_imagenet_root_is_one_line(tmp_path):
    cmd = [sys.executable, str(ROOT / "tools/train_net.py"), "--config-file",
           str(ROOT / "configs/slimclr_mocov2_800ep.yaml"), "DATASETS.ROOT", str(tmp_path / "no"),
           "OUTPUT_DIR", str(tmp_path / "out")]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 2
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and str(tmp_path / "no" / "train") in last
