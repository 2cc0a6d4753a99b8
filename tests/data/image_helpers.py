"""Small real JPEG image folders for the data tests (made with PIL, a few KB each), and the
config those tests read them with."""
import os
from typing import List

import numpy as np
from PIL import Image

from slimdet.config import get_cfg


def make_image(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """Smooth colourful content (like a photo, unlike noise): a tiny random image upsampled."""
    small = rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.BICUBIC)


def make_folder(root: str, classes: List[str], per_class: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    for cls in classes:
        os.makedirs(os.path.join(root, cls), exist_ok=True)
        for i in range(per_class):
            w, h = int(rng.integers(40, 72)), int(rng.integers(32, 64))
            make_image(rng, w, h).save(os.path.join(root, cls, f"{cls}_{i:03d}.JPEG"), quality=90)
    return root


def data_cfg(**datasets):
    """The default config with ``DATASETS.<KEY>`` set from ``datasets``, read in this process
    (no loader workers)."""
    cfg = get_cfg()
    for k, v in datasets.items():
        setattr(cfg.DATASETS, k, v)
    cfg.DATALOADER.NUM_WORKERS = 0
    return cfg
