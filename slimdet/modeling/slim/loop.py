"""The SlimCLR width loop: the one place where all widths of one training step are run.

Every step: the method prepares its targets (e.g. keys of the full-width momentum encoder);
then each active width, full width first, runs forward on the same inputs, computes its task
loss, and — for sub-widths — the distillation loss towards the full width's detached logits;
its weighted loss is back-propagated at once. Gradients accumulate over widths, so the result is
the gradient of the summed loss while the peak memory is that of a single width's graph. Under
DDP every backward but the last runs in ``no_sync()``: one all-reduce per step.

Methods (``slimdet/modeling/methods``) only turn one width's outputs into a task loss and the logits
to distil (:class:`TaskOutput`); pre-training, supervised slimmable training and the linear probe
all use this loop.

Which widths run is the mode (``MODEL.SLIM.MODE``):

- ``fixed`` (SlimCLR): every width of the list, every step.
- ``sandwich`` (universally slimmable networks, Yu & Huang 2019; US3L for self-supervised
  learning): the full width, the narrowest width of the list and ``num_sampled`` widths drawn
  uniformly from ``width_range``, a new draw every step from a generator seeded by (seed,
  iteration), so a resumed run draws what the uninterrupted one drew. The sub-widths learn from
  the full width by the same in-place distillation. Sampled widths normalise with batch
  statistics (``SwitchableBatchNorm``), so BN statistics are estimated after training
  (``slimdet.layers.any_width``).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import (Any, Callable, ContextManager, Dict, Iterator, List, Optional, Sequence,
                    Union)

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ...layers import normalized_width, set_width
from ...layers.sliced import slice_grads_into_param_grad
from ...utils.ddp import unwrap
from .distill import multi_distillation_loss
from .weights import loss_weights


@dataclass
class TaskOutput:
    """What a method returns for one width."""
    loss: torch.Tensor                      # the width's own loss (contrastive, CE, ...)
    distill_logits: List[torch.Tensor]      # logits the distillation compares across widths
    # Extra scalars to log: floats or 0-d tensors (tensors avoid a host sync per width).
    metrics: Dict[str, Union[float, torch.Tensor]] = field(default_factory=dict)


@dataclass
class WidthTerm:
    """One width's share of a step: its weighted loss and the unweighted terms to log."""
    width: float
    loss: torch.Tensor
    terms: Dict[str, torch.Tensor]
    metrics: Dict[str, Union[float, torch.Tensor]]


