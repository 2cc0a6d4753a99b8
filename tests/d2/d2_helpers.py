"""Shared builders for the Detectron2 tests: checkpoints made from a SlimResNet in the test."""
from __future__ import annotations

import re
from typing import Dict

import torch

from slimdet.modeling.backbone import STAGE_BLOCKS, SlimResNet


def randomized_resnet(depth: int, widths=(1.0, 0.75, 0.5, 0.25), seed: int = 0) -> SlimResNet:
    """A SlimResNet whose every BN has non-trivial affine parameters and running statistics,
    so a conversion that mixes up widths or BN fields changes the features."""
    g = torch.Generator().manual_seed(seed)
    model = SlimResNet(depth=depth, widths=list(widths))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
    return model.eval()


def reference_layout(state: Dict[str, torch.Tensor], depth: int, prefix: str) -> Dict[str, torch.Tensor]:
    """Our names -> the reference implementation's (SPEC §8): ``layerS.B`` -> ``features.N``
    (N counts blocks over all stages), ``downsample`` -> ``shortcut``."""
    starts = [sum(STAGE_BLOCKS[depth][:i]) for i in range(4)]
    out = {}
    for k, v in state.items():
        m = re.match(r"layer(\d)\.(\d+)\.(.*)", k)
        if m:
            n = starts[int(m.group(1)) - 1] + int(m.group(2))
            k = f"features.{n}.{m.group(3).replace('downsample.', 'shortcut.')}"
        out[prefix + k] = v
    return out
