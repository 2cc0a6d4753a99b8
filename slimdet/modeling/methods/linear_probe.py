"""The switchable linear probe (docs/method.md §5): frozen slimmable backbone, one linear classifier per width.

A single slimmable classifier would share its leading block across widths and the widths' optima
conflict there, so each width gets its own ``Linear(features_w, classes)`` (``SwitchableLinear``,
``classifier.linears.{i}`` as in the reference probe files), optionally after a BN without affine
parameters (``MODEL.PROBE.FEATURE_BN``, ``feature_norm.bn.{i}``; :meth:`LinearProbe.classifier_for`
folds it into the linear layer). The backbone stays in eval mode so
each width classifies with the BN statistics it had at the end of pre-training.

The probe is run by the ordinary width loop: CE of the full width plus, for every sub-width,
``0.5 * [distillation to the full width's class logits + CE]`` — the loop with
``MODEL.SLIM.LOSS_WEIGHTING: uniform``, ``DISTILL_WEIGHT: 0.5``, ``DISTILL_TEMPERATURE: 1.0``
(the probe configs set these).
"""
from __future__ import annotations

import torch
from torch import nn

from ...config import ConfigError, evaluation_widths
from ...layers import (SwitchableBatchNorm1d, SwitchableLinear, add_widths, normalized_width,
                       set_width)
from ..backbone import build_backbone
from .base import ClassificationMethod
from .build import METHOD_REGISTRY


def calibration_setting(cfg) -> list:
    """What the BN statistics of untrained widths are a function of, besides the weights and
    the data keys. Not the number of processes: calibration reads the same whole batches in
    every process of any job (``slimdet.evaluation.calibration``), so a probe trained with
    ``--num-gpus 2`` and a one-process evaluation of it agree on this record and on the
    statistics."""
    return [int(cfg.TEST.CALIBRATE_BATCHES), int(cfg.SOLVER.IMS_PER_BATCH), int(cfg.SEED)]


