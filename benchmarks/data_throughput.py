#!/usr/bin/env python
"""Images/s of the MoCo v2 two-crop training pipeline at 224 px, side by side:

  (a) baseline: a plain torchvision (v1) + PIL pipeline written here, as in the MoCo v2
      reference code (ImageFolder-style reading, PIL Gaussian blur, two crops);
  (b) slimdet:  our loader (``build_train_loader`` over the ``imagenet_train`` folder data set
      with the ``MoCoV2`` recipe of slimdet/data/transforms.py);
  (c) DALI CPU: our DALI pipeline on the CPU (skipped when DALI is not installed);
  (d) DALI GPU: the same on the GPU (only when CUDA and DALI are available).

Every loader gets the same number of workers (DALI: CPU threads) and batch size; the first
batch (worker start-up, pipeline build) is not timed. Ratios are to (a). The images are made
here: random smooth-content JPEGs with ImageNet-like sizes (mostly ~500x375, some large), so
nothing is downloaded.

    python benchmarks/data_throughput.py --num-images 320 --workers 1 --batch 32
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from typing import Callable, Dict, Iterable, List, Optional

import numpy as np
import torch
from PIL import Image, ImageFilter

# ImageNet's common shapes, plus a tail of large photos.
_SHAPES = [(500, 375), (375, 500), (500, 333), (333, 500), (500, 500), (400, 300)]


def make_images(root: str, n: int, classes: int = 10, seed: int = 0) -> str:
    """``root/train/class_k/img_i.JPEG``: low-frequency colour fields with fine noise."""
    rng = np.random.default_rng(seed)
    train = os.path.join(root, "train")
    for i in range(n):
        if rng.random() < 0.1:
            w, h = int(rng.integers(800, 1400)), int(rng.integers(600, 1000))
        else:
            w, h = _SHAPES[int(rng.integers(len(_SHAPES)))]
        base = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
        img = np.asarray(Image.fromarray(base).resize((w, h), Image.BICUBIC), dtype=np.int16)
        img = np.clip(img + rng.integers(-12, 13, size=img.shape), 0, 255).astype(np.uint8)
        d = os.path.join(train, f"class_{i % classes:02d}")
        os.makedirs(d, exist_ok=True)
        Image.fromarray(img).save(os.path.join(d, f"img_{i:05d}.JPEG"), quality=90)
    return root


# ----------------------------------------------------------------------------------------------
# (a) The baseline, self-contained: what a MoCo v2 training script does with torchvision v1.
# ----------------------------------------------------------------------------------------------
class _PILBlur:
    def __init__(self, sigma=(0.1, 2.0)):
        self.sigma = sigma

    def __call__(self, img):
        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))


class _TwoCrops:
    def __init__(self, t):
        self.t = t

    def __call__(self, img):
        return [self.t(img), self.t(img)]


class _PlainFolder(torch.utils.data.Dataset):
    def __init__(self, root: str, transform):
        classes = sorted(os.listdir(root))
        self.samples = [(os.path.join(root, c, f), k) for k, c in enumerate(classes)
                        for f in sorted(os.listdir(os.path.join(root, c)))]
        self.transform = transform

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        with open(path, "rb") as f:
            img = Image.open(f).convert("RGB")
        return self.transform(img), label


def baseline_loader(root: str, batch: int, workers: int, size: int) -> Iterable:
    import torchvision.transforms as T

    aug = T.Compose([
        T.RandomResizedCrop(size, scale=(0.2, 1.0)),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
        T.RandomApply([_PILBlur()], p=0.5),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])
    ds = _PlainFolder(os.path.join(root, "train"), _TwoCrops(aug))
    while True:
        yield from torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True,
                                               num_workers=workers, drop_last=True)


# ----------------------------------------------------------------------------------------------
# (b)-(d): slimdet's loaders, built from a config exactly as training builds them.
# ----------------------------------------------------------------------------------------------
def _cfg(root: str, batch: int, workers: int, size: int, backend: str):
    from slimdet.config import get_cfg

    cfg = get_cfg()
    cfg.DATASETS.ROOT, cfg.DATASETS.TRAIN, cfg.DATASETS.FORMAT = root, "imagenet_train", "folder"
    cfg.DATALOADER.BACKEND, cfg.DATALOADER.NUM_WORKERS = backend, workers
    cfg.SOLVER.IMS_PER_BATCH, cfg.INPUT.CROP_SIZE = batch, size
    cfg.INPUT.AUGMENTATION = "MoCoV2"
    return cfg


def slimdet_loader(root: str, batch: int, workers: int, size: int) -> Iterable:
    import slimdet.data.datasets  # noqa: F401  (registers imagenet_train)
    from slimdet.data.build import build_train_loader

    return build_train_loader(_cfg(root, batch, workers, size, "torch"), device="cpu")


def dali_loader(device: str) -> Callable[..., Iterable]:
    def make(root: str, batch: int, workers: int, size: int) -> Iterable:
        from slimdet.data.dali import build_dali_train_loader

        return build_dali_train_loader(_cfg(root, batch, workers, size, "dali"), device=device)
    return make


def measure(make: Callable[..., Iterable], root: str, batch: int, workers: int, size: int,
            batches: int) -> float:
    """Images/s over ``batches`` batches after an untimed first one."""
    it = iter(make(root, batch, workers, size))
    first = next(it)
    views = first["views"] if isinstance(first, dict) else first[0]
    assert len(views) == 2 and tuple(views[0].shape[-2:]) == (size, size), "not two 224 crops"
    sync = torch.cuda.synchronize if views[0].is_cuda else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(batches):
        b = next(it)
    sync()
    del b
    return batches * batch / (time.perf_counter() - t0)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num-images", type=int, default=320)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--batches", type=int, default=0,
                   help="timed batches per loader (default: one epoch minus the first batch)")
    p.add_argument("--workers", type=int, default=1, help="loader workers / DALI CPU threads")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--only", default="", help="comma list of a,b,c,d to run a subset")
    p.add_argument("--json", default="", help="also write the results to this JSON file")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # per-worker comparison: no intra-op threads in the main process

    try:
        import nvidia.dali  # noqa: F401
        has_dali = True
    except ImportError:
        has_dali = False
    runs: Dict[str, Callable] = {"a": baseline_loader, "b": slimdet_loader}
    names = {"a": "(a) torchvision/PIL baseline", "b": "(b) slimdet loader",
             "c": "(c) DALI CPU", "d": "(d) DALI GPU"}
    skipped = {}
    if has_dali:
        runs["c"] = dali_loader("cpu")
        if torch.cuda.is_available():
            runs["d"] = dali_loader("gpu")
        else:
            skipped["d"] = "no CUDA device"
    else:
        skipped["c"] = skipped["d"] = "nvidia-dali not installed"
    if args.only:
        runs = {k: v for k, v in runs.items() if k in args.only.split(",")}

    batches = args.batches or max(1, args.num_images // args.batch - 1)
    results: Dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        make_images(tmp, args.num_images)
        print(f"made {args.num_images} JPEGs in {time.perf_counter() - t0:.1f} s; batch "
              f"{args.batch}, {args.workers} worker(s)/thread(s), {batches} timed batches, "
              f"{args.size} px, two MoCo v2 crops per image")
        for key, make in runs.items():
            results[key] = measure(make, tmp, args.batch, args.workers, args.size, batches)
            print(f"  {names[key]:32s} {results[key]:8.1f} img/s", flush=True)

    base = results.get("a")
    print("\nimages/s (two 224 px views each), ratio to (a):")
    for key in "abcd":
        if key in results:
            ratio = f"{results[key] / base:6.2f}x" if base else "   n/a"
            print(f"  {names[key]:32s} {results[key]:8.1f} img/s  {ratio}  "
                  f"({results[key] / max(args.workers, 1):.1f} per worker)")
        elif key in skipped:
            print(f"  {names[key]:32s} skipped: {skipped[key]}")
    if "d" in results and "b" in results:
        print(f"  DALI GPU / slimdet loader: {results['d'] / results['b']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "images_per_s": results, "skipped": skipped}, f,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
