"""Cut one width out of a slimmable model as a plain torchvision-style ResNet state dict.

A width of a slimmable ResNet is an ordinary ResNet with fewer channels: we slice every tensor
(``extract_subnet``) and drop the switchable BN's ``.bn.0`` level (``single_width_name``),
giving torchvision's names (``conv1``, ``bn1``, ``layer1.0.downsample.1``, ``fc``). Width 1.0 of
a slimmable ResNet-50 therefore loads strictly into ``torchvision.models.resnet50()``.
"""
from __future__ import annotations

from typing import Dict

import torch
from torch import nn

from ..modeling.backbone import SlimResNet, extract_subnet
from ..modeling.ssl.base import ClassificationMethod
from .format import single_width_name


def export_width_state_dict(method: nn.Module, width: float,
                            init_fc_classes: int = 0) -> Dict[str, torch.Tensor]:
    """torchvision-style state dict of ``method``'s backbone (+ classifier) at ``width``.

    The classifier comes from a classification method (probe, supervised:
    ``classifier_for(width)``). A self-supervised model has none: ``init_fc_classes > 0`` then
    adds a fresh ``fc`` (N(0, 0.01), zero bias, the probe's init) so that the file loads
    strictly into a torchvision classifier; 0 leaves ``fc`` out.
    """
    backbone = getattr(method, "backbone", method)
    if not isinstance(backbone, SlimResNet):
        raise TypeError(f"export needs a SlimResNet backbone, got {type(backbone).__name__}")
    plain = extract_subnet(backbone, float(width))
    state = {single_width_name(k): v.detach().cpu().clone()
             for k, v in plain.state_dict().items() if not k.startswith("fc.")}
    head = method.classifier_for(float(width)) if isinstance(method, ClassificationMethod) else None
    if head is None and init_fc_classes > 0:
        head = nn.Linear(plain.num_features, init_fc_classes)
        nn.init.normal_(head.weight, 0.0, 0.01)
        nn.init.zeros_(head.bias)
    if head is not None:
        state["fc.weight"] = head.weight.detach().cpu().clone()
        if head.bias is not None:
            state["fc.bias"] = head.bias.detach().cpu().clone()
    return state
