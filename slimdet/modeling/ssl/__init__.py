from .base import SSLMethod
from .build import SSL_REGISTRY, build_model
from .moco_v2 import MoCoV2
from .moco_v3 import MoCoV3
from .simclr import SimCLR
from .linear_probe import LinearProbe
from .supervised import Supervised

__all__ = ["SSLMethod", "SSL_REGISTRY", "build_model", "MoCoV2", "MoCoV3", "SimCLR", "LinearProbe", "Supervised"]
