"""Widths nobody trained (add, calibrate, refuse when uncalibrated), the sandwich rule, shared BN."""
import copy

import pytest
import torch

from slimdet.checkpoint import CheckpointError, load_weights
from slimdet.config import ConfigError
from slimdet.engine import load_cfg
from slimdet.layers import (UncalibratedWidthError, add_widths, available_widths, recalibrate_bn,
                            uncalibrated_widths, use_width)
from slimdet.modeling import build_model
from slimdet.modeling.backbone import SlimResNet, extract_subnet
from slimdet.modeling.slim import WidthLoop
from tests.helpers import random_batch, tiny_cfg


def _net(**kw):
    return SlimResNet(depth=18, widths=[1.0, 0.5, 0.25], base_channels=8, in_channels=1,
                      cifar_stem=True, **kw)


def _batches(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(6, 1, 16, 16, generator=g) * 2 + 3 for _ in range(n)]


def _randomise_bn(net):
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.affine:
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)


def test_added_width_is_refused_until_calibrated_then_equals_its_plain_network():
    net = _net()
    _randomise_bn(net)
    x = torch.randn(2, 1, 16, 16)
    assert add_widths(net, [0.6, 0.5]) == [0.6]  # 0.5 is trained
    assert available_widths(net) == [1.0, 0.6, 0.5, 0.25]
    assert uncalibrated_widths(net) == [0.6]
    with pytest.raises(UncalibratedWidthError, match="0.6"), use_width(net.eval(), 0.6):
        net(x)
    with pytest.raises(UncalibratedWidthError, match="0.6"):
        extract_subnet(net, 0.6)

    recalibrate_bn(net, _batches(), 3, widths=[0.6])
    assert uncalibrated_widths(net) == []
    # Statistics: the true averages over the batches of the stem's leading int(8 * 0.6) = 4
    # channels; affine parameters: the leading slice of width 1.0's (nearest trained at or above).
    with torch.no_grad():
        stem = torch.stack([net.conv1(b)[:, :4].mean(dim=(0, 2, 3)) for b in _batches()]).mean(0)
    assert torch.allclose(net.bn1.statistics_at(0.6).running_mean, stem, atol=1e-5)
    weight, _ = net.bn1.affine_at(0.6)
    assert torch.equal(weight, net.bn1.bn[0].weight[:4])
    plain = extract_subnet(net, 0.6).eval()
    assert plain.conv1.out_channels == 4 and plain.layer4[0].conv1.out_channels == int(64 * 0.6)
    with torch.no_grad(), use_width(net.eval(), 0.6):
        y = net(x)
        assert y.shape == (2, int(64 * 0.6))
        assert torch.allclose(y, plain(x), atol=1e-5)
        with use_width(net, 0.5):
            assert (net(x)[:, :32] - y[:, :32]).abs().max() > 1e-3  # another network


def test_added_widths_stay_out_of_the_state_dict():
    net = _net()
    before = net.state_dict()
    add_widths(net, [0.7])
    recalibrate_bn(net, _batches(2), 2, widths=[0.7])
    after = net.state_dict()
    assert after.keys() == before.keys()
    fresh = _net()
    fresh.load_state_dict(after, strict=True)
    assert uncalibrated_widths(fresh, [0.7]) == [0.7]  # a job that needs it calibrates again
    with pytest.raises(ValueError, match="0.2"):
        add_widths(net, [0.2])


def test_stale_flag_travels_with_the_weights_and_calibration_clears_it(tmp_path):
    cfg = tiny_cfg("MoCoV2")
    method = build_model(cfg)
    method.backbone.mark_statistics_stale()
    path = tmp_path / "sandwich.pth"
    torch.save({"model": method.state_dict()}, path)

    probe = build_model(tiny_cfg("MoCoV2"))  # a fixed-mode config: it trusts its statistics...
    assert uncalibrated_widths(probe.backbone) == []
    load_weights(probe, str(path), ("backbone",), "test")  # ...until it loads stale ones
    assert uncalibrated_widths(probe.backbone) == [1.0, 0.5, 0.25]
    with pytest.raises(UncalibratedWidthError, match="width 1 "):
        probe.backbone.eval()(torch.randn(2, 1, 16, 16))
    recalibrate_bn(probe.backbone, _batches(2), 2)
    assert not bool(probe.backbone.bn_statistics_stale)
    probe.backbone(torch.randn(2, 1, 16, 16))


def test_sandwich_widths_are_a_function_of_seed_and_iteration():
    loop = WidthLoop([1.0, 0.5, 0.25], mode="sandwich", num_sampled=3, seed=7)
    draws = [loop.sandwich_widths(i) for i in range(20)]
    assert draws == [WidthLoop([1.0, 0.5, 0.25], mode="sandwich", num_sampled=3,
                               seed=7).sandwich_widths(i) for i in range(20)]  # a resumed run
    assert all(d[0] == 1.0 and d[-1] == 0.25 and len(d) == 5 for d in draws)
    sampled = [w for d in draws for w in d[1:-1]]
    assert all(0.25 <= w <= 1.0 for w in sampled) and len(set(sampled)) == len(sampled)
    assert loop.sandwich_widths(3) != WidthLoop([1.0, 0.5, 0.25], mode="sandwich", num_sampled=3,
                                                seed=8).sandwich_widths(3)
    narrow = WidthLoop([1.0, 0.5, 0.25], mode="sandwich", width_range=[0.3, 0.4], seed=0)
    assert all(0.3 <= w <= 0.4 for i in range(10) for w in narrow.sandwich_widths(i)[1:-1])


