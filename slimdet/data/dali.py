"""NVIDIA DALI pipelines for the docs/method.md §4 recipes (``DATALOADER.BACKEND: dali``;
optional extra).

The Python side only reads *encoded* bytes (``EncodedImageDataset.read_encoded``: folders, LMDB
and RecordIO alike) and feeds them through ``external_source``; DALI decodes (nvJPEG on the GPU,
libjpeg-turbo on the CPU) and augments. Which samples a step sees is the same pure function of
(seed, iteration, rank) as in the torch backend (``samplers.IterationIndices``), so each rank
reads only its shard and a resumed run continues the same order.

Each view: RandomResizedCrop -> colour twist (brightness, contrast, saturation, hue with p0.8;
grayscale p0.2 as saturation 0, i.e. the same luma weights as torchvision) -> Gaussian blur with
sigma ~ U(0.1, 2) [-> solarize] -> flip + normalise to float CHW. Every view is normalised (the
MoCo v3 reference left its second view unnormalised). Differences from the per-image PIL path,
on purpose: jitter factors are applied in one fixed order, and the blur kernel is DALI's
(radius ceil(3 sigma)) rather than PIL's box approximation. Differences DALI's colour twist
brings (not matched here; the two backends' augmentations are alike in distribution, not
equal): contrast pivots on mid-grey (128) where torchvision pivots on each image's mean grey,
brightness, contrast, saturation and hue are one affine colour transform with no clamping to
[0, 255] between them (torchvision clamps after each), and hue is a rotation in YIQ space where
torchvision shifts HSV hue. EXIF orientation is ignored, as the PIL path ignores it.
Augmentation is drawn by DALI's generators, seeded once per pipeline (SEED and the rank), so a
resumed run repeats the sample order but not the augmentations. Only training reads through
DALI: evaluation and BN calibration use the torch backend.

These pipelines follow the reference's torchvision pipelines (docs/method.md §4 takes those as
the reference for augmentation), not its DALI pipelines, which differ from them: bicubic resizing
(here bilinear, as torchvision's RandomResizedCrop), a hue range handed to DALI in degrees as if
it were torchvision's fraction of the colour circle (about +-0.1 degree instead of +-36 for hue
0.1; here ``hue * 360``), saturation 0.4 in MoCo v3's jitter (here the torchvision pipeline's
0.2), and solarisation decided once per batch (here per image). See docs/schedules.md.

Batches are ``{"views": [FloatTensor(B, 3, S, S), ...], "label": LongTensor(B),
"index": LongTensor(B)}`` on the GPU (on the CPU for ``device="cpu"`` pipelines, which tests
and the benchmark use when no GPU is present).
"""
from __future__ import annotations

import logging
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.utils import comm

from ..config import ConfigError
from .recipes import ViewSpec, recipe_views
from .datasets.base import BadImageError, EncodedImageDataset
from .samplers import IterationIndices

logger = logging.getLogger(__name__)


def looks_complete(data: bytes) -> bool:
    """Cheap truncation check of encoded bytes (DALI's decoders abort the whole pipeline on a
    bad image, so the policy has to be applied before them): a JPEG must carry its end-of-image
    marker near the end (entropy-coded data never contains FF D9), a PNG its IEND chunk."""
    if data[:2] == b"\xff\xd8":
        return b"\xff\xd9" in data[-4096:]
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return b"IEND" in data[-64:]
    return len(data) > 0


class _ShardSource:
    """``external_source`` callback: batch ``iteration`` of this rank as (bytes, label, index).

    Bad images follow the data set's ``on_bad_image`` policy: ``"skip"`` substitutes the next
    complete image (and logs the name), ``"error"`` raises ``BadImageError`` naming it.
    """

    def __init__(self, dataset: EncodedImageDataset, indices: IterationIndices, start_iter: int):
        # start_iter: the iteration of the pipeline's first batch (its info.iteration 0).
        self.dataset, self.indices, self.start_iter = dataset, indices, start_iter
        self.bad_images: List[str] = []

    def _read(self, i: int) -> Tuple[bytes, int]:
        n = len(self.dataset)
        for step in range(n):
            try:
                data, label, name = self.dataset.read_encoded((i + step) % n)
                if not looks_complete(data):
                    raise BadImageError(f"truncated or empty image {name}", name)
                return data, label
            except BadImageError as e:  # unreadable (e.g. a broken link) or truncated
                if self.dataset.on_bad_image == "error":
                    raise
                self.bad_images.append(e.name or str(e))
                logger.warning("DALI loader: skipping a bad image (%d skipped so far): %s",
                               len(self.bad_images), e)
        raise BadImageError(f"no complete image in {self.dataset!r}")

    def __call__(self, info) -> Tuple[List[np.ndarray], List[np.ndarray], List[np.ndarray]]:
        idx = self.indices.batch(self.start_iter + info.iteration).tolist()
        encoded, labels = [], []
        for i in idx:
            data, label = self._read(i)
            encoded.append(np.frombuffer(data, dtype=np.uint8))
            labels.append(np.array([label], dtype=np.int64))
        return encoded, labels, [np.array([i], dtype=np.int64) for i in idx]


