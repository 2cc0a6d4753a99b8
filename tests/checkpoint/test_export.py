"""Export of any width: BN folded into the convolutions, TorchScript and ONNX files that run
without slimdet and agree with the eager model, the tool's checks and one-line errors."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from slimdet.checkpoint.export import (deployable_width, eager_output, export_width_state_dict,
                                       run_exported, write_onnx, write_torchscript)
from slimdet.layers import WidthAware, add_widths, recalibrate_bn
from slimdet.modeling import build_model
from tests.helpers import tiny_cfg

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, OMP_NUM_THREADS="1")
HAVE_ONNX = all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime"))
needs_onnx = pytest.mark.skipif(not HAVE_ONNX, reason="onnx / onnxruntime not installed "
                                "(optional extra: pip install -e .[onnx])")
FORMATS = ["torchscript", pytest.param("onnx", marks=needs_onnx)]


def _calibrated(method_name, width=0.6):
    cfg = tiny_cfg(method_name)
    cfg.MODEL.NUM_CLASSES = 10
    method = build_model(cfg).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # BN parameters and statistics far from the identity
        for m in method.backbone.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.5, 0.5, generator=g)
    add_widths(method.backbone, [width])
    batches = [torch.randn(8, 1, 16, 16, generator=g) * 2 + 1 for _ in range(2)]
    recalibrate_bn(method.backbone, batches, 2)  # every width: no statistic is the identity
    return method


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("method_name,width", [("MoCoV2", 0.6), ("Supervised", 0.5)])
def test_exported_file_equals_the_eager_model(fmt, method_name, width, tmp_path):
    method = _calibrated(method_name)
    model = deployable_width(method, width)
    kinds = {type(m) for m in model.modules()}
    assert not any(issubclass(k, torch.nn.modules.batchnorm._BatchNorm) for k in kinds)  # folded
    assert not any(isinstance(m, WidthAware) for m in model.modules())  # plain torch layers
    path = str(tmp_path / "new" / f"w.{fmt}")  # the folder does not exist yet
    (write_onnx if fmt == "onnx" else write_torchscript)(model, torch.randn(2, 1, 16, 16), path)
    x = torch.randn(5, 1, 16, 16)  # another batch size than the traced one
    want = eager_output(method, width, x)
    got = run_exported(path, fmt, x)
    assert got.shape == want.shape == ((5, 10) if method_name == "Supervised" else (5, 38 if width == 0.6 else 32))
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-4)


def test_torchvision_state_of_an_untrained_width_has_its_calibrated_statistics():
    method = _calibrated("Supervised")
    state = export_width_state_dict(method, 0.6)
    assert state["conv1.weight"].shape[0] == int(8 * 0.6)
    assert torch.equal(state["bn1.running_mean"], method.backbone.bn1.statistics_at(0.6).running_mean)
    assert torch.equal(state["bn1.weight"], method.backbone.bn1.bn[0].weight[:4])  # from width 1.0
    assert state["fc.weight"].shape == (10, int(64 * 0.6))


def _run(*args):
    return subprocess.run([sys.executable, str(ROOT / "tools/export_width.py"), *map(str, args)],
                          capture_output=True, text=True, env=ENV)


SMALL = ["MODEL.BACKBONE.BASE_CHANNELS", "8", "MODEL.MOCOV2.HIDDEN_DIM", "32", "MODEL.MOCOV2.DIM",
         "16", "MODEL.MOCOV2.QUEUE_SIZE", "64", "MODEL.DEVICE", "cpu", "DATASETS.TRAIN_SUBSET", "200",
         "SOLVER.IMS_PER_BATCH", "50"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_tool_writes_a_calibrated_untrained_width(fmt, tmp_path):
    from slimdet.engine import load_cfg

    cfg = load_cfg(str(ROOT / "configs/demo/slimclr_mocov2_demo.yaml"), SMALL)
    weights = tmp_path / "model.pth"
    torch.save({"model": build_model(cfg).state_dict()}, weights)
    common = ["--config-file", ROOT / "configs/demo/slimclr_mocov2_demo.yaml", "--weights", weights,
              "--width", "0.6", "--format", fmt]
    refused = _run(*common, "--output", tmp_path / "x", *SMALL)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "--calibrate-batches" in refused.stderr.strip().splitlines()[-1]
    out = tmp_path / "deploy" / f"w0.6.{fmt}"
    res = _run(*common, "--calibrate-batches", "2", "--output", out, *SMALL)
    assert res.returncode == 0, res.stderr[-3000:]
    assert out.is_file() and "max |difference| to the eager model" in res.stdout
    assert run_exported(str(out), fmt, torch.randn(3, 1, 32, 32)).shape == (3, int(64 * 0.6))
