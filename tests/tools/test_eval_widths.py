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
