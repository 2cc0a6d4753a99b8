"""``build_train_loader(cfg)`` / ``build_test_loader(cfg, name)``: one batch format for every
data source.

Training batches are dicts ``{"views": [FloatTensor(B, C, H, W), ...], "label": LongTensor(B),
"index": LongTensor(B)}`` on the training device; test batches are ``{"image", "label"}``.
In-memory data sets are augmented as whole batches on the device (``batch_transforms``);
per-image data sets (folders, LMDB, RecordIO) go through a PyTorch DataLoader with the per-image
recipes of ``transforms.py``; ``DATALOADER.BACKEND: dali`` uses the DALI pipelines.
"""
from __future__ import annotations

import logging
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import torch
from detectron2.utils import comm

from ..config import ConfigError
from .batch_transforms import build_batch_augment, eval_batch_transform
from .catalog import dataset_key, get_dataset, subset_size
from .datasets.base import EncodedImageDataset
from .in_memory import InMemoryImageDataset
from .samplers import IterationIndices, IterationSampler
from . import datasets, fashion_mnist  # noqa: F401  (register imagenet_* and fashion_mnist_*)

logger = logging.getLogger(__name__)


def _seed_of(cfg) -> int:
    return max(cfg.SEED, 0)


def augmentation_generator(seed: int, iteration: int, rank: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + iteration) * 64 + rank)


def _place(rank: Optional[int], world_size: Optional[int]) -> Tuple[int, int]:
    """``(rank, world_size)`` of a loader: this process's place in the job unless given."""
    return (comm.get_rank() if rank is None else rank,
            comm.get_world_size() if world_size is None else world_size)


class InMemoryTrainLoader:
    """Iterates training batches of an in-memory data set from ``start_iter`` on, forever:
    the share of ``rank`` of ``world_size`` processes (default: this process's place)."""

    def __init__(self, dataset: InMemoryImageDataset, augment, total_batch: int, seed: int,
                 device: torch.device, start_iter: int = 0, rank: Optional[int] = None,
                 world_size: Optional[int] = None):
        self.dataset, self.augment, self.seed, self.device = dataset, augment, seed, device
        self.indices = IterationIndices(len(dataset), total_batch, seed,
                                        *_place(rank, world_size))
        self.iters_per_epoch = self.indices.iters_per_epoch
        self.start_iter = start_iter

    def __iter__(self) -> Iterator[Dict[str, torch.Tensor]]:
        it = self.start_iter  # read when iteration begins, after a resume set it
        while True:
            idx = self.indices.batch(it)
            images = self.dataset.images[idx].to(self.device, non_blocking=True)
            g = augmentation_generator(self.seed, it, self.indices.rank)
            views = self.augment(images, g)
            yield {"views": views, "label": self.dataset.labels[idx].to(self.device),
                   "index": idx}
            it += 1


class _SeededViews(torch.utils.data.Dataset):
    """Per-image data set item -> augmented views, seeded by (seed, iteration, index)."""

    def __init__(self, dataset, transform, seed: int):
        self.dataset, self.transform, self.seed = dataset, transform, seed

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        index, iteration = key
        image, label = self.dataset[index]
        # Seeded per (seed, iteration, index) without touching the global generator.
        seed = ((self.seed * 1_000_003 + iteration) * 10_000_019 + index) % 2 ** 63
        return {"views": self.transform(image, seed=seed), "label": label, "index": index}


