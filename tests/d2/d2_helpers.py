"""Shared builders for the Detectron2 tests: checkpoints made from a SlimResNet in the test."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict

import torch

from slimdet.modeling.backbone import STAGE_BLOCKS, SlimResNet


def randomized_resnet(depth: int, widths=(1.0, 0.75, 0.5, 0.25), seed: int = 0) -> SlimResNet:
    """A SlimResNet whose every BN has non-trivial affine parameters and running statistics,
    so a conversion that mixes up widths or BN fields changes the features."""
    g = torch.Generator().manual_seed(seed)
    model = SlimResNet(depth=depth, widths=list(widths))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
    return model.eval()


def reference_layout(state: Dict[str, torch.Tensor], depth: int, prefix: str) -> Dict[str, torch.Tensor]:
    """Our names -> the reference implementation's (docs/method.md §8): ``layerS.B`` -> ``features.N``
    (N counts blocks over all stages), ``downsample`` -> ``shortcut``."""
    starts = [sum(STAGE_BLOCKS[depth][:i]) for i in range(4)]
    out = {}
    for k, v in state.items():
        m = re.match(r"layer(\d)\.(\d+)\.(.*)", k)
        if m:
            n = starts[int(m.group(1)) - 1] + int(m.group(2))
            k = f"features.{n}.{m.group(3).replace('downsample.', 'shortcut.')}"
        out[prefix + k] = v
    return out


ROOT = Path(__file__).resolve().parents[2]
SLIM_DEMO = str(ROOT / "configs/detection/mask_rcnn_slim_R_50_FPN_tiny_demo.yaml")
STOCK_CONVERTED = str(ROOT / "configs/detection/mask_rcnn_R_50_FPN_1x_converted.yaml")

# Small enough for two shared CPU cores: R-18, narrow FPN and heads, 96-160 px images.
SMALL = ["MODEL.DEVICE", "cpu", "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
         "MODEL.FPN.OUT_CHANNELS", "64", "MODEL.ROI_BOX_HEAD.FC_DIM", "128",
         "MODEL.ROI_MASK_HEAD.CONV_DIM", "32", "MODEL.ROI_MASK_HEAD.NUM_CONV", "1",
         "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "50",
         "MODEL.RPN.POST_NMS_TOPK_TEST", "30", "TEST.DETECTIONS_PER_IMAGE", "20",
         "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "160",
         "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "160"]
# Stock Detectron2 Mask R-CNN (the converted-width config) on the tiny set, one process, BN.
STOCK_SMALL = SMALL + [
    "MODEL.RESNETS.NORM", "BN", "MODEL.FPN.NORM", "", "MODEL.ROI_BOX_HEAD.NORM", "",
    "MODEL.ROI_BOX_HEAD.NUM_CONV", "0", "MODEL.ROI_BOX_HEAD.NUM_FC", "2", "MODEL.ROI_MASK_HEAD.NORM", "",
    "MODEL.ROI_HEADS.NUM_CLASSES", "25", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
    "DATASETS.TRAIN", "('tiny_coco_train',)", "DATASETS.TEST", "('tiny_coco_val',)",
    "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "1",
    "SOLVER.WARMUP_ITERS", "0", "SOLVER.STEPS", "()", "TEST.PRECISE_BN.ENABLED", "False",
    "SOLVER.CHECKPOINT_PERIOD", "1000000"]


def run_tool(tool: str, *args, cwd=None, **env):
    """``tools/<tool> args`` in a subprocess (this checkout's slimdet via PYTHONPATH)."""
    return subprocess.run([sys.executable, str(ROOT / "tools" / tool), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd or ROOT,
                          env=dict(os.environ, OMP_NUM_THREADS="1", **env))


def one_line_error(res, *needles) -> str:
    """The run failed with exit status 2 and exactly one stderr line holding every needle."""
    assert "Traceback" not in res.stderr + res.stdout, res.stderr[-3000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr[-3000:]
    assert res.returncode == 2, (res.returncode, lines)
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]