@METHOD_REGISTRY.register()
class LinearProbe(ClassificationMethod):
    """Frozen ``backbone`` + ``classifier`` (one linear layer per width).

    The trainer loads ``MODEL.WEIGHTS`` (a slimdet pre-training / probe checkpoint or a
    reference file) before the first step: all of a frozen backbone (``frozen_parts``), and a
    probe checkpoint's classifier too; ``--eval-only`` needs both (``eval_parts``).
    """

    classifier_parts = ("classifier", "feature_norm")

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
        # MODEL.PROBE.FEATURE_BN: each width's features standardised by a BN without affine
        # parameters (MAE's probe), so features of any scale train at one learning rate.
        self.feature_norm = SwitchableBatchNorm1d(
            self.backbone.num_features, widths, affine=False, eps=1e-6
        ) if cfg.MODEL.PROBE.FEATURE_BN else nn.Identity()
        self.freeze_backbone = cfg.MODEL.PROBE.FREEZE_BACKBONE
        # The calibration the classifiers of untrained widths are trained on (saved with them;
        # a file without it keeps the config's): TEST.CALIBRATE_BATCHES training batches of
        # SOLVER.IMS_PER_BATCH images, drawn by SEED. Evaluation compares it with its own.
        self.register_buffer("trained_calibration", torch.tensor(calibration_setting(cfg)))
        self.untrained = list(untrained)
        if self.freeze_backbone:
            for p in self.backbone.parameters():
                p.requires_grad_(False)
        # The whole model at one of its classifiers' widths (the backbone's layers start at 1.0,
        # which a probe of narrower widths only has no classifier for).
        set_width(self, widths[0])
        self.train()

    def calibration_mismatch(self, cfg) -> str:
        trained, now = self.trained_calibration.tolist(), calibration_setting(cfg)
        if not self.untrained or trained == now:
            return ""
        names = ("TEST.CALIBRATE_BATCHES", "SOLVER.IMS_PER_BATCH", "SEED")
        diff = ", ".join(f"{k} {a} (now {b})" for k, a, b in zip(names, trained, now) if a != b)
        return (f"the classifiers of widths {[f'{w:g}' for w in self.untrained]} were trained on "
                f"BN statistics estimated with {diff}: this evaluation estimates other ones, so "
                "its numbers at those widths differ from the training run's; use the probe's "
                "settings to reproduce them")

    def state_from_file(self, state):
        """A probe file trained at more widths than this probe's (``TEST.WIDTHS [0.25]`` of a
        probe trained at [1.0, 0.5, 0.25]): keeps the classifier and feature BN of each of this
        probe's widths, renumbered to its own layout. The file's ``classifier.linears.{i}`` is
        recognised as a width by its number of input features (the backbone's features at that
        width), so the order and number of the file's widths need not be known. A file whose
        classifiers read standardised features (``feature_norm``) is refused by a probe without
        ``MODEL.PROBE.FEATURE_BN``: leaving that part out would change every logit."""
        prefix = "classifier.linears."
        standardised = any(k.startswith("feature_norm.") for k in state)
        if standardised and not isinstance(self.feature_norm, SwitchableBatchNorm1d):
            # Not a part to leave out: the classifiers expect standardised features.
            raise ValueError("its probe classifiers were trained on standardised features "
                             "(feature_norm: MODEL.PROBE.FEATURE_BN True), which this probe "
                             "does not standardise: set MODEL.PROBE.FEATURE_BN True")
        file_features = {}  # the file's classifier index -> its input features
        for key, tensor in state.items():
            if key.startswith(prefix) and key.endswith(".weight"):
                file_features[int(key[len(prefix):].split(".")[0])] = tensor.shape[-1]
        own_features = [linear.in_features for linear in self.classifier.linears]
        if not file_features or [file_features.get(i) for i in range(len(file_features))] == own_features:
            return state  # no classifiers (a pre-training file), or the same layout
        if len(set(file_features.values())) < len(file_features):
            return state  # two classifiers of one size: not a probe file's layout; checked as is
        index_of = {features: i for i, features in file_features.items()}
        lacking = [w for w, f in zip(self.classifier.widths, own_features) if f not in index_of]
        if lacking:
            have = sorted(file_features.values(), reverse=True)
            raise ValueError(
                f"it holds probe classifiers for widths "
                f"{[f'{f / self.backbone.num_features:.4g}' for f in have]} (recognised by their "
                f"input features), none for {[f'{w:g}' for w in lacking]} of this probe's widths "
                f"{[f'{w:g}' for w in self.classifier.widths]} (TEST.WIDTHS, default "
                "MODEL.WIDTHS): evaluate some of the file's widths, or train a probe at those")
        parts = (prefix, "feature_norm.bn.")
        kept = {k: v for k, v in state.items() if not k.startswith(parts)}
        for j, features in enumerate(own_features):
            i = index_of[features]
            for part in parts:
                for key, tensor in state.items():
                    if key.startswith(f"{part}{i}."):
                        kept[f"{part}{j}.{key[len(part) + len(str(i)) + 1:]}"] = tensor
        return kept

    def eval_parts(self):
        # A feature BN's running statistics are part of the classifier.
        with_norm = isinstance(self.feature_norm, SwitchableBatchNorm1d)
        return ("backbone", "classifier") + (("feature_norm",) if with_norm else ())

    def frozen_parts(self):
        return ("backbone",) if self.freeze_backbone else ()

    def loop_widths(self):
        """The probe trains (and evaluates) one classifier per width of ``TEST.WIDTHS``."""
        return list(self.classifier.widths)

    def classifier_widths(self):
        return list(self.classifier.widths)

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
        return self.classifier(self.feature_norm(self.features(images)))

    @torch.no_grad()
    def classifier_for(self, width: float) -> nn.Linear:
        """The classifier of ``width`` as one plain ``Linear`` on the backbone's pooled features,
        equal to the probe in eval mode: with ``MODEL.PROBE.FEATURE_BN`` the BN's running
        statistics are folded in (``W' = W / sigma``, ``b' = b - W' mu``), so an exported width
        is its backbone plus this layer."""
        widths, width = self.classifier.widths, normalized_width(width)
        if width not in widths:
            raise ValueError(f"the probe has classifiers for widths {widths} only, not {width:g}")
        i = widths.index(width)
        linear = self.classifier.linears[i]
        weight, bias = linear.weight.detach().clone(), linear.bias.detach().clone()
        if isinstance(self.feature_norm, SwitchableBatchNorm1d):
            bn = self.feature_norm.bn[i]
            weight = weight * torch.rsqrt(bn.running_var + bn.eps)
            bias = bias - weight @ bn.running_mean
        plain = nn.Linear(linear.in_features, linear.out_features).to(weight.device)
        plain.weight.copy_(weight)
        plain.bias.copy_(bias)
        return plain
