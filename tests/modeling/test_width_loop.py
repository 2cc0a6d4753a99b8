"""The SlimCLR width loop: teacher keys, slow start, per-width backward."""
import copy

import torch
import torch.nn.functional as F

from slimdet.layers import use_width
from slimdet.modeling import build_model
from slimdet.modeling.slim import WidthLoop
from tests.helpers import random_batch, tiny_cfg


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_queue_receives_only_full_width_keys():
    cfg = tiny_cfg("MoCoV2")
    method = build_model(cfg).train()
    loop = WidthLoop.from_config(cfg)
    data = random_batch(8)
    # Expected keys: the key encoder (after its EMA step) at full width on view 2.
    expected_encoder = copy.deepcopy(method)
    with torch.no_grad():
        expected_encoder.prepare(data)  # does the EMA update
        with use_width(expected_encoder, 1.0):
            k = F.normalize(expected_encoder.projector_k(expected_encoder.backbone_k(data["views"][1])), dim=1)
    loop.run(method, data, lambda loss: loss.backward())
    assert int(method.queue_ptr) == 8
    assert torch.allclose(method.queue[:, :8].T, k, atol=1e-5)
    # Nothing else entered the queue (one enqueue per step, not one per width).
    assert torch.allclose(method.queue[:, 8:], expected_encoder.queue[:, 8:])


def test_slow_start_gives_sub_width_parameters_no_gradient():
    cfg = tiny_cfg("MoCoV2")
    method = build_model(cfg).train()
    loop = WidthLoop.from_config(cfg)
    loop.set_active([1.0])
    assert loop.weights == [1.0]
    loop.run(method, random_batch(8), lambda loss: loss.backward())
    bn = method.backbone.bn1
    assert bn.bn[0].weight.grad is not None and bn.bn[0].weight.grad.abs().sum() > 0
    for sub in bn.bn[1:]:
        assert sub.weight.grad is None
    head_bn_free = method.backbone.layer1[0].bn1.bn[2]
    assert head_bn_free.weight.grad is None


def test_per_width_backward_equals_one_summed_loss():
    for name in ("MoCoV2", "MoCoV3", "SimCLR"):
        cfg = tiny_cfg(name)
        method = build_model(cfg).train()
        twin = copy.deepcopy(method)
        data = random_batch(8, seed=3)
        loop = WidthLoop.from_config(cfg)
        logs = loop.run(method, data, lambda loss: loss.backward())
        per_width = _grads(method)

        # Reference: one graph over all widths, one backward of the weighted sum.
        total = loop.summed_loss(twin, data)
        total.backward()
        summed = _grads(twin)
        assert per_width.keys() == summed.keys(), name
        for k in per_width:
            assert torch.allclose(per_width[k], summed[k], atol=1e-5, rtol=1e-4), (name, k)
        total = float(total.detach())
        assert abs(logs["total_loss"] - total) < 1e-4 * max(1.0, abs(total))


def test_non_finite_loss_names_iteration_width_and_term():
    cfg = tiny_cfg("MoCoV2")
    method = build_model(cfg).train()
    loop = WidthLoop.from_config(cfg)
    with torch.no_grad():
        method.backbone.bn1.bn[1].weight.fill_(float("nan"))  # width 0.5's stem BN
    try:
        loop.run(method, random_batch(8), lambda loss: loss.backward(), iteration=17)
    except FloatingPointError as e:
        msg = str(e)
        assert "iteration 17" in msg and "width 0.5" in msg and "'task'" in msg
    else:
        raise AssertionError("NaN loss was not detected")
