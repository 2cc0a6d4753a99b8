"""Recipe configs match docs/method.md §4 and docs/schedules.md (the LR at every iteration, the
base-LR swap at the slow start, baseline init, probe precision and reporting), and start
training from ImageNet-style folders."""
import logging
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from slimdet.engine import load_cfg
from slimdet.solver import EpochClock, base_lr, build_lr_schedule

ROOT = Path(__file__).resolve().parents[2]
SLIM = ["slimclr_mocov2_200ep", "slimclr_mocov2_800ep", "slimclr_mocov3_300ep", "slim_simclr_100ep"]
CONT = [f"{n}_cont" for n in SLIM]
PLAIN = ["mocov2_r50_200ep", "mocov3_r50_300ep", "simclr_r50_100ep"]
PROBES = ["lincls/mocov2", "lincls/mocov3", "lincls/simclr"]
IMAGENET_ITERS_PER_EPOCH = 1281167 // 1024  # 1251: the sampler drops the last partial batch


def cfg_of(name):
    return load_cfg(str(ROOT / "configs" / f"{name}.yaml"))


@pytest.mark.parametrize("name", SLIM + CONT + PLAIN)
def test_recipe_hyper_parameters(name):
    cfg = cfg_of(name)
    s = cfg.SOLVER
    assert s.IMS_PER_BATCH == 1024 and s.AMP.ENABLED and cfg.MODEL.BACKBONE.DEPTH == 50
    assert s.LR_SCHEDULER_NAME == "WarmupCosine"
    assert cfg.MODEL.WIDTHS == ([1.0] if name in PLAIN else [1.0, 0.75, 0.5, 0.25])
    if cfg.MODEL.METHOD == "MoCoV2":
        assert (s.OPTIMIZER, s.BASE_LR, s.WEIGHT_DECAY, s.WARMUP_EPOCHS) == ("SGD", 0.2, 1e-4, 10.0)
        # Weight decay on every parameter, as the reference.
        assert s.WEIGHT_DECAY_NORM == s.WEIGHT_DECAY_BIAS == 1e-4
        assert cfg.MODEL.MOCOV2.QUEUE_SIZE == 65536 and cfg.MODEL.MOCOV2.TEMPERATURE == 0.2
        assert cfg.MODEL.MOCOV2.MOMENTUM == 0.999 and cfg.INPUT.AUGMENTATION == "MoCoV2"
        assert cfg.MODEL.SLIM.DISTILL_TEMPERATURE == 5.0
    elif cfg.MODEL.METHOD == "MoCoV3":
        assert (s.OPTIMIZER, s.BASE_LR, s.WEIGHT_DECAY, s.EPOCHS) == ("LARS", 1.2, 1e-6, 300)
        assert s.WARMUP_EPOCHS == pytest.approx(0.033 * 300)  # the script's proportion, not 10
        assert s.WEIGHT_DECAY_NORM == 0 and s.WEIGHT_DECAY_BIAS == 0 and cfg.MODEL.SYNC_BN
        assert cfg.INPUT.AUGMENTATION == "BYOL" and cfg.MODEL.SLIM.DISTILL_TEMPERATURE == 1.0
    else:
        assert (s.OPTIMIZER, s.BASE_LR, s.WEIGHT_DECAY, s.EPOCHS) == ("LARS", 2.4, 1e-6, 100)
        assert s.WARMUP_EPOCHS == 0.1 * s.EPOCHS and cfg.MODEL.SIMCLR.TEMPERATURE == 0.1
        assert cfg.INPUT.MIN_SCALE == 0.08 and cfg.MODEL.SYNC_BN
    if name not in PLAIN:
        assert cfg.MODEL.SLIM.SLOW_START_EPOCH == s.EPOCHS // 2
        assert cfg.MODEL.SLIM.LOSS_WEIGHTING == "size" and cfg.MODEL.SLIM.DISTILL
    # The slimmable networks and MoCo v3's baseline zero-init each block's last BN; the plain
    # MoCo v2 and SimCLR baselines use torchvision's default init (docs/schedules.md).
    zero_init = name not in ("mocov2_r50_200ep", "simclr_r50_100ep")
    assert cfg.MODEL.BACKBONE.ZERO_INIT_RESIDUAL == zero_init
    # The paper-named configs replace the base LR at the slow start as the reference scripts do;
    # the _cont variants keep it.
    swap = {"slimclr_mocov3_300ep": 3.2}.get(name, 1e-4) if name in SLIM else 0.0
    assert s.BASE_LR_AFTER_SLOW_START == swap


