"""Loss weights per width (docs/method.md §3, "loss re-weighting by model size")."""
from __future__ import annotations

from typing import List, Sequence

from ...config import ConfigError


def loss_weights(widths: Sequence[float], scheme: str = "size") -> List[float]:
    """Weights of each width's loss term, full width first.

    - ``size`` (SlimCLR): full = 1 + sum of the sub-widths' multipliers, each sub-width 1
      (2.5 / 1 / 1 / 1 for [1.0, 0.75, 0.5, 0.25]) — the full network's gradient dominates.
    - ``uniform``: all 1 (the naive slimmable baseline).
    - ``proportional``: w / sum(w).
    """
    widths = list(widths)
    if scheme == "size":
        return [1.0 + sum(widths[1:])] + [1.0] * (len(widths) - 1)
    if scheme == "uniform":
        return [1.0] * len(widths)
    if scheme == "proportional":
        total = sum(widths)
        return [w / total for w in widths]
    raise ConfigError(f"MODEL.SLIM.LOSS_WEIGHTING must be size, uniform or proportional, "
                      f"got {scheme!r}")