@pytest.mark.parametrize("name,bn", [("MoCoV2", "shared"), ("SimCLR", "switchable"),
                                     ("MoCoV3", "shared"), ("Supervised", "shared")])
def test_sandwich_step_equals_one_summed_loss(name, bn):
    cfg = tiny_cfg(name)
    cfg.MODEL.NUM_CLASSES = 10
    cfg.MODEL.SLIM.MODE, cfg.MODEL.SLIM.BN = "sandwich", bn
    method = build_model(cfg).train()
    twin = copy.deepcopy(method)
    data = random_batch(8, seed=3)
    loop = WidthLoop.from_config(cfg)
    logs = loop.run(method, data, lambda loss: loss.backward(), iteration=5)
    assert loop.widths == loop.sandwich_widths(5) and len(loop.widths) == 4
    assert "loss_distill/sampled1" in logs and "width/sampled2" in logs
    total = loop.summed_loss(twin, data, iteration=5)
    total.backward()
    grads = {n: p.grad for n, p in method.named_parameters() if p.grad is not None}
    ref = {n: p.grad for n, p in twin.named_parameters() if p.grad is not None}
    assert grads.keys() == ref.keys()
    for k in grads:
        assert torch.allclose(grads[k], ref[k], atol=1e-5, rtol=1e-4), k
    if bn == "shared":
        # One affine weight for every width: the narrowest width's gradient lands in its slice.
        assert method.backbone.bn1.weight.grad[: int(8 * 0.25)].abs().sum() > 0


def test_shared_bn_checkpoint_needs_the_shared_config(tmp_path):
    cfg = tiny_cfg("MoCoV2")
    cfg.MODEL.SLIM.BN = "shared"
    method = build_model(cfg)
    assert "backbone.bn1.weight" in method.state_dict()
    assert "backbone.bn1.bn.0.weight" not in method.state_dict()
    path = tmp_path / "shared.pth"
    torch.save({"model": method.state_dict()}, path)
    # Named as the architecture it is, with the key to set (not as 100 missing BN keys).
    with pytest.raises(CheckpointError, match=r"shared.pth' holds a .*, shared BN \(MODEL\.SLIM"
                                              r"\.BN shared\), but test uses .*CIFAR stem: set .*"
                                              r"MODEL\.SLIM\.BN to match the file"):
        load_weights(build_model(tiny_cfg("MoCoV2")), str(path), ("backbone",), "test")
    load_weights(build_model(cfg), str(path), ("backbone",), "test")


@pytest.mark.parametrize("overrides,needle", [
    (["TEST.WIDTHS", "[1.0, 0.6]"], "TEST.CALIBRATE_BATCHES"),
    (["TEST.WIDTHS", "[0.2]", "TEST.CALIBRATE_BATCHES", "4"], "0.2"),
    (["MODEL.SLIM.MODE", "sandwich"], "TEST.CALIBRATE_BATCHES"),
    (["MODEL.SLIM.MODE", "sandwiches"], "MODEL.SLIM.MODE"),
    (["MODEL.SLIM.BN", "sync"], "MODEL.SLIM.BN"),
    (["MODEL.SLIM.WIDTH_RANGE", "[0.1, 1.0]"], "WIDTH_RANGE"),
])
def test_width_keys_are_checked(overrides, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_cfg("", ["MODEL.WIDTHS", "[1.0, 0.5, 0.25]"] + overrides)
    load_cfg("", ["MODEL.WIDTHS", "[1.0, 0.5, 0.25]", "TEST.WIDTHS", "[1.0, 0.6]",
                  "TEST.CALIBRATE_BATCHES", "4"])


def test_knn_evaluates_untrained_and_stale_widths_on_a_calibrated_copy():
    from slimdet.evaluation import KNNEvaluator

    cfg = load_cfg("configs/demo/slimclr_mocov2_demo.yaml", [
        "MODEL.BACKBONE.BASE_CHANNELS", "8", "MODEL.MOCOV2.HIDDEN_DIM", "32", "MODEL.MOCOV2.DIM", "16",
        "MODEL.MOCOV2.QUEUE_SIZE", "64", "MODEL.DEVICE", "cpu", "SOLVER.AMP.ENABLED", "False",
        "DATASETS.TRAIN_SUBSET", "300", "DATASETS.TEST_SUBSET", "100", "SOLVER.IMS_PER_BATCH", "50",
        "TEST.IMS_PER_BATCH", "100", "TEST.WIDTHS", "[1.0, 0.6, 0.25]",
        "TEST.CALIBRATE_BATCHES", "2"])
    method = build_model(cfg)
    state = copy.deepcopy(method.state_dict())
    results = KNNEvaluator(cfg).evaluate(method)
    assert sorted(results) == ["knn_top1/w0.25", "knn_top1/w0.6", "knn_top1/w1"]
    assert all(0 <= v <= 100 for v in results.values())
    # The evaluated model is untouched: no width added, no statistic changed.
    assert available_widths(method.backbone) == [1.0, 0.5, 0.25]
    assert all(torch.equal(v, state[k]) for k, v in method.state_dict().items())
    # After sandwich training every width is calibrated first: the trained widths' numbers move.
    method.backbone.mark_statistics_stale()
    stale = KNNEvaluator(cfg).evaluate(method)
    assert stale["knn_top1/w0.6"] == results["knn_top1/w0.6"]  # same batches, same statistics
    cfg.defrost()
    cfg.TEST.CALIBRATE_BATCHES = 0
    with pytest.raises(UncalibratedWidthError, match="TEST.CALIBRATE_BATCHES"):
        KNNEvaluator(cfg).evaluate(method)