class WidthLoop:
    """Runs the active widths of one step with their loss weights.

    ``set_active`` is called by :class:`slimdet.engine.hooks.WidthScheduleHook` (slow start).
    ``mode="sandwich"`` draws the sub-widths of every step (module docstring); the widths and
    loss weights of the step being run are ``widths`` / ``weights``.
    """

    def __init__(self, widths: Sequence[float], weighting: str = "size", distill: bool = True,
                 distill_temperature: float = 5.0, distill_weight: float = 0.5,
                 mode: str = "fixed", num_sampled: int = 2,
                 width_range: Optional[Sequence[float]] = None, seed: int = 0):
        self.all_widths = [float(w) for w in widths]
        self.weighting = weighting
        self.distill = distill
        self.tau = distill_temperature
        self.alpha = distill_weight
        if mode not in ("fixed", "sandwich"):
            raise ValueError(f"MODEL.SLIM.MODE must be fixed or sandwich, got {mode!r}")
        self.mode = mode
        self.num_sampled = num_sampled
        self.width_range = [float(w) for w in (width_range or (self.all_widths[-1], self.all_widths[0]))]
        self.seed = seed
        self.set_active(self.all_widths)

    @classmethod
    def from_config(cls, cfg, widths: Optional[Sequence[float]] = None) -> "WidthLoop":
        """The loop of ``cfg`` over ``widths`` (default ``MODEL.WIDTHS``; a probe passes the
        widths it trains classifiers for)."""
        s = cfg.MODEL.SLIM
        return cls(widths or cfg.MODEL.WIDTHS, s.LOSS_WEIGHTING, s.DISTILL, s.DISTILL_TEMPERATURE,
                   s.DISTILL_WEIGHT, s.MODE, s.NUM_SAMPLED, list(s.WIDTH_RANGE) or None, cfg.SEED)

    def set_active(self, widths: Sequence[float], weights: Optional[Sequence[float]] = None) -> None:
        widths = [float(w) for w in widths]
        unknown = [w for w in widths if w not in self.all_widths]
        if unknown or widths[0] != self.all_widths[0]:
            raise ValueError(f"active widths {widths} must start with the full width and be "
                             f"among {self.all_widths}")
        self.widths = widths
        # A single width trains alone with weight 1 (slow start / plain training).
        self.weights = list(weights) if weights is not None else (
            loss_weights(widths, self.weighting) if len(widths) > 1 else [1.0])
        self.active_widths, self.active_weights = self.widths, self.weights

    def describe(self) -> str:
        """What the active widths train as, for the log."""
        if self.mode == "sandwich" and len(self.active_widths) > 1:
            lo, hi = self.width_range
            return (f"by the sandwich rule: widths {self.all_widths[0]:g} and {self.all_widths[-1]:g} "
                    f"and {self.num_sampled} drawn from [{lo:g}, {hi:g}] every step, loss weights "
                    f"'{self.weighting}'")
        return f"widths {self.active_widths} with loss weights {self.active_weights}"

    def sandwich_widths(self, iteration: int) -> List[float]:
        """The widths of step ``iteration`` under the sandwich rule: full, the ``num_sampled``
        drawn ones (widest first), narrowest — a function of (seed, iteration) only."""
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, max(iteration, 0)])
        lo, hi = self.width_range
        sampled = sorted((normalized_width(x) for x in rng.uniform(lo, hi, self.num_sampled)),
                         reverse=True)
        return [self.all_widths[0]] + sampled + [self.all_widths[-1]]

    def log_tag(self, i: int) -> str:
        """How the logs name the step's ``i``-th width: ``w<width>``, except the drawn widths of
        a sandwich step (``sampled<i>``, their width logged as ``width/sampled<i>``), whose
        values change every step and would each open a new curve."""
        if self.mode == "sandwich" and len(self.widths) > 2 and 0 < i < len(self.widths) - 1:
            return f"sampled{i}"
        return f"w{self.widths[i]:g}"

    def begin_step(self, iteration: int) -> None:
        """Set ``widths`` / ``weights`` of step ``iteration``: the active widths (fixed mode,
        slow start), or this step's sandwich."""
        if self.mode == "fixed" or len(self.active_widths) == 1:
            self.widths, self.weights = self.active_widths, self.active_weights
            return
        self.widths = self.sandwich_widths(iteration)
        self.weights = loss_weights(self.widths, self.weighting)

    def width_terms(self, method: nn.Module, data, ctx: Dict[str, Any],
                    forward: Optional[Callable] = None,
                    autocast: Callable[[], ContextManager] = contextlib.nullcontext
                    ) -> Iterator[WidthTerm]:
        """Each active width's weighted loss, full width first, computed lazily.

        Width ``i``'s forward runs when the ``i``-th item is drawn, with the method left at that
        width — so a caller can draw it inside DDP's ``no_sync()`` or measure gradients on that
        width's slices. ``forward`` is the callable that runs the method (its DDP wrapper).
        The one place that defines a SlimCLR step's losses: :meth:`run`, :meth:`summed_loss`
        and the gradient diagnostics all draw from it.
        """
        forward = forward or method
        teacher: List[torch.Tensor] = []
        for i, (w, weight) in enumerate(zip(self.widths, self.weights)):
            set_width(method, w)
            with autocast():
                task = method.task_loss(forward(data), ctx, is_full=(i == 0))
            terms = {"task": task.loss}
            if i == 0:
                teacher = [z.detach() for z in task.distill_logits]
                loss = weight * task.loss
            elif self.distill:
                terms["distill"] = multi_distillation_loss(task.distill_logits, teacher, self.tau)
                loss = weight * ((1 - self.alpha) * task.loss + self.alpha * terms["distill"])
            else:
                loss = weight * task.loss
            yield WidthTerm(w, loss, terms, task.metrics)

    def run(self, model: nn.Module, data, backward: Callable[[torch.Tensor], None],
            autocast: Callable[[], ContextManager] = contextlib.nullcontext,
            iteration: int = -1) -> Dict[str, float]:
        """One step's forward/backward over the active widths; returns the losses to log."""
        self.begin_step(iteration)
        method = unwrap(model)
        with torch.no_grad(), autocast():
            ctx = method.prepare(data)
        # Loss values stay on the device until the end of the step: one host sync per step, not
        # one per width and term, so the CPU keeps queueing kernels ahead of the GPU.
        pending: Dict[str, torch.Tensor] = {}
        where: Dict[str, tuple] = {}
        totals: List[torch.Tensor] = []
        terms = self.width_terms(method, data, ctx, model, autocast)
        for i in range(len(self.widths)):
            last = i == len(self.widths) - 1
            sync = model.no_sync() if isinstance(model, DistributedDataParallel) and not last \
                else contextlib.nullcontext()
            with sync:
                # This width's forward runs here, inside no_sync; its graph is back-propagated
                # once with backward() below, so slimmable layers may add their slice gradients
                # straight into .grad (layers/sliced.py).
                with slice_grads_into_param_grad():
                    term = next(terms)
                tag = self.log_tag(i)
                for name, value in term.terms.items():
                    key = f"loss_{name}/{tag}"
                    pending[key] = value.detach().float().reshape(())
                    where[key] = (term.width, name)
                for name, value in term.metrics.items():
                    pending[f"{name}/{tag}"] = torch.as_tensor(
                        value, dtype=torch.float32, device=term.loss.device).reshape(())
                if tag != f"w{term.width:g}":
                    pending[f"width/{tag}"] = torch.tensor(term.width, device=term.loss.device)
                backward(term.loss)
                totals.append(term.loss.detach().float().reshape(()))
        set_width(method, self.all_widths[0])
        values = torch.stack(list(pending.values()) + [torch.stack(totals).sum()]).cpu().tolist()
        logs = dict(zip(list(pending) + ["total_loss"], values))
        for key, (w, name) in where.items():
            if not math.isfinite(logs[key]):
                raise FloatingPointError(
                    f"loss became {logs[key]} at iteration {iteration}, width {w}, term {name!r}")
        method.on_step_end(ctx)
        return logs

    def summed_loss(self, method: nn.Module, data,
                    autocast: Callable[[], ContextManager] = contextlib.nullcontext,
                    iteration: int = -1) -> torch.Tensor:
        """The same step as one graph over all widths: the weighted sum of every width's loss.

        Its backward gives the gradient :meth:`run` accumulates width by width, at the peak
        memory of all widths' graphs together. For tests and the memory benchmark; it does not
        call ``on_step_end``.
        """
        self.begin_step(iteration)
        with torch.no_grad(), autocast():
            ctx = method.prepare(data)
        total = sum(term.loss for term in self.width_terms(method, data, ctx, autocast=autocast))
        set_width(method, self.all_widths[0])
        return total
