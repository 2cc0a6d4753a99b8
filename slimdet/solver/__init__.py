from .build import OPTIMIZER_REGISTRY, base_lr, build_optimizer, param_groups
from .clock import EpochClock
from .lars import LARS
from .lr_scheduler import (LR_SCHEDULER_REGISTRY, BaseLRSwap, IterationSchedule,
                           WarmupCosineSchedule, WarmupMultiStepSchedule, build_lr_schedule,
                           build_lr_scheduler, half_cosine)

__all__ = ["OPTIMIZER_REGISTRY", "base_lr", "build_optimizer", "param_groups", "EpochClock", "LARS",
           "LR_SCHEDULER_REGISTRY", "BaseLRSwap", "IterationSchedule", "WarmupCosineSchedule",
           "WarmupMultiStepSchedule", "build_lr_schedule", "build_lr_scheduler", "half_cosine"]
