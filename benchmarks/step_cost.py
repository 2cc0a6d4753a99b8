#!/usr/bin/env python
"""Cost of one SlimCLR-MoCo v2 training step (widths 1.0/0.75/0.5/0.25, per-width backward)
relative to one plain MoCo v2 step, side by side on the same batch in one run.

    python benchmarks/step_cost.py --batch 16 --size 64          # CPU: ResNet-50, fp32
    python benchmarks/step_cost.py --batch 8 --size 224
    python benchmarks/step_cost.py --batch 16 --size 64 --profile
    python benchmarks/step_cost.py --device cuda --size 224 --batch 64 --amp [--compile default]

What it prints:

- time: plain and SlimCLR steps run interleaved (plain, slim, plain, slim, ...) after warm-up
  steps (which also compile, with ``--compile``), so a noisy machine slows both alike; the
  median step times, the median of the per-pair ratios slim/plain and their spread (quartiles
  and min-max), next to the FLOPs bound (3x forward MACs for the student's forward + backward
  at every width, plus one full-width key forward, over the same for one width);
- the student's forward + backward alone per width, as a share of the full width's time next
  to its share of MACs;
- memory, measured in one child process per variant (plain, SlimCLR per-width backward, SlimCLR
  as one graph over all widths): peak bytes of autograd's saved tensors (activations), peak RSS
  of the whole process (``VmHWM``: start-up, model, optimizer state and all steps; with
  ``--compile`` it includes the compiler's own memory) and peak RSS during the measured steps
  alone (``VmHWM`` reset before them) and, on CUDA, ``max_memory_allocated``;
- ``--profile``: per width (and for the key encoder + EMA and the optimizer step), the share of
  wall time spent in convolutions / matmuls, batch norm, slicing and copies, additions into
  ``.grad``, ``_foreach`` ops, other ops, the autograd engine's own bookkeeping and Python (wall
  time in no op), from ``torch.profiler`` (self CPU time of every op; on CUDA also the kernels'
  time and the GPU's idle share). The profiler's own cost per op inflates the small ops;
- the backbone's forward + backward per width, slimmable (as the width loop runs it) against a
  dense network built at that width, and the *dense floor*: the ratio the step would have if
  each sub-width cost what its dense network costs (``--no-dense`` skips it). It separates what
  slimming costs from what a network that narrow costs on the machine.

Findings (torch 2.14.1, the project's 2-core CPU, AMD EPYC with AVX2, ResNet-50, fp32, eager;
every number is this script's output on a quiet machine, 2026-12-02; the README's table has the
commands; single pairs move by about +-10 %, and a previous day's VM of the same kind gave 1.96x
at 224 px where this one gives 1.68-1.72x):

- ``--batch 8 --size 224``: 1.68x (quartiles 1.62-1.86, 5 pairs) and 1.71x (1.62-1.83, 9
  pairs): at the goal of 1.70x, not clearly below it. Dense floor 1.71x.
- ``--batch 16 --size 64``: 1.85x (1.73-1.97) and, before the saved weight slice below, 1.93x
  (1.85-1.97); goal 1.75x not met. Dense floor 1.70x: the sub-widths as dense networks take
  0.62 / 0.33 / 0.18 of the full width's time for 0.57 / 0.26 / 0.07 of its MACs (two OpenMP
  threads over 16-128 channels do little work per barrier), the slimmable ones 1.20 / 1.24 /
  1.25x that (175 ms per step).
- Where the slimming overhead goes (``--profile`` and op tables of one width): the Python
  ``autograd.Function`` of ``slimdet/layers/sliced.py`` (its own time, spent in no op: 6-11 % of
  a sub-width, most at 0.25), the copy of each weight slice into a contiguous tensor, and the
  strided addition of its gradient into ``weight.grad``. Convolutions are 50-66 % of a
  sub-width, BN 8-10 %. Neither the allocator (glibc mmap/trim thresholds, jemalloc) nor
  ``--autograd-slicing`` changed the overhead beyond the noise.
- Keeping the contiguous weight slice from forward to backward (one copy per layer and
  sub-width instead of two; one cast under AMP instead of two) saves time inside the noise here
  (backbone overhead 131 -> 117 ms in one process; 1.72x -> 1.71x at 224 px) and raises the
  saved tensors from 1.00x to 1.31x plain at 64 px (1.00x at 224 px).
- Memory meets its goal: peak RSS 1.10x plain at 64 px and 1.13x at 224 px; one graph over all
  widths 1.18x and 1.49x.
- ``--channels-last`` (64 px): 1.81x (1.69-1.91), the plain step's spread twice the default's.
- ``--compile default`` (64 px): 2.10x (2.05-2.14), slower than eager in absolute terms too
  (warm-up 162 s plain, 318 s SlimCLR). This run was made with inductor's layout optimisation,
  which gave wrong, run-to-run different weight gradients for convolutions on weight slices;
  ``MODEL.COMPILE`` now turns it off (``slimdet/modeling/slim/compile.py``). Re-timed without
  it (later VM, below): 2.01x (2.01-2.08), plain 0.98 s, SlimCLR 1.99 s, warm-up 188 s / 415 s.
  Compiled graphs slice as autograd does (``layers/sliced.py`` is eager only), so each compiled
  sub-width still fills and adds a full-size gradient per weight.

A later VM of the same kind (same day, evening; ratios move by several hundredths between
runs, single pairs by up to +-15 %):

- ``--batch 16 --size 64 --pairs 9``: 1.84x (1.80-1.97), peak RSS 1.09x (one graph 1.19x);
  sub-widths 1.22 / 1.10 / 1.16x their dense networks (control 1.09x), floor 1.86x.
- ``--batch 8 --size 224 --pairs 7 --no-memory --no-dense``: 1.73x (1.70-1.87); with
  ``--channels-last`` 1.78x (1.74-1.80). Channels-last made both steps faster in absolute terms
  (plain 3.42 against 3.92 s, SlimCLR 5.89 against 7.44 s in these two runs) but not their ratio.
  ``--channels-last`` is for timing only: on this CPU oneDNN's weight gradient of a 1x1 stride-2
  NHWC convolution with fewer than 8 input channels is wrong or hangs
  (``scripts/check_channels_last_grads.py``; ResNet-50 has at least 64 there at width 0.25),
  so slimdet offers no channels-last training switch.
- Overhead-bound sizes (``--batch 2 --size 32 --pairs 9``, the regime of narrow widths on a
  GPU): 2.10x (1.92-2.24), sub-widths 1.63 / 1.45 / 1.37x their dense networks: mostly the per-layer
  Python of the ``autograd.Function`` (one forward and one backward per layer and sub-width)
  is what remains here. ``--autograd-slicing`` is worse even so: 2.45x (2.30-2.61), sub-widths
  1.33 / 1.54 / 1.69x dense, since every sub-width then fills and adds full-size gradients.
A 2-core Intel Xeon VM with AVX-512 and AMX (2026-12-06; README table): ``--batch 16 --size
64 --pairs 9``: 1.94x (1.79-2.03), dense floor 1.79x, peak RSS 1.08x; ``--channels-last``
1.91x (floor 1.74x); ``--batch 8 --size 224``: 1.74x (1.64-2.09). ``ONEDNN_VERBOSE=1`` over one
steady step: no primitive-cache misses (a larger ``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` changes
nothing); the SlimCLR step's convolution kernels take 2.17x the plain step's (FLOPs 1.68x), the
layout reorders a third of oneDNN's time in both; a slimmable and a dense backbone at width
0.75 spend the same time in oneDNN, so slicing's cost is outside the kernels. The same VM kind
later (2026-12-06, afternoon): ``--batch 16 --size 64 --pairs 9`` 1.90x (1.89-1.93), floor
1.76x, slimming overhead 52 ms per step, peak RSS 1.07x (one graph 1.15x); ``--batch 8 --size
224 --pairs 7 --no-memory --no-dense`` 1.85x (1.79-1.92) while a test job shared the cores.

- The CUDA path (CUDA graphs through ``--compile reduce-overhead``, ``--amp``,
  ``max_memory_allocated``) has had no GPU to run on since issue 14's changes.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch

from slimdet.config import CfgNode, get_cfg
from slimdet.evaluation.profiler import count_macs
from slimdet.layers import use_width
from slimdet.layers.sliced import slice_grads_into_param_grad
from slimdet.modeling import build_model
from slimdet.modeling.backbone import extract_subnet
from slimdet.modeling.backbone.slim_resnet import plain_network
from slimdet.modeling.slim import WidthLoop, compile_method

WIDTHS = [1.0, 0.75, 0.5, 0.25]
# name -> (widths, how the step back-propagates)
VARIANTS = {"plain": ([1.0], "per_width"),
            "slim": (WIDTHS, "per_width"),
            "one_graph": (WIDTHS, "one_graph")}
LABELS = {"plain": "plain MoCo v2",
          "slim": "SlimCLR-MoCo v2 (per-width backward)",
          "one_graph": "SlimCLR-MoCo v2 (one graph)"}


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


def _vm_hwm() -> int:
    """Peak resident set size of this process in bytes (``VmHWM`` of /proc/self/status).

    Not ``getrusage().ru_maxrss``: Linux carries the parent's peak over fork + exec into the
    child's, so every child would report at least the parent's size at the time it started."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _reset_vm_hwm() -> bool:
    """Reset the peak RSS to the current RSS (Linux >= 4.0: ``5`` into /proc/self/clear_refs);
    False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def make_cfg(widths: Sequence[float], args) -> CfgNode:
    cfg = get_cfg()
    cfg.MODEL.METHOD = "MoCoV2"
    cfg.MODEL.WIDTHS = list(widths)
    cfg.MODEL.BACKBONE.DEPTH = args.depth
    cfg.MODEL.MOCOV2.QUEUE_SIZE = args.queue
    cfg.MODEL.COMPILE = args.compile
    return cfg


def autocast_factory(args, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    def autocast():
        if not args.amp:
            return contextlib.nullcontext()
        dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
        return torch.autocast(device.type, dtype=dtype)
    return autocast


def make_batch(args, device: torch.device, fmt) -> Dict[str, List[torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return {"views": [torch.randn(args.batch, 3, args.size, args.size, generator=g).to(device)
                      .contiguous(memory_format=fmt) for _ in range(2)]}


class Variant:
    """One model, optimizer and training step (as ``WidthLoopTrainer.run_step``)."""

    def __init__(self, name: str, args, device: torch.device, fmt, data, meter: bool = False):
        widths, self.mode = VARIANTS[name]
        torch.manual_seed(0)
        cfg = make_cfg(widths, args)
        self.method = build_model(cfg).to(device, memory_format=fmt).train()
        if cfg.MODEL.COMPILE:
            compile_method(self.method, cfg.MODEL.COMPILE)
        self.loop = WidthLoop.from_config(cfg)
        self.opt = torch.optim.SGD(self.method.parameters(), lr=0.01, momentum=0.9)
        self.data, self.device = data, device
        self.autocast = autocast_factory(args, device)
        self.meter = SavedTensorMeter(self.method) if meter else None

    def _backward(self, loss: torch.Tensor) -> None:
        loss.backward()
        if self.meter is not None:
            self.meter.release_all()

    def step(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        hooks = self.meter.hooks() if self.meter is not None else contextlib.nullcontext()
        with hooks:
            if self.mode == "per_width":
                self.loop.run(self.method, self.data, self._backward, self.autocast)
            else:
                self._backward(self.loop.summed_loss(self.method, self.data, self.autocast))
        self.opt.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def timed(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def quantiles(values: Sequence[float]) -> Dict[str, float]:
    q = torch.tensor(sorted(values), dtype=torch.float64).quantile(
        torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64)).tolist()
    return dict(zip(["min", "q1", "median", "q3", "max"], q))


def time_interleaved(a: Callable[[], None], b: Callable[[], None], pairs: int, warmup: int):
    """Step times of ``a`` and ``b`` run alternately, the per-pair ratios b / a, and the seconds
    their warm-up steps took (compilation with ``--compile``)."""
    warm = [sum(timed(f) for _ in range(warmup)) for f in (a, b)]
    ta, tb = [], []
    for _ in range(pairs):
        ta.append(timed(a))
        tb.append(timed(b))
    return ta, tb, [y / x for x, y in zip(ta, tb)], warm


def round_robin_medians(runs: Dict, args) -> Dict:
    """Median seconds of each callable of ``runs``, all run in turn (one round after another,
    ``args.warmup`` untimed rounds first), so that a noisy machine slows them alike."""
    times: Dict = {key: [] for key in runs}
    for rep in range(args.warmup + args.pairs):
        for key, fn in runs.items():
            t = timed(fn)
            if rep >= args.warmup:
                times[key].append(t)
    return {key: quantiles(ts)["median"] for key, ts in times.items()}


def student_time_per_width(args, device, fmt, data) -> Dict[float, float]:
    """Median seconds of the query encoder's forward + backward alone at each width, the
    widths run round-robin (as the width loop runs them: slice gradients straight into .grad)."""
    cfg = make_cfg(WIDTHS, args)
    cfg.MODEL.MOCOV2.QUEUE_SIZE = 16
    method = build_model(cfg).to(device, memory_format=fmt).train()
    if cfg.MODEL.COMPILE:
        compile_method(method, cfg.MODEL.COMPILE)
    autocast = autocast_factory(args, device)

    def fwd_bwd(w: float) -> None:
        with use_width(method, w), slice_grads_into_param_grad(), autocast():
            loss = method(data).float().sum()
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return round_robin_medians({w: (lambda w=w: fwd_bwd(w)) for w in WIDTHS}, args)


def _features_sum(out) -> torch.Tensor:
    """A scalar of a backbone's output (a tensor, or a dict of feature maps: its last one)."""
    y = out if torch.is_tensor(out) else list(out.values())[-1]
    return y.float().sum()