class PerImageTrainLoader:
    """A PyTorch DataLoader over a per-image data set, moving batches to the device (the share
    of ``rank`` of ``world_size`` processes, default: this process's place)."""

    def __init__(self, cfg, dataset, device: torch.device, start_iter: int = 0,
                 rank: Optional[int] = None, world_size: Optional[int] = None):
        from .transforms import build_view_transform

        self.cfg, self.device, self.start_iter = cfg, device, start_iter
        self.indices = IterationIndices(len(dataset), cfg.SOLVER.IMS_PER_BATCH, _seed_of(cfg),
                                        *_place(rank, world_size))
        self.iters_per_epoch = self.indices.iters_per_epoch
        self.dataset = _SeededViews(dataset, build_view_transform(cfg, is_train=True), _seed_of(cfg))

    def __iter__(self):
        sampler = IterationSampler(self.indices, self.start_iter)
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=self.indices.local_batch, sampler=sampler,
            num_workers=self.cfg.DATALOADER.NUM_WORKERS, pin_memory=self.device.type == "cuda",
            drop_last=True, persistent_workers=False)
        for batch in loader:
            batch["views"] = [v.to(self.device, non_blocking=True) for v in batch["views"]]
            batch["label"] = batch["label"].to(self.device)
            yield batch


def verify_dataset(cfg, name: str, num_classes: int = 0):
    """``get_dataset(name, cfg)`` after the checks a run needs before it starts, each a
    one-line ``ConfigError`` naming the key: the images have ``MODEL.BACKBONE.IN_CHANNELS``
    channels (an on-disk set read as grey must not hold colour images), and at most
    ``num_classes`` classes when that is given (a classifier's ``MODEL.NUM_CLASSES``)."""
    dataset = get_dataset(name, cfg)
    key, channels = dataset_key(name, cfg), cfg.MODEL.BACKBONE.IN_CHANNELS
    if isinstance(dataset, InMemoryImageDataset) and dataset.channels != channels:
        raise ConfigError(f"MODEL.BACKBONE.IN_CHANNELS is {channels} but the images of {key} "
                          f"{name!r} have {dataset.channels} channels")
    if isinstance(dataset, EncodedImageDataset) and channels == 1:
        colour = dataset.colour_sample()
        dataset.close()  # loader workers open their own handles
        if colour is not None:
            raise ConfigError(
                f"MODEL.BACKBONE.IN_CHANNELS is 1 but {key} {name!r} holds colour images (e.g. "
                f"{colour}); set MODEL.BACKBONE.IN_CHANNELS 3 and three-value INPUT.PIXEL_MEAN "
                "/ INPUT.PIXEL_STD")
    found = dataset.num_classes if isinstance(dataset, (InMemoryImageDataset,
                                                        EncodedImageDataset)) else None
    if num_classes and found is not None and found > num_classes:
        raise ConfigError(f"MODEL.NUM_CLASSES is {num_classes} but {key} {name!r} has {found} "
                          "classes")
    return dataset


def _few(verb: str, names: list) -> str:
    """``it lacks ['a', 'b', 'c'] and 2 more``: at most three names in a message."""
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return f"{verb} {names[:3]}{more}"


def check_same_classes(cfg, splits: Dict[str, object]) -> None:
    """The on-disk splits a run reads (``name -> data set``) name the same classes. Their labels
    are indices of the class names in sorted order, so a test folder that lacks one class of the
    training folder (or has another) would shift every label after it and score wrong numbers;
    that is refused in one line naming both keys and the first class that differs. In-memory
    sets (their labels are fixed by the set) and formats without class names are not compared."""
    named = [(name, ds.classes) for name, ds in splits.items()
             if isinstance(ds, EncodedImageDataset) and ds.classes is not None]
    if len(named) < 2:
        return
    (ref_name, ref), others = named[0], named[1:]
    for name, classes in others:
        check_classes(f"{dataset_key(ref_name, cfg)} {ref_name!r}", ref,
                      f"{dataset_key(name, cfg)} {name!r}", classes)