def _augment_view(images, spec: ViewSpec, mean: Sequence[float], std: Sequence[float]):
    """DALI graph of one view (called inside a pipeline definition)."""
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types

    images = fn.random_resized_crop(images, size=[spec.crop_size, spec.crop_size],
                                    random_area=list(spec.scale),
                                    random_aspect_ratio=list(spec.ratio),
                                    interp_type=types.INTERP_LINEAR, antialias=True)
    if spec.jitter_p > 0 or spec.gray_p > 0:
        b, c, s, h = spec.jitter
        apply = fn.random.coin_flip(probability=spec.jitter_p)
        keep = 1 - apply

        def factor(lo: float, hi: float):
            return fn.random.uniform(range=[lo, hi]) * apply + keep

        gray = fn.random.coin_flip(probability=spec.gray_p)
        images = fn.color_twist(
            images, brightness=factor(max(0.0, 1 - b), 1 + b),
            contrast=factor(max(0.0, 1 - c), 1 + c),
            saturation=factor(max(0.0, 1 - s), 1 + s) * (1 - gray),
            hue=fn.random.uniform(range=[-h * 360.0, h * 360.0]) * apply)
    if spec.blur_p >= 1.0:
        images = fn.gaussian_blur(images, sigma=fn.random.uniform(range=list(spec.blur_sigma)))
    elif spec.blur_p > 0:
        if fn.random.coin_flip(probability=spec.blur_p, dtype=types.BOOL):
            images = fn.gaussian_blur(images, sigma=fn.random.uniform(range=list(spec.blur_sigma)))
    if spec.solarize_p > 0:
        if fn.random.coin_flip(probability=spec.solarize_p, dtype=types.BOOL):
            images = fn.lookup_table(images, keys=list(range(256)),
                                     values=[v if v < 128 else 255 - v for v in range(256)],
                                     dtype=types.UINT8)
    return fn.crop_mirror_normalize(images, mirror=fn.random.coin_flip(probability=spec.flip_p),
                                    mean=[255.0 * m for m in mean], std=[255.0 * s for s in std],
                                    dtype=types.FLOAT, output_layout="CHW")


def build_dali_pipeline(source: _ShardSource, views: Sequence[ViewSpec], batch_size: int,
                        mean: Sequence[float],
                        std: Sequence[float], device: str = "gpu", num_threads: int = 2,
                        seed: int = 0, device_id: Optional[int] = None):
    """A DALI pipeline producing ``view0..view{k-1}, label, index`` for ``source``'s batches."""
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types
    from nvidia.dali import pipeline_def

    @pipeline_def(enable_conditionals=True)
    def pipe():
        encoded, label, index = fn.external_source(source=source, num_outputs=3, batch=True,
                                                   batch_info=True,
                                                   dtype=[types.UINT8, types.INT64, types.INT64])
        # EXIF orientation ignored, as the PIL path (datasets/base.py) and torchvision's image
        # folders read images: a photo's pixels are the same whichever loader trains on them.
        images = fn.decoders.image(encoded, device="mixed" if device == "gpu" else "cpu",
                                   output_type=types.RGB, adjust_orientation=False)
        outs = [_augment_view(images, v, mean, std) for v in views]
        return (*outs, label, index)

    if device == "gpu" and device_id is None:
        device_id = torch.cuda.current_device()
    return pipe(batch_size=batch_size, num_threads=max(1, num_threads),
                device_id=device_id if device == "gpu" else None, seed=seed,
                prefetch_queue_depth=2, exec_async=True, exec_pipelined=True)


