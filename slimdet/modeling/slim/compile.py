"""``MODEL.COMPILE``: the forward passes of the width loop through ``torch.compile``.

What is compiled, in place (``nn.Module.compile``: parameter names, state dicts, checkpoints and
the DDP wrapper stay as they are): the method's ``__call__`` (the student at the active width,
which the width loop calls through DDP; its backward is compiled with it by AOTAutograd) and each
of its momentum encoders (``TrainingMethod.momentum_encoders()``, run at full width under
``no_grad`` by ``prepare``). Losses, distillation, the queue and the optimizer stay eager.
Evaluation calls ``method.backbone`` directly and is not compiled.

Width is module state: every slimmable layer reads its python float ``width_mult`` (set by
``set_width``). Dynamo specialises on it while tracing and guards on it, so each width becomes
its own graph, compiled the first time the width runs and reused at every later step; with
``dynamic=False`` the channel counts of a graph are constants, never symbolic. The widths are a
fixed list, so the number of graphs is fixed too: one per width for the student (one more per
width if the method is also called in eval mode) and one per momentum encoder.

Dynamo keeps the graphs of each compiled module in that module's own cache; past
``torch._dynamo.config.recompile_limit`` (8 by default) entries, a further width would silently
run eagerly (one warning in the log). :func:`compile_method` raises the limit to what the
student needs (never lowers it) and logs the value.

Modes are ``torch.compile``'s: ``"default"`` (inductor: C++/OpenMP kernels on the CPU, Triton on
CUDA), ``"reduce-overhead"`` (additionally CUDA graphs on a GPU: every kernel of a width's graph
launched by one replay, what launch-bound narrow widths need; on the CPU it is ``"default"``),
``"max-autotune"``, ``"max-autotune-no-cudagraphs"``; momentum encoders get the same mode
without CUDA graphs. The first step at each width pays the compilation (minutes per width of a
ResNet-50 on a 2-core CPU: ``benchmarks/step_cost.py --compile default`` prints its warm-up
time); inductor caches the result on disk, so later runs with the same shapes start faster.
"""
from __future__ import annotations

import logging

import torch
import torch._inductor.config
from torch import nn

logger = logging.getLogger("slimdet")

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# Momentum encoders never replay CUDA graphs: their keys are used by every width and enqueued at
# the end of the step, while a CUDA graph's outputs live in memory that the student's graphs,
# replayed in between, may reuse. One full-width forward is not launch-bound anyway.
_WITHOUT_CUDA_GRAPHS = {"reduce-overhead": "default", "max-autotune": "max-autotune-no-cudagraphs"}


def graphs_needed(method: nn.Module) -> int:
    """Graphs dynamo keeps for the compiled student: one per width in train mode, and one per
    width in eval mode should the method be called in eval mode too."""
    return 2 * len(method.widths)


def compile_method(method: nn.Module, mode: str) -> None:
    """Compile ``method``'s forward (one graph per width) and its momentum encoders in place."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"MODEL.COMPILE must be empty or one of {', '.join(COMPILE_MODES)}; "
                         f"got {mode!r}")
    cfg = torch._dynamo.config
    needed = graphs_needed(method)
    if cfg.recompile_limit < needed:
        cfg.recompile_limit = needed
    logger.info("MODEL.COMPILE=%s: compiling the student (one graph per width of %s) and %d "
                "momentum encoder(s); torch._dynamo.config.recompile_limit = %d, "
                "torch._inductor.config.layout_optimization = False",
                mode, list(method.widths), len(method.momentum_encoders()), cfg.recompile_limit)
    # Inductor's layout optimisation turns convolutions channels-last inside the graph. On the
    # CPU (torch 2.14.1) the backward of a convolution on a weight *slice* then returns wrong
    # weight gradients, different from run to run, and with one thread corrupts the heap
    # ("double free or corruption"); tests/modeling/test_compile.py caught it. Without the
    # optimisation the compiled gradients match eager ones to float noise, every run. The
    # symptoms match a bug of channels-last itself rather than of the slice: oneDNN's AVX2
    # weight gradient of a 1x1 stride-2 convolution on NHWC tensors with fewer than 8 input
    # channels (the test's narrow widths have them) is wrong, or crashes or hangs, in eager mode
    # too (oneDNN issue 6035; scripts/check_channels_last_grads.py). Set process-wide
    # (inductor has no per-module switch), as recompile_limit above.
    torch._inductor.config.layout_optimization = False
    method.compile(mode=mode, dynamic=False)
    for encoder in method.momentum_encoders():
        encoder.compile(mode=_WITHOUT_CUDA_GRAPHS.get(mode, mode), dynamic=False)
