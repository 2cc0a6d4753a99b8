#!/usr/bin/env python
"""Cost of one SlimCLR-MoCo v2 training step relative to plain MoCo v2, side by side on the same
batch in one run.

Reports the time ratio next to its FLOPs bound and the peak-memory ratio of our per-width
backward next to one graph over all widths. On CUDA, memory is ``max_memory_allocated``; on the
CPU it is the peak of bytes held by autograd's saved tensors (activations), measured with
``torch.autograd.graph.saved_tensors_hooks`` — the part of memory that grows with the widths.

    python benchmarks/step_cost.py                       # CPU defaults: R-50 at 64 px, batch 16
    python benchmarks/step_cost.py --device cuda --size 224 --batch 64 --amp
"""
from __future__ import annotations

import argparse
import contextlib
import time
from typing import Callable, Dict

import torch

from slimdet.config import get_cfg
from slimdet.evaluation.profiler import count_macs
from slimdet.layers import use_width
from slimdet.modeling import build_model
from slimdet.modeling.backbone import extract_subnet
from slimdet.modeling.slim import WidthLoop


class SavedTensorMeter:
    """Peak bytes of tensors saved for backward (activation memory of the autograd graph)."""

    def __init__(self, model: torch.nn.Module):
        self.current = self.peak = 0
        self._seen: Dict[int, int] = {}
        # Weights and buffers (the queue) are saved by reference, not allocated by the graph.
        self._static = {t.untyped_storage().data_ptr()
                        for t in list(model.parameters()) + list(model.buffers())}

    def _pack(self, t: torch.Tensor):
        key = t.untyped_storage().data_ptr()
        if key not in self._seen and key not in self._static:
            n = t.untyped_storage().nbytes()
            self._seen[key] = n
            self.current += n
            self.peak = max(self.peak, self.current)
        return (key, t)

    def _unpack(self, packed):
        return packed[1]

    def release_all(self) -> None:
        """Called after a backward: the graph's saved tensors are freed."""
        self._seen.clear()
        self.current = 0

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)


def make_cfg(widths, depth: int, queue: int):
    cfg = get_cfg()
    cfg.MODEL.METHOD = "MoCoV2"
    cfg.MODEL.WIDTHS = list(widths)
    cfg.MODEL.BACKBONE.DEPTH = depth
    cfg.MODEL.MOCOV2.QUEUE_SIZE = queue
    return cfg


def measure(step: Callable[[], None], device: torch.device, iters: int, meter: SavedTensorMeter):
    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    meter.peak = 0
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    mem = torch.cuda.max_memory_allocated() if device.type == "cuda" else meter.peak
    return sorted(times)[len(times) // 2], mem


def student_time_per_width(cfg, data, device, autocast, fmt, iters: int) -> Dict[float, float]:
    """Median seconds of the query encoder's forward + backward alone at each width."""
    method = build_model(cfg).to(device, memory_format=fmt).train()
    out = {}
    for w in cfg.MODEL.WIDTHS:
        def step():
            with use_width(method, w), autocast():
                method(data).float().sum().backward()
        out[w] = measure(step, device, iters, SavedTensorMeter(method))[0]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--depth", type=int, default=50)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--queue", type=int, default=4096)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", action="store_true", help="fp16 autocast (CUDA) / bf16 (CPU)")
    p.add_argument("--channels-last", action="store_true", help="NHWC tensors (faster convs on GPU)")
    args = p.parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True  # as the trainer sets it
    widths = [1.0, 0.75, 0.5, 0.25]

    def autocast():
        if not args.amp:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16)

    g = torch.Generator().manual_seed(0)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    data = {"views": [torch.randn(args.batch, 3, args.size, args.size, generator=g).to(device)
                      .contiguous(memory_format=fmt) for _ in range(2)]}
    results = {}
    for name, ws, mode in [("plain MoCo v2", [1.0], "per_width"),
                           ("SlimCLR-MoCo v2 (per-width backward)", widths, "per_width"),
                           ("SlimCLR-MoCo v2 (one graph)", widths, "one_graph")]:
        torch.manual_seed(0)
        cfg = make_cfg(ws, args.depth, args.queue)
        method = build_model(cfg).to(device, memory_format=fmt).train()
        loop = WidthLoop.from_config(cfg)
        opt = torch.optim.SGD(method.parameters(), lr=0.01, momentum=0.9)
        meter = SavedTensorMeter(method)

        def backward(loss):
            loss.backward()
            meter.release_all()

        def step():
            opt.zero_grad(set_to_none=True)
            with meter.hooks():
                if mode == "per_width":
                    loop.run(method, data, backward, autocast)
                else:
                    loop.summed_loss(method, data, autocast).backward()
                    meter.release_all()
            opt.step()

        results[name] = measure(step, device, args.iters, meter)
        del method, opt
        if device.type == "cuda":
            torch.cuda.empty_cache()

    per_width = student_time_per_width(make_cfg(widths, args.depth, 16), data, device, autocast,
                                       fmt, args.iters)
    # FLOPs bound: student forward+backward (~3x forward) at every width + one key forward.
    backbone = build_model(make_cfg(widths, args.depth, 16)).backbone.eval()
    x = torch.zeros(1, 3, args.size, args.size)
    macs = [count_macs(extract_subnet(backbone, w), x) for w in widths]
    bound = (3 * sum(macs) + macs[0]) / (4 * macs[0])

    base_t, base_m = results["plain MoCo v2"]
    slim_t, slim_m = results["SlimCLR-MoCo v2 (per-width backward)"]
    _, graph_m = results["SlimCLR-MoCo v2 (one graph)"]
    print("student forward+backward per width (ms): " + ", ".join(
        f"{w:g}: {t * 1000:.1f} ({t / per_width[1.0]:.2f}x time, {m / macs[0]:.2f}x MACs)"
        for (w, t), m in zip(per_width.items(), macs)))
    mem_kind = "CUDA max_memory_allocated" if device.type == "cuda" else "autograd saved tensors"
    print(f"ResNet-{args.depth}, {args.size}px, batch {args.batch}, {device}, amp={args.amp}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'':40s} {'step (s)':>10s} {'peak MB':>10s}")
    for name, (t, m) in results.items():
        print(f"{name:40s} {t:10.3f} {m / 2**20:10.1f}")
    print(f"time ratio slim/plain:        {slim_t / base_t:.2f}x  (FLOPs bound {bound:.2f}x, goal <= 1.75x)")
    print(f"peak memory ratio slim/plain: {slim_m / base_m:.2f}x  (one graph: {graph_m / base_m:.2f}x, "
          f"goal <= 1.25x; {mem_kind})")


if __name__ == "__main__":
    main()
