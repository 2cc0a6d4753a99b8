"""Recompute BN statistics on N training batches (fvcore's precise BN), for
``tools/recalibrate_bn.py``.

The running statistics a width ends training with are an EMA over weights that kept changing
(and, after sandwich-rule training, over the widths drawn each step); each width has its own
statistics, so each is re-estimated with the network running at that width. The estimation is
``slimdet.layers.recalibrate_bn`` (it also clears a backbone's stale-statistics flag once every
trained width is calibrated); this module adds the images it reads.
"""
from __future__ import annotations

from typing import Iterable

import torch

from ..layers import recalibrate_bn

__all__ = ["recalibrate_bn", "train_images"]


def train_images(data_loader) -> Iterable[torch.Tensor]:
    """The first augmented view of each training batch (what BN saw during training)."""
    for batch in data_loader:
        yield batch["views"][0]
