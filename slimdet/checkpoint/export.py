"""Cut one width out of a slimmable model as a plain torchvision-style ResNet state dict.

A width of a slimmable ResNet is an ordinary ResNet with fewer channels: we slice every tensor
(``extract_subnet``) and drop the switchable BN's ``.bn.0`` level, giving torchvision's names
(``conv1``, ``bn1``, ``layer1.0.downsample.1``, ``fc``). Width 1.0 of a slimmable ResNet-50
therefore loads strictly into ``torchvision.models.resnet50()``.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import nn

from ..modeling.backbone import SlimResNet, extract_subnet


def _head_of(method: nn.Module, width: float) -> Optional[nn.Linear]:
    """The width's classifier as a plain Linear: a probe's ``classifier.linears[i]``, a
    supervised model's slimmable ``fc`` (leading input slice), or the backbone's own ``fc``."""
    classifier = getattr(method, "classifier", None)
    if classifier is not None and hasattr(classifier, "linears"):
        return classifier.linears[classifier.widths.index(width)]
    fc = getattr(method, "fc", None)
    if fc is None:
        fc = getattr(getattr(method, "backbone", method), "fc", None)
    if fc is None:
        return None
    in_w = int(fc.in_features * width) if getattr(fc, "slim_in", True) else fc.in_features
    plain = nn.Linear(in_w, fc.out_features, bias=fc.bias is not None)
    with torch.no_grad():
        plain.weight.copy_(fc.weight[:, :in_w])
        if fc.bias is not None:
            plain.bias.copy_(fc.bias)
    return plain


def export_width_state_dict(method: nn.Module, width: float,
                            init_fc_classes: int = 0) -> Dict[str, torch.Tensor]:
    """torchvision-style state dict of ``method``'s backbone (+ classifier) at ``width``.

    The classifier comes from the method when it has one. A self-supervised model has none:
    ``init_fc_classes > 0`` then adds a fresh ``fc`` (N(0, 0.01), zero bias, the probe's init) so
    that the file loads strictly into a torchvision classifier; 0 leaves ``fc`` out.
    """
    backbone = getattr(method, "backbone", method)
    if not isinstance(backbone, SlimResNet):
        raise TypeError(f"export needs a SlimResNet backbone, got {type(backbone).__name__}")
    plain = extract_subnet(backbone, float(width))
    state = {}
    for key, value in plain.state_dict().items():
        if key.startswith("fc."):
            continue
        state[key.replace(".bn.0.", ".")] = value.detach().cpu().clone()
    head = _head_of(method, float(width))
    if head is None and init_fc_classes > 0:
        head = nn.Linear(plain.num_features, init_fc_classes)
        nn.init.normal_(head.weight, 0.0, 0.01)
        nn.init.zeros_(head.bias)
    if head is not None:
        state["fc.weight"] = head.weight.detach().cpu().clone()
        if head.bias is not None:
            state["fc.bias"] = head.bias.detach().cpu().clone()
    return state
