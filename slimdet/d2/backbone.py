"""A slimmable ResNet as a Detectron2 backbone, and one shared FPN on top of it
(docs/method.md §6).

Every width runs the same :class:`~slimdet.modeling.backbone.SlimResNet` (the pre-trained
weights, switchable BN per width). Detectron2's FPN and heads are built once, for the full
width's channel counts, and shared by all widths: a narrower width's stage outputs are
zero-padded to the full channel count, which is the same as the FPN's lateral 1x1 convs reading
only their leading input channels.
"""
from __future__ import annotations

import copy
from typing import Dict, List, Sequence

import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool
from torch import nn

from ..config import ConfigError
from ..layers import PerWidthChoice, WidthAware
from ..modeling.backbone import STAGE_BLOCKS
from ..modeling.backbone.slim_resnet import SlimResNet

_STAGE_STRIDES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}


class SlimResNetBackbone(Backbone):
    """Detectron2 ``Backbone`` around a :class:`SlimResNet`.

    ``output_shape()`` reports full-width channels, so anything built on it (FPN, heads) is
    built once; ``forward`` runs at the active width (``slimdet.layers.set_width``) and pads each
    returned stage output with zero channels up to the full width.
    """

    def __init__(self, resnet: SlimResNet, out_features: Sequence[str]):
        super().__init__()
        self.resnet = resnet
        self._out_features = list(out_features)
        unknown = [f for f in self._out_features if f not in _STAGE_STRIDES]
        if unknown:
            raise ConfigError(f"MODEL.RESNETS.OUT_FEATURES: unknown stages {unknown}; "
                             f"choose from {list(_STAGE_STRIDES)}")
        channels = dict(zip(_STAGE_STRIDES, resnet.stage_channels))
        self._out_feature_channels = {f: channels[f] for f in self._out_features}
        self._out_feature_strides = {f: _STAGE_STRIDES[f] for f in self._out_features}

    @property
    def widths(self) -> List[float]:
        return self.resnet.widths

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        feats = self.resnet.forward_features(x)
        return {f: pad_channels(feats[f], self._out_feature_channels[f])
                for f in self._out_features}


def pad_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Zero-pad the channel dimension of an NCHW tensor to ``channels``."""
    missing = channels - x.shape[1]
    if missing < 0:
        raise ValueError(f"feature has {x.shape[1]} channels, more than the full width's {channels}")
    return F.pad(x, (0, 0, 0, 0, 0, missing)) if missing else x


def _slim_resnet_bottom_up(cfg, input_shape: ShapeSpec) -> SlimResNetBackbone:
    """The slimmable ResNet of a Detectron2 config (``MODEL.RESNETS.*`` at full width).

    Only what a slimmable ResNet can express is accepted: a torchvision-style network
    (``STRIDE_IN_1X1=False``, ``NUM_GROUPS=1``, no dilation or deformable convs), BN or SyncBN
    (per width, via switchable BN), nothing frozen (the MoCo detection protocol).
    """
    r = cfg.MODEL.RESNETS
    problems = []
    if r.DEPTH not in STAGE_BLOCKS:
        raise ConfigError(f"MODEL.RESNETS.DEPTH must be one of {sorted(STAGE_BLOCKS)}, "
                          f"got {r.DEPTH}")
    if r.STRIDE_IN_1X1:
        problems.append("MODEL.RESNETS.STRIDE_IN_1X1 must be False (stride on the 3x3 conv)")
    if r.NUM_GROUPS != 1:
        problems.append(f"MODEL.RESNETS.NUM_GROUPS must be 1, got {r.NUM_GROUPS}")
    if r.RES5_DILATION != 1:
        problems.append(f"MODEL.RESNETS.RES5_DILATION must be 1, got {r.RES5_DILATION}")
    if any(r.DEFORM_ON_PER_STAGE):
        problems.append("MODEL.RESNETS.DEFORM_ON_PER_STAGE is not supported")
    expansion = 4 if r.DEPTH >= 50 else 1
    if r.WIDTH_PER_GROUP != r.STEM_OUT_CHANNELS or r.RES2_OUT_CHANNELS != expansion * r.STEM_OUT_CHANNELS:
        problems.append(
            f"a ResNet-{r.DEPTH} needs WIDTH_PER_GROUP = STEM_OUT_CHANNELS = {r.STEM_OUT_CHANNELS} and "
            f"RES2_OUT_CHANNELS = {expansion * r.STEM_OUT_CHANNELS}, got {r.WIDTH_PER_GROUP} and "
            f"{r.RES2_OUT_CHANNELS}")
    if r.NORM not in ("BN", "SyncBN"):
        problems.append(f"MODEL.RESNETS.NORM must be BN or SyncBN (one per width), got {r.NORM!r}")
    if cfg.MODEL.BACKBONE.FREEZE_AT != 0:
        problems.append("MODEL.BACKBONE.FREEZE_AT must be 0: a slimmable backbone is fine-tuned "
                        f"entirely, got {cfg.MODEL.BACKBONE.FREEZE_AT}")
    if problems:
        raise ConfigError("slimmable ResNet backbone: " + "; ".join(problems))

    resnet = SlimResNet(depth=r.DEPTH, widths=cfg.MODEL.WIDTHS,
                        base_channels=r.STEM_OUT_CHANNELS, in_channels=input_shape.channels,
                        zero_init_residual=False)
    if r.NORM == "SyncBN":
        # Each width's BN becomes a SyncBN; on one process it behaves as plain BN.
        resnet = nn.SyncBatchNorm.convert_sync_batchnorm(resnet)
    return SlimResNetBackbone(resnet, r.OUT_FEATURES)


@BACKBONE_REGISTRY.register()
def build_slim_resnet_backbone(cfg, input_shape: ShapeSpec) -> Backbone:
    """Slimmable ResNet without FPN (``MODEL.BACKBONE.NAME: build_slim_resnet_backbone``)."""
    return _slim_resnet_bottom_up(cfg, input_shape)


@BACKBONE_REGISTRY.register()
def build_slim_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> Backbone:
    """Slimmable ResNet + Detectron2's own FPN, shared by every width."""
    return FPN(
        bottom_up=_slim_resnet_bottom_up(cfg, input_shape),
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )


class PerWidthNorm(nn.Module, PerWidthChoice):
    """One copy of a (shared) head's norm layer per width, chosen by the active width.

    Convolutions of the FPN and heads are shared by all widths; only their normalisation
    statistics and affine parameters are private, as in switchable BN.
    """

    def __init__(self, norm: nn.Module, widths: Sequence[float]):
        super().__init__()
        self.widths = [float(w) for w in widths]
        self.norms = nn.ModuleList(copy.deepcopy(norm) for _ in self.widths)
        self.width_mult = self.widths[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norms[self.width_index](x)


def make_norms_switchable(module: nn.Module, widths: Sequence[float]) -> int:
    """Replace every batch-statistics norm inside ``module`` by a :class:`PerWidthNorm`.

    Modules that are already width-aware (the slimmable backbone) are left alone. Returns how
    many norms were replaced. GroupNorm / FrozenBN do not depend on the batch and stay shared.
    """
    replaced = 0
    for name, child in list(module.named_children()):
        if isinstance(child, WidthAware):
            continue
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, PerWidthNorm(child, widths))
            replaced += 1
        else:
            replaced += make_norms_switchable(child, widths)
    return replaced
