"""Per-image augmentation recipes of docs/method.md §4, for data sets whose items are PIL images.

``build_view_transform(cfg, is_train)`` returns a callable ``PIL.Image -> [view, ...]`` whose
views are normalised float CHW tensors: two views for the self-supervised recipes, one for
``LinearEval`` training and for evaluation. The recipes are the view specs of
``slimdet/data/recipes.py`` (shared with the batched and DALI pipelines), named by
``cfg.INPUT.AUGMENTATION``.

  * ``MoCoV2``: RandomResizedCrop(CROP_SIZE, MIN_SCALE-MAX_SCALE), ColorJitter(0.4, 0.4, 0.4,
    0.1) p0.8, grayscale p0.2, Gaussian blur sigma 0.1-2 p0.5, horizontal flip; both views alike.
  * ``BYOL`` (asymmetric, MoCo v3): jitter (0.4, 0.4, 0.2, 0.1) p0.8, grayscale p0.2; view 1
    blur p1.0, view 2 blur p0.1 + solarize p0.2.
  * ``SimCLR``: jitter (0.8, 0.8, 0.8, 0.2) p0.8, grayscale p0.2, blur p0.5, flip. docs/method.md §4's crop
    scale 0.08-1 is set through INPUT.MIN_SCALE in the SimCLR configs, like every recipe's.
  * ``LinearEval``: RandomResizedCrop + flip (train).
  * evaluation (every recipe): Resize(short side) + CenterCrop(CROP_SIZE), ``recipes.eval_spec``.

Geometry and colour run on the PIL image (cheaper than on float tensors), then one conversion
to a normalised tensor. The blur is PIL's Gaussian filter with a per-draw sigma, as in the MoCo
and BYOL reference code: torchvision's GaussianBlur needs a fixed kernel size the recipes don't
specify. Randomness comes from torch's global generator only, so seeding it (the loader does
per sample; or pass ``seed=``) makes every view reproducible.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, ImageFilter
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from .datasets.base import CHANNEL_MODES
from .recipes import ViewSpec, eval_spec, recipe_views


class RandomGaussianBlur(torch.nn.Module):
    """With probability ``p``, blur with sigma ~ U(sigma) (PIL's filter; tensors: torchvision's
    with a 6-sigma kernel)."""

    def __init__(self, p: float = 0.5, sigma: Tuple[float, float] = (0.1, 2.0)):
        super().__init__()
        self.p, self.sigma = p, sigma

    def forward(self, img):
        if self.p < 1.0 and torch.rand(()).item() >= self.p:
            return img
        sigma = torch.empty(()).uniform_(*self.sigma).item()
        return self.blur(img, sigma)

    @staticmethod
    def blur(img, sigma: float):
        if isinstance(img, Image.Image):
            return img.filter(ImageFilter.GaussianBlur(radius=sigma))
        k = 2 * int(3 * sigma + 0.5) + 1
        return F.gaussian_blur(img, [k, k], [sigma, sigma])

    def extra_repr(self) -> str:
        return f"p={self.p}, sigma={self.sigma}"


class ToNormalizedTensor(torch.nn.Module):
    """PIL RGB or grey (or uint8 tensor) -> float32 CHW tensor, ``(x / 255 - mean) / std``.

    PIL images take a fused path (uint8 CHW copy, then one multiply-add in place), ~2.7x faster
    than ToImage + ToDtype + Normalize and equal to them within float rounding; this runs twice
    per sample, so it matters for loader throughput. Tensors go through torchvision's ops.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        mean_t = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.scale, self.shift = 1.0 / (255.0 * std_t), -mean_t / std_t
        self.pipeline = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                                    v2.Normalize(list(mean), list(std))])

    def forward(self, img) -> torch.Tensor:
        if isinstance(img, Image.Image):
            hwc = np.array(img, dtype=np.uint8, copy=True)
            if hwc.ndim == 2:  # a grey ("L") image
                hwc = hwc[:, :, None]
            chw = torch.from_numpy(hwc).permute(2, 0, 1)
            return chw.contiguous().float().mul_(self.scale).add_(self.shift)
        return self.pipeline(img).as_subclass(torch.Tensor)


