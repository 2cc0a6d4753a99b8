#!/usr/bin/env python
"""Does this machine's torch compute channels-last convolution weight gradients correctly?

    python scripts/check_channels_last_grads.py [--repeats 5]

Why it exists: on the project's CPU (AMD EPYC, AVX2, torch 2.14.1) the weight gradient of a
1x1, stride-2 convolution on channels-last (NHWC) tensors with fewer than 8 input channels comes
out wrong, and different from one call to the next. It matches oneDNN's open issue 6035 ("1x1
convolution backward_weights writes past the rtus workspace (nhwc, IC < ic_block)", AVX2), which
also reports crashes with one thread and hangs with several. Narrow widths of slimmable networks
have such layers (a ResNet-18 of base width 8 at width 0.25 has 2 input channels into its first
1x1 stride-2 shortcut), which is why ``MODEL.COMPILE`` turns off inductor's layout optimisation
(it makes convolutions channels-last) and why slimdet has no channels-last training switch.

Each case compares the channels-last weight gradient with the default-layout one (same weights,
same input) ``--repeats`` times, each case in a child process stopped after ``--timeout``
seconds (the bug can hang a process: a batch of 32 at 32x32 px did here); exit status 1 if any
case differs by more than 1e-4 relative, hangs or crashes. Rerun it after a torch upgrade to
see whether the bug is gone.
"""
from __future__ import annotations

import argparse
import copy
import subprocess
import sys

import torch

# (input channels, output channels, kernel, stride, batch, height = width)
CASES = [(2, 4, 1, 2, 8, 8), (4, 8, 1, 2, 8, 8), (4, 8, 1, 2, 32, 32),  # the reported shape class
         (8, 16, 1, 2, 8, 8), (4, 8, 1, 1, 8, 8), (4, 8, 3, 2, 8, 8)]   # controls
PREFIX = "MAX_RELATIVE_ERRORS "


def relative_error(ci: int, co: int, k: int, stride: int, n: int, hw: int) -> float:
    conv = torch.nn.Conv2d(ci, co, k, stride=stride, padding=k // 2, bias=False)
    x = torch.randn(n, ci, hw, hw)
    expected = torch.autograd.grad(conv(x).square().sum(), conv.weight)[0]
    conv_cl = copy.deepcopy(conv).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    got = torch.autograd.grad(conv_cl(x_cl).square().sum(), conv_cl.weight)[0]
    return ((got - expected).abs().max() / expected.abs().max()).item()


def run_case(index: int, repeats: int) -> None:
    """In the child process: print the case's relative errors, one per repeat."""
    torch.manual_seed(index)
    print(PREFIX + " ".join(f"{relative_error(*CASES[index]):.3e}" for _ in range(repeats)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per case")
    p.add_argument("--case", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.case is not None:
        run_case(args.case, args.repeats)
        return 0
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"oneDNN {'on' if torch.backends.mkldnn.is_available() else 'off'}")
    failed = False
    for index, (ci, co, k, stride, n, hw) in enumerate(CASES):
        name = f"{k}x{k} stride {stride}, {ci}->{co} channels, batch {n}, {hw}x{hw}"
        cmd = [sys.executable, __file__, "--case", str(index), "--repeats", str(args.repeats)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            print(f"{name}: HANG (stopped after {args.timeout:g} s)")
            failed = True
            continue
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(PREFIX)]
        if proc.returncode != 0 or not lines:
            print(f"{name}: CRASH (exit status {proc.returncode})")
            failed = True
            continue
        errors = [float(e) for e in lines[-1][len(PREFIX):].split()]
        bad = sum(e > 1e-4 for e in errors)
        failed |= bad > 0
        print(f"{name}: {'WRONG' if bad else 'ok'} in {bad}/{len(errors)} "
              f"(max relative error {max(errors):.2e})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