def backbone_vs_dense(args, device, fmt, data) -> Dict[float, tuple]:
    """Median seconds of the backbone's forward + backward at each width, as the width loop runs
    it (slimmable, slice gradients straight into .grad) and as a dense network built at that
    width (plain ``nn.Conv2d``-sized weights, no slicing): what slimming itself costs, apart from
    what a network that narrow costs on this machine. All eight run round-robin."""
    cfg = make_cfg(WIDTHS, args)
    cfg.MODEL.MOCOV2.QUEUE_SIZE = 16
    torch.manual_seed(0)
    slim = build_model(cfg).backbone.to(device, memory_format=fmt).train()
    dense = {w: plain_network(slim, w).to(device, memory_format=fmt).train() for w in WIDTHS}
    x = data["views"][0]
    autocast = autocast_factory(args, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def run_slim(w: float) -> None:
        with use_width(slim, w), slice_grads_into_param_grad(), autocast():
            loss = _features_sum(slim(x))
        loss.backward()
        sync()

    def run_dense(w: float) -> None:
        with autocast():
            loss = _features_sum(dense[w](x))
        loss.backward()
        sync()

    runs = {}
    for w in WIDTHS:
        runs[("slim", w)] = lambda w=w: run_slim(w)
        runs[("dense", w)] = lambda w=w: run_dense(w)
    medians = round_robin_medians(runs, args)
    return {w: (medians[("slim", w)], medians[("dense", w)]) for w in WIDTHS}


def flops_bound(args) -> tuple:
    """(MACs per width of one image, the FLOPs bound of the time ratio)."""
    backbone = build_model(make_cfg(WIDTHS, argparse.Namespace(**{**vars(args), "queue": 16,
                                                                    "compile": ""}))).backbone
    x = torch.zeros(1, 3, args.size, args.size)
    macs = [count_macs(extract_subnet(backbone.eval(), w), x) for w in WIDTHS]
    # Student forward + backward (~3x forward) at every width + one full-width key forward.
    return macs, (3 * sum(macs) + macs[0]) / (4 * macs[0])


# ------------------------------------------------------------------------------- memory (child)
def child_main(args) -> None:
    """Run one variant in this (child) process and print its memory as one JSON line."""
    device = torch.device(args.device)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    data = make_batch(args, device, fmt)
    v = Variant(args.child, args, device, fmt, data, meter=True)
    for _ in range(args.warmup):
        v.step()
    v.meter.peak = 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    out = {"rss_process": _vm_hwm()}  # start-up, model, optimizer state, warm-up steps
    reset = _reset_vm_hwm()
    for _ in range(2):
        v.step()
    out["saved"] = v.meter.peak
    out["rss_process"] = max(out["rss_process"], _vm_hwm())
    out["rss_steps"] = _vm_hwm() if reset else None
    if device.type == "cuda":
        out["cuda"] = torch.cuda.max_memory_allocated()
    print("MEMORY " + json.dumps(out))


def memory_in_children(argv: List[str]) -> Dict[str, Dict[str, int]]:
    results = {}
    for name in VARIANTS:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), *argv, "--child", name],
                              capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("MEMORY ")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"memory child {name!r} failed:\n{proc.stderr[-3000:]}")
        results[name] = json.loads(lines[-1][len("MEMORY "):])
    return results


