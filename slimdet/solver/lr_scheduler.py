"""LR schedules as fvcore ``ParamScheduler`` multipliers of the base LR over training, driven by
Detectron2's ``LRMultiplier`` (one value per iteration)."""
from __future__ import annotations

import math

from detectron2.solver import LRMultiplier, WarmupParamScheduler
from fvcore.common.param_scheduler import (CosineParamScheduler, MultiStepParamScheduler,
                                           ParamScheduler)
from fvcore.common.registry import Registry

from ..utils.registry import lookup
from .build import base_lr

LR_SCHEDULER_REGISTRY = Registry("LR_SCHEDULER")
LR_SCHEDULER_REGISTRY.__doc__ = ("LR schedules: ``fn(cfg, max_iter, iters_per_epoch) -> "
                                 "ParamScheduler`` giving the LR multiplier at a training fraction.")


def _with_warmup(cfg, sched: ParamScheduler, max_iter: int, iters_per_epoch: int) -> ParamScheduler:
    warm = cfg.SOLVER.WARMUP_EPOCHS * iters_per_epoch / max(1, max_iter)
    if warm <= 0:
        return sched
    # Linear warm-up from ~0 (MoCo v3 / SimCLR start at lr * 1 / warm-up iterations).
    return WarmupParamScheduler(sched, warmup_factor=1.0 / max(1, cfg.SOLVER.WARMUP_EPOCHS * iters_per_epoch),
                                warmup_length=min(warm, 1.0), warmup_method="linear")


@LR_SCHEDULER_REGISTRY.register()
def WarmupCosine(cfg, max_iter: int, iters_per_epoch: int) -> ParamScheduler:
    """Linear warm-up for WARMUP_EPOCHS, then half-cosine to 0 at the end of training."""
    return _with_warmup(cfg, CosineParamScheduler(1.0, 0.0), max_iter, iters_per_epoch)


@LR_SCHEDULER_REGISTRY.register()
def WarmupMultiStep(cfg, max_iter: int, iters_per_epoch: int) -> ParamScheduler:
    """x GAMMA at each epoch of SOLVER.STEPS (the MoCo v2 linear probe: 60, 80 of 100)."""
    steps = [int(e * iters_per_epoch) for e in cfg.SOLVER.STEPS]
    values = [cfg.SOLVER.GAMMA ** i for i in range(len(steps) + 1)]
    sched = MultiStepParamScheduler(values, num_updates=max_iter, milestones=steps) if steps \
        else MultiStepParamScheduler([1.0], num_updates=max_iter, milestones=[])
    return _with_warmup(cfg, sched, max_iter, iters_per_epoch)


class SwapAfter(ParamScheduler):
    """``sched`` times 1 before ``where`` and times ``ratio`` from then on."""

    def __init__(self, sched: ParamScheduler, where: float, ratio: float):
        self.sched, self.where, self.ratio = sched, where, ratio

    def __call__(self, where: float) -> float:
        return self.sched(where) * (self.ratio if where >= self.where else 1.0)


@LR_SCHEDULER_REGISTRY.register()
def SlowStartSwapCosine(cfg, max_iter: int, iters_per_epoch: int) -> ParamScheduler:
    """WarmupCosine whose base LR becomes SOLVER.BASE_LR_AFTER_SLOW_START from
    MODEL.SLIM.SLOW_START_EPOCH on (SlimCLR-MoCo v3: 1.2 -> 3.2); the cosine continues."""
    sched = WarmupCosine(cfg, max_iter, iters_per_epoch)
    after = cfg.SOLVER.BASE_LR_AFTER_SLOW_START
    if after <= 0 or cfg.MODEL.SLIM.SLOW_START_EPOCH <= 0:
        return sched
    where = cfg.MODEL.SLIM.SLOW_START_EPOCH * iters_per_epoch / max_iter
    return SwapAfter(sched, where, after / cfg.SOLVER.BASE_LR)


def build_lr_scheduler(cfg, optimizer, max_iter: int, iters_per_epoch: int) -> LRMultiplier:
    fn = lookup(LR_SCHEDULER_REGISTRY, cfg.SOLVER.LR_SCHEDULER_NAME, "SOLVER.LR_SCHEDULER_NAME")
    return LRMultiplier(optimizer, fn(cfg, max_iter, iters_per_epoch), max_iter)


def half_cosine(start: float, end: float, fraction: float) -> float:
    """``start`` -> ``end`` along a half cosine (MoCo v3 momentum)."""
    return end - (end - start) * (math.cos(math.pi * fraction) + 1) / 2
