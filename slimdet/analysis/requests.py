"""What the analysis tools are asked for, checked before any work: width lists, the classifier
head a width's cost includes, the device. Each mistake is a :class:`ConfigError` naming the flag
and the value (one line through ``run_cli``)."""
from __future__ import annotations

from typing import List, Sequence

import torch

from ..config import ConfigError
from ..config.widths import normalized_width
from ..modeling.methods import METHOD_REGISTRY, ClassificationMethod
from ..utils.registry import lookup


def requested_widths(widths: Sequence[float], flag: str, network: Sequence[float]) -> List[float]:
    """``widths`` (normalised, in the order given) if each is a width the network can run (in
    ``[min(network), max(network)]``) and none is given twice: a repeated width would be a
    duplicate row or point, not a second measurement."""
    out: List[float] = []
    lo, hi = min(network), max(network)
    for w in widths:
        w = normalized_width(w)
        if not lo <= w <= hi:
            raise ConfigError(f"{flag} {w:g} is outside the network's widths: any width from "
                              f"{lo:g} to {hi:g} (MODEL.WIDTHS {list(network)})")
        if w in out:
            raise ConfigError(f"{flag}: width {w:g} is given twice")
        out.append(w)
    return out


def head_classes(cfg) -> int:
    """Classes of the classifier a network of ``cfg`` has: MODEL.NUM_CLASSES for a probe or a
    supervised model, 0 for a pre-training method (its network is the backbone; a MODEL.NUM_CLASSES
    head would be counted in MACs and parameters though nothing runs it). analyze_model and
    eval_widths both count this, so their MACs agree."""
    method = lookup(METHOD_REGISTRY, cfg.MODEL.METHOD, "MODEL.METHOD")
    return cfg.MODEL.NUM_CLASSES if issubclass(method, ClassificationMethod) else 0


def checked_device(name: str, flag: str = "--device") -> torch.device:
    """``name`` as a device this machine has (``cpu``, ``cuda``, ``cuda:1`` ...)."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"{flag} {name!r} is not a device: give cpu or cuda[:N]") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"{flag} {name}: this machine has no CUDA device; use --device cpu")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"{flag} {name}: this machine has {count} CUDA device(s)")
    elif device.type != "cpu":
        raise ConfigError(f"{flag} {name}: only cpu and cuda[:N] are supported")
    return device
