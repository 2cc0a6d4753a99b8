"""Setting the active width of a whole model."""
from __future__ import annotations

import contextlib
from typing import Iterator, List, Optional, Sequence, Tuple

from torch import nn

from ..config import ConfigError
from ..utils.ddp import unwrap
from .slimmable import (PerWidthChoice, SlimConv2d, SlimLinear, SwitchableBatchNorm,
                        SwitchableLinear, WidthAware, normalized_width, scaled)


def model_widths(model: nn.Module) -> Optional[List[float]]:
    """The width list of a slimmable model (from its ``widths`` attribute or switchable layers)."""
    model = unwrap(model)
    widths = getattr(model, "widths", None)
    if widths is not None:
        return list(widths)
    for m in model.modules():
        if isinstance(m, (SwitchableBatchNorm, PerWidthChoice)):  # both hold their widths
            return list(m.widths)
    return None


def get_width(model: nn.Module) -> float:
    for m in model.modules():
        if isinstance(m, WidthAware):
            return m.width_mult
    return 1.0


def set_width(model: nn.Module, width_mult: float) -> None:
    """Make every width-aware module of ``model`` run at ``width_mult``.

    Any width from the narrowest of the model's widths to the widest can be set (a width it was
    not trained at evaluates once its BN statistics are calibrated: ``slimdet.layers.any_width``);
    a width outside raises ``ValueError`` naming the width and the list, and so does a module
    that holds one sub-module per listed width (a switchable linear classifier).
    """
    width_mult = normalized_width(width_mult)
    widths = model_widths(model)
    if widths is not None and not min(widths) <= width_mult <= max(widths):
        raise ValueError(f"width {width_mult:g} is outside this network's widths {widths} "
                         f"(any width from {min(widths):g} to {max(widths):g} can be set)")
    for m in model.modules():
        if isinstance(m, WidthAware):
            m.set_width(width_mult)


@contextlib.contextmanager
def use_width(model: nn.Module, width_mult: float) -> Iterator[nn.Module]:
    """``with use_width(model, 0.5): y = model(x)`` runs at width 0.5 and restores the width."""
    previous = get_width(model)
    set_width(model, width_mult)
    try:
        yield model
    finally:
        set_width(model, previous)


def sliced_sizes(model: nn.Module) -> Iterator[Tuple[str, int]]:
    """``(layer name, full-width size)`` of every channel dimension that follows the width
    (a conv's or linear layer's sliced input / output, a switchable linear's input)."""
    for name, m in model.named_modules():
        if isinstance(m, SlimConv2d):
            sizes = [(m.in_channels, m.slim_in), (m.out_channels, m.slim_out)]
        elif isinstance(m, SlimLinear):
            sizes = [(m.in_features, m.slim_in), (m.out_features, m.slim_out)]
        elif isinstance(m, SwitchableLinear):
            sizes = [(m.in_features, True)]
        else:
            continue
        for size, sliced in sizes:
            if sliced:
                yield name, size


def check_channels(model: nn.Module, widths: Sequence[float], key: str) -> None:
    """Beside :func:`slimdet.config.check_widths` (the list itself), what a width list means for ``model`` (a
    full-width network): every sliced layer keeps at least one channel at ``min(widths)``, else
    :class:`~slimdet.config.ConfigError` naming ``key``, the width, the layer and the smallest
    width allowed."""
    narrowest = min(float(w) for w in widths)
    name, channels = narrowest_layer(model)
    if scaled(channels, narrowest) < 1:
        raise ConfigError(
            f"{key}: width {narrowest:g} leaves layer {name} ({channels} channels at full "
            f"width) with none; with this network every width must be at least "
            f"1/{channels} = {1 / channels:.6g}")


def narrowest_layer(model: nn.Module) -> Tuple[str, int]:
    """The layer with the fewest channels at full width: ``(name, channels)``. At width ``w`` it
    keeps ``int(channels * w)``, so the smallest width that leaves every layer a channel is
    ``1 / channels``."""
    return min(sliced_sizes(model), key=lambda item: item[1])
