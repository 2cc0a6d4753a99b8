import contextlib
import copy

import pytest
import torch

from slimdet.layers import (SlimConv2d, SlimLinear, SwitchableBatchNorm1d, SwitchableBatchNorm2d,
                            SwitchableLinear, UncalibratedWidthError, set_width, use_width)
from slimdet.layers.sliced import slice_grads_into_param_grad


def test_slim_conv_uses_leading_slice():
    conv = SlimConv2d(8, 16, 3, padding=1, bias=True)
    x = torch.randn(2, 8, 5, 5)
    set_width(conv, 0.5)
    y = conv(x[:, :4])
    ref = torch.nn.functional.conv2d(x[:, :4], conv.weight[:8, :4], conv.bias[:8], padding=1)
    assert y.shape == (2, 8, 5, 5) and torch.allclose(y, ref)


def test_fixed_input_and_output():
    stem = SlimConv2d(3, 16, 3, slim_in=False)
    set_width(stem, 0.25)
    assert stem(torch.randn(1, 3, 8, 8)).shape[1] == 4
    head = SlimLinear(32, 10, slim_out=False)
    set_width(head, 0.25)
    assert head(torch.randn(4, 8)).shape == (4, 10)


def test_switchable_bn_keeps_separate_statistics():
    bn = SwitchableBatchNorm2d(8, [1.0, 0.5])
    with use_width(bn, 0.5):
        bn(torch.randn(16, 4, 3, 3) + 5.0)
    assert bn.bn[1].running_mean.mean() > 0.4
    assert torch.all(bn.bn[0].running_mean == 0)
    bn1d = SwitchableBatchNorm1d(8, [1.0, 0.5], slim=False)
    with use_width(bn1d, 0.5):
        assert bn1d(torch.randn(4, 8)).shape == (4, 8)


def test_switchable_linear_has_one_classifier_per_width():
    lin = SwitchableLinear(16, 3, [1.0, 0.5, 0.25])
    assert [m.in_features for m in lin.linears] == [16, 8, 4]
    with use_width(lin, 0.25):
        assert lin(torch.randn(2, 4)).shape == (2, 3)


def test_use_width_restores_and_rejects_unknown():
    bn = SwitchableBatchNorm2d(8, [1.0, 0.5])
    with use_width(bn, 0.5):
        assert bn.width_mult == 0.5
    assert bn.width_mult == 1.0
    # Any width in [0.5, 1.0] can be set; outside is an error naming the width and the list.
    with pytest.raises(ValueError, match=r"0\.25.*\[1\.0, 0\.5\]"):
        set_width(bn, 0.25)
    # A width in range that was never trained has no statistics: eval mode refuses it.
    set_width(bn, 0.75)
    with pytest.raises(UncalibratedWidthError, match="0.75"):
        bn.eval()(torch.randn(2, 6, 3, 3))
    # A switchable linear layer has one classifier per listed width and nothing between.
    lin = SwitchableLinear(16, 3, [1.0, 0.5])
    with pytest.raises(ValueError, match=r"0\.75.*\[1\.0, 0\.5\]"):
        set_width(lin, 0.75)


def test_check_widths_names_the_key_and_value():
    from slimdet.config import ConfigError
    from slimdet.config import check_widths

    assert check_widths([1, 0.5, 0.25], "MODEL.WIDTHS") == [1.0, 0.5, 0.25]
    for bad, words in (([0.5, 1.0], "start with 1.0"), ([1.0, 0.5, 0.5], "strictly decreasing"),
                       ([1.0, 1.5], "(0, 1]"), ([], "(0, 1]"), (["x"], "list of width")):
        with pytest.raises(ConfigError) as err:
            check_widths(bad, "--widths")
        assert str(err.value).startswith("--widths must") and words in str(err.value), err.value


def _autograd_sliced(layer, x):
    """The layer's map written with autograd's own slicing (the reference)."""
    if isinstance(layer, SlimConv2d):
        cin, cout = layer.active_channels()
        bias = layer.bias[:cout] if layer.bias is not None else None
        return torch.nn.functional.conv2d(x, layer.weight[:cout, :cin], bias, layer.stride,
                                          layer.padding, layer.dilation)
    fin, fout = layer.active_features()
    bias = layer.bias[:fout] if layer.bias is not None else None
    return torch.nn.functional.linear(x, layer.weight[:fout, :fin], bias)


@pytest.mark.parametrize("kind,bias,amp", [("conv", False, False), ("conv", True, False),
                                           ("linear", True, False), ("linear", False, False),
                                           ("conv", True, True), ("linear", True, True)])
def test_sliced_backward_adds_into_grad_as_autograd_slicing_does(kind, bias, amp):
    torch.manual_seed(0)
    if kind == "conv":
        layer = SlimConv2d(8, 12, 3, stride=2, padding=1, bias=bias)
        x = torch.randn(3, 4, 9, 9)
    else:
        layer = SlimLinear(8, 12, bias=bias)
        x = torch.randn(3, 4)
    set_width(layer, 0.5)
    ref = copy.deepcopy(layer)
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if amp else contextlib.nullcontext
    # Twice: into .grad = None (created), then into an existing .grad (accumulated).
    for _ in range(2):
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        with slice_grads_into_param_grad(), autocast():
            ya = layer(xa)
        with autocast():
            yb = _autograd_sliced(ref, xb)
        assert type(ya.grad_fn).__name__.startswith("Sliced")
        assert ya.dtype == yb.dtype and torch.equal(ya, yb)
        grad_out = torch.randn(ya.shape).to(ya.dtype)
        ya.backward(grad_out)
        yb.backward(grad_out)
        # Same kernels on the same inputs; only linear's matmuls may be laid out differently
        # (default fp32 tolerances of torch.testing).
        torch.testing.assert_close(xa.grad, xb.grad)
        for (name, pa), pb in zip(layer.named_parameters(), ref.parameters()):
            assert pa.grad.dtype == pa.dtype, name
            torch.testing.assert_close(pa.grad, pb.grad, msg=name)
        assert torch.all(layer.weight.grad[6:] == ref.weight.grad[6:])  # outside the slice


def test_sliced_backward_only_where_the_loop_asks_for_it():
    conv = SlimConv2d(8, 8, 3, padding=1)
    set_width(conv, 0.5)
    x = torch.randn(2, 4, 5, 5)
    # Outside the block (evaluation, torch.autograd.grad in the diagnostics): autograd slicing.
    y = conv(x)
    assert not type(y.grad_fn).__name__.startswith("Sliced")
    (g,) = torch.autograd.grad(y.sum(), [conv.weight])
    assert g.shape == conv.weight.shape and conv.weight.grad is None
    with slice_grads_into_param_grad():
        with torch.no_grad():
            assert conv(x).grad_fn is None
        set_width(conv, 1.0)  # full width: no slice at all
        assert type(conv(torch.randn(2, 8, 5, 5)).grad_fn).__name__ == "ConvolutionBackward0"
