from .build import OPTIMIZER_REGISTRY, base_lr, build_optimizer, param_groups
from .lars import LARS
from .lr_scheduler import LR_SCHEDULER_REGISTRY, build_lr_scheduler, half_cosine

__all__ = ["OPTIMIZER_REGISTRY", "base_lr", "build_optimizer", "param_groups", "LARS",
           "LR_SCHEDULER_REGISTRY", "build_lr_scheduler", "half_cosine"]