# ------------------------------------------------------------------------------------ profile
# Columns of the profile: convolutions and matmuls; batch norm; slicing, copies, fills and
# views; additions into .grad (AccumulateGrad, layers/sliced.py); _foreach ops (EMA, SGD);
# every other op (ReLU, residual adds, losses); the autograd engine's own time per node; wall
# time in no op at all (Python, dispatch, profiler overhead).
CATEGORIES = ["conv/mm", "BN", "slice/copy", "grad accum", "foreach", "other ops", "autograd",
              "python"]
_CONV = ("conv", "aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear")
_COPY = ("slice", "copy_", "contiguous", "clone", "fill_", "zero_", "aten::zeros", "_to_copy",
         "aten::to", "as_strided", "aten::empty", "aten::new_zeros", "aten::view", "aten::t",
         "aten::transpose", "aten::reshape", "aten::expand", "aten::select", "aten::detach",
         "aten::alias", "aten::resize_")


def _is_autograd_node(name: str) -> bool:
    return (name.startswith("autograd::engine::evaluate_function") or "Backward" in name
            or name == "torch::autograd::AccumulateGrad")


def _category(event) -> str:
    name = event.name
    if _is_autograd_node(name):
        return "autograd"
    parent = event.cpu_parent
    while parent is not None:
        if parent.name == "torch::autograd::AccumulateGrad":
            return "grad accum"
        parent = parent.cpu_parent
    if any(k in name for k in _CONV):
        return "conv/mm"
    if "batch_norm" in name:
        return "BN"
    if name == "aten::add_" and _under_sliced_backward(event):
        return "grad accum"  # layers/sliced.py adds slice gradients into .grad
    if "_foreach" in name:
        return "foreach"
    if any(k in name for k in _COPY):
        return "slice/copy"
    return "other ops"


