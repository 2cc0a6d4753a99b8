"""Widths nobody trained: add them to a slimmable network, estimate their BN statistics.

Convolutions and linear maps run at any width ``w`` in ``[min(widths), 1.0]`` (the leading
``int(c * w)`` channels, docs/method.md §1); what a width lacks is BN. :func:`add_widths` gives
each untrained width BN statistics of its own (its affine parameters are the leading slice of
those of the nearest trained width at or above it, or the shared ones of a shared-affine BN) and
marks it uncalibrated; :func:`recalibrate_bn` estimates the statistics of the widths asked for
on N batches with fvcore's precise BN and only then marks them calibrated. Evaluating a width
that was never calibrated raises :class:`UncalibratedWidthError` — never a number.

Added statistics are not part of the state dict: a model with added widths saves and loads like
the trained one, and a job that needs a width calibrates it again (TEST.CALIBRATE_BATCHES,
``--calibrate-batches``).

    add_widths(backbone, [0.6, 0.7])
    recalibrate_bn(backbone, images, 50, widths=[0.6, 0.7])
    with use_width(backbone, 0.6):
        features = backbone(x)
"""
from __future__ import annotations

import itertools
import logging
from typing import Iterable, List, Optional, Sequence

import torch
from fvcore.nn.precise_bn import update_bn_stats
from torch import nn

from .slimmable import SwitchableBatchNorm, UncalibratedWidthError, normalized_width
from .width import model_widths, use_width

__all__ = ["CalibrationAware", "add_widths", "available_widths", "mark_calibrated",
           "mark_uncalibrated", "normalized_width", "recalibrate_bn", "uncalibrated_widths",
           "UncalibratedWidthError"]

logger = logging.getLogger("slimdet")


class CalibrationAware:
    """Mixin of modules that keep state about their BN statistics (the backbone's saved
    ``bn_statistics_stale`` flag): training that invalidates the statistics calls
    ``mark_statistics_stale()``, :func:`recalibrate_bn` calls ``after_calibration()``."""

    def mark_statistics_stale(self) -> None:
        raise NotImplementedError

    def after_calibration(self) -> None:
        raise NotImplementedError


def _switchable_bns(model: nn.Module) -> List[SwitchableBatchNorm]:
    return [m for m in model.modules() if isinstance(m, SwitchableBatchNorm)]


def add_widths(model: nn.Module, widths: Sequence[float]) -> List[float]:
    """Materialise BN statistics for the untrained ``widths`` (each in ``[min(widths), 1.0]`` of
    the model), uncalibrated. Returns the widths that were added (trained widths and widths
    already added are left as they are)."""
    trained = model_widths(model) or [1.0]
    added = []
    for w in map(normalized_width, widths):
        if not min(trained) <= w <= max(trained):
            raise ValueError(f"width {w:g} is outside this network's widths {trained} (any "
                             f"width from {min(trained):g} to {max(trained):g} can be added)")
        if any([m.add_width(w) for m in _switchable_bns(model)]) and w not in added:
            added.append(w)
    if added:
        logger.info("Added widths %s (BN parameters from the nearest trained width at or above "
                    "each; statistics to be calibrated)", [f"{w:g}" for w in added])
    return added


def available_widths(model: nn.Module) -> List[float]:
    """Trained and added widths of ``model``, widest first."""
    widths = set(model_widths(model) or [])
    for m in _switchable_bns(model):
        widths.update(normalized_width(float(k.replace("_", "."))) for k in m.derived)
    return sorted(widths, reverse=True)


def uncalibrated_widths(model: nn.Module, widths: Optional[Sequence[float]] = None) -> List[float]:
    """Those of ``widths`` (default: every available width) whose BN statistics some BN of
    ``model`` has not estimated: evaluating them raises until :func:`recalibrate_bn` ran."""
    pending = set()
    for m in _switchable_bns(model):
        pending.update(m.uncalibrated)
        for w in widths or []:
            if m.statistics_at(normalized_width(w)) is None:
                pending.add(normalized_width(w))  # not even added
    wanted = available_widths(model) if widths is None else [normalized_width(w) for w in widths]
    return [w for w in wanted if w in pending]


def mark_uncalibrated(model: nn.Module) -> None:
    """Mark every width of every BN of ``model`` uncalibrated: after sandwich-rule or
    shared-affine training the running averages are not any one width's statistics."""
    for m in _switchable_bns(model):
        m.mark_uncalibrated()


def mark_calibrated(model: nn.Module, widths: Sequence[float]) -> None:
    """Mark ``widths`` calibrated: their statistics were just estimated (:func:`recalibrate_bn`)
    or set to values estimated elsewhere (an evaluation's copy in a process other than the main
    one receives the statistics the main process calibrated)."""
    bns = _switchable_bns(model)
    for w in map(normalized_width, widths):
        for m in bns:
            m.uncalibrated.discard(w)
    for m in model.modules():
        if isinstance(m, CalibrationAware):
            m.after_calibration()


@torch.no_grad()
def recalibrate_bn(model: nn.Module, images: Iterable[torch.Tensor], num_batches: int,
                   widths: Optional[Sequence[float]] = None) -> None:
    """Replace the BN statistics of each of ``widths`` (default: every available width) by their
    averages over the first ``num_batches`` batches of ``images`` (a re-iterable of image
    tensors), and mark those widths calibrated.

    Per width the network runs at that width in eval mode with only that width's statistics BNs
    in training mode, so fvcore's precise BN estimates exactly them (true averages of per-batch
    statistics, not an EMA). An untrained width must have been added (:func:`add_widths`).
    """
    if num_batches <= 0:
        raise ValueError(f"calibration needs at least one batch, got {num_batches}")
    was_training = model.training
    bns = _switchable_bns(model)
    widths = [normalized_width(w) for w in (widths or available_widths(model))]
    missing = [w for w in widths if any(m.statistics_at(w) is None for m in bns)]
    if missing:
        raise ValueError(f"widths {missing} have no BN statistics to calibrate: add_widths first")
    try:
        for w in widths:
            model.eval()
            for m in bns:
                m.statistics_at(w).train()
            with use_width(model, w):
                update_bn_stats(model, itertools.islice(iter(images), num_batches), num_batches)
            mark_calibrated(model, [w])
            logger.info("Calibrated the BN statistics of width %g on %d batches", w, num_batches)
    finally:
        model.train(was_training)
