"""slimdet's training hooks. Everything that happens around a step is a hook (Detectron2 style);
Detectron2's own hooks (timer, LR scheduler, checkpointer, writers, evaluation) are reused."""
from __future__ import annotations

import logging
from typing import List

from detectron2.engine.train_loop import HookBase

from ..solver import EpochClock, half_cosine

logger = logging.getLogger("slimdet")


class WidthScheduleHook(HookBase):
    """Slow start (docs/method.md §3): before epoch ``slow_start_epoch`` only the full width
    trains (loss weight 1); from then on every width trains with the re-weighted losses. The
    epoch becomes an iteration through ``clock`` (so it scales with SOLVER.MAX_ITER)."""

    def __init__(self, width_loop, slow_start_epoch: float, clock: EpochClock):
        self.loop = width_loop
        self.start_iter = clock.iteration(slow_start_epoch)
        self._phase = None

    def trained_widths(self, iteration: int) -> List[float]:
        """The widths that have trained once the step of ``iteration`` has run."""
        return self.loop.all_widths if iteration >= self.start_iter else self.loop.all_widths[:1]

    def before_train(self) -> None:
        if len(self.loop.all_widths) > 1 and self.start_iter > self.trainer.max_iter - 1:
            logger.warning("The slow start (iteration %.1f) comes after the last iteration (%d): "
                           "only width %g trains in this run, and the other widths %s will not "
                           "be evaluated", self.start_iter, self.trainer.max_iter - 1,
                           self.loop.all_widths[0], self.loop.all_widths[1:])

    def before_step(self) -> None:
        slow = self.trainer.iter < self.start_iter
        if slow != self._phase:
            widths = self.loop.all_widths[:1] if slow else self.loop.all_widths
            self.loop.set_active(widths)
            self._phase = slow
            logger.info("Iteration %d: training widths %s with loss weights %s",
                        self.trainer.iter, self.loop.widths, self.loop.weights)
        self.trainer.storage.put_scalar("num_widths", len(self.loop.widths), smoothing_hint=False)


class MomentumScheduleHook(HookBase):
    """MoCo v3: the key encoder's momentum follows a half-cosine from its base value to 1 over
    the run (``clock.fraction``: the same curve for a run shortened by SOLVER.MAX_ITER)."""

    def __init__(self, method, base_momentum: float, clock: EpochClock):
        self.method, self.base, self.clock = method, base_momentum, clock

    def before_step(self) -> None:
        m = half_cosine(self.base, 1.0, self.clock.fraction(self.trainer.iter))
        self.method.momentum = m
        self.trainer.storage.put_scalar("momentum", m, smoothing_hint=False)


class QueuePrefillHook(HookBase):
    """Fills a MoCo queue with real keys before the first step (a random queue made small
    slimmable models collapse). Skipped when the queue already holds real keys (a resume)."""

    def __init__(self, method, data_loader):
        self.method, self.data_loader = method, data_loader

    def before_train(self) -> None:
        if int(self.method.queue_filled) >= self.method.queue.shape[1]:
            return
        batches = iter(self.data_loader)  # a separate pass over the first batches
        was_training = self.method.training
        self.method.train()
        n = 0
        while not self.method.prefill_queue(next(batches)):
            n += 1
        self.method.train(was_training)
        logger.info("Queue of %d keys filled from %d batches", self.method.queue.shape[1], n + 1)


class EpochCounterHook(HookBase):
    """Puts the (fractional) epoch, in passes over the training data, into the event storage."""

    def __init__(self, iters_per_epoch: int):
        self.ipe = iters_per_epoch

    def before_step(self) -> None:
        self.trainer.storage.put_scalar("epoch", self.trainer.iter / self.ipe, smoothing_hint=False)

