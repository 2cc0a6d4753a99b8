"""Augmentation of whole batches as tensor ops on the training device.

For small in-memory data sets (the embedded Fashion-MNIST demo) per-image PIL augmentation in
workers costs ~30 % of a CPU step and extra workers only steal cores from the model; augmenting
a uint8 batch with a handful of batched tensor ops costs ~2 %. The recipes mirror docs/method.md §4 (and
``slimdet/data/transforms.py``): every random parameter is drawn per sample from an explicit
``torch.Generator``, so a step's views depend only on (seed, iteration) — which makes resumed
runs bit-identical.

Differences from torchvision's per-image ops, on purpose: colour-jitter factors are applied in a
fixed order (brightness, contrast, saturation, hue) and hue is a rotation in YIQ space.
"""
from __future__ import annotations

import math
from typing import List, Sequence

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from .recipes import EvalSpec, ViewSpec, eval_spec, recipe_views


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g) * (hi - lo) + lo


def _bernoulli(n: int, p: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g) < p


def random_resized_boxes(n: int, h: int, w: int, scale, ratio, g: torch.Generator) -> torch.Tensor:
    """Per-sample crop boxes (x0, y0, x1, y1) with area in ``scale`` and aspect in ``ratio``.

    Like torchvision's RandomResizedCrop, but vectorised: 10 proposals per sample, the first that
    fits wins; samples with none fall back to the largest centred box of an allowed aspect.
    """
    tries = 10
    area = h * w * _uniform(n * tries, *scale, g)
    log_r = _uniform(n * tries, math.log(ratio[0]), math.log(ratio[1]), g)
    aspect = torch.exp(log_r)
    cw = torch.sqrt(area * aspect).round()
    ch = torch.sqrt(area / aspect).round()
    ok = (cw > 0) & (ch > 0) & (cw <= w) & (ch <= h)
    cw, ch, ok = cw.view(n, tries), ch.view(n, tries), ok.view(n, tries)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((n,), -1))
    rows = torch.arange(n)
    bw = torch.where(first >= 0, cw[rows, first.clamp(min=0)], torch.tensor(float(min(h, w))))
    bh = torch.where(first >= 0, ch[rows, first.clamp(min=0)], torch.tensor(float(min(h, w))))
    x0 = torch.floor(torch.rand(n, generator=g) * (w - bw + 1))
    y0 = torch.floor(torch.rand(n, generator=g) * (h - bh + 1))
    return torch.stack([x0, y0, x0 + bw, y0 + bh], 1)


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _blend(a: torch.Tensor, b: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    f = factor.view(-1, 1, 1, 1)
    return (f * a + (1 - f) * b).clamp_(0, 1)


def _rotate_hue(x: torch.Tensor, hue: torch.Tensor) -> torch.Tensor:
    """Shift hue by ``hue`` turns (in [-0.5, 0.5]) as a rotation of the IQ chroma plane."""
    if x.shape[1] != 3:
        return x
    to_yiq = x.new_tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    yiq = torch.einsum("ij,bjhw->bihw", to_yiq, x)
    theta = (hue * 2 * math.pi).to(x).view(-1, 1, 1)
    cos, sin = torch.cos(theta), torch.sin(theta)
    i, q = yiq[:, 1], yiq[:, 2]
    yiq = torch.stack([yiq[:, 0], cos * i - sin * q, sin * i + cos * q], 1)
    return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(to_yiq), yiq).clamp_(0, 1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur every image with its own sigma (pixels); kernel ~10 % of the image, odd."""
    b, c, h, w = x.shape
    k = max(3, int(0.1 * min(h, w)) // 2 * 2 + 1)
    r = torch.arange(k, device=x.device, dtype=x.dtype) - k // 2
    kern = torch.exp(-(r.view(1, -1) ** 2) / (2 * sigma.to(x).view(-1, 1) ** 2))
    kern = (kern / kern.sum(1, keepdim=True)).repeat_interleave(c, 0)  # [b*c, k]
    y = x.reshape(1, b * c, h, w)
    y = F.conv2d(F.pad(y, (k // 2, k // 2, 0, 0), mode="reflect"), kern.view(b * c, 1, 1, k), groups=b * c)
    y = F.conv2d(F.pad(y, (0, 0, k // 2, k // 2), mode="reflect"), kern.view(b * c, 1, k, 1), groups=b * c)
    return y.view(b, c, h, w)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(x - mean) / std`` per channel of a [B, C, H, W] batch in [0, 1] units (the config
    check makes ``len(mean) == len(std) == C``)."""
    c = x.shape[1]
    return (x - x.new_tensor(mean).view(1, c, 1, 1)) / x.new_tensor(std).view(1, c, 1, 1)


class BatchViewAugment:
    """Turns a uint8 batch [B, C, H, W] into normalised float views, one per ``ViewSpec``."""

    def __init__(self, views: Sequence[ViewSpec], mean: Sequence[float], std: Sequence[float]):
        self.views = list(views)
        self.mean, self.std = list(mean), list(std)

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        return normalize(x, self.mean, self.std)

    def view(self, images: torch.Tensor, spec: ViewSpec, g: torch.Generator) -> torch.Tensor:
        x = images.float().div_(255)
        b, _, h, w = x.shape
        dev = x.device
        boxes = random_resized_boxes(b, h, w, spec.scale, spec.ratio, g)
        rois = torch.cat([torch.arange(b, dtype=torch.float).view(-1, 1), boxes], 1).to(dev)
        x = roi_align(x, rois, output_size=spec.crop_size, spatial_scale=1.0,
                      sampling_ratio=2, aligned=True)
        flip = _bernoulli(b, spec.flip_p, g).to(dev)
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
        if spec.jitter_p > 0:
            bri, con, sat, hue = spec.jitter
            on = _bernoulli(b, spec.jitter_p, g).float()

            def factor(s):  # factor 1 means "unchanged" for samples without jitter
                return (1 + (_uniform(b, 1 - s, 1 + s, g) - 1) * on).to(dev)
            x = (x * factor(bri).view(-1, 1, 1, 1)).clamp_(0, 1)
            x = _blend(x, _gray(x).mean((1, 2, 3), keepdim=True).expand_as(x), factor(con))
            if x.shape[1] == 3:
                x = _blend(x, _gray(x).expand_as(x), factor(sat))
                x = _rotate_hue(x, (_uniform(b, -hue, hue, g) * on).to(dev))
        if spec.gray_p > 0 and x.shape[1] == 3:
            gray = _bernoulli(b, spec.gray_p, g).to(dev)
            x = torch.where(gray.view(-1, 1, 1, 1), _gray(x).expand_as(x), x)
        if spec.blur_p > 0:
            blur = _bernoulli(b, spec.blur_p, g)
            sigma = _uniform(b, *spec.blur_sigma, g)
            if blur.any():
                idx = blur.nonzero().flatten().to(dev)
                x = x.index_copy(0, idx, gaussian_blur(x[idx], sigma[blur].to(dev)))
        if spec.solarize_p > 0:
            sol = _bernoulli(b, spec.solarize_p, g).to(dev).view(-1, 1, 1, 1)
            x = torch.where(sol & (x >= 0.5), 1 - x, x)
        return self._normalize(x)

    def __call__(self, images: torch.Tensor, g: torch.Generator) -> List[torch.Tensor]:
        return [self.view(images, spec, g) for spec in self.views]


def build_batch_augment(cfg) -> BatchViewAugment:
    """The batched augmentation of ``cfg.INPUT.AUGMENTATION``."""
    return BatchViewAugment(recipe_views(cfg), cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD)


class BatchEvalTransform:
    """The evaluation view of a uint8 batch: the per-image path's Resize(short side) +
    CenterCrop (torchvision's output sizes and crop offsets; bilinear with antialiasing as
    torchvision's tensor resize), then normalisation."""

    def __init__(self, spec: EvalSpec, mean: Sequence[float], std: Sequence[float]):
        self.spec, self.mean, self.std = spec, list(mean), list(std)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().div_(255)
        h, w = x.shape[-2:]
        short, long = (h, w) if h <= w else (w, h)
        size_long = int(self.spec.resize * long / short)
        size = (self.spec.resize, size_long) if h <= w else (size_long, self.spec.resize)
        if size != (h, w):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        crop = self.spec.crop_size
        top, left = int(round((size[0] - crop) / 2.0)), int(round((size[1] - crop) / 2.0))
        return normalize(x[..., top:top + crop, left:left + crop], self.mean, self.std)


def eval_batch_transform(cfg) -> BatchEvalTransform:
    """Evaluation of in-memory batches, the same view as the per-image ``eval_view``."""
    return BatchEvalTransform(eval_spec(cfg), cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD)
