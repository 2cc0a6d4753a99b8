"""LR schedules, defined per iteration as the reference scripts run them (docs/schedules.md).

Each registered schedule is an fvcore ``ParamScheduler`` giving the multiplier of the base LR;
Detectron2's ``LRMultiplier`` evaluates it once per iteration at ``where = i / max_iter`` and
:class:`IterationSchedule` turns that back into the iteration ``i``, so boundaries (end of
warm-up, LR steps, the base-LR swap) fall on exact iterations. Epoch keys become iterations
through :class:`~slimdet.solver.clock.EpochClock` only, so ``SOLVER.MAX_ITER`` shortens the
whole recipe alike.
"""
from __future__ import annotations

import math
from typing import Sequence

from detectron2.solver import LRMultiplier
from fvcore.common.param_scheduler import ParamScheduler
from fvcore.common.registry import Registry

from ..config import ConfigError
from ..utils.registry import lookup
from .clock import EpochClock

LR_SCHEDULER_REGISTRY = Registry("LR_SCHEDULER")
LR_SCHEDULER_REGISTRY.__doc__ = ("LR schedules: ``fn(cfg, clock: EpochClock) -> ParamScheduler`` "
                                 "giving the multiplier of the base LR at a training fraction.")


class IterationSchedule(ParamScheduler):
    """A ParamScheduler written per iteration (:meth:`at`) for a run of ``max_iter``."""

    def __init__(self, max_iter: int):
        self.max_iter = max_iter

    def __call__(self, where: float) -> float:
        # LRMultiplier passes i / max_iter; rounding recovers i exactly.
        return self.at(int(round(where * self.max_iter)))

    def at(self, iteration: int) -> float:
        raise NotImplementedError


class WarmupCosineSchedule(IterationSchedule):
    """``i / W`` for ``i <= W``, then ``0.5 * (1 + cos(pi * (i - W) / (max_iter - W)))``: a linear
    warm-up from 0 over ``W`` (possibly fractional) iterations, then a half cosine over the
    iterations after the warm-up only."""

    def __init__(self, max_iter: int, warmup_iters: float):
        super().__init__(max_iter)
        self.warmup = warmup_iters

    def at(self, iteration: int) -> float:
        if self.warmup > 0 and iteration <= self.warmup:
            return iteration / self.warmup
        t, span = iteration - self.warmup, self.max_iter - self.warmup
        return 0.5 * (1.0 + math.cos(math.pi * t / span))


class WarmupMultiStepSchedule(IterationSchedule):
    """``i / W`` for ``i <= W``, then ``gamma ** k`` with ``k`` the number of step iterations
    reached (``i >= step``)."""

    def __init__(self, max_iter: int, warmup_iters: float, steps: Sequence[float], gamma: float):
        super().__init__(max_iter)
        self.warmup, self.steps, self.gamma = warmup_iters, sorted(steps), gamma

    def at(self, iteration: int) -> float:
        if self.warmup > 0 and iteration <= self.warmup:
            return iteration / self.warmup
        return self.gamma ** sum(iteration >= s for s in self.steps)


class BaseLRSwap(IterationSchedule):
    """``schedule`` times ``ratio`` from iteration ``swap_iter`` on: the base LR of the same
    schedule is replaced there while the schedule keeps running (the reference's base-LR
    replacement at the slow-start epoch)."""

    def __init__(self, schedule: IterationSchedule, swap_iter: float, ratio: float):
        super().__init__(schedule.max_iter)
        self.schedule, self.swap_iter, self.ratio = schedule, swap_iter, ratio

    def at(self, iteration: int) -> float:
        return self.schedule.at(iteration) * (self.ratio if iteration >= self.swap_iter else 1.0)


def _warmup_iters(cfg, clock: EpochClock) -> float:
    s = cfg.SOLVER
    if not 0 <= s.WARMUP_EPOCHS < s.EPOCHS:
        raise ConfigError(f"SOLVER.WARMUP_EPOCHS must be in [0, SOLVER.EPOCHS = {s.EPOCHS}), "
                          f"got {s.WARMUP_EPOCHS}")
    return clock.iteration(s.WARMUP_EPOCHS)


@LR_SCHEDULER_REGISTRY.register()
def WarmupCosine(cfg, clock: EpochClock) -> IterationSchedule:
    """Linear warm-up over SOLVER.WARMUP_EPOCHS, then a half cosine to 0 over the rest of the
    run (the cosine does not span the warm-up)."""
    return WarmupCosineSchedule(clock.max_iter, _warmup_iters(cfg, clock))


@LR_SCHEDULER_REGISTRY.register()
def WarmupMultiStep(cfg, clock: EpochClock) -> IterationSchedule:
    """Linear warm-up over SOLVER.WARMUP_EPOCHS, then x SOLVER.GAMMA at each epoch of
    SOLVER.STEPS (the MoCo v2 linear probe: 60 and 80 of 100)."""
    s = cfg.SOLVER
    bad = [e for e in s.STEPS if not 0 < e < s.EPOCHS]
    if bad:
        raise ConfigError(f"SOLVER.STEPS must be epochs inside (0, SOLVER.EPOCHS = {s.EPOCHS}), "
                          f"got {list(s.STEPS)}")
    return WarmupMultiStepSchedule(clock.max_iter, _warmup_iters(cfg, clock),
                                   [clock.iteration(e) for e in s.STEPS], s.GAMMA)


def build_lr_schedule(cfg, clock: EpochClock) -> IterationSchedule:
    """The registered schedule of SOLVER.LR_SCHEDULER_NAME, with the base LR replaced by
    SOLVER.BASE_LR_AFTER_SLOW_START from MODEL.SLIM.SLOW_START_EPOCH on when both are set."""
    fn = lookup(LR_SCHEDULER_REGISTRY, cfg.SOLVER.LR_SCHEDULER_NAME, "SOLVER.LR_SCHEDULER_NAME")
    schedule = fn(cfg, clock)
    after, start = cfg.SOLVER.BASE_LR_AFTER_SLOW_START, cfg.MODEL.SLIM.SLOW_START_EPOCH
    if after > 0 and start > 0:
        if cfg.SOLVER.BASE_LR <= 0:
            raise ConfigError("SOLVER.BASE_LR must be positive with "
                              f"SOLVER.BASE_LR_AFTER_SLOW_START, got {cfg.SOLVER.BASE_LR}")
        schedule = BaseLRSwap(schedule, clock.iteration(start), after / cfg.SOLVER.BASE_LR)
    return schedule


def build_lr_scheduler(cfg, optimizer, clock: EpochClock) -> LRMultiplier:
    """The per-iteration LR of every parameter group: its base LR times the schedule."""
    return LRMultiplier(optimizer, build_lr_schedule(cfg, clock), clock.max_iter)


def half_cosine(start: float, end: float, fraction: float) -> float:
    """``start`` -> ``end`` along a half cosine (MoCo v3 momentum)."""
    return end - (end - start) * (math.cos(math.pi * fraction) + 1) / 2
