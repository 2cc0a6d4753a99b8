"""Projection / prediction MLPs whose input (and hidden layers) follow the active width while
the output embedding keeps the same size at every width (docs/method.md §1)."""
from __future__ import annotations

from typing import Sequence

from torch import nn

from ..layers import SlimLinear, SwitchableBatchNorm1d, init_weights


def slim_mlp(in_dim: int, hidden_dim: int, out_dim: int, widths: Sequence[float],
             num_layers: int = 2, hidden_bn: bool = True, last_bn: bool = False,
             last_bn_affine: bool = True, slim_input: bool = True,
             bias: bool = True) -> nn.Sequential:
    """``num_layers`` linear layers; hidden ones are followed by (switchable BN and) ReLU.

    Linear layers followed by BN have no bias; ``bias=False`` removes it from the others too
    (MoCo v3's projector and predictor have no bias anywhere, as in the reference, so their
    checkpoints carry none). ``slim_input=False`` for a predictor whose input is a fixed-size
    embedding. The hidden width is slimmed with the network. Linear weights start N(0, 0.01),
    biases 0 (docs/method.md §1; the reference heads' init).
    """
    layers = []
    dim = in_dim
    for i in range(num_layers - 1):
        layers.append(SlimLinear(dim, hidden_dim, bias=bias and not hidden_bn,
                                 slim_in=slim_input if i == 0 else True))
        if hidden_bn:
            layers.append(SwitchableBatchNorm1d(hidden_dim, widths))
        layers.append(nn.ReLU(inplace=True))
        dim = hidden_dim
    layers.append(SlimLinear(dim, out_dim, bias=bias and not last_bn, slim_out=False,
                             slim_in=slim_input if num_layers == 1 else True))
    if last_bn:
        layers.append(SwitchableBatchNorm1d(out_dim, widths, slim=False, affine=last_bn_affine))
    mlp = nn.Sequential(*layers)
    init_weights(mlp)
    return mlp
