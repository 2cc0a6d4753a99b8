"""Evaluate widths that have no BN statistics: estimate them first, on a copy.

A width the network was not trained at (``TEST.WIDTHS``), and every width after sandwich-rule
training, has no BN statistics of its own. Evaluators call :func:`with_calibrated_widths`,
which returns the model itself when all requested widths are ready, else a copy with the
missing widths added and calibrated (``slimdet.layers.any_width``): evaluation never changes
the model being trained. The calibration batches are the first ``TEST.CALIBRATE_BATCHES``
batches of a fresh single-process view of the training set (whole ``SOLVER.IMS_PER_BATCH``
batches, training augmentation, first view): the same batches at every evaluation, in every
process and whatever the number of processes, so a width's statistics are a function of the
weights and the config. (Not the job's own sharded loader: rank 0 of a two-process job would
calibrate on its half batches with its own augmentation, and a one-process ``--eval-only`` of
the same checkpoint would give other numbers.)
"""
from __future__ import annotations

import copy
import logging
from typing import Iterable, Iterator, Sequence

import torch
from torch import nn

from ..data import build_train_loader
from ..layers import UncalibratedWidthError, add_widths, recalibrate_bn, uncalibrated_widths
from ..modeling import backbone_of

logger = logging.getLogger("slimdet")


class CalibrationImages:
    """Re-iterable first views of the training batches from iteration 0 as one process would
    see them (each ``iter()`` starts again at the same first batch), in any process of any job."""

    def __init__(self, cfg, device: torch.device):
        # The torch backend whatever DATALOADER.BACKEND: each iter() (one per calibrated width)
        # starts again at the first batch, where a DALI pipeline is one stream; and its
        # augmentation is a function of (SEED, iteration, index) on any machine.
        cfg = cfg.clone()
        cfg.defrost()
        cfg.DATALOADER.BACKEND = "torch"
        # Rank 0 of 1, not this process's place in the job: see the module docstring.
        self.loader = build_train_loader(cfg, device, rank=0, world_size=1)

    def __iter__(self) -> Iterator[torch.Tensor]:
        for batch in self.loader:
            yield batch["views"][0]


def calibrate(cfg, model: nn.Module, widths: Sequence[float], device: torch.device,
              images: Iterable[torch.Tensor] = None) -> None:
    """Add the untrained ``widths`` to ``model``'s backbone (``model`` itself if it has none)
    and estimate the BN statistics of those that lack them, in place."""
    backbone = backbone_of(model)
    add_widths(backbone, widths)
    pending = uncalibrated_widths(backbone, widths)
    if not pending:
        return
    n = cfg.TEST.CALIBRATE_BATCHES
    if n <= 0:
        raise UncalibratedWidthError(
            f"widths {[f'{w:g}' for w in pending]} have no estimated BN statistics (not trained, "
            "or trained by the sandwich rule): set TEST.CALIBRATE_BATCHES (e.g. 50) to estimate "
            "them on training batches")
    recalibrate_bn(backbone, images if images is not None else CalibrationImages(cfg, device), n,
                   widths=pending)


class _ProcessBatchNorm(nn.SyncBatchNorm):
    """A SyncBatchNorm that normalises over this process's batch alone (plain BN's forward),
    for the copy an evaluation calibrates: evaluations run on the main process only, where a
    SyncBatchNorm in training mode would wait for the other processes to join its all-reduce
    (they wait for the evaluation instead: a hang until the job's timeout)."""

    forward = nn.modules.batchnorm._BatchNorm.forward


def with_calibrated_widths(cfg, model: nn.Module, widths: Sequence[float],
                           device: torch.device) -> nn.Module:
    """``model`` when every width in ``widths`` has BN statistics, else a calibrated copy (its
    SyncBatchNorms, MODEL.SYNC_BN, normalising over this process's batches)."""
    backbone = backbone_of(model)
    if not uncalibrated_widths(backbone, widths):
        return model
    twin = copy.deepcopy(model)
    for m in twin.modules():
        if type(m) is nn.SyncBatchNorm:
            m.__class__ = _ProcessBatchNorm  # the same module, another forward
    calibrate(cfg, twin, widths, device)
    return twin
