"""Small configs and batches shared by the tests."""
import importlib.util
import os
import subprocess
import sys

import torch

from slimdet.config import get_cfg

DEMO = "configs/demo/slimclr_mocov2_demo.yaml"


def tiny_cfg(method: str = "MoCoV2", widths=(1.0, 0.5, 0.25)):
    """A CIFAR-stem ResNet-18 at base width 8 on 1-channel 16 px images."""
    cfg = get_cfg()
    cfg.MODEL.METHOD = method
    cfg.MODEL.WIDTHS = list(widths)
    b = cfg.MODEL.BACKBONE
    b.DEPTH, b.BASE_CHANNELS, b.IN_CHANNELS, b.CIFAR_STEM = 18, 8, 1, True
    cfg.MODEL.MOCOV2.HIDDEN_DIM = 32
    cfg.MODEL.MOCOV2.DIM = 16
    cfg.MODEL.MOCOV2.QUEUE_SIZE = 64
    cfg.MODEL.MOCOV3.HIDDEN_DIM = 32
    cfg.MODEL.MOCOV3.DIM = 16
    cfg.MODEL.SIMCLR.HIDDEN_DIM = 32
    cfg.MODEL.SIMCLR.DIM = 16
    cfg.INPUT.CROP_SIZE = 16
    cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD = [0.5], [0.25]
    return cfg


def random_batch(n: int = 8, size: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return {"views": [torch.randn(n, 1, size, size, generator=g) for _ in range(2)],
            "label": torch.randint(0, 10, (n,), generator=g)}


def run_tool(capsys, name: str, args) -> subprocess.CompletedProcess:
    """``tools/<name>.py ARGS`` in this process, through its ``run_cli`` as from the shell (a
    user error: exit status 2 and one line on stderr), without the seconds of start-up each
    subprocess costs. Returns the exit status and what it printed."""
    from slimdet.engine import run_cli

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location(f"_tool_{name}", os.path.join(root, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv = [str(a) for a in args]
    saved, sys.argv = sys.argv, [f"{name}.py", *argv]
    capsys.readouterr()
    try:
        run_cli(module.main)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = saved
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess([name, *argv], code, out, err)
