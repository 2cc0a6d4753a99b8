from .build import BACKBONE_REGISTRY, build_backbone
from .slim_resnet import (STAGE_BLOCKS, SlimResNet, extract_subnet,
                          plain_network, slice_state_dict)

__all__ = ["BACKBONE_REGISTRY", "build_backbone", "SlimResNet", "STAGE_BLOCKS",
           "extract_subnet", "plain_network", "slice_state_dict"]
