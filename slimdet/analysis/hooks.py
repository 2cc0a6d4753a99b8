"""Training hooks of the analysis subsystem: gradient diagnostics and weight trajectories."""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Iterator, List

import torch
from detectron2.engine.train_loop import HookBase
from detectron2.utils import comm

from ..utils.file_io import atomic_write
from ..utils.ddp import unwrap
from ..utils.d2compat import data_iterator, set_data_iterator
from .gradients import width_loop_gradients

logger = logging.getLogger("slimdet")


class _PeekableIterator:
    """An iterator that can give back items, so a hook can look at the next step's batch without
    taking it from the step (and without nesting a new ``itertools.chain`` every time)."""

    def __init__(self, it: Iterator[Any]):
        self.it = it
        self.pending: List[Any] = []

    def __iter__(self) -> "_PeekableIterator":
        return self

    def __next__(self) -> Any:
        return self.pending.pop() if self.pending else next(self.it)

    def peek(self) -> Any:
        if not self.pending:
            self.pending.append(next(self.it))
        return self.pending[-1]


class GradientDiagnosticsHook(HookBase):
    """Every ``period`` iterations, before the step: per-width gradient norms on the shared
    weights and cosine to the full width (events ``grad_norm/w{w}``, ``grad_cos/w{w}``), measured
    on the very batch and weights the step is about to use.

    Training is unchanged: the batch is peeked and handed back to the step, and
    :func:`width_loop_gradients` restores buffers, frozen weights and RNG and leaves ``.grad``
    alone. The cost (one extra forward+backward per width) is logged as ``grad_diag_time``.
    Under DDP each process measures its own shard's gradient (no all-reduce).
    """

    def __init__(self, period: int):
        self.period = int(period)

    def before_train(self) -> None:
        batches = data_iterator(self.trainer)
        if not isinstance(batches, _PeekableIterator):
            set_data_iterator(self.trainer, _PeekableIterator(batches))

    def before_step(self) -> None:
        t = self.trainer
        if self.period <= 0 or t.iter % self.period != 0:
            return
        start = time.perf_counter()
        data = data_iterator(t).peek()
        model = unwrap(t.model)
        was_training = model.training
        model.train()
        results = width_loop_gradients(model, data, t.width_loop)
        model.train(was_training)
        results["grad_diag_time"] = time.perf_counter() - start
        if comm.is_main_process():
            t.storage.put_scalars(smoothing_hint=False, **results)


# Where TrajectoryHook saves into OUTPUT_DIR, and its file names (``--overwrite`` removes them).
TRAJECTORY_DIR, TRAJECTORY_PATTERN = "trajectory", "iter_*.pth"


class TrajectoryHook(HookBase):
    """Saves the method's weights every ``period`` iterations (and after the last step) to
    ``OUTPUT_DIR/trajectory/iter_XXXXXXX.pth`` (XXXXXXX = steps done) for the loss-landscape trajectory
    (``tools/plot_landscape.py``). Only the model, not the optimizer: a few MB for the demo."""

    def __init__(self, period: int, output_dir: str):
        self.period = int(period)
        self.dir = os.path.join(output_dir, TRAJECTORY_DIR)

    def _save(self, steps_done: int) -> None:
        if not comm.is_main_process():
            return
        os.makedirs(self.dir, exist_ok=True)
        path = os.path.join(self.dir, f"iter_{steps_done:07d}.pth")
        state = {k: v.detach().cpu() for k, v in unwrap(self.trainer.model).state_dict().items()}
        atomic_write(path, lambda f: torch.save({"model": state, "iteration": steps_done}, f))

    def before_train(self) -> None:
        # The start of the trajectory (the initial weights, or the resumed ones).
        if self.period > 0:
            self._save(self.trainer.start_iter)

    def after_step(self) -> None:
        done = self.trainer.iter + 1
        if self.period > 0 and (done % self.period == 0 or done == self.trainer.max_iter):
            self._save(done)
