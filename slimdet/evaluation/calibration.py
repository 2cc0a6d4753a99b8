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

In a job of several processes every process evaluates its share of the images, all with the
main process's BN statistics: :func:`evaluation_model` (collective) calibrates on the main
process and broadcasts the copy's statistics to the others.
"""
from __future__ import annotations

import copy
import logging
from typing import Iterable, Iterator, Sequence

import torch
from detectron2.utils import comm
from torch import nn

from ..data import build_train_loader
from ..layers import (UncalibratedWidthError, add_widths, mark_calibrated, recalibrate_bn,
                      uncalibrated_widths)
from ..modeling import backbone_of
from ..utils.ddp import broadcast_from_main

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
    check_calibration_batches(cfg, pending)
    recalibrate_bn(backbone, images if images is not None else CalibrationImages(cfg, device),
                   cfg.TEST.CALIBRATE_BATCHES, widths=pending)


def check_calibration_batches(cfg, pending: Sequence[float]) -> None:
    """``TEST.CALIBRATE_BATCHES`` allows calibrating the ``pending`` widths (none: nothing to
    calibrate), else one :class:`UncalibratedWidthError` naming them."""
    if pending and cfg.TEST.CALIBRATE_BATCHES <= 0:
        raise UncalibratedWidthError(
            f"widths {[f'{w:g}' for w in pending]} have no estimated BN statistics (not trained, "
            "or trained by the sandwich rule): set TEST.CALIBRATE_BATCHES (e.g. 50) to estimate "
            "them on training batches")


class _ProcessBatchNorm(nn.SyncBatchNorm):
    """A SyncBatchNorm that normalises over this process's batch alone (plain BN's forward),
    for the copy an evaluation calibrates: the main process calibrates alone, where a
    SyncBatchNorm in training mode would wait for the other processes to join its all-reduce
    (they wait for the calibrated statistics instead: a hang until the job's timeout)."""

    forward = nn.modules.batchnorm._BatchNorm.forward


def _process_local_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose SyncBatchNorms normalise over this process's batches."""
    twin = copy.deepcopy(model)
    for m in twin.modules():
        if type(m) is nn.SyncBatchNorm:
            m.__class__ = _ProcessBatchNorm  # the same module, another forward
    return twin


def with_calibrated_widths(cfg, model: nn.Module, widths: Sequence[float],
                           device: torch.device) -> nn.Module:
    """``model`` when every width in ``widths`` has BN statistics, else a calibrated copy (its
    SyncBatchNorms, MODEL.SYNC_BN, normalising over this process's batches). This process
    alone; :func:`evaluation_model` is the job-wide one."""
    backbone = backbone_of(model)
    if not uncalibrated_widths(backbone, widths):
        return model
    twin = _process_local_copy(model)
    calibrate(cfg, twin, widths, device)
    return twin


def evaluation_model(cfg, model: nn.Module, widths: Sequence[float],
                     device: torch.device) -> nn.Module:
    """The model this process evaluates ``widths`` of ``model`` with, every process of the job
    with the same BN statistics, the main process's. Collective: every process calls it.

    One process: :func:`with_calibrated_widths`. Several: the main process calibrates (its
    result is :func:`with_calibrated_widths`'s), each other process makes the same copy and
    receives all of its buffers. The broadcast covers the trained widths' statistics too: they
    differ between processes after training (per-process BN, DDP does not broadcast buffers),
    and a one-process ``--eval-only`` of the checkpoint (the main process's) must repeat the
    numbers. Calibrating in every process on the same fixed view would save nothing (the main
    process's calibration takes as long as it does either way; the broadcast of a few MB of
    statistics is cheap), would read and augment the calibration batches once per process on
    the machine's shared CPU cores and disk, and would give statistics identical only up to
    the kernels each process's GPU picks; the broadcast makes them identical."""
    if comm.get_world_size() == 1:
        return with_calibrated_widths(cfg, model, widths, device)
    pending = uncalibrated_widths(backbone_of(model), widths)
    if comm.is_main_process():
        net = with_calibrated_widths(cfg, model, widths, device)
    else:
        # The main process's refusals here too, before the broadcast it would never join.
        check_calibration_batches(cfg, pending)
        net = _process_local_copy(model)
        add_widths(backbone_of(net), widths)
    broadcast_from_main(list(net.buffers()))
    if not comm.is_main_process():
        mark_calibrated(backbone_of(net), pending)
    return net
