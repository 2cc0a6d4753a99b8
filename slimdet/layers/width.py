"""Setting the active width of a whole model."""
from __future__ import annotations

import contextlib
from typing import Iterator, List, Optional

from torch import nn

from .slimmable import WidthAware


def model_widths(model: nn.Module) -> Optional[List[float]]:
    """The width list of a slimmable model (from its ``widths`` attribute or switchable layers)."""
    model = getattr(model, "module", model)  # DDP
    widths = getattr(model, "widths", None)
    if widths is not None:
        return list(widths)
    for m in model.modules():
        if hasattr(m, "widths") and isinstance(m, WidthAware):
            return list(m.widths)
    return None


def get_width(model: nn.Module) -> float:
    for m in model.modules():
        if isinstance(m, WidthAware):
            return m.width_mult
    return 1.0


def set_width(model: nn.Module, width_mult: float) -> None:
    """Make every width-aware module of ``model`` run at ``width_mult``.

    Raises ``ValueError`` naming the width and the list when the model was not built for it.
    """
    width_mult = float(width_mult)
    widths = model_widths(model)
    if widths is not None and width_mult not in widths:
        raise ValueError(f"width {width_mult} is not one of this network's widths {widths}")
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
