from .backbone import BACKBONE_REGISTRY, build_backbone
from .ssl import SSL_REGISTRY, backbone_of, build_model

__all__ = ["BACKBONE_REGISTRY", "build_backbone", "SSL_REGISTRY", "backbone_of", "build_model"]
