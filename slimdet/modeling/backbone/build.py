from fvcore.common.registry import Registry
from torch import nn

from ...utils.registry import lookup

BACKBONE_REGISTRY = Registry("BACKBONE")
BACKBONE_REGISTRY.__doc__ = """
Registry for backbones. A registered class provides ``from_config(cfg, num_classes=0)`` and
returns an ``nn.Module`` whose forward gives pooled features (or logits / a dict of stages).
"""


def build_backbone(cfg, num_classes: int = 0) -> nn.Module:
    """The backbone named by ``cfg.MODEL.BACKBONE.NAME``."""
    cls = lookup(BACKBONE_REGISTRY, cfg.MODEL.BACKBONE.NAME, "MODEL.BACKBONE.NAME")
    return cls.from_config(cfg, num_classes=num_classes)
