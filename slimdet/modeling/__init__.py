from .backbone import BACKBONE_REGISTRY, build_backbone
from .methods import METHOD_REGISTRY, backbone_of, build_model

__all__ = ["BACKBONE_REGISTRY", "build_backbone", "METHOD_REGISTRY", "backbone_of", "build_model"]
