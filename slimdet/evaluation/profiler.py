"""Parameters, FLOPs (MACs) and latency of any widths of a slimmable backbone.

FLOPs follow the paper's convention: multiply-accumulates of convolutions and linear layers,
counted by fvcore's ``FlopCountAnalysis`` on the plain network of each width (so the count is
exactly what a deployed sub-network costs). Parameters are counted on the same plain network
with fvcore's ``parameter_count``. Latency is measured twice: the slimmable model run at the
width (slices of the full tensors), and the exported network (BN folded, TorchScript).
"""
from __future__ import annotations

import copy
import time
from typing import Dict, List, Sequence

import torch
from fvcore.nn import FlopCountAnalysis, parameter_count

from ..checkpoint.export import fold_batchnorm
from ..layers import add_widths, normalized_width, recalibrate_bn, uncalibrated_widths, use_width
from ..modeling.backbone import plain_network

COUNTED_OPS = ("conv", "linear")


def count_macs(model: torch.nn.Module, inputs: torch.Tensor) -> int:
    """Conv + linear multiply-accumulates of one forward pass on ``inputs``."""
    flops = FlopCountAnalysis(model, inputs)
    flops.unsupported_ops_warnings(False)
    flops.uncalled_modules_warnings(False)
    by_op = flops.by_operator()
    return int(sum(by_op.get(op, 0) for op in COUNTED_OPS))


@torch.no_grad()
def measure_latency(model: torch.nn.Module, inputs: torch.Tensor, warmup: int = 2,
                    repeats: int = 5) -> float:
    """Median seconds of one forward pass."""
    for _ in range(warmup):
        model(inputs)
    times = []
    for _ in range(repeats):
        if inputs.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        model(inputs)
        if inputs.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def _timed_copy(model: torch.nn.Module, widths: Sequence[float], inputs: torch.Tensor):
    """A copy of ``model`` that runs every width in ``widths`` in eval mode: widths without
    statistics get some from ``inputs`` (what they are does not change the time a forward
    takes; the copy only serves timing)."""
    timed = copy.deepcopy(model).eval()
    add_widths(timed, widths)
    pending = uncalibrated_widths(timed, widths)
    if pending:
        recalibrate_bn(timed, [inputs], 1, widths=pending)
    return timed


def profile_widths(model, image_size: int, in_channels: int = 3,
                   widths: Sequence[float] | None = None, latency_batch: int = 0,
                   device: str = "cpu") -> List[Dict[str, float]]:
    """One row per width (any width in the model's range): width, params, macs and, if
    ``latency_batch`` > 0, ``latency_ms`` (the slimmable model run at that width) and
    ``exported_latency_ms`` (the plain network with BN folded, traced by TorchScript: what
    ``tools/export_width.py --format torchscript`` writes)."""
    model = model.eval()
    widths = [normalized_width(w) for w in (widths or model.widths)]
    rows = []
    x = torch.zeros(1, in_channels, image_size, image_size)
    if latency_batch > 0:
        xb = torch.randn(latency_batch, in_channels, image_size, image_size, device=device)
        timed = _timed_copy(model, widths, xb.cpu()).to(device)
    for w in widths:
        plain = plain_network(model, w).eval()
        row = {"width": w, "params": parameter_count(plain)[""], "macs": count_macs(plain, x)}
        if latency_batch > 0:
            with use_width(timed, w):
                row["latency_ms"] = 1000 * measure_latency(timed, xb)
            with torch.no_grad():
                traced = torch.jit.trace(fold_batchnorm(plain).to(device), xb)
            row["exported_latency_ms"] = 1000 * measure_latency(traced, xb)
        rows.append(row)
    return rows


def format_profile(rows: List[Dict[str, float]], latency_batch: int = 0) -> str:
    from tabulate import tabulate

    # Small networks (the demo's: 2-35 M MACs) in M MACs, so that no width rounds to 0.
    giga = max((r["macs"] for r in rows), default=0) >= 1e9
    unit, scale = ("G", 1e9) if giga else ("M", 1e6)
    headers = ["width", "params (M)", f"FLOPs ({unit} MACs)"]
    if any("latency_ms" in r for r in rows):
        headers += [f"latency (ms, batch {latency_batch})",
                    f"exported latency (ms, batch {latency_batch})"]
    table = []
    for r in rows:
        line = [f"{r['width']:g}", f"{r['params'] / 1e6:.2f}", f"{r['macs'] / scale:.2f}"]
        if "latency_ms" in r:
            line += [f"{r['latency_ms']:.1f}", f"{r['exported_latency_ms']:.1f}"]
        table.append(line)
    return tabulate(table, headers=headers, tablefmt="pipe")
