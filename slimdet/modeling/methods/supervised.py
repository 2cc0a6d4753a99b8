"""Supervised slimmable training (the paper's supervised baseline, docs/method.md §7).

A slimmable backbone and a slimmable-input ``fc`` (every width shares the leading block of one
``Linear(2048, classes)``, as in slimmable networks; the output size is fixed). All widths run
on the same batch every step through the width loop; with ``MODEL.SLIM.DISTILL`` each sub-width
also learns from the full width's detached class logits (in-place distillation), at
``MODEL.SLIM.DISTILL_TEMPERATURE`` (1.0 in the configs).

The backbone returns pooled features (not logits), so kNN and export treat it like any other
method's backbone; ``fc`` sits beside it and exports as torchvision's ``fc``.
"""
from __future__ import annotations

import torch

from ...layers import SlimLinear
from ..backbone import build_backbone
from .base import ClassificationMethod
from .build import METHOD_REGISTRY


@METHOD_REGISTRY.register()
class Supervised(ClassificationMethod):
    """``backbone`` + ``fc`` trained with cross-entropy at every width."""

    classifier_parts = ("fc",)

    def __init__(self, cfg):
        super().__init__()
        self.backbone = build_backbone(cfg)
        self.fc = SlimLinear(self.backbone.num_features, cfg.MODEL.NUM_CLASSES, slim_out=False)
        torch.nn.init.normal_(self.fc.weight, 0.0, 0.01)
        torch.nn.init.zeros_(self.fc.bias)

    def eval_parts(self):
        return ("backbone", "fc")

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits at the active width."""
        return self.fc(self.backbone(images))

    def classifier_for(self, width: float) -> torch.nn.Linear:
        """Width ``width``'s classifier: the leading ``int(features * width)`` input columns."""
        in_w = self.backbone.feature_dim(float(width))
        plain = torch.nn.Linear(in_w, self.fc.out_features)
        with torch.no_grad():
            plain.weight.copy_(self.fc.weight[:, :in_w])
            plain.bias.copy_(self.fc.bias)
        return plain