def check_classes(reference: str, ref: Sequence[str], other: str, classes: Sequence[str]) -> None:
    """``classes`` (of ``other``, e.g. "DATASETS.TEST 'folder:/data/val'") are ``ref`` (of
    ``reference``: the training set, or the class names a classifier's checkpoint holds), in
    the same order; else a one-line :class:`ConfigError` naming both and the first class that
    differs."""
    if list(classes) == list(ref):
        return
    theirs, ours = set(classes), set(ref)
    missing = [c for c in ref if c not in theirs]
    extra = [c for c in classes if c not in ours]
    first = next((i for i, (a, b) in enumerate(zip(ref, classes)) if a != b),
                 min(len(ref), len(classes)))
    what = "; ".join(_few(verb, names) for verb, names in (("it lacks", missing),
                                                            ("it has", extra)) if names)
    what = what or "their order differs"
    raise ConfigError(
        f"{other} has {len(classes)} classes, {reference} {len(ref)}, and they differ from "
        f"label {first} on ({what}): labels are indices of the class folders in sorted order, "
        "so both need the same class folders (an empty folder keeps a class's label)")


def check_batch_size(cfg, name: str, size: int, world_size: Optional[int] = None) -> None:
    """``SOLVER.IMS_PER_BATCH`` splits over the ``world_size`` processes (default: the job's)
    and fits in the training set."""
    batch = cfg.SOLVER.IMS_PER_BATCH
    world = comm.get_world_size() if world_size is None else world_size
    if batch % world:
        raise ConfigError(f"SOLVER.IMS_PER_BATCH {batch} is not divisible by the {world} "
                          "processes (--num-gpus x --num-machines)")
    if size < batch:
        subset = subset_size(name, cfg)
        note = f" (DATASETS.TRAIN_SUBSET {subset})" if subset else ""
        raise ConfigError(f"SOLVER.IMS_PER_BATCH {batch} is larger than DATASETS.TRAIN {name!r}"
                          f"{note}, which has {size} images: lower the batch or add images")


def build_train_loader(cfg, device: Optional[torch.device] = None, start_iter: int = 0,
                       rank: Optional[int] = None, world_size: Optional[int] = None):
    """The training loader of ``cfg.DATASETS.TRAIN``; has ``iters_per_epoch`` and ``start_iter``.

    Each batch is the share of process ``rank`` of ``world_size`` (default: this process's
    place in the job, read from ``comm``). ``rank=0, world_size=1`` is the job-independent
    view: whole ``SOLVER.IMS_PER_BATCH`` batches, augmented as one process would, in every
    process of any job (BN calibration reads it, so statistics do not depend on --num-gpus).
    """
    device = torch.device(device or "cpu")
    if cfg.DATALOADER.BACKEND == "dali":
        from .dali import build_dali_train_loader

        return build_dali_train_loader(cfg, start_iter=start_iter, rank=rank,
                                       world_size=world_size)
    dataset = verify_dataset(cfg, cfg.DATASETS.TRAIN)
    check_batch_size(cfg, cfg.DATASETS.TRAIN, len(dataset), world_size)
    if isinstance(dataset, InMemoryImageDataset):
        return InMemoryTrainLoader(dataset, build_batch_augment(cfg), cfg.SOLVER.IMS_PER_BATCH,
                                   _seed_of(cfg), device, start_iter, rank, world_size)
    return PerImageTrainLoader(cfg, dataset, device, start_iter, rank, world_size)


class Shard(NamedTuple):
    """Process ``rank`` of ``world_size``'s contiguous share of a test set, images
    ``[size * rank // world_size, size * (rank + 1) // world_size)``: the shares differ by at most
    one image, and in rank order they are the whole set in order, so results gathered in rank
    order line up with one process's."""

    rank: int
    world_size: int

    @classmethod
    def of_this_process(cls) -> "Shard":
        return cls(comm.get_rank(), comm.get_world_size())

    def bounds(self, size: int) -> Tuple[int, int]:
        return size * self.rank // self.world_size, size * (self.rank + 1) // self.world_size


