"""Small data sets held as one uint8 tensor, augmented as whole batches on the device."""
from __future__ import annotations

import logging
from typing import Optional, Sequence

import torch
from torch.utils.data import Dataset

logger = logging.getLogger(__name__)


class InMemoryImageDataset(Dataset):
    """``images``: uint8 [N, C, H, W]; ``labels``: int64 [N]."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor,
                 classes: Optional[Sequence[str]] = None):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
        if len(images) == 0:
            raise ValueError("empty data set")
        self.images, self.labels = images, labels
        self.classes = list(classes) if classes is not None else None

    def __len__(self) -> int:
        return len(self.images)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def num_classes(self) -> int:
        return len(self.classes) if self.classes is not None else int(self.labels.max()) + 1

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i])


def stratified_subset(labels: torch.Tensor, n: int) -> torch.Tensor:
    """Sorted indices of exactly ``n`` images (all of them when there are fewer, with a
    warning), spread over the classes as evenly as their sizes allow: the first
    ``n // num_classes`` of every class and one more of each of the first ``n % num_classes``
    classes in label order; what a class too small for its share lacks is spread the same way
    over the others. Deterministic; on balanced data with ``n`` a multiple of the class count it
    is the first ``n // num_classes`` images of every class."""
    members = [torch.nonzero(labels == c).flatten() for c in labels.unique()]
    if n > len(labels):
        logger.warning("a subset of %d images was asked of a data set of %d "
                       "(DATASETS.TRAIN_SUBSET / TEST_SUBSET): all %d are used", n, len(labels),
                       len(labels))
    take, left = [0] * len(members), min(n, len(labels))
    # Each round shares what is left over the classes with images left; a round either places
    # all of it or fills some class, so it ends after at most one round per class.
    while left:
        room = [i for i, m in enumerate(members) if take[i] < len(m)]
        share, extra = divmod(left, len(room))
        for j, i in enumerate(room):
            more = min(share + (j < extra), len(members[i]) - take[i])
            take[i] += more
            left -= more
    return torch.cat([m[:k] for m, k in zip(members, take)]).sort().values