def test_plain_baseline_init_reaches_the_network():
    from slimdet.modeling.backbone import build_backbone

    for name, zero in (("mocov2_r50_200ep", False), ("slimclr_mocov2_200ep", True)):
        cfg = cfg_of(name)
        cfg.MODEL.BACKBONE.DEPTH = 18
        gammas = [b.last_bn.bn[0].weight for stage in build_backbone(cfg).stages for b in stage]
        assert all(bool((g == 0).all()) == zero for g in gammas), name


def _documented_lr(i, N, W, b, S=None, b_after=None):
    """docs/schedules.md, "The LR of iteration i" (WarmupCosine + base-LR swap), vectorised."""
    i = np.asarray(i, dtype=np.float64)
    base = np.where(i >= S, b_after, b) if b_after else np.full_like(i, b)
    cosine = 0.5 * (1 + np.cos(np.pi * (i - W) / (N - W)))
    return base * np.where(i <= W, i / W, cosine)


# Recipe -> (base LR, its replacement at S, LR expected at S) from the reference scripts
# (docs/schedules.md); the _cont variants keep the base LR.
REFERENCE_AT_S = {"slimclr_mocov2_200ep": (0.2, 1e-4, 5.4e-5),
                  "slimclr_mocov2_800ep": (0.2, 1e-4, 5.1e-5),
                  "slimclr_mocov3_300ep": (1.2, 3.2, 1.686),
                  "slim_simclr_100ep": (2.4, 1e-4, 5.9e-5)}


@pytest.mark.parametrize("name", SLIM + CONT)
def test_recipe_lr_at_every_iteration_equals_the_documented_schedule(name):
    cfg = cfg_of(name)
    b, b_after, at_s = REFERENCE_AT_S[name.replace("_cont", "")]
    if name in CONT:
        b_after = None
    clock = EpochClock.from_config(cfg, IMAGENET_ITERS_PER_EPOCH)
    N, E = clock.max_iter, cfg.SOLVER.EPOCHS
    W = cfg.SOLVER.WARMUP_EPOCHS * IMAGENET_ITERS_PER_EPOCH
    S = cfg.MODEL.SLIM.SLOW_START_EPOCH * IMAGENET_ITERS_PER_EPOCH
    assert N == E * IMAGENET_ITERS_PER_EPOCH and base_lr(cfg) == b
    schedule = build_lr_schedule(cfg, clock)
    # What Detectron2's LRMultiplier sets at iteration i: base LR x schedule(i / N).
    ours = np.array([b * schedule(i / N) for i in range(N)])
    documented = _documented_lr(np.arange(N), N, W, b, S, b_after)
    in_force = np.where(np.arange(N) >= S, b_after or b, b)
    assert np.abs(ours - documented).max() / b <= 1e-3
    assert (np.abs(ours - documented) / in_force).max() <= 1e-3

    # The iterations that matter.
    end_warmup = math.floor(W)
    assert ours[0] == 0.0
    assert ours[end_warmup] == pytest.approx(b * end_warmup / W, rel=1e-9)
    assert ours[end_warmup] == pytest.approx(b, rel=1e-4)
    cos_before = 0.5 * (1 + math.cos(math.pi * (S - 1 - W) / (N - W)))
    assert ours[S - 1] == pytest.approx(b * cos_before, rel=1e-9)
    if b_after:
        assert ours[S] == pytest.approx(at_s, rel=0.01)  # docs/schedules.md's table
    else:
        assert ours[S] == pytest.approx(ours[S - 1], rel=1e-4)  # the cosine just continues
    assert 0 <= ours[N - 1] <= 1e-9 * b


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
           "DATALOADER.NUM_WORKERS", "1", "MODEL.MOCOV2.QUEUE_SIZE", "64", "TEST.EVALUATORS", "[]",
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


