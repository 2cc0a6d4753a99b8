"""What MoCo v2 and MoCo v3 share: a frozen key encoder (EMA copy of the student's backbone and
projector) that gives the keys at full width once per step, and the momentum schedule hook.

Each method supplies only its own part: which keys a batch gives (``keys_of``) and its loss.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Sequence

import torch
from detectron2.engine.train_loop import HookBase
from torch import nn

from ...layers import use_width
from ...solver import EpochClock, half_cosine
from .base import TrainingMethod, ema_update, momentum_copy

logger = logging.getLogger("slimdet")


class MomentumEncoderMethod(TrainingMethod):
    """A method whose targets come from an EMA copy of ``backbone`` and ``projector``.

    A subclass builds ``backbone`` and ``projector``, then calls :meth:`init_key_encoder`, and
    implements :meth:`keys_of`.
    """

    backbone_k: nn.Module
    projector_k: nn.Module

    def init_key_encoder(self, momentum: float) -> None:
        self.backbone_k = momentum_copy(self.backbone)
        self.projector_k = momentum_copy(self.projector)
        self.momentum = momentum

    def momentum_encoders(self) -> List[nn.Module]:
        return [self.backbone_k, self.projector_k]

    @torch.no_grad()
    def after_weights_loaded(self, left_out: Sequence[str]) -> None:
        """A file without the key encoder (a probe's or a supervised checkpoint, a bare
        backbone) leaves it at its random initialisation while the student is loaded: the keys
        and the queue would come from a random network for hundreds of steps. MoCo starts the
        key encoder as a copy of the student, so it is copied again from the loaded one."""
        missing = set(left_out)
        for twin, student, name in ((self.backbone_k, self.backbone, "backbone_k"),
                                    (self.projector_k, self.projector, "projector_k")):
            keys = [f"{name}.{k}" for k in twin.state_dict()]
            if keys and all(k in missing for k in keys):
                twin.load_state_dict(student.state_dict())
                logger.info("MODEL.WEIGHTS has no %s: it starts as a copy of the loaded %s",
                            name, name[:-2])

    def keys_of(self, data: Dict[str, Any]) -> Dict[str, Any]:
        """The step's targets from the key encoder (called at full width, without gradient)."""
        raise NotImplementedError

    def key_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.projector_k(self.backbone_k(images))

    @torch.no_grad()
    def prepare(self, data: Dict[str, Any]) -> Dict[str, Any]:
        # The key encoder follows the student of the previous step (the reference's order:
        # momentum update, then keys), and always gives full-width keys.
        ema_update(self.backbone_k, self.backbone, self.momentum)
        ema_update(self.projector_k, self.projector, self.momentum)
        with use_width(self, 1.0):
            return self.keys_of(data)


class MomentumScheduleHook(HookBase):
    """The key encoder's momentum follows a half-cosine from ``base_momentum`` to 1 over the run
    (MoCo v3; ``clock.fraction``: the same curve for a run shortened by SOLVER.MAX_ITER)."""

    def __init__(self, method: MomentumEncoderMethod, base_momentum: float, clock: EpochClock):
        self.method, self.base, self.clock = method, base_momentum, clock

    def before_step(self) -> None:
        m = half_cosine(self.base, 1.0, self.clock.fraction(self.trainer.iter))
        self.method.momentum = m
        self.trainer.storage.put_scalar("momentum", m, smoothing_hint=False)
