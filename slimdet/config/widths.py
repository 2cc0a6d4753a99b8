"""The width keys read together: evaluation widths, sandwich range, calibration."""
from __future__ import annotations

from typing import List, Sequence

from .config import ConfigError


def check_widths(widths: Sequence[float], key: str) -> List[float]:
    """``widths`` as floats if it is a valid width list: multipliers in (0, 1], full width 1.0
    first, strictly decreasing (the order every per-width list and BN index follows,
    docs/method.md §1). Otherwise :class:`ConfigError` naming ``key`` (the config
    key or flag the list came from) and the value."""
    try:
        values = [float(w) for w in widths]
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be a list of width multipliers, got {widths!r}") from None
    if not values or any(not (0.0 < w <= 1.0) for w in values):
        raise ConfigError(f"{key} must be multipliers in (0, 1], got {values}")
    if values[0] != 1.0 or any(a <= b for a, b in zip(values, values[1:])):
        raise ConfigError(f"{key} must start with 1.0 and be strictly decreasing, got {values}")
    return values


def normalized_width(width_mult: float) -> float:
    """A width as configs and result keys write it (``0.30000000000000004`` -> ``0.3``): one
    width has one value, whichever arithmetic produced it."""
    return round(float(width_mult), 6)


def evaluation_widths(cfg) -> List[float]:
    """``TEST.WIDTHS`` (or ``MODEL.WIDTHS``), widest first."""
    return sorted({normalized_width(w) for w in (cfg.TEST.WIDTHS or cfg.MODEL.WIDTHS)}, reverse=True)


def untrained_widths(cfg) -> List[float]:
    """Evaluation widths whose BN statistics must be estimated before they evaluate: those not
    in ``MODEL.WIDTHS``, and all of them after sandwich-rule training."""
    if cfg.MODEL.SLIM.MODE == "sandwich":
        return evaluation_widths(cfg)
    trained = {normalized_width(w) for w in cfg.MODEL.WIDTHS}
    return [w for w in evaluation_widths(cfg) if w not in trained]


def validate_widths(cfg) -> None:
    s, widths = cfg.MODEL.SLIM, [float(w) for w in cfg.MODEL.WIDTHS]
    lo, hi = min(widths), max(widths)
    if s.MODE not in ("fixed", "sandwich"):
        raise ConfigError(f"MODEL.SLIM.MODE must be fixed or sandwich, got {s.MODE!r}")
    if s.BN not in ("switchable", "shared"):
        raise ConfigError(f"MODEL.SLIM.BN must be switchable or shared, got {s.BN!r}")
    if s.NUM_SAMPLED < 0:
        raise ConfigError(f"MODEL.SLIM.NUM_SAMPLED must be >= 0, got {s.NUM_SAMPLED}")
    if s.WIDTH_RANGE:
        r = [float(w) for w in s.WIDTH_RANGE]
        if len(r) != 2 or not lo <= r[0] < r[1] <= hi:
            raise ConfigError(f"MODEL.SLIM.WIDTH_RANGE must be [low, high] with {lo:g} <= low < "
                              f"high <= {hi:g} (MODEL.WIDTHS {widths}), got {list(s.WIDTH_RANGE)}")
    if s.MODE == "sandwich" and len(widths) < 2:
        raise ConfigError(f"MODEL.SLIM.MODE sandwich needs a full and a narrowest width in "
                          f"MODEL.WIDTHS, got {widths}")
    outside = [w for w in cfg.TEST.WIDTHS if not lo <= float(w) <= hi]
    if outside:
        raise ConfigError(f"TEST.WIDTHS {list(cfg.TEST.WIDTHS)}: {outside[0]:g} is outside the "
                          f"network's range [{lo:g}, {hi:g}] (MODEL.WIDTHS {widths})")
    if cfg.TEST.CALIBRATE_BATCHES < 0:
        raise ConfigError(f"TEST.CALIBRATE_BATCHES must be >= 0, got {cfg.TEST.CALIBRATE_BATCHES}")
    pending = untrained_widths(cfg)
    if pending and cfg.TEST.CALIBRATE_BATCHES == 0:
        why = ("MODEL.SLIM.MODE sandwich leaves no width with its own BN statistics"
               if s.MODE == "sandwich" else
               f"TEST.WIDTHS {[f'{w:g}' for w in pending]} are not among MODEL.WIDTHS {widths}")
        # A sandwich-trained checkpoint recalibrated by tools/recalibrate_bn.py has statistics
        # for its trained widths; the config cannot know that, MODE fixed says it.
        again = (" (or, for a checkpoint written by tools/recalibrate_bn.py, MODEL.SLIM.MODE "
                 "fixed)" if s.MODE == "sandwich" else "")
        raise ConfigError(f"{why}: set TEST.CALIBRATE_BATCHES (training batches to estimate "
                          f"their BN statistics on, e.g. 50){again}")
