"""Slimmable layers (SPEC §1).

A slimmable layer holds its parameters at full width; at width ``w`` it uses the leading
``int(c * w)`` channels of every sliced dimension. The active width is the attribute
``width_mult`` of each module, set for a whole model by :func:`slimdet.layers.set_width`; it is
never passed through ``forward``, so models keep their ordinary call signatures (DDP, FLOP
counters and Detectron2 all call ``forward(x)``).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def scaled(channels: int, width_mult: float) -> int:
    """Channels of a layer with ``channels`` at full width, at width ``width_mult``."""
    return int(channels * width_mult)


class WidthAware:
    """Mixin of every module that behaves differently per width."""

    width_mult: float = 1.0

    def set_width(self, width_mult: float) -> None:
        self.width_mult = width_mult


class PerWidthChoice(WidthAware):
    """Mixin of modules holding one independent sub-module per width of ``self.widths``
    (switchable BN, switchable linear, per-width head norms): only listed widths are accepted."""

    widths: list

    def set_width(self, width_mult: float) -> None:
        if width_mult not in self.widths:
            raise ValueError(f"width {width_mult} is not one of this network's widths {self.widths}")
        self.width_mult = width_mult

    @property
    def width_index(self) -> int:
        return self.widths.index(self.width_mult)


class SlimConv2d(nn.Conv2d, WidthAware):
    """``nn.Conv2d`` that uses ``weight[:out_w, :in_w]`` at the active width.

    ``slim_in=False`` keeps the full input (the RGB stem); ``slim_out=False`` keeps the full
    output (a fixed embedding dimension).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, bias: bool = False, slim_in: bool = True, slim_out: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         dilation=dilation, bias=bias)
        self.slim_in, self.slim_out = slim_in, slim_out

    def active_channels(self):
        w = self.width_mult
        cin = scaled(self.in_channels, w) if self.slim_in else self.in_channels
        cout = scaled(self.out_channels, w) if self.slim_out else self.out_channels
        return cin, cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cin, cout = self.active_channels()
        if (cin, cout) == (self.in_channels, self.out_channels):
            # No slice at full size: a slice's backward allocates and fills a full-size zero
            # gradient, two extra kernels per layer that dominate small GPU steps.
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, 1)
        weight = self.weight[:cout, :cin]
        bias = self.bias[:cout] if self.bias is not None else None
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, 1)


class SlimLinear(nn.Linear, WidthAware):
    """``nn.Linear`` that uses ``weight[:out_w, :in_w]`` and ``bias[:out_w]`` at the active width."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 slim_in: bool = True, slim_out: bool = True):
        super().__init__(in_features, out_features, bias=bias)
        self.slim_in, self.slim_out = slim_in, slim_out

    def active_features(self):
        w = self.width_mult
        fin = scaled(self.in_features, w) if self.slim_in else self.in_features
        fout = scaled(self.out_features, w) if self.slim_out else self.out_features
        return fin, fout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fin, fout = self.active_features()
        if (fin, fout) == (self.in_features, self.out_features):
            return F.linear(x, self.weight, self.bias)
        bias = self.bias[:fout] if self.bias is not None else None
        return F.linear(x, self.weight[:fout, :fin], bias)


class _SwitchableBatchNorm(nn.Module, PerWidthChoice):
    """One independent BatchNorm per width (own affine parameters and running statistics).

    The BNs live in ``self.bn[i]`` for ``widths[i]``, the layout of the reference checkpoints.
    ``num_features`` is the full-width channel count; ``slim=False`` keeps it at every width
    (BN after a fixed-size embedding).
    """

    _bn_cls = nn.BatchNorm2d

    def __init__(self, num_features: int, widths: Sequence[float], slim: bool = True,
                 affine: bool = True, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.widths = [float(w) for w in widths]
        self.num_features = num_features
        self.bn = nn.ModuleList(
            self._bn_cls(scaled(num_features, w) if slim else num_features, eps=eps,
                         momentum=momentum, affine=affine)
            for w in self.widths)
        self.width_mult = self.widths[0]

    @property
    def active_bn(self) -> nn.Module:
        return self.bn[self.width_index]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.active_bn(x)


class SwitchableBatchNorm2d(_SwitchableBatchNorm):
    _bn_cls = nn.BatchNorm2d


class SwitchableBatchNorm1d(_SwitchableBatchNorm):
    _bn_cls = nn.BatchNorm1d


class SwitchableLinear(nn.Module, PerWidthChoice):
    """One independent ``Linear(in_w, out)`` per width (the switchable linear probe, SPEC §5).

    Layout ``linears[i]`` for ``widths[i]``, as in the reference linear-probe checkpoints.
    """

    def __init__(self, in_features: int, out_features: int, widths: Sequence[float],
                 bias: bool = True):
        super().__init__()
        self.widths = [float(w) for w in widths]
        self.in_features, self.out_features = in_features, out_features
        self.linears = nn.ModuleList(
            nn.Linear(scaled(in_features, w), out_features, bias=bias) for w in self.widths)
        self.width_mult = self.widths[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linears[self.width_index](x)


def init_weights(module: nn.Module, zero_init_residual_bn: Optional[Sequence[nn.Module]] = None) -> None:
    """SPEC §1 init: Kaiming-normal (fan_out, relu) convs, BN gamma 1 / beta 0, Linear N(0, 0.01)
    with zero bias; the BNs in ``zero_init_residual_bn`` (each block's last) get gamma 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm)):
            if m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    for bn in zero_init_residual_bn or []:
        for m in bn.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None:
                nn.init.zeros_(m.weight)
