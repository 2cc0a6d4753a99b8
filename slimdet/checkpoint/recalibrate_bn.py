"""Recompute every width's BN statistics on N training batches (fvcore's precise BN).

The running statistics a width ends training with are an EMA over weights that kept changing;
each width has its own BNs, so each is recalibrated with the network running at that width.
fvcore's ``update_bn_stats`` averages true per-batch statistics over the BN layers that are in
training mode, and needs every such layer to run in each forward pass — so per width we switch
only that width's BNs (``.bn[i]`` of every switchable BN) to training mode.
"""
from __future__ import annotations

import itertools
import logging
from typing import Iterable, Optional, Sequence

import torch
from fvcore.nn.precise_bn import update_bn_stats
from torch import nn

from ..layers import SwitchableBatchNorm1d, SwitchableBatchNorm2d, use_width

logger = logging.getLogger("slimdet")


@torch.no_grad()
def recalibrate_bn(backbone: nn.Module, images: Iterable[torch.Tensor], num_batches: int,
                   widths: Optional[Sequence[float]] = None) -> None:
    """Replace the BN statistics of each width in ``widths`` (default: all) by their averages
    over the first ``num_batches`` batches of ``images`` (a re-iterable of image tensors)."""
    was_training = backbone.training
    switchable = [m for m in backbone.modules() if isinstance(m, (SwitchableBatchNorm1d, SwitchableBatchNorm2d))]
    widths = list(widths or backbone.widths)
    try:
        for w in widths:
            backbone.eval()
            index = backbone.widths.index(float(w))
            for m in switchable:
                m.bn[index].train()
            with use_width(backbone, w):
                update_bn_stats(backbone, itertools.islice(iter(images), num_batches), num_batches)
            logger.info("Recalibrated the BN statistics of width %g on %d batches", w, num_batches)
    finally:
        backbone.train(was_training)


def train_images(data_loader) -> Iterable[torch.Tensor]:
    """The first augmented view of each training batch (what BN saw during training)."""
    for batch in data_loader:
        yield batch["views"][0]
