import subprocess
import sys
from pathlib import Path

from slimdet.modeling.backbone import SlimResNet
from slimdet.evaluation import profile_widths

ROOT = Path(__file__).resolve().parents[2]
# docs/method.md §2: slimmable ResNet-50, 1000-way head, 224x224: params (M) / conv+fc MACs (G).
REFERENCE = {1.0: (25.56, 4.09), 0.75: (14.77, 2.32), 0.5: (6.92, 1.05), 0.25: (1.99, 0.28)}


def test_r50_params_and_flops_per_width():
    rows = profile_widths(SlimResNet(50, list(REFERENCE), num_classes=1000), 224)
    for row in rows:
        params, gmacs = REFERENCE[row["width"]]
        assert abs(row["params"] / 1e6 - params) / params < 0.005
        assert round(row["macs"] / 1e9, 2) == gmacs


def test_analyze_model_tool_prints_table():
    out = subprocess.run(
        [sys.executable, str(ROOT / "tools/analyze_model.py"), "--config-file",
         str(ROOT / "configs/Base-SlimCLR.yaml"), "--latency-batch", "1",
         "--widths", "1.0", "0.6", "0.25", "MODEL.BACKBONE.DEPTH", "18"],
        capture_output=True, text=True, check=True).stdout
    assert "latency" in out and "exported latency" in out
    rows = [line for line in out.splitlines() if line.startswith("|") and "---" not in line][1:]
    assert [r.split("|")[1].strip() for r in rows] == ["1", "0.6", "0.25"]  # any width
    assert all(len(r.split("|")) == 7 for r in rows)  # width, params, FLOPs, two latencies


def test_a_small_network_is_shown_in_m_macs_so_no_width_rounds_to_zero():
    from slimdet.evaluation.profiler import format_profile

    # The demo network (CIFAR-stem ResNet-18, base 16, 32 px): 34.75 / 8.72 / 2.20 M MACs.
    net = SlimResNet(18, [1.0, 0.5, 0.25], base_channels=16, cifar_stem=True, in_channels=1)
    table = format_profile(profile_widths(net, 32, in_channels=1))
    assert "FLOPs (M MACs)" in table
    rows = [line.split("|") for line in table.splitlines()[2:]]
    assert [r[3].strip() for r in rows] == ["34.75", "8.72", "2.2"]
    # A ResNet-50 at 224 px stays in G MACs.
    assert "FLOPs (G MACs)" in format_profile(profile_widths(SlimResNet(50, [1.0, 0.25]), 224))