# ------------------------------------------------------------------ probes and their reporting
@pytest.mark.parametrize("name", PROBES)
def test_probe_configs_train_in_fp32_and_report_best_and_last(name):
    cfg = cfg_of(name)
    s = cfg.SOLVER
    assert not s.AMP.ENABLED and cfg.MODEL.METHOD == "LinearProbe"
    assert cfg.TEST.EVAL_PERIOD == 0 and cfg.TEST.EVAL_PERIOD_EPOCHS == 2.0
    assert cfg.TEST.BEST_METRIC == "top1" and s.IMS_PER_BATCH == 1024 and s.WARMUP_EPOCHS == 0
    expected = {"lincls/mocov2": ("WarmupMultiStep", 60.0, 100, 0.0, [60, 80]),
                "lincls/mocov3": ("WarmupCosine", 0.4, 90, 0.0, []),
                "lincls/simclr": ("WarmupCosine", 0.4, 90, 1e-6, [])}[name]
    assert (s.LR_SCHEDULER_NAME, s.BASE_LR, s.EPOCHS, s.WEIGHT_DECAY, list(s.STEPS)) == expected
    assert s.WEIGHT_DECAY_BIAS == s.WEIGHT_DECAY


class _Trainer:
    def __init__(self, storage, max_iter):
        self.storage, self.max_iter, self.iter = storage, max_iter, 0


def test_evaluation_hook_keeps_the_best_full_width_evaluation_across_a_resume():
    from detectron2.utils.events import EventStorage

    from slimdet.engine.hooks import EvaluationHook

    # Full-width top-1 peaks at the 2nd evaluation, ties it at the 4th, ends lower.
    script = iter([{"top1/w1": 50.0, "top1/w0.5": 40.0, "top5/w1": 80.0},
                   {"top1/w1": 60.0, "top1/w0.5": 45.0, "top5/w1": 85.0},
                   {"top1/w1": 55.0, "top1/w0.5": 50.0, "top5/w1": 86.0},
                   {"top1/w1": 60.0, "top1/w0.5": 47.0, "top5/w1": 87.0},
                   {"top1/w1": 58.0, "top1/w0.5": 52.0, "top5/w1": 88.0}])
    evaluated = []

    def evaluate():
        evaluated.append(storage.iter)
        return next(script)

    hook = EvaluationHook(2.5, evaluate, best_metric="top1")
    with EventStorage() as storage:
        hook.trainer = _Trainer(storage, max_iter=13)
        for i in range(8):
            hook.trainer.iter = storage.iter = i
            hook.after_step()
        # Steps 3, 5 and 8 reach multiples of 2.5 (2.5, 5, 7.5): after iterations 2, 4, 7.
        assert evaluated == [2, 4, 7]
        assert hook.results["top1_best/w1"] == 60.0 and hook.results["best_iter"] == 4
        assert hook.results["top1_best/w0.5"] == 45.0 and hook.results["top1/w1"] == 55.0

        # A resumed run gets the best evaluation back from the checkpointed hook state.
        resumed = EvaluationHook(2.5, evaluate, best_metric="top1")
        resumed.load_state_dict(hook.state_dict())
        resumed.trainer = hook.trainer
        for i in range(8, 13):
            resumed.trainer.iter = storage.iter = i
            resumed.after_step()  # iteration 9 reaches 10; the last one is after_train's
        assert resumed.results["top1_best/w1"] == 60.0 and resumed.results["best_iter"] == 9
        assert resumed.results["top1_best/w0.5"] == 47.0  # the later of two equal evaluations
        resumed.trainer.iter = storage.iter = 13  # as Detectron2's after_train sets them
        resumed.after_train()
        assert evaluated == [2, 4, 7, 9, 13]
        assert resumed.results["top1/w1"] == 58.0 and resumed.results["top1_best/w1"] == 60.0
        assert storage.latest()["top1_best/w0.5"][0] == 47.0


