"""Slimmable layers (docs/method.md §1).

A slimmable layer holds its parameters at full width; at width ``w`` it uses the leading
``int(c * w)`` channels of every sliced dimension. The active width is the attribute
``width_mult`` of each module, set for a whole model by :func:`slimdet.layers.set_width`; it is
never passed through ``forward``, so models keep their ordinary call signatures (DDP, FLOP
counters and Detectron2 all call ``forward(x)``).

Any width between the narrowest trained one and 1.0 can be set: convolutions and linear maps
slice as for a trained width, and :class:`SwitchableBatchNorm` says where that width's BN
parameters and statistics come from (``slimdet/layers/any_width.py`` adds and calibrates them).

The width loop's training forward runs the sliced convolutions and linear maps through
``slimdet/layers/sliced.py`` (their slice's gradient is added straight into ``param.grad``);
everywhere else they slice with autograd's own ops.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config.widths import normalized_width
from .sliced import SlicedConv2d, SlicedLinear, uses_sliced_backward


def scaled(channels: int, width_mult: float) -> int:
    """Channels of a layer with ``channels`` at full width, at width ``width_mult``."""
    return int(channels * width_mult)


class WidthAware:
    """Mixin of every module that behaves differently per width."""

    width_mult: float = 1.0

    def set_width(self, width_mult: float) -> None:
        self.width_mult = normalized_width(width_mult)


class PerWidthChoice(WidthAware):
    """Mixin of modules holding one independent sub-module per width of ``self.widths``
    (switchable linear, per-width head norms): only listed widths are accepted. (Switchable BN
    accepts any width in its range: :class:`SwitchableBatchNorm`.)"""

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
        if uses_sliced_backward([self.weight, self.bias]):
            # The slice's gradient goes straight into weight.grad[:cout, :cin] (layers/sliced.py).
            return SlicedConv2d.apply(x, self.weight, self.bias, cout, cin, self.stride,
                                      self.padding, self.dilation)
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
        if uses_sliced_backward([self.weight, self.bias]):
            return SlicedLinear.apply(x, self.weight, self.bias, fout, fin)
        bias = self.bias[:fout] if self.bias is not None else None
        return F.linear(x, self.weight[:fout, :fin], bias)


class UncalibratedWidthError(RuntimeError):
    """A BN was asked to normalise in eval mode at a width whose statistics were never estimated
    (a width added after training, or any width of a universally slimmable network): its output
    would be a number computed with made-up statistics."""


def width_module_name(width_mult: float) -> str:
    """A width as a module name (``0.6`` -> ``"0_6"``; ModuleDict keys cannot hold dots)."""
    return f"{normalized_width(width_mult):g}".replace(".", "_")


class _BatchNormStatistics:
    """Mixin of the BNs that hold only the running statistics of a width added after training
    (``affine=False``): the statistics are not part of the state dict (they are re-estimated by
    calibration, never loaded), so a model with added widths loads and saves like one without."""

    def _keep_out_of_state_dict(self) -> None:
        self._non_persistent_buffers_set.update(("running_mean", "running_var", "num_batches_tracked"))


class _Statistics2d(nn.BatchNorm2d, _BatchNormStatistics):
    def __init__(self, num_features: int, eps: float, momentum: float):
        super().__init__(num_features, eps=eps, momentum=momentum, affine=False)
        self._keep_out_of_state_dict()


class _Statistics1d(nn.BatchNorm1d, _BatchNormStatistics):
    def __init__(self, num_features: int, eps: float, momentum: float):
        super().__init__(num_features, eps=eps, momentum=momentum, affine=False)
        self._keep_out_of_state_dict()


def _apply_affine(y: torch.Tensor, weight: Optional[torch.Tensor],
                  bias: Optional[torch.Tensor]) -> torch.Tensor:
    if weight is None:
        return y
    shape = (1, -1) + (1,) * (y.dim() - 2)
    return y * weight.view(shape) + bias.view(shape)


class SwitchableBatchNorm(nn.Module, WidthAware):
    """BatchNorm of a slimmable layer: running statistics per width, affine parameters per width
    (switchable BN, the default) or shared by all widths (``shared_affine``, US-Nets' slimmable
    BN: width ``w`` uses the leading ``int(c * w)`` entries of one full-width weight and bias).

    Layout: ``bn[i]`` is the BN of ``widths[i]`` (the reference checkpoints' layout); with
    ``shared_affine`` the ``bn[i]`` have no affine parameters and ``weight`` / ``bias`` sit on
    this module. ``num_features`` is the full-width channel count; ``slim=False`` keeps it at
    every width (BN after a fixed-size embedding).

    Any width in ``[min(widths), 1.0]`` can be set (docs/method.md §1; ``slimdet.layers.any_width``):

    - in training mode a width without statistics of its own (a width sampled by the sandwich
      rule) normalises with its batch statistics and keeps none; its affine parameters are the
      leading slice of those of the nearest trained width at or above it (or the shared ones);
    - in eval mode a width needs statistics: ``add_width`` materialises them (not saved in the
      state dict) and calibration (``recalibrate_bn``) estimates them. Until then the width is
      in ``uncalibrated`` and normalising at it raises :class:`UncalibratedWidthError` instead of
      returning a number. Sandwich-rule training marks every width uncalibrated
      (``mark_uncalibrated``): its running averages mix the statistics of sampled widths.
    """

    _bn_cls = nn.BatchNorm2d
    _statistics_cls = _Statistics2d

    def __init__(self, num_features: int, widths: Sequence[float], slim: bool = True,
                 affine: bool = True, eps: float = 1e-5, momentum: float = 0.1,
                 shared_affine: bool = False):
        super().__init__()
        self.widths = [normalized_width(w) for w in widths]
        self.num_features = num_features
        self.slim = slim
        self.eps, self.momentum = eps, momentum
        self.shared_affine = shared_affine and affine
        self.bn = nn.ModuleList(
            self._bn_cls(self.channels(w), eps=eps, momentum=momentum,
                         affine=affine and not self.shared_affine)
            for w in self.widths)
        if self.shared_affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        # Statistics of widths added after training (add_width); never in the state dict.
        self.derived = nn.ModuleDict()
        # Widths whose statistics must be estimated before the BN may normalise in eval mode
        # (python state: the backbone's saved flag restores it on loading).
        self.uncalibrated = set()
        self.width_mult = self.widths[0]

    def channels(self, width_mult: float) -> int:
        return scaled(self.num_features, width_mult) if self.slim else self.num_features

    def set_width(self, width_mult: float) -> None:
        width_mult = normalized_width(width_mult)
        if not self.widths[-1] <= width_mult <= self.widths[0]:
            raise ValueError(f"width {width_mult:g} is outside this network's widths "
                             f"{self.widths} (any width from {self.widths[-1]:g} to "
                             f"{self.widths[0]:g} can be set)")
        self.width_mult = width_mult

    def nearest_trained_width(self, width_mult: float) -> float:
        """The narrowest trained width at or above ``width_mult`` (whose parameters it borrows)."""
        return min(w for w in self.widths if w >= float(width_mult))

    def affine_at(self, width_mult: float):
        """(weight, bias) width ``width_mult`` normalises with (views, or (None, None))."""
        c = self.channels(width_mult)
        if self.shared_affine:
            return self.weight[:c], self.bias[:c]
        source = self.bn[self.widths.index(self.nearest_trained_width(width_mult))]
        if source.weight is None:
            return None, None
        if source.weight.shape[0] == c:
            return source.weight, source.bias
        return source.weight[:c], source.bias[:c]

    def statistics_at(self, width_mult: float) -> Optional[nn.Module]:
        """The BN holding width ``width_mult``'s running statistics (None: it has none yet)."""
        width_mult = normalized_width(width_mult)
        if width_mult in self.widths:
            return self.bn[self.widths.index(width_mult)]
        return self.derived[width_module_name(width_mult)] if width_module_name(width_mult) in self.derived else None

    def add_width(self, width_mult: float) -> bool:
        """Give an untrained width statistics of its own (copied from the nearest trained width
        at or above it, sliced, as a start) and mark it uncalibrated. False if it has some."""
        width_mult = normalized_width(width_mult)
        previous = self.width_mult
        self.set_width(width_mult)  # range check
        self.width_mult = previous
        if self.statistics_at(width_mult) is not None:
            return False
        source = self.bn[self.widths.index(self.nearest_trained_width(width_mult))]
        c = self.channels(width_mult)
        stats = self._statistics_cls(c, self.eps, self.momentum).to(source.running_mean.device)
        with torch.no_grad():
            stats.running_mean.copy_(source.running_mean[:c])
            stats.running_var.copy_(source.running_var[:c])
        stats.train(self.training)
        self.derived[width_module_name(width_mult)] = stats
        self.uncalibrated.add(width_mult)
        return True

    def mark_uncalibrated(self) -> None:
        self.uncalibrated.update(self.widths)
        self.uncalibrated.update(float(k.replace("_", ".")) for k in self.derived)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.width_mult
        stats = self.statistics_at(w)
        if stats is not None and (stats.training or w not in self.uncalibrated):
            # The width's own statistics, in training (updated as they are used: training,
            # fvcore's precise BN during calibration) or estimated (eval).
            if stats.affine:
                return stats(x)  # a trained width's own BN (switchable BN)
            return _apply_affine(stats(x), *self.affine_at(w))
        weight, bias = self.affine_at(w)
        if self.training:
            # A width sampled by the sandwich rule: batch statistics, none kept.
            return F.batch_norm(x, None, None, weight, bias, True, 0.0, self.eps)
        raise UncalibratedWidthError(
            f"width {w:g} has no estimated BN statistics (trained widths {self.widths}; an "
            "added width is estimated only by calibration, and sandwich-rule training leaves "
            "every width's stale): calibrate it first (slimdet.layers.add_widths + "
            "recalibrate_bn; TEST.CALIBRATE_BATCHES; --calibrate-batches)")


class SwitchableBatchNorm2d(SwitchableBatchNorm):
    _bn_cls = nn.BatchNorm2d
    _statistics_cls = _Statistics2d


class SwitchableBatchNorm1d(SwitchableBatchNorm):
    _bn_cls = nn.BatchNorm1d
    _statistics_cls = _Statistics1d


class SwitchableLinear(nn.Module, PerWidthChoice):
    """One independent ``Linear(in_w, out)`` per width (the switchable linear probe, docs/method.md §5).

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
    """docs/method.md §1 init: Kaiming-normal (fan_out, relu) convs, BN gamma 1 / beta 0, Linear N(0, 0.01)
    with zero bias; the BNs in ``zero_init_residual_bn`` (each block's last) get gamma 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm, SwitchableBatchNorm)):
            if m.weight is not None:  # a shared-affine SwitchableBatchNorm holds its own
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    for bn in zero_init_residual_bn or []:
        for m in bn.modules():
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, SwitchableBatchNorm)) and m.weight is not None:
                nn.init.zeros_(m.weight)
