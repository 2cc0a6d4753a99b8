"""Mask R-CNN (any Detectron2 ``GeneralizedRCNN``) that trains and runs at several widths.

The network is Detectron2's own; this subclass only adds what the shared width loop of
:mod:`slimdet.modeling.slim` needs from a "method" (``prepare`` / ``task_loss`` /
``on_step_end``), so detection training uses the same per-width forward/backward and DDP
``no_sync`` logic as pre-training instead of a copy of it. Parameter names are unchanged, so
checkpoints stay Detectron2 checkpoints.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Sequence

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN

from ..modeling.slim import TaskOutput
from .backbone import make_norms_switchable


@META_ARCH_REGISTRY.register()
class SlimGeneralizedRCNN(GeneralizedRCNN):
    """``GeneralizedRCNN`` with a slimmable backbone, shared FPN/heads and a width list.

    Set the width with ``slimdet.layers.set_width(model, w)`` before calling it.
    """

    @configurable
    def __init__(self, *, widths: Sequence[float], switchable_head_norms: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.widths: List[float] = [float(w) for w in widths]
        if switchable_head_norms:
            # The backbone's own BNs are already per width; give FPN / RPN / ROI heads theirs.
            shared = [m for name, m in self.backbone.named_children() if name != "bottom_up"]
            n = sum(make_norms_switchable(m, self.widths) for m in shared)
            n += make_norms_switchable(self.proposal_generator, self.widths)
            n += make_norms_switchable(self.roi_heads, self.widths)
            if n:
                logging.getLogger(__name__).info(
                    "%d norm layers of the shared FPN/heads now have one copy per width", n)

    @classmethod
    def from_config(cls, cfg):
        args = super().from_config(cfg)
        args["widths"] = cfg.MODEL.WIDTHS
        args["switchable_head_norms"] = cfg.MODEL.SLIM.SWITCHABLE_HEAD_NORMS
        return args

    # --- the "method" protocol of slimdet.modeling.slim.WidthLoop -------------------------
    def prepare(self, batched_inputs) -> None:
        """Detection has no per-step targets shared across widths (no teacher)."""
        return None

    def task_loss(self, loss_dict: Dict[str, torch.Tensor], ctx, is_full: bool) -> TaskOutput:
        """Sum of Detectron2's losses for one width; each term is logged per width."""
        total = sum(loss_dict.values())
        return TaskOutput(loss=total, distill_logits=[],
                          metrics={k: float(v.detach()) for k, v in loss_dict.items()})

    def on_step_end(self, ctx) -> None:
        return None
