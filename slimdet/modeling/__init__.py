from .backbone import BACKBONE_REGISTRY, build_backbone

__all__ = ["BACKBONE_REGISTRY", "build_backbone"]
