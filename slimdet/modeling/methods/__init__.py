from .base import ClassificationMethod, TrainingMethod, backbone_of
from .momentum import MomentumEncoderMethod
from .build import METHOD_REGISTRY, build_model, classifier_keys
from .moco_v2 import MoCoV2
from .moco_v3 import MoCoV3
from .simclr import SimCLR
from .linear_probe import LinearProbe
from .supervised import Supervised

__all__ = ["TrainingMethod", "ClassificationMethod", "MomentumEncoderMethod", "backbone_of", "METHOD_REGISTRY", "build_model", "classifier_keys", "MoCoV2", "MoCoV3", "SimCLR", "LinearProbe", "Supervised"]
