"""Small data sets held as one uint8 tensor, augmented as whole batches on the device."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch.utils.data import Dataset


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
    """Indices of the first ``n // num_classes`` images of every class (sorted, deterministic)."""
    classes = labels.unique()
    per_class = max(1, n // len(classes))
    keep = [torch.nonzero(labels == c).flatten()[:per_class] for c in classes]
    return torch.cat(keep).sort().values
