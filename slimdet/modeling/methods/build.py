from typing import Iterable, List

import torch
from fvcore.common.registry import Registry
from torch import nn

from ...layers import check_channels
from ...utils.registry import lookup
from .base import ClassificationMethod

METHOD_REGISTRY = Registry("METHOD")
METHOD_REGISTRY.__doc__ = """
Registry for training methods (self-supervised, supervised, linear probe). A registered class is
built as ``cls(cfg)`` and implements :class:`slimdet.modeling.methods.base.TrainingMethod`.
"""


def build_model(cfg) -> nn.Module:
    """The method named by ``cfg.MODEL.METHOD`` (on the CPU; the trainer moves it), after
    :func:`check_layer_channels` of its architecture."""
    cls = lookup(METHOD_REGISTRY, cfg.MODEL.METHOD, "MODEL.METHOD")
    check_layer_channels(cfg, cls)
    return cls(cfg)


def check_layer_channels(cfg, cls) -> None:
    """``slimdet.layers.check_channels`` of ``MODEL.WIDTHS`` on the ``cls(cfg)`` network, built
    at full width only (every other width key lies within MODEL.WIDTHS' range), on the meta
    device (no memory, no init cost, no zero-sized layer)."""
    full_cfg = cfg.clone()
    full_cfg.defrost()
    full_cfg.MODEL.WIDTHS, full_cfg.MODEL.WEIGHTS, full_cfg.TEST.WIDTHS = [1.0], "", []
    full_cfg.MODEL.SLIM.MODE, full_cfg.MODEL.SLIM.WIDTH_RANGE = "fixed", []
    with torch.device("meta"):
        network = cls(full_cfg)
    check_channels(network, cfg.MODEL.WIDTHS, "MODEL.WIDTHS")


def classifier_keys(keys: Iterable[str]) -> List[str]:
    """Those of ``keys`` (slimdet names) that belong to the classifier of some registered
    classification method (``ClassificationMethod.classifier_parts``: a probe's ``classifier``
    and ``feature_norm``, a supervised model's ``fc``; the reference probe / supervised files
    are renamed to these): what a method without a classifier leaves out of such a file."""
    parts = {p for _, cls in METHOD_REGISTRY if issubclass(cls, ClassificationMethod)
             for p in cls.classifier_parts}
    return [k for k in keys if k.split(".", 1)[0] in parts]
