"""The switchable linear probe (docs/method.md §5): frozen slimmable backbone, one linear classifier per width.

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

from ...config import ConfigError, evaluation_widths
from ...layers import SwitchableLinear, add_widths, normalized_width
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
        # One classifier per evaluation width (TEST.WIDTHS, default MODEL.WIDTHS); a width the
        # backbone was not trained at gets BN statistics of its own, estimated on training
        # batches before the probe trains (engine CalibrationHook; slimdet.layers.any_width).
        widths = evaluation_widths(cfg)
        untrained = add_widths(self.backbone, widths)
        if untrained and not cfg.MODEL.PROBE.FREEZE_BACKBONE:
            raise ConfigError(f"TEST.WIDTHS {[f'{w:g}' for w in untrained]} are not trained widths "
                              "of the backbone: a probe at such widths needs "
                              "MODEL.PROBE.FREEZE_BACKBONE True (their BN statistics are "
                              "estimated once, before the probe trains)")
        self.classifier = SwitchableLinear(self.backbone.num_features, cfg.MODEL.NUM_CLASSES,
                                           widths)
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

    def loop_widths(self):
        """The probe trains (and evaluates) one classifier per width of ``TEST.WIDTHS``."""
        return list(self.classifier.widths)

    def classifier_widths(self):
        return list(self.classifier.widths)

    def classifier_for(self, width: float) -> nn.Linear:
        if normalized_width(width) not in self.classifier.widths:
            raise ValueError(f"the probe has classifiers for widths {self.classifier.widths} only, "
                             f"not {width:g}")
        linear = self.classifier.linears[self.classifier.widths.index(normalized_width(width))]
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