def test_evaluation_hook_warns_when_the_best_metric_is_not_reported(caplog):
    from detectron2.utils.events import EventStorage

    from slimdet.engine.hooks import EvaluationHook

    hook = EvaluationHook(0, lambda: {"knn_top1/w1": 50.0}, best_metric="top1")
    with EventStorage() as storage:
        hook.trainer = _Trainer(storage, max_iter=1)
        hook.after_train()
    assert hook.results == {"knn_top1/w1": 50.0}
    assert "TEST.BEST_METRIC 'top1': no 'top1/w1' among the results (knn_top1/w1)" in caplog.text


# ---------------------------------------------------------------- shortened runs (MAX_ITER)
# The demo network at base width 8 on 16 px crops; 100 training images (10 per class) at batch
# 25: 4 iterations per epoch.
SMALL = ["DATASETS.TRAIN_SUBSET", 100, "DATASETS.TEST_SUBSET", 100, "SOLVER.IMS_PER_BATCH", 25,
         "MODEL.BACKBONE.BASE_CHANNELS", 8, "INPUT.CROP_SIZE", 16, "MODEL.DEVICE", "cpu",
         "TEST.IMS_PER_BATCH", 100, "LOG_PERIOD", 1, "SEED", 0]


def _train(config, out, opts):
    import json

    from slimdet.engine.trainer import SlimTrainer

    cfg = load_cfg(str(ROOT / "configs" / config), SMALL + opts + ["OUTPUT_DIR", str(out)])
    os.makedirs(out, exist_ok=True)
    trainer = SlimTrainer(cfg)
    trainer.resume_or_load(resume=False)
    results = trainer.train()
    records = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    return results, records


def _per_iteration(records, key):
    return {r["iteration"]: r[key] for r in records if key in r}


def test_max_iter_runs_the_recipe_shortened(tmp_path):
    """800 epochs of 4 iterations run for 8: the warm-up (200 epochs), the slow start (400) and
    the base-LR swap there fall at the same fractions of the 8 iterations (docs/schedules.md)."""
    results, records = _train("demo/slimclr_mocov2_demo.yaml", tmp_path, [
        "SOLVER.EPOCHS", 800, "SOLVER.MAX_ITER", 8, "SOLVER.WARMUP_EPOCHS", 200.0,
        "MODEL.SLIM.SLOW_START_EPOCH", 400, "SOLVER.BASE_LR_AFTER_SLOW_START", 1e-4,
        "MODEL.MOCOV2.QUEUE_SIZE", 128, "TEST.EVALUATORS", ["KNNEvaluator"]])
    lr, widths = _per_iteration(records, "lr"), _per_iteration(records, "num_widths")
    assert sorted(lr) == list(range(8))
    expected = _documented_lr(np.arange(8), N=8, W=2, b=0.03, S=4, b_after=1e-4)
    assert [lr[i] for i in range(8)] == pytest.approx(list(expected), rel=1e-6, abs=1e-12)
    assert lr[0] < lr[1] < lr[2] == pytest.approx(0.03)  # the warm-up rises
    assert [widths[i] for i in range(8)] == [1] * 4 + [3] * 4
    assert {"knn_top1/w1", "knn_top1/w0.5", "knn_top1/w0.25"} <= set(results)


def test_every_periodic_evaluation_reaches_metrics_json_whatever_the_log_period(tmp_path):
    # The writers keep only each key's latest value: evaluations between two writes (every
    # step here, a write every 10) were lost from metrics.json until each is written at once.
    _, records = _train("demo/slimclr_mocov2_demo.yaml", tmp_path, [
        "SOLVER.MAX_ITER", 6, "MODEL.SLIM.SLOW_START_EPOCH", 0, "TEST.EVAL_PERIOD", 1,
        "LOG_PERIOD", 10, "MODEL.MOCOV2.QUEUE_SIZE", 128, "TEST.EVALUATORS", ["KNNEvaluator"]])
    assert sorted(_per_iteration(records, "knn_top1/w0.25")) == [0, 1, 2, 3, 4, 6]
    assert sorted(_per_iteration(records, "total_loss")) == [0, 1, 2, 3, 4, 5]


