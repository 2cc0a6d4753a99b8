"""Slimmable ResNet (docs/method.md §2): torchvision "v1.5" layout (stride on the 3x3 conv), basic blocks
for depths 18/34 and bottlenecks for 50/101/152, every layer sliced to the active width.

Parameter names follow torchvision (``conv1``, ``bn1``, ``layer1.0.conv1`` ... ``fc``) so a width
exports to a torchvision state dict by slicing; each BN is ``<name>.bn.<i>`` (one per width).
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Union

import torch
from torch import nn

from ...config import ConfigError, check_widths
from ...layers import (CalibrationAware, SlimConv2d, SlimLinear, SwitchableBatchNorm,
                       SwitchableBatchNorm2d, UncalibratedWidthError, init_weights,
                       mark_uncalibrated, normalized_width, scaled)
from ...layers.any_width import uncalibrated_widths
from .build import BACKBONE_REGISTRY

STAGE_BLOCKS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3],
                152: [3, 8, 36, 3]}


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_ch: int, inner: int, out_ch: int, stride: int, bn: Callable[[int], nn.Module]):
        super().__init__()
        self.conv1 = SlimConv2d(in_ch, inner, 3, stride=stride, padding=1)
        self.bn1 = bn(inner)
        self.conv2 = SlimConv2d(inner, out_ch, 3, padding=1)
        self.bn2 = bn(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_ch, out_ch, stride, bn)

    @property
    def last_bn(self) -> nn.Module:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_ch: int, inner: int, out_ch: int, stride: int, bn: Callable[[int], nn.Module]):
        super().__init__()
        self.conv1 = SlimConv2d(in_ch, inner, 1)
        self.bn1 = bn(inner)
        self.conv2 = SlimConv2d(inner, inner, 3, stride=stride, padding=1)
        self.bn2 = bn(inner)
        self.conv3 = SlimConv2d(inner, out_ch, 1)
        self.bn3 = bn(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_ch, out_ch, stride, bn)

    @property
    def last_bn(self) -> nn.Module:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _shortcut(in_ch: int, out_ch: int, stride: int, bn: Callable[[int], nn.Module]) -> Optional[nn.Module]:
    if stride == 1 and in_ch == out_ch:
        return None
    return nn.Sequential(SlimConv2d(in_ch, out_ch, 1, stride=stride), bn(out_ch))


@BACKBONE_REGISTRY.register()
class SlimResNet(nn.Module, CalibrationAware):
    """A slimmable ResNet.

    Args:
        depth: 18, 34, 50, 101 or 152.
        widths: width multipliers, full width (1.0) first, strictly decreasing.
        base_channels: stem channels at full width (64 = standard ResNet).
        in_channels: image channels (never sliced).
        cifar_stem: 3x3 stride-1 stem without max-pool, for 32 px images.
        num_classes: if > 0, a slimmable-input ``fc`` returns logits; else pooled features.
        out_features: stage names ("res2".."res5") to return as a dict instead (detection).
        zero_init_residual: zero gamma of every block's last BN (every width).
        channel_multiplier: scales every layer's full-width channel count; a plain network equal
            to width ``w`` of a slimmable one is ``SlimResNet(widths=[1.0], channel_multiplier=w)``.
        shared_bn: BN affine parameters shared by all widths (US-Nets' slimmable BN,
            ``MODEL.SLIM.BN: shared``) instead of one set per width (switchable BN).

    The buffer ``bn_statistics_stale`` (saved with the weights) is True when the BN running
    statistics are not those of the trained widths (sandwich-rule training samples widths, so
    the running averages mix them): a network loaded with it set evaluates only after
    calibration (``slimdet.layers.any_width``).
    """

    @classmethod
    def from_config(cls, cfg, num_classes: int = 0) -> "SlimResNet":
        """The backbone of ``cfg.MODEL.BACKBONE`` at ``cfg.MODEL.WIDTHS`` (BACKBONE_REGISTRY)."""
        b = cfg.MODEL.BACKBONE
        if b.DEPTH not in STAGE_BLOCKS:
            raise ConfigError(f"MODEL.BACKBONE.DEPTH must be one of {sorted(STAGE_BLOCKS)}, "
                              f"got {b.DEPTH}")
        return cls(depth=b.DEPTH, widths=cfg.MODEL.WIDTHS, base_channels=b.BASE_CHANNELS,
                   in_channels=b.IN_CHANNELS, cifar_stem=b.CIFAR_STEM, num_classes=num_classes,
                   out_features=b.OUT_FEATURES or None, zero_init_residual=b.ZERO_INIT_RESIDUAL,
                   shared_bn=cfg.MODEL.SLIM.BN == "shared")

    def __init__(self, depth: int = 50, widths: Sequence[float] = (1.0,), base_channels: int = 64,
                 in_channels: int = 3, cifar_stem: bool = False, num_classes: int = 0,
                 out_features: Optional[Sequence[str]] = None, zero_init_residual: bool = True,
                 channel_multiplier: float = 1.0, shared_bn: bool = False):
        super().__init__()
        if depth not in STAGE_BLOCKS:
            raise ValueError(f"ResNet depth must be one of {sorted(STAGE_BLOCKS)}, got {depth}")
        widths = check_widths(widths, "widths")
        self.depth, self.widths = depth, widths
        self.cifar_stem = cifar_stem
        self.shared_bn = shared_bn
        bn = lambda c: SwitchableBatchNorm2d(c, widths, shared_affine=shared_bn)  # noqa: E731
        block = BasicBlock if depth < 50 else Bottleneck
        ch = lambda c: scaled(c, channel_multiplier)  # noqa: E731
        stem = ch(base_channels)
        if cifar_stem:
            self.conv1 = SlimConv2d(in_channels, stem, 3, stride=1, padding=1, slim_in=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = SlimConv2d(in_channels, stem, 7, stride=2, padding=3, slim_in=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.bn1 = bn(stem)
        self.relu = nn.ReLU(inplace=True)

        in_ch = stem
        self.stage_channels: List[int] = []
        for i, n_blocks in enumerate(STAGE_BLOCKS[depth]):
            inner = ch(base_channels * 2 ** i)
            out_ch = ch(base_channels * 2 ** i * block.expansion)
            blocks = []
            for j in range(n_blocks):
                stride = 2 if (j == 0 and i > 0) else 1
                blocks.append(block(in_ch, inner, out_ch, stride, bn))
                in_ch = out_ch
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            self.stage_channels.append(out_ch)
        self.num_features = in_ch
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = SlimLinear(in_ch, num_classes, slim_out=False) if num_classes > 0 else None
        self.out_features = list(out_features or [])
        for name in self.out_features:
            if name not in ("res2", "res3", "res4", "res5"):
                raise ValueError(f"unknown out feature {name!r}; choose from res2, res3, res4, res5")

        last_bns = [b.last_bn for layer in self.stages for b in layer] if zero_init_residual else []
        init_weights(self, last_bns)
        self.register_buffer("bn_statistics_stale", torch.tensor(False))

    def mark_statistics_stale(self) -> None:
        """Every width's BN statistics must be estimated before it evaluates (saved with the
        weights, so a network loaded from this one's checkpoint knows it too)."""
        self.bn_statistics_stale.fill_(True)
        mark_uncalibrated(self)

    def after_calibration(self) -> None:
        """Stale only while some trained width is still uncalibrated."""
        self.bn_statistics_stale.fill_(bool(uncalibrated_widths(self, self.widths)))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        key = prefix + "bn_statistics_stale"
        if key not in state_dict:  # files from before the flag and reference files: fresh stats
            state_dict = dict(state_dict, **{key: torch.tensor(False)})
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        # The flag describes the statistics just loaded.
        if bool(self.bn_statistics_stale):
            mark_uncalibrated(self)
        else:
            for m in self.modules():
                if isinstance(m, SwitchableBatchNorm):
                    m.uncalibrated.difference_update(m.widths)

    @property
    def stages(self) -> List[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def feature_dim(self, width_mult: float) -> int:
        """Pooled feature size at a width (the input size of a probe / projection head)."""
        return scaled(self.num_features, width_mult)

    def forward_features(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = {}
        for i, stage in enumerate(self.stages):
            x = stage(x)
            outs[f"res{i + 2}"] = x
        return outs

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, Dict[str, torch.Tensor]]:
        feats = self.forward_features(x)
        if self.out_features:
            return {k: feats[k] for k in self.out_features}
        x = torch.flatten(self.avgpool(feats["res5"]), 1)
        return self.fc(x) if self.fc is not None else x


def slice_state_dict(slim_state: Dict[str, torch.Tensor], width_index: int,
                     target_state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Cut one width out of a slimmable state dict, in the shapes of ``target_state``.

    ``target_state`` is the state dict of the same architecture built with a single width
    (``widths=[1.0]``, so its BNs are ``<name>.bn.0``); every tensor is the leading slice of the
    slimmable one and every BN comes from ``<name>.bn.<width_index>``.
    """
    out = {}
    for key, ref in target_state.items():
        src_key = key.replace(".bn.0.", f".bn.{width_index}.")
        if src_key not in slim_state:
            raise KeyError(f"slimmable state dict has no {src_key!r} (needed for {key!r})")
        src = slim_state[src_key]
        if src.dim() != ref.dim():
            raise ValueError(f"{src_key}: shape {tuple(src.shape)} cannot give {tuple(ref.shape)}")
        out[key] = src[tuple(slice(0, n) for n in ref.shape)].clone() if src.dim() else src.clone()
    return out


def plain_network(model: SlimResNet, width_mult: float) -> SlimResNet:
    """A freshly initialised single-width SlimResNet of ``model``'s architecture at
    ``width_mult`` (any width: what it costs to run, not what it computes)."""
    return SlimResNet(
        depth=model.depth, widths=[1.0], base_channels=model.conv1.out_channels,
        in_channels=model.conv1.in_channels, cifar_stem=model.cifar_stem,
        num_classes=model.fc.out_features if model.fc is not None else 0,
        out_features=model.out_features or None, channel_multiplier=normalized_width(width_mult))


def extract_subnet(model: SlimResNet, width_mult: float) -> SlimResNet:
    """A plain (single-width, switchable-BN) SlimResNet equal to ``model`` at ``width_mult``,
    weights copied: every tensor is the leading slice the width uses, every BN holds the
    parameters and statistics it normalises with. Any width with estimated BN statistics works
    (a trained width, or one added and calibrated: ``slimdet.layers.any_width``); a width
    without raises :class:`UncalibratedWidthError`, one outside the range ``ValueError``."""
    w = normalized_width(width_mult)
    if not min(model.widths) <= w <= max(model.widths):
        raise ValueError(f"width {w:g} is outside this network's widths {model.widths}")
    if uncalibrated_widths(model, [w]):
        raise UncalibratedWidthError(
            f"width {w:g} has no estimated BN statistics (trained widths {model.widths}"
            f"{', statistics stale after sandwich-rule training' if bool(model.bn_statistics_stale) else ''}"
            "): estimate them first (tools/recalibrate_bn.py re-estimates a checkpoint's trained "
            "widths; another width: add_widths + recalibrate_bn)")
    plain = plain_network(model, w)
    with torch.no_grad():
        for name, target in plain.named_modules():
            source = model.get_submodule(name)
            if isinstance(target, (SlimConv2d, SlimLinear)):
                for key, p in target.named_parameters(recurse=False):
                    p.copy_(getattr(source, key)[tuple(slice(0, n) for n in p.shape)])
            elif isinstance(target, SwitchableBatchNorm):
                bn, stats = target.bn[0], source.statistics_at(w)
                weight, bias = source.affine_at(w)
                bn.weight.copy_(weight if weight is not None else torch.ones_like(bn.weight))
                bn.bias.copy_(bias if bias is not None else torch.zeros_like(bn.bias))
                bn.running_mean.copy_(stats.running_mean)
                bn.running_var.copy_(stats.running_var)
                bn.num_batches_tracked.copy_(stats.num_batches_tracked)
    return plain.train(model.training)
