"""Per-width gradient diagnostics (docs/method.md §3 "Diagnostics the paper relies on").

SlimCLR's argument is about the *shared* weights: every width trains the leading slice of the
same tensors, and naive slimmable SSL fails because the sub-widths' gradients on that slice are
large and point elsewhere than the full width's. So the two numbers measured here are

- ``grad_norm/w{w}``: the L2 norm of the gradient width ``w``'s loss puts on the shared
  parameters (its own leading slice of every slimmable weight; switchable BNs / linears belong
  to one width only and are left out), and
- ``grad_cos/w{w}`` (sub-widths): the cosine between the full width's gradient and width ``w``'s,
  both restricted to width ``w``'s slice — the only part where the two can disagree.

The measurement must not change training: gradients come from ``torch.autograd.grad`` (``.grad``
is never touched), and every tensor that a forward pass or ``method.prepare`` may mutate
(BN running statistics, momentum encoders, queues: all buffers and all frozen parameters) is
restored afterwards by :func:`preserved_state`. The random number generator is forked too.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..layers import set_width
from ..layers.slimmable import SlimConv2d, SlimLinear, SwitchableBatchNorm1d, \
    SwitchableBatchNorm2d, SwitchableLinear
from ..utils.ddp import unwrap
from ..utils.results import width_key

# Slices of one parameter: a tuple of ``slice`` objects, one per leading dimension sliced.
Slices = Tuple[slice, ...]


@dataclass
class SharedParam:
    """A trainable tensor used by every width (:meth:`slices`: the part the active width uses)."""
    name: str
    param: nn.Parameter
    module: nn.Module
    kind: str  # "weight" / "bias" of a slimmable layer, or "plain" (used whole by every width)

    def slices(self) -> Slices:
        """The slice the module's *currently active* width uses."""
        m = self.module
        if isinstance(m, SlimConv2d):
            cin, cout = m.active_channels()
        elif isinstance(m, SlimLinear):
            cin, cout = m.active_features()
        else:
            return tuple(slice(None) for _ in range(self.param.dim()))
        if self.kind == "bias":
            return (slice(0, cout),)
        return (slice(0, cout), slice(0, cin))


_PER_WIDTH = (SwitchableBatchNorm1d, SwitchableBatchNorm2d, SwitchableLinear)


def shared_parameters(model: nn.Module) -> List[SharedParam]:
    """Trainable parameters shared across widths, with the module that slices them.

    Parameters of switchable BN / linear layers are left out (each belongs to one width), and so
    are frozen ones (momentum encoders).
    """
    out: List[SharedParam] = []
    per_width_ids = {id(p) for m in model.modules() if isinstance(m, _PER_WIDTH)
                     for p in m.parameters()}
    for mod_name, module in model.named_modules():
        for p_name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in per_width_ids:
                continue
            name = f"{mod_name}.{p_name}" if mod_name else p_name
            if isinstance(module, (SlimConv2d, SlimLinear)):
                out.append(SharedParam(name, p, module, "bias" if p_name == "bias" else "weight"))
            else:
                out.append(SharedParam(name, p, module, "plain"))
    return out


@contextlib.contextmanager
def preserved_state(model: nn.Module) -> Iterator[None]:
    """Restore every buffer and frozen parameter of ``model`` (and the RNG) on exit.

    These are what a training-mode forward (BN running stats), ``prepare`` (EMA of a momentum
    encoder) or ``on_step_end`` (a queue) change; trainable parameters only change in the
    optimizer, which diagnostics never call.
    """
    saved = [(t, t.detach().clone()) for t in model.buffers()]
    saved += [(p, p.detach().clone()) for p in model.parameters() if not p.requires_grad]
    devices = [t.device for t, _ in saved if t.device.type == "cuda"]
    with torch.random.fork_rng(devices=sorted({d.index or 0 for d in devices})):
        try:
            yield
        finally:
            with torch.no_grad():
                for t, copy in saved:
                    t.copy_(copy)


def per_width_gradients(params: Sequence[SharedParam],
                        width_losses: Callable[[], Iterator[Tuple[float, torch.Tensor]]]) -> Dict[str, float]:
    """Norms and cosines from ``width_losses()``, which yields ``(width, loss)`` full width first
    with the model left at that width (so each layer's active slice is that width's).

    Only the full width's gradient is kept in memory while the sub-widths are measured.
    """
    tensors = [sp.param for sp in params]
    results: Dict[str, float] = {}
    full: Optional[List[Optional[torch.Tensor]]] = None
    for i, (width, loss) in enumerate(width_losses()):
        grads = torch.autograd.grad(loss, tensors, allow_unused=True)
        sq = 0.0
        dot = 0.0
        sq_full = 0.0
        for idx, (sp, g) in enumerate(zip(params, grads)):
            s = sp.slices()
            if g is not None:
                gs = g[s].double()
                sq += float(gs.pow(2).sum())
            if full is not None and full[idx] is not None:
                fs = full[idx][s].double()
                sq_full += float(fs.pow(2).sum())
                if g is not None:
                    dot += float((fs * gs).sum())
        results[width_key("grad_norm", width)] = math.sqrt(sq)
        if i == 0:
            full = [None if g is None else g.detach() for g in grads]
        else:
            denom = math.sqrt(sq) * math.sqrt(sq_full)
            results[width_key("grad_cos", width)] = dot / denom if denom > 0 else 0.0
    return results


def width_loop_gradients(model: nn.Module, data, width_loop) -> Dict[str, float]:
    """Per-width diagnostics of one training step of ``width_loop`` on ``data``.

    Each width's loss is exactly its term in the step (loss weight, distillation towards the full
    width's detached logits included), so the norms compare what the optimizer actually sums.
    Runs in fp32 without autocast; leaves the model's state, ``.grad`` and RNG untouched.
    """
    method = unwrap(model)
    params = shared_parameters(method)
    previous_width = width_loop.all_widths[0]

    def losses() -> Iterator[Tuple[float, torch.Tensor]]:
        with torch.no_grad():
            ctx = method.prepare(data)
        for term in width_loop.width_terms(method, data, ctx):
            yield term.width, term.loss

    with preserved_state(method):
        try:
            return per_width_gradients(params, losses)
        finally:
            set_width(method, previous_width)

