"""Small configs and batches shared by the tests."""
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
