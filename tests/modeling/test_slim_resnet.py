"""Slimmable ResNet: equality with torchvision at full width and with plain scaled ResNets at
every width (proves slicing and BN switching), sizes, stems, errors."""
import pytest
import torch
import torchvision

from slimdet.layers import UncalibratedWidthError, set_width, use_width
from slimdet.modeling.backbone import SlimResNet, extract_subnet, slice_state_dict

WIDTHS = [1.0, 0.75, 0.5, 0.25]


def _randomize_bn(model):
    """Non-trivial BN statistics/affines so that a wrong BN index changes the output."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def _from_torchvision(tv_state, slim):
    """torchvision keys -> ours: BN ``x.weight`` -> ``x.bn.0.weight``."""
    ours = slim.state_dict()
    mapped = {}
    for k, v in tv_state.items():
        prefix, _, leaf = k.rpartition(".")
        bn_key = f"{prefix}.bn.0.{leaf}"
        mapped[bn_key if bn_key in ours else k] = v
    return mapped


@pytest.mark.parametrize("depth,ctor", [(50, torchvision.models.resnet50), (18, torchvision.models.resnet18)])
def test_full_width_equals_torchvision(depth, ctor):
    tv = ctor().eval()
    _randomize_bn(tv)
    slim = SlimResNet(depth, widths=[1.0], num_classes=1000).eval()
    missing = slim.load_state_dict(_from_torchvision(tv.state_dict(), slim), strict=True)
    assert not missing.missing_keys and not missing.unexpected_keys
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert (slim(x) - tv(x)).abs().max().item() < 1e-4


@pytest.mark.parametrize("depth,size,cifar", [(50, 96, False), (18, 32, True), (34, 64, False)])
def test_every_width_equals_plain_scaled_resnet(depth, size, cifar):
    slim = SlimResNet(depth, widths=WIDTHS, num_classes=10, cifar_stem=cifar).eval()
    _randomize_bn(slim)
    torch.nn.init.normal_(slim.fc.weight)
    x = torch.randn(2, 3, size, size)
    outputs = []
    for i, w in enumerate(WIDTHS):
        # Independently built plain network with every channel count scaled by w.
        plain = SlimResNet(depth, widths=[1.0], num_classes=10, cifar_stem=cifar,
                           channel_multiplier=w).eval()
        plain.load_state_dict(slice_state_dict(slim.state_dict(), i, plain.state_dict()))
        assert plain.conv1.out_channels == int(64 * w)
        with torch.no_grad(), use_width(slim, w):
            y = slim(x)
            outputs.append(y)
            assert (y - plain(x)).abs().max().item() < 1e-4
    # Different widths really are different networks.
    assert (outputs[0] - outputs[-1]).abs().max().item() > 1e-3


def test_extract_subnet_keeps_train_mode_and_weights():
    slim = SlimResNet(18, widths=WIDTHS, cifar_stem=True).eval()
    _randomize_bn(slim)
    sub = extract_subnet(slim, 0.5)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        set_width(slim, 0.5)
        assert torch.allclose(slim(x), sub(x), atol=1e-5)
    assert sub(x).shape == (3, 256)


def test_residual_bn_zero_init_every_width():
    slim = SlimResNet(50, widths=WIDTHS)
    for block in slim.layer1:
        for bn in block.bn3.bn:
            assert torch.all(bn.weight == 0)
        for bn in block.bn1.bn:
            assert torch.all(bn.weight == 1)
    conv_std = slim.conv1.weight.std().item()
    assert 0.01 < conv_std < 0.2  # kaiming fan_out for 7x7x64


def test_cifar_stem_shapes_and_stage_outputs():
    slim = SlimResNet(18, widths=WIDTHS, cifar_stem=True, base_channels=16,
                      out_features=["res2", "res3", "res4", "res5"])
    x = torch.randn(2, 3, 32, 32)
    for w in WIDTHS:
        with use_width(slim, w):
            out = slim(x)
        assert out["res2"].shape == (2, int(16 * w), 32, 32)
        assert out["res5"].shape == (2, int(128 * w), 4, 4)
    imagenet = SlimResNet(50, widths=WIDTHS, out_features=["res2", "res5"])
    out = imagenet(torch.randn(1, 3, 64, 64))
    assert out["res2"].shape == (1, 256, 16, 16) and out["res5"].shape == (1, 2048, 2, 2)


def test_grey_input_is_not_sliced():
    slim = SlimResNet(18, widths=WIDTHS, in_channels=1, cifar_stem=True)
    with use_width(slim, 0.25):
        assert slim(torch.randn(2, 1, 32, 32)).shape == (2, 128)


def test_unknown_width_raises_with_name_and_list():
    slim = SlimResNet(18, widths=WIDTHS)
    with pytest.raises(ValueError, match=r"0\.2.*\[1\.0, 0\.75, 0\.5, 0\.25\]"):
        set_width(slim, 0.2)
    with pytest.raises(ValueError, match="0.2"):
        extract_subnet(slim, 0.2)
    # 0.3 is in range but untrained: no statistics to evaluate or export it with.
    with pytest.raises(UncalibratedWidthError, match="0.3"):
        extract_subnet(slim, 0.3)
    with pytest.raises(UncalibratedWidthError, match="0.3"), use_width(slim.eval(), 0.3):
        slim(torch.randn(1, 3, 32, 32))


def test_bad_depth_and_widths():
    with pytest.raises(ValueError, match="depth"):
        SlimResNet(42)
    with pytest.raises(ValueError, match="widths"):
        SlimResNet(18, widths=[0.5, 1.0])
