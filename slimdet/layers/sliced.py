"""Convolution and linear maps on the leading slice of a full-width parameter whose backward
adds the slice's gradient straight into the leading slice of ``param.grad``.

Why: autograd's own backward of ``weight[:cout, :cin]`` (``SliceBackward``) allocates a zero
tensor of the *full* weight's size, copies the slice's gradient into it, and ``AccumulateGrad``
then adds that full-size tensor into ``weight.grad``. Every narrower width of a SlimCLR step
thus pays three passes over every full-size weight (a fill, a copy, an add), however narrow it
is (see the profile in ``benchmarks/step_cost.py``). Here the backward adds the slice into
``weight.grad[:cout, :cin]`` in place and hands autograd no gradient for the weight.

The layers take this path only for graphs recorded inside :func:`slice_grads_into_param_grad`,
which the width loop enters for the forward of each width whose loss it then back-propagates
with ``loss.backward()`` (``slimdet/modeling/slim/loop.py``). Everywhere else (the gradient
diagnostics' ``torch.autograd.grad``, evaluation, tracing, ``torch.compile``) they slice as
autograd does. Inside such a graph, what autograd provides still holds:

- the weight is still an input of the graph, so its ``AccumulateGrad`` node runs after this
  backward and its post-hooks fire: DDP's reducer, which reads ``param.grad`` from such a hook,
  sees the accumulated gradient, and ``find_unused_parameters`` still finds the weight used;
- autocast: inputs and the weight slice are cast as ``F.conv2d`` / ``F.linear`` would cast
  them, and each gradient goes back in the dtype of the tensor it belongs to.

Contract of such a graph: it is differentiated once, with ``.backward()`` and no ``inputs=``
(the slice gradients always land in ``.grad``; ``torch.autograd.grad`` would receive none for
the weights), without ``create_graph`` (double backward raises). Tensor hooks registered on a
weight (``weight.register_hook``) see no gradient from these layers.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
from torch.autograd.function import once_differentiable

# Leading slices of a parameter: (slice(0, cout), slice(0, cin)) for a weight, (slice(0, cout),)
# for a bias.
Slices = Tuple[slice, ...]


def _autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    """The dtype autocast casts a convolution's / linear's inputs to, or None when it is off."""
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


def _cast(t: Optional[torch.Tensor], dtype: Optional[torch.dtype]) -> Optional[torch.Tensor]:
    # As autocast: floating-point tensors other than float64 go to the autocast dtype.
    if t is None or dtype is None or not t.is_floating_point() or t.dtype == torch.float64:
        return t
    return t.to(dtype)


def _weight_slice(weight: torch.Tensor, rows: int, cols: int,
                  dtype: Optional[torch.dtype]) -> torch.Tensor:
    """``weight[:rows, :cols]`` as the one contiguous tensor the forward and the backward both
    use (in the autocast dtype when autocast is on). Convolution and matmul kernels need a
    contiguous weight: cutting the slice again in backward would copy it a second time."""
    return _cast(weight[:rows, :cols], dtype).contiguous()


def _add_into_grad(param: Optional[torch.Tensor], grad: Optional[torch.Tensor],
                   slices: Slices) -> None:
    """``param.grad[slices] += grad`` (``param.grad`` created as zeros when it is None)."""
    if param is None or grad is None:
        return
    if grad.dtype != param.dtype:
        grad = grad.to(param.dtype)
    if param.grad is None:
        param.grad = torch.zeros_like(param)
    param.grad[slices].add_(grad)


class SlicedConv2d(torch.autograd.Function):
    """``F.conv2d(x, weight[:cout, :cin], bias[:cout])`` (groups 1) with the backward above."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                cout: int, cin: int, stride: Sequence[int], padding: Sequence[int],
                dilation: Sequence[int]) -> torch.Tensor:
        dtype = _autocast_dtype(x.device.type)
        xc = _cast(x, dtype)
        w = _weight_slice(weight, cout, cin, dtype)
        b = _cast(bias[:cout], dtype) if bias is not None else None
        with torch.autocast(x.device.type, enabled=False):
            y = torch.nn.functional.conv2d(xc, w, b, stride, padding, dilation, 1)
        # The contiguous slice is kept for backward: one width's slices at a time (the width
        # loop back-propagates each width before the next one's forward), at most the
        # weights' size, against one copy less per layer and width. The parameters themselves
        # are saved as references, for the gradients to land in.
        ctx.save_for_backward(xc, w, weight, bias)
        ctx.conf = (cout, cin, stride, padding, dilation, x.dtype)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        xc, w, weight, bias = ctx.saved_tensors
        cout, cin, stride, padding, dilation, x_dtype = ctx.conf
        has_bias = bias is not None
        gx, gw, gb = torch.ops.aten.convolution_backward(
            grad_out, xc, w, [cout] if has_bias else None, stride, padding, dilation,
            False, [0, 0], 1,
            [ctx.needs_input_grad[0], ctx.needs_input_grad[1], has_bias and ctx.needs_input_grad[2]])
        if gx is not None and gx.dtype != x_dtype:
            gx = gx.to(x_dtype)
        _add_into_grad(weight, gw, (slice(0, cout), slice(0, cin)))
        _add_into_grad(bias, gb, (slice(0, cout),))
        return gx, None, None, None, None, None, None, None


class SlicedLinear(torch.autograd.Function):
    """``F.linear(x, weight[:fout, :fin], bias[:fout])`` with the backward above."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                fout: int, fin: int) -> torch.Tensor:
        dtype = _autocast_dtype(x.device.type)
        xc = _cast(x, dtype)
        w = _weight_slice(weight, fout, fin, dtype)
        b = _cast(bias[:fout], dtype) if bias is not None else None
        with torch.autocast(x.device.type, enabled=False):
            y = torch.nn.functional.linear(xc, w, b)
        ctx.save_for_backward(xc, w, weight, bias)
        ctx.conf = (fout, fin, x.dtype)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        xc, w, weight, bias = ctx.saved_tensors
        fout, fin, x_dtype = ctx.conf
        gx = (grad_out @ w).to(x_dtype) if ctx.needs_input_grad[0] else None
        g2, x2 = grad_out.reshape(-1, fout), xc.reshape(-1, fin)
        gw = g2.T @ x2 if ctx.needs_input_grad[1] else None
        gb = g2.sum(0) if bias is not None and ctx.needs_input_grad[2] else None
        _add_into_grad(weight, gw, (slice(0, fout), slice(0, fin)))
        _add_into_grad(bias, gb, (slice(0, fout),))
        return gx, None, None, None, None


_state = threading.local()


@contextlib.contextmanager
def slice_grads_into_param_grad() -> Iterator[None]:
    """Slimmable layers run inside this block record graphs whose ``.backward()`` adds each
    weight slice's gradient straight into ``param.grad`` (see the module docstring for the
    contract). Per thread: a forward records its graph on the calling thread."""
    previous = getattr(_state, "enabled", False)
    _state.enabled = True
    try:
        yield
    finally:
        _state.enabled = previous


def uses_sliced_backward(params: List[Optional[torch.Tensor]]) -> bool:
    """Whether a slimmable layer's forward goes through these Functions: inside
    :func:`slice_grads_into_param_grad`, with a gradient to compute for one of its parameters,
    and no tracer (``torch.compile``, ``torch.jit.trace``) recording."""
    # The compiler check first: dynamo folds it to a constant and never reads the thread-local.
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    if not getattr(_state, "enabled", False) or not torch.is_grad_enabled():
        return False
    return any(p is not None and p.requires_grad for p in params)