class MultiViewTransform:
    """Applies one transform per view to the same image: ``img -> [view_1, ..., view_k]``.

    ``seed`` (optional) makes the views a function of the seed alone, without touching the
    caller's generator state.
    """

    def __init__(self, views: Sequence[Callable]):
        if not views:
            raise ValueError("MultiViewTransform needs at least one view transform")
        self.views = list(views)

    def __call__(self, img, seed: Optional[int] = None) -> List[torch.Tensor]:
        if seed is None:
            return [t(img) for t in self.views]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return [t(img) for t in self.views]

    def __repr__(self) -> str:
        inner = "\n".join(f"  view {i}: {t}" for i, t in enumerate(self.views))
        return f"MultiViewTransform(\n{inner}\n)"


def view_transform(spec: ViewSpec, mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """One view: crop, colour jitter, grayscale, blur, [solarize], flip, normalise (the order of
    the MoCo v2 / v3 reference pipelines); steps with probability 0 are left out."""
    b, c, s, h = spec.jitter
    ops = [v2.RandomResizedCrop(spec.crop_size, scale=spec.scale, ratio=spec.ratio,
                                interpolation=v2.InterpolationMode.BILINEAR, antialias=True)]
    if spec.jitter_p > 0:
        ops.append(v2.RandomApply([v2.ColorJitter(brightness=b, contrast=c, saturation=s, hue=h)],
                                  p=spec.jitter_p))
    if spec.gray_p > 0:
        ops.append(v2.RandomGrayscale(p=spec.gray_p))
    if spec.blur_p > 0:
        ops.append(RandomGaussianBlur(p=spec.blur_p, sigma=spec.blur_sigma))
    if spec.solarize_p > 0:
        ops.append(v2.RandomSolarize(threshold=128, p=spec.solarize_p))
    ops += [v2.RandomHorizontalFlip(p=spec.flip_p), ToNormalizedTensor(mean, std)]
    return v2.Compose(ops)


def eval_view(cfg) -> v2.Compose:
    """Deterministic evaluation view: Resize(short side) + CenterCrop (``recipes.eval_spec``)."""
    spec = eval_spec(cfg)
    return v2.Compose([
        v2.Resize(spec.resize, interpolation=v2.InterpolationMode.BILINEAR, antialias=True),
        v2.CenterCrop(spec.crop_size), ToNormalizedTensor(cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD)])


# How the data sets decode images (``CHANNEL_MODES``: PIL "RGB" or "L"), in a runtime user's words.
CHANNEL_ORDER = {"RGB": "RGB", "L": "grey"}


def eval_input_record(cfg) -> Dict[str, Any]:
    """What :func:`eval_view` (and the batched ``BatchEvalTransform``) feeds the network, as
    plain JSON values: an exported file records it so that a program without slimdet can
    prepare its images the same way (``slimdet.checkpoint.export``'s metadata ``input``)."""
    spec, channels = eval_spec(cfg), cfg.MODEL.BACKBONE.IN_CHANNELS
    return {
        "layout": "NCHW",
        "dtype": "float32",
        "channels": channels,
        "channel_order": CHANNEL_ORDER[CHANNEL_MODES[channels]],
        "resize_short_side": spec.resize,
        "resize_interpolation": "bilinear",
        "resize_antialias": True,
        "crop": "centre",
        "crop_size": spec.crop_size,
        "pixel_divisor": 255.0,
        "mean": [float(m) for m in cfg.INPUT.PIXEL_MEAN],
        "std": [float(s) for s in cfg.INPUT.PIXEL_STD],
        "normalize": "(pixel / 255 - mean[c]) / std[c]",
    }


def build_view_transform(cfg, is_train: bool) -> MultiViewTransform:
    """``PIL.Image -> [normalised float CHW view, ...]`` for training (the recipe named by
    ``cfg.INPUT.AUGMENTATION``) or evaluation (one centre-cropped view)."""
    if not is_train:
        return MultiViewTransform([eval_view(cfg)])
    return MultiViewTransform([view_transform(v, cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD)
                               for v in recipe_views(cfg)])