def test_widths_that_have_not_trained_are_not_reported(tmp_path, caplog):
    # Periodic evaluations before the slow start (iteration 4 of 8) report the full width only.
    _, records = _train("demo/slimclr_mocov2_demo.yaml", tmp_path / "periodic", [
        "SOLVER.EPOCHS", 2, "MODEL.SLIM.SLOW_START_EPOCH", 1, "TEST.EVAL_PERIOD", 2,
        "MODEL.MOCOV2.QUEUE_SIZE", 128, "TEST.EVALUATORS", ["KNNEvaluator"]])
    # metrics.json records the last evaluation under iteration max_iter (Detectron2's after_train).
    assert sorted(_per_iteration(records, "knn_top1/w1")) == [1, 3, 5, 8]
    assert sorted(_per_iteration(records, "knn_top1/w0.5")) == [5, 8]
    assert sorted(_per_iteration(records, "knn_top1/w0.25")) == [5, 8]
    assert "Widths 0.5, 0.25 have not trained yet (slow start): not evaluated" in caplog.text

    # A run that ends before its slow start: a warning at the start, the full width only at the end.
    caplog.clear()
    results, _ = _train("demo/slimclr_mocov2_demo.yaml", tmp_path / "never", [
        "SOLVER.EPOCHS", 2, "SOLVER.MAX_ITER", 2, "MODEL.SLIM.SLOW_START_EPOCH", 2,
        "MODEL.MOCOV2.QUEUE_SIZE", 128, "TEST.EVALUATORS", ["KNNEvaluator"]])
    assert set(results) == {"knn_top1/w1"}
    assert "only width 1 trains in this run" in caplog.text


def test_shortened_probe_steps_and_reports_best_and_last(tmp_path, caplog):
    """The MoCo v2 probe's schedule (steps at epochs 60 and 80 of 100) in a 10-iteration run,
    evaluated every 20 epochs (2 iterations): no scheduler error, the steps at iterations 6 and 8,
    and the best full-width evaluation reported beside the last one."""
    caplog.set_level(logging.INFO, logger="slimdet")
    results, records = _train("demo/lincls_demo.yaml", tmp_path, [
        "MODEL.WEIGHTS", "", "SOLVER.EPOCHS", 100,
        "SOLVER.MAX_ITER", 10, "SOLVER.LR_SCHEDULER_NAME", "WarmupMultiStep",
        "SOLVER.STEPS", [60, 80], "TEST.EVAL_PERIOD_EPOCHS", 20.0, "TEST.BEST_METRIC", "top1"])
    lr = _per_iteration(records, "lr")
    assert [lr[i] for i in range(10)] == pytest.approx([1.0] * 6 + [0.1] * 2 + [0.01] * 2)
    top1 = _per_iteration(records, "top1/w1")
    assert sorted(top1) == [1, 3, 5, 7, 10]  # the last one under max_iter, as Detectron2 logs it
    best_iter = max(sorted(top1), key=lambda i: (top1[i], i))
    assert results["best_iter"] == best_iter and results["top1_best/w1"] == max(top1.values())
    for w in ("1", "0.5", "0.25"):
        assert results[f"top1/w{w}"] == _per_iteration(records, f"top1/w{w}")[10]
        assert results[f"top1_best/w{w}"] == _per_iteration(records, f"top1/w{w}")[best_iter]
        assert results[f"top5_best/w{w}"] == _per_iteration(records, f"top5/w{w}")[best_iter]
    assert _per_iteration(records, "top1_best/w0.25")[10] == results["top1_best/w0.25"]
    assert "top1_best" in caplog.text.split("Last evaluation and the best one")[-1]
    # The 0-based iteration of metrics.json, and the steps it means, which a reader counts.
    best = re.search(r"the best one \(iteration (\d+), i\.e\. after (\d+) of \d+ steps",
                     caplog.text)
    assert best and int(best.group(2)) == int(best.group(1)) + 1
