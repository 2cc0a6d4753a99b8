"""Analysis: gradient diagnostics, loss landscape, metric plots."""
import copy
import json
import math
import os

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch
from torch import nn

from slimdet.analysis import per_width_gradients, shared_parameters, width_loop_gradients
from slimdet.layers import set_width
from slimdet.layers.slimmable import SlimConv2d, SlimLinear, SwitchableBatchNorm1d, \
    SwitchableBatchNorm2d
from slimdet.modeling import build_model
from slimdet.modeling.slim import WidthLoop
from tests.helpers import random_batch, tiny_cfg


def _slice(module, param_name, w):
    """Width w's slice of a slimmable layer's parameter, written out from SPEC §1."""
    if isinstance(module, SlimConv2d):
        cin = int(module.in_channels * w) if module.slim_in else module.in_channels
        cout = int(module.out_channels * w) if module.slim_out else module.out_channels
    else:
        cin = int(module.in_features * w) if module.slim_in else module.in_features
        cout = int(module.out_features * w) if module.slim_out else module.out_features
    return (slice(0, cout),) if param_name == "bias" else (slice(0, cout), slice(0, cin))


def test_gradient_norms_and_cosines_equal_a_direct_computation():
    cfg = tiny_cfg("MoCoV2")
    method = build_model(cfg).train()
    loop = WidthLoop.from_config(cfg)
    data = random_batch(8, seed=5)
    before = copy.deepcopy(method.state_dict())

    diag = width_loop_gradients(method, data, loop)

    # Nothing changed: buffers (BN stats, queue, key encoder) and .grad are untouched.
    after = method.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in method.parameters())

    # Direct: the real training loop, recording the gradient each width's backward adds.
    twin = copy.deepcopy(method)
    params = dict(twin.named_parameters())
    per_width = []

    def backward(loss):
        old = {n: p.grad.clone() if p.grad is not None else torch.zeros_like(p) for n, p in params.items()}
        loss.backward()
        per_width.append({n: (p.grad if p.grad is not None else torch.zeros_like(p)) - old[n]
                          for n, p in params.items()})

    loop.run(twin, data, backward)
    slim = {}
    for mod_name, m in twin.named_modules():
        if isinstance(m, (SlimConv2d, SlimLinear)):
            for pn, _ in m.named_parameters(recurse=False):
                slim[f"{mod_name}.{pn}"] = (m, pn)
    switchable = {f"{mn}.{pn}" for mn, m in twin.named_modules()
                  if isinstance(m, (SwitchableBatchNorm1d, SwitchableBatchNorm2d))
                  for pn, _ in m.named_parameters()}
    shared = [n for n, p in params.items() if p.requires_grad and n not in switchable]
    assert set(shared) == {sp.name for sp in shared_parameters(twin)}
    full = per_width[0]
    for i, w in enumerate(loop.widths):
        g = per_width[i]
        norm_sq, dot, full_sq = 0.0, 0.0, 0.0
        for n in shared:
            s = _slice(*slim[n], w) if n in slim else tuple(slice(None) for _ in g[n].shape)
            # A width's gradient lies on its slice only.
            outside = g[n].clone()
            outside[s] = 0
            assert outside.abs().max() == 0
            norm_sq += float(g[n][s].double().pow(2).sum())
            dot += float((g[n][s].double() * full[n][s].double()).sum())
            full_sq += float(full[n][s].double().pow(2).sum())
        assert norm_sq > 0
        assert diag[f"grad_norm/w{w:g}"] == pytest.approx(math.sqrt(norm_sq), rel=1e-4)
        if i > 0:
            expected = dot / math.sqrt(norm_sq * full_sq)
            assert diag[f"grad_cos/w{w:g}"] == pytest.approx(expected, abs=1e-4)
            assert -1.0 <= diag[f"grad_cos/w{w:g}"] < 0.9999
    assert "grad_cos/w1" not in diag


class _Toy(nn.Module):
    """One slimmable linear layer; widths [1.0, 0.5]."""

    widths = [1.0, 0.5]

    def __init__(self):
        super().__init__()
        self.fc = SlimLinear(8, 6)


def test_cosine_is_one_for_identical_functions_of_the_shared_slice():
    model = _Toy()
    x = torch.randn(5, 4)
    target = torch.randn(5, 3)

    def on_slice():  # a loss that only reads the 0.5 slice, identical at both widths
        return ((x @ model.fc.weight[:3, :4].T + model.fc.bias[:3] - target) ** 2).mean()

    def losses(scale_sub):
        def gen():
            for w, scale in ((1.0, 1.0), (0.5, scale_sub)):
                set_width(model, w)
                yield w, scale * on_slice()
        return gen

    params = shared_parameters(model)
    same = per_width_gradients(params, losses(1.0))
    assert same["grad_cos/w0.5"] == pytest.approx(1.0, abs=1e-6)
    assert same["grad_norm/w1"] == pytest.approx(same["grad_norm/w0.5"], rel=1e-6)
    # Scaling changes the norm, not the direction; a sign flip gives -1.
    scaled = per_width_gradients(params, losses(3.0))
    assert scaled["grad_cos/w0.5"] == pytest.approx(1.0, abs=1e-6)
    assert scaled["grad_norm/w0.5"] == pytest.approx(3 * same["grad_norm/w1"], rel=1e-6)
    flipped = per_width_gradients(params, losses(-1.0))
    assert flipped["grad_cos/w0.5"] == pytest.approx(-1.0, abs=1e-6)