class DaliTrainLoader:
    """Infinite iterator of training batch dicts from a DALI pipeline (like the torch backend's
    loaders: ``iters_per_epoch`` and ``start_iter`` attributes, one batch per iteration, each
    ``iter()`` starting at ``start_iter`` as it is when iteration begins).

    The pipeline is one stream that prefetches ahead, so a new ``iter()`` must start where the
    previous one stopped: the MoCo queue prefill reads iterations ``-n .. -1``, then training
    continues the stream at 0. Any other start is refused, rather than silently giving the
    stream's next batch for another iteration. Augmentation comes from DALI's own generators
    (seeded once per pipeline), so unlike the sample order it does not follow a resume."""

    def __init__(self, dataset: EncodedImageDataset, views: Sequence[ViewSpec],
                 total_batch: int, mean: Sequence[float],
                 std: Sequence[float], device: str = "gpu", num_threads: int = 2, seed: int = 0,
                 start_iter: int = 0, rank: Optional[int] = None,
                 world_size: Optional[int] = None):
        rank = comm.get_rank() if rank is None else rank
        world_size = comm.get_world_size() if world_size is None else world_size
        self.indices = IterationIndices(len(dataset), total_batch, seed, rank, world_size)
        self.iters_per_epoch = self.indices.iters_per_epoch
        self.num_views = len(views)
        # Set by SlimTrainer.resume_or_load (and the queue prefill) before iteration begins.
        self.start_iter = start_iter
        self.source = _ShardSource(dataset, self.indices, start_iter)
        self.pipeline = build_dali_pipeline(
            self.source, views, self.indices.local_batch, mean, std, device=device,
            num_threads=num_threads, seed=seed * 1000 + rank)
        self._names = [f"view{i}" for i in range(self.num_views)] + ["label", "index"]
        self._iterator = None
        self._next_iter = start_iter  # the iteration of the stream's next batch

    def __iter__(self) -> Iterator[Dict[str, object]]:
        from nvidia.dali.plugin.pytorch import DALIGenericIterator

        if self._iterator is None:
            # The pipeline asks its source for iteration start_iter + i from here on.
            self.source.start_iter = self._next_iter = self.start_iter
            self.pipeline.build()
            self._iterator = DALIGenericIterator(self.pipeline, self._names)
        elif self.start_iter != self._next_iter:
            raise ValueError(
                f"DALI loader: cannot start at iteration {self.start_iter}: its pipeline is "
                f"one stream, already prefetching from iteration {self._next_iter}")
        for out in self._iterator:
            d = out[0]
            self._next_iter += 1
            views = [d[f"view{i}"] for i in range(self.num_views)]
            # external_source outputs stay on the host; a probe's or supervised run's loss
            # compares labels with logits on the views' device.
            device = views[0].device
            yield {"views": views,
                   "label": d["label"].view(-1).long().to(device, non_blocking=True),
                   "index": d["index"].view(-1).long().to(device, non_blocking=True)}


def build_dali_train_loader(cfg, start_iter: int = 0, device: Optional[str] = None,
                            rank: Optional[int] = None, world_size: Optional[int] = None
                            ) -> DaliTrainLoader:
    """The DALI training loader of ``cfg.DATASETS.TRAIN`` with the ``INPUT.AUGMENTATION`` recipe.

    Runs on the GPU unless ``MODEL.DEVICE`` is ``cpu`` or CUDA is missing (``device`` forces
    "gpu" or "cpu"). ``DATALOADER.NUM_WORKERS`` is DALI's CPU thread count. Each batch is the
    share of ``rank`` of ``world_size`` processes (default: this process's place in the job).
    """
    try:
        import nvidia.dali  # noqa: F401
    except ImportError as e:
        raise ConfigError("DATALOADER.BACKEND: 'dali' needs NVIDIA DALI: pip install -e .[dali] "
                          "(nvidia-dali-cuda110)") from e
    from .build import check_batch_size, verify_dataset

    if cfg.MODEL.BACKBONE.IN_CHANNELS != 3:
        raise ConfigError("DATALOADER.BACKEND: 'dali' decodes colour images only "
                          "(MODEL.BACKBONE.IN_CHANNELS 3); grey images need the torch backend")

    views = recipe_views(cfg)  # the same recipe table as the batched torch path
    dataset = verify_dataset(cfg, cfg.DATASETS.TRAIN)
    if not isinstance(dataset, EncodedImageDataset):
        raise ConfigError(f"DATALOADER.BACKEND: 'dali' needs an on-disk image data set (folder, "
                          f"LMDB, RecordIO); DATASETS.TRAIN={cfg.DATASETS.TRAIN!r} is a "
                          f"{type(dataset).__name__}")
    check_batch_size(cfg, cfg.DATASETS.TRAIN, len(dataset), world_size)
    if device is None:
        device = "gpu" if torch.cuda.is_available() and cfg.MODEL.DEVICE != "cpu" else "cpu"
    return DaliTrainLoader(
        dataset, views, cfg.SOLVER.IMS_PER_BATCH, cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD,
        device=device, num_threads=cfg.DATALOADER.NUM_WORKERS, seed=max(cfg.SEED, 0),
        start_iter=start_iter, rank=rank, world_size=world_size)
