"""The switchable linear probe (SPEC §5): frozen slimmable backbone, one linear classifier per width.

A single slimmable classifier would share its leading block across widths and the widths' optima
conflict there, so each width gets its own ``Linear(features_w, classes)`` (``SwitchableLinear``,
``classifier.linears.{i}`` as in the reference probe files). The backbone stays in eval mode so
each width classifies with the BN statistics it had at the end of pre-training.

The probe is run by the ordinary width loop: CE of the full width plus, for every sub-width,
``0.5 * [distillation to the full width's class logits + CE]`` — the loop with
``MODEL.SLIM.LOSS_WEIGHTING: uniform``, ``DISTILL_WEIGHT: 0.5``, ``DISTILL_TEMPERATURE: 1.0``
(the probe configs set these).
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ...layers import SwitchableLinear
from ..backbone import build_backbone
from .base import ClassificationMethod
from .build import SSL_REGISTRY


@SSL_REGISTRY.register()
class LinearProbe(ClassificationMethod):
    """Frozen ``backbone`` + ``classifier`` (one linear layer per width).

    The trainer loads ``MODEL.WEIGHTS`` (a slimdet pre-training / probe checkpoint or a
    reference file) before the first step: all of a frozen backbone (``frozen_parts``), and a
    probe checkpoint's classifier too; ``--eval-only`` needs both (``eval_parts``).
    """

    def __init__(self, cfg):
        super().__init__()
        self.backbone = build_backbone(cfg)
        self.classifier = SwitchableLinear(self.backbone.num_features, cfg.MODEL.NUM_CLASSES,
                                           cfg.MODEL.WIDTHS)
        for linear in self.classifier.linears:  # MoCo's probe init
            nn.init.normal_(linear.weight, 0.0, 0.01)
            nn.init.zeros_(linear.bias)
        self.freeze_backbone = cfg.MODEL.PROBE.FREEZE_BACKBONE
        if self.freeze_backbone:
            for p in self.backbone.parameters():
                p.requires_grad_(False)
        self.train()

    def eval_parts(self):
        return ("backbone", "classifier")

    def frozen_parts(self):
        return ("backbone",) if self.freeze_backbone else ()

    def classifier_for(self, width: float) -> nn.Linear:
        linear = self.classifier.linears[self.classifier.widths.index(float(width))]
        return copy.deepcopy(linear)

    def train(self, mode: bool = True) -> "LinearProbe":
        """Train the classifier; a frozen backbone stays in eval mode (BN statistics unchanged)."""
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        return self

    def features(self, images: torch.Tensor) -> torch.Tensor:
        if self.freeze_backbone:
            with torch.no_grad():
                return self.backbone(images)
        return self.backbone(images)

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits at the active width (what ClassificationEvaluator calls)."""
        return self.classifier(self.features(images))
