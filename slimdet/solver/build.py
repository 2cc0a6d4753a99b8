"""Optimizers and LR schedules from the config."""
from __future__ import annotations

from typing import Dict, List

import torch
from fvcore.common.registry import Registry
from torch import nn

from ..utils.registry import lookup
from .lars import LARS

OPTIMIZER_REGISTRY = Registry("OPTIMIZER")
OPTIMIZER_REGISTRY.__doc__ = "Optimizers: ``fn(cfg, param_groups) -> torch.optim.Optimizer``."


def base_lr(cfg) -> float:
    """BASE_LR, linearly scaled by IMS_PER_BATCH / REFERENCE_BATCH_SIZE when that is set."""
    s = cfg.SOLVER
    return s.BASE_LR * s.IMS_PER_BATCH / s.REFERENCE_BATCH_SIZE if s.REFERENCE_BATCH_SIZE else s.BASE_LR


def param_groups(cfg, model: nn.Module) -> List[Dict]:
    """Three groups: weights (WEIGHT_DECAY), norm parameters (WEIGHT_DECAY_NORM) and biases
    (WEIGHT_DECAY_BIAS); the last two are excluded from LARS' trust ratio."""
    norm_types = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)
    weights, norms, biases, seen = [], [], [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if isinstance(module, norm_types):
                norms.append(p)
            elif name == "bias":
                biases.append(p)
            else:
                weights.append(p)
    s = cfg.SOLVER
    groups = [dict(params=weights, weight_decay=s.WEIGHT_DECAY, lars_exclude=False),
              dict(params=norms, weight_decay=s.WEIGHT_DECAY_NORM, lars_exclude=True),
              dict(params=biases, weight_decay=s.WEIGHT_DECAY_BIAS, lars_exclude=True)]
    return [g for g in groups if g["params"]]


@OPTIMIZER_REGISTRY.register()
def SGD(cfg, groups) -> torch.optim.Optimizer:
    for g in groups:
        g.pop("lars_exclude", None)
    return torch.optim.SGD(groups, lr=base_lr(cfg), momentum=cfg.SOLVER.MOMENTUM,
                           nesterov=cfg.SOLVER.NESTEROV)


def build_lars(cfg, groups) -> torch.optim.Optimizer:
    return LARS(groups, lr=base_lr(cfg), momentum=cfg.SOLVER.MOMENTUM,
                trust_coefficient=cfg.SOLVER.LARS_TRUST_COEF)


# Registered by name: the builder cannot share the optimizer class's name.
OPTIMIZER_REGISTRY._do_register("LARS", build_lars)


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    fn = lookup(OPTIMIZER_REGISTRY, cfg.SOLVER.OPTIMIZER, "SOLVER.OPTIMIZER")
    return fn(cfg, param_groups(cfg, model))