def _under_sliced_backward(event) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("SlicedConv2dBackward") or parent.name.startswith(
                "SlicedLinearBackward"):
            return True
        parent = parent.cpu_parent
    return False


def profile_step(args, device: torch.device, fmt, data, steps: int = 3) -> None:
    """Share of wall time per category, for each width's forward + loss + backward of the
    width loop and for the key encoder + EMA and the optimizer step."""
    from torch.profiler import ProfilerActivity, profile

    v = Variant("slim", args, device, fmt, data)
    method, loop = v.method, v.loop
    for _ in range(args.warmup):
        v.step()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    windows: List[tuple] = []  # (part, start_us, end_us) on the profiler's clock

    def mark(part: str, fn: Callable[[], object]):
        sync()
        t0 = time.perf_counter_ns() // 1000
        out = fn()
        sync()
        windows.append((part, t0, time.perf_counter_ns() // 1000))
        return out

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            v.opt.zero_grad(set_to_none=True)
            with torch.no_grad(), v.autocast():
                ctx = mark("key encoder + EMA", lambda: method.prepare(data))
            terms = loop.width_terms(method, data, ctx, autocast=v.autocast)
            for w in loop.widths:
                def width_step():
                    with slice_grads_into_param_grad():
                        term = next(terms)
                    term.loss.backward()
                mark(f"width {w:g}", width_step)
            method.on_step_end(ctx)
            mark("optimizer step", v.opt.step)
    # The profiler's timestamps are on its own clock: align the windows by the first event.
    events = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CPU]
    offset = _clock_offset(events, windows)
    parts: Dict[str, Dict[str, float]] = {}
    for part, start, end in windows:
        p = parts.setdefault(part, {"wall": 0.0, **{c: 0.0 for c in CATEGORIES}, "gpu": {}})
        p["wall"] += end - start
        inside = [e for e in events if start <= e.time_range.start - offset < end]
        busy = 0.0
        for e in inside:
            cat = _category(e)
            p[cat] += e.self_cpu_time_total
            busy += e.self_cpu_time_total
            if device.type == "cuda":
                p["gpu"][cat] = p["gpu"].get(cat, 0.0) + e.self_device_time_total
        p["python"] += max(0.0, (end - start) - busy)
    header = f"{'part':20s} {'ms/step':>8s} " + " ".join(f"{c:>10s}" for c in CATEGORIES)
    print(f"profile (torch.profiler, {steps} steps; % of the part's wall time, CPU self time):")
    print(header)
    for part, p in parts.items():
        print(f"{part:20s} {p['wall'] / steps / 1000:8.1f} " + " ".join(
            f"{100 * p[c] / p['wall']:9.1f}%" for c in CATEGORIES))
    if device.type == "cuda":
        print("GPU kernel time, % of the part's wall time (idle = no kernel running):")
        for part, p in parts.items():
            busy = sum(p["gpu"].values())
            print(f"{part:20s} " + " ".join(f"{k}: {100 * t / p['wall']:.1f}%"
                                            for k, t in sorted(p["gpu"].items()) if t > 0)
                  + f"  idle: {100 * max(0.0, 1 - busy / p['wall']):.1f}%")


def _clock_offset(events, windows) -> float:
    """Offset between the profiler's event clock and ``perf_counter``: the first window starts
    just before the first op it runs."""
    first = min(e.time_range.start for e in events)
    return first - windows[0][1]


# --------------------------------------------------------------------------------------- main
def parse_args(argv: Optional[List[str]] = None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--depth", type=int, default=50)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--pairs", type=int, default=7, help="interleaved plain/slim step pairs timed")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation)")
    p.add_argument("--queue", type=int, default=4096)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", action="store_true", help="fp16 autocast (CUDA) / bf16 (CPU)")
    p.add_argument("--channels-last", action="store_true",
                   help="NHWC tensors (timing only: see scripts/check_channels_last_grads.py)")
    p.add_argument("--compile", default="", help='MODEL.COMPILE mode: "", "default", '
                                                  '"reduce-overhead" (CUDA graphs), ...')
    p.add_argument("--threads", type=int, default=0,
                   help="torch.set_num_threads (default: torch's own, one per core)")
    p.add_argument("--profile", action="store_true", help="print where a step's time goes")
    p.add_argument("--no-memory", action="store_true", help="skip the memory child processes")
    p.add_argument("--no-dense", action="store_true",
                   help="skip timing the backbone against dense networks of each width")
    p.add_argument("--autograd-slicing", action="store_true",
                   help="slice weights with autograd's own ops in the width loop too (the step "
                        "before slimdet/layers/sliced.py; for its before/after)")
    p.add_argument("--child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.autograd_slicing:
        import slimdet.layers.slimmable as slimmable

        slimmable.uses_sliced_backward = lambda params: False
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        return child_main(args)
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True  # as the trainer sets it
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    data = make_batch(args, device, fmt)
    print(f"ResNet-{args.depth}, {args.size}px, batch {args.batch}, {device}, amp={args.amp}, "
          f"compile={args.compile or 'off'}, channels_last={args.channels_last}, "
          f"{'autograd slicing, ' if args.autograd_slicing else ''}"
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.profile:
        return profile_step(args, device, fmt, data)

    plain = Variant("plain", args, device, fmt, data)
    slim = Variant("slim", args, device, fmt, data)
    tp, ts, ratios, warm = time_interleaved(plain.step, slim.step, args.pairs, args.warmup)
    del plain, slim
    per_width = student_time_per_width(args, device, fmt, data)
    macs, bound = flops_bound(args)

    print("student forward+backward per width (ms): " + ", ".join(
        f"{w:g}: {t * 1000:.1f} ({t / per_width[1.0]:.2f}x time, {m / macs[0]:.2f}x MACs)"
        for (w, t), m in zip(per_width.items(), macs)))
    qp, qs, qr = quantiles(tp), quantiles(ts), quantiles(ratios)
    print(f"warm-up ({args.warmup} steps{', compiling' if args.compile else ''}): "
          f"plain {warm[0]:.1f} s, slim {warm[1]:.1f} s")
    if not args.no_dense:
        bb = backbone_vs_dense(args, device, fmt, data)
        print("backbone forward+backward (ms), slimmable / dense network of that width: " + ", ".join(
            f"{w:g}: {s * 1000:.1f} / {d * 1000:.1f} ({s / d:.2f}x)" for w, (s, d) in bb.items()))
        overhead = sum(s - d for w, (s, d) in bb.items() if w != 1.0)
        floor = (qs["median"] - overhead) / qp["median"]
        print(f"slimming overhead of the sub-widths: {overhead * 1000:.0f} ms per step; a step whose "
              f"sub-widths cost what dense networks of those widths cost: {floor:.2f}x plain "
              "(the floor of eager slimmable training on this machine)")
    print(f"{LABELS['plain']:40s} step {qp['median']:.3f} s (min {qp['min']:.3f}, max {qp['max']:.3f})")
    print(f"{LABELS['slim']:40s} step {qs['median']:.3f} s (min {qs['min']:.3f}, max {qs['max']:.3f})")
    print(f"time ratio slim/plain:        {qr['median']:.2f}x  (median of {args.pairs} interleaved "
          f"pairs; quartiles {qr['q1']:.2f}-{qr['q3']:.2f}, min-max {qr['min']:.2f}-{qr['max']:.2f}; "
          f"FLOPs bound {bound:.2f}x, goal <= 1.75x)")
    if args.no_memory:
        return
    argv = [a for a in sys.argv[1:] if a not in ("--no-memory",)]
    mem = memory_in_children(argv)
    kinds = [("saved", "autograd saved tensors"), ("rss_process", "peak RSS, whole process"),
             ("rss_steps", "peak RSS during steps")]
    if device.type == "cuda":
        kinds.append(("cuda", "CUDA max_memory_allocated"))
    print(f"{'memory (MB), one child process each':40s} " + " ".join(f"{LABELS[n][:24]:>26s}" for n in VARIANTS))
    for key, label in kinds:
        if any(mem[n][key] is None for n in VARIANTS):
            print(f"{label:40s} (not measured: /proc/self/clear_refs is not writable)")
            continue
        base = mem["plain"][key]
        print(f"{label:40s} " + " ".join(
            f"{mem[n][key] / 2**20:12.1f} ({mem[n][key] / base:5.2f}x)   " for n in VARIANTS))
    print(f"peak memory ratio slim/plain: {mem['slim']['rss_process'] / mem['plain']['rss_process']:.2f}x "
          f"peak RSS, {mem['slim']['saved'] / mem['plain']['saved']:.2f}x saved tensors "
          f"(one graph: {mem['one_graph']['rss_process'] / mem['plain']['rss_process']:.2f}x, "
          f"{mem['one_graph']['saved'] / mem['plain']['saved']:.2f}x; goal <= 1.25x)")


if __name__ == "__main__":
    main()
