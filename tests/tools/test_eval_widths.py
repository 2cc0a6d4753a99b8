"""tools/eval_widths.py: many widths of one checkpoint, calibrated where needed, one JSON, a plot."""
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from slimdet.engine import load_cfg
from slimdet.modeling import build_model

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "configs/demo/slimclr_mocov2_demo.yaml"
SMALL = ["MODEL.BACKBONE.BASE_CHANNELS", "8", "MODEL.MOCOV2.HIDDEN_DIM", "32", "MODEL.MOCOV2.DIM",
         "16", "MODEL.MOCOV2.QUEUE_SIZE", "64", "MODEL.DEVICE", "cpu", "DATASETS.TRAIN_SUBSET", "200",
         "DATASETS.TEST_SUBSET", "100", "SOLVER.IMS_PER_BATCH", "50", "TEST.IMS_PER_BATCH", "100"]


def test_eval_widths_writes_every_width_and_plots_them(tmp_path):
    weights = tmp_path / "model.pth"
    torch.save({"model": build_model(load_cfg(str(DEMO), SMALL)).state_dict()}, weights)
    out = tmp_path / "res" / "widths.json"
    plot = tmp_path / "widths.png"
    res = subprocess.run(
        [sys.executable, str(ROOT / "tools/eval_widths.py"), "--config-file", str(DEMO),
         "--weights", str(weights), "--widths", "1.0", "0.7", "0.25", "--calibrate-batches", "2",
         "--output", str(out), "--plot", str(plot), *SMALL],
        capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads(out.read_text())
    assert [r["width"] for r in data["rows"]] == [1.0, 0.7, 0.25]
    assert data["trained_widths"] == [1.0, 0.5, 0.25]
    macs = [r["macs"] for r in data["rows"]]
    assert macs[0] > macs[1] > macs[2] > 0
    assert all(0 <= r["knn_top1"] <= 100 for r in data["rows"])
    assert plot.stat().st_size > 10_000  # a real PNG with three points and labels


def test_a_probes_untrained_width_is_evaluated_only_with_its_own_calibration(tmp_path, capsys):
    """The classifier of a probe's untrained width was trained on BN statistics of its own
    calibration; a table of it under other statistics was written as its accuracy, exit 0 (a
    warning in the log only)."""
    from tests.helpers import run_tool
    from tests.tools.test_tool_outputs import assert_one_line_error

    config = ROOT / "configs/demo/lincls_demo.yaml"
    probe = ["TEST.WIDTHS", "[1.0, 0.6, 0.5, 0.25]", "TEST.CALIBRATE_BATCHES", "2",
             "DATASETS.TRAIN_SUBSET", "200", "SOLVER.IMS_PER_BATCH", "50"]
    weights = tmp_path / "probe.pth"
    torch.save({"model": build_model(load_cfg(str(config), probe)).state_dict()}, weights)
    common = ["--config-file", config, "--weights", weights, "--widths", "1.0", "0.6",
              *probe, "DATASETS.TEST_SUBSET", "100"]
    other, own = tmp_path / "other.json", tmp_path / "own.json"
    refused = run_tool(capsys, "eval_widths", common + ["--calibrate-batches", "1",
                                                        "--output", other])
    assert_one_line_error(refused, "--widths 1 0.6 with --calibrate-batches 1",
                          "trained on BN statistics estimated with TEST.CALIBRATE_BATCHES 2 "
                          "(now 1)")
    assert not other.exists()
    res = run_tool(capsys, "eval_widths", common + ["--output", own])  # the probe's own: 2
    assert res.returncode == 0, res.stderr[-3000:]
    assert [r["width"] for r in json.loads(own.read_text())["rows"]] == [1.0, 0.6]