class EvalBatches:
    """The batches of :func:`build_test_loader`, images ``[start, end)`` of the
    ``dataset_size`` of the set; each ``iter()`` reads them again from the first. They hold
    ``max_images`` images, fewer when bad images are left out, never more, so a caller can
    preallocate its outputs."""

    def __init__(self, batches: Callable[[], Iterator[Dict[str, torch.Tensor]]], start: int,
                 end: int, dataset_size: int):
        self._batches, self.start, self.end, self.dataset_size = batches, start, end, dataset_size

    @property
    def max_images(self) -> int:
        return self.end - self.start

    def __iter__(self) -> Iterator[Dict[str, torch.Tensor]]:
        return self._batches()


def build_test_loader(cfg, dataset_name: str, device: Optional[torch.device] = None,
                      batch_size: int = 0, shard: Optional[Shard] = None) -> EvalBatches:
    """Deterministic batches ``{"image", "label"}`` of the data set, in order: the whole set by
    default (every process that calls it reads all of it), or only ``shard``'s images
    (``Shard.of_this_process()``: a distributed evaluation, each process its own share). Under
    ``DATALOADER.ON_BAD_IMAGE skip`` a bad image is left out (a warning names it, another the
    count of the set or share at the end), so every good image is evaluated exactly once, by one
    process; batches may be smaller, and shares differ in size by the bad images they held."""
    device = torch.device(device or "cpu")
    batch_size = batch_size or cfg.TEST.IMS_PER_BATCH
    dataset = get_dataset(dataset_name, cfg)
    start, end = shard.bounds(len(dataset)) if shard is not None else (0, len(dataset))
    if isinstance(dataset, InMemoryImageDataset):
        transform = eval_batch_transform(cfg)

        def batches() -> Iterator[Dict[str, torch.Tensor]]:
            for s in range(start, end, batch_size):
                e = min(s + batch_size, end)
                yield {"image": transform(dataset.images[s:e].to(device)),
                       "label": dataset.labels[s:e].to(device)}
        return EvalBatches(batches, start, end, len(dataset))
    from .transforms import build_view_transform

    transform = build_view_transform(cfg, is_train=False)
    items = _EvalItems(dataset, transform)
    if (start, end) != (0, len(dataset)):
        items = torch.utils.data.Subset(items, range(start, end))
    loader = torch.utils.data.DataLoader(items, batch_size=batch_size, shuffle=False,
                                         num_workers=cfg.DATALOADER.NUM_WORKERS,
                                         collate_fn=_collate_good)
    if shard is None or shard.world_size == 1:
        what = f"the {len(dataset)} images of {dataset_name}"
    else:
        what = (f"the {end - start} images [{start}, {end}) of the {len(dataset)} of "
                f"{dataset_name} that process {shard.rank} of {shard.world_size} evaluates")

    def moved() -> Iterator[Dict[str, torch.Tensor]]:
        seen = 0
        for b in loader:
            if b is None:  # every image of this batch was bad
                continue
            seen += len(b["label"])
            yield {"image": b["image"].to(device), "label": b["label"].to(device)}
        if seen < end - start:
            logger.warning("evaluated %d of %s: %d could not be read or decoded (each named in "
                           "a warning above) and were left out", seen, what, end - start - seen)
    return EvalBatches(moved, start, end, len(dataset))


class _EvalItems(torch.utils.data.Dataset):
    """Evaluation items ``{"image", "label"}`` of a per-image data set, ``None`` for a bad image
    under ``DATALOADER.ON_BAD_IMAGE skip``: evaluation leaves it out rather than counting the
    next image (often of another class) twice, as training's substitution would."""

    def __init__(self, dataset, transform):
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Optional[Dict[str, object]]:
        item = (self.dataset.load(i) if isinstance(self.dataset, EncodedImageDataset)
                else self.dataset[i])
        if item is None:
            return None
        image, label = item
        return {"image": self.transform(image)[0], "label": label}


def _collate_good(items: List[Optional[Dict[str, object]]]) -> Optional[Dict[str, torch.Tensor]]:
    """The default collate of the good items of a batch; ``None`` when there is none."""
    good = [x for x in items if x is not None]
    return torch.utils.data.default_collate(good) if good else None
