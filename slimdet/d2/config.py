"""Detectron2 config keys added for slimmable detection.

Detection configs are Detectron2 configs (``detectron2.config.get_cfg()``), not slimdet's
pre-training configs, so that stock Detectron2 tools and model-zoo ``_BASE_`` files keep working;
this module only adds the keys the slimmable parts need.
"""
from __future__ import annotations

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

DEFAULT_WIDTHS = [1.0, 0.75, 0.5, 0.25]


def add_slim_det_config(cfg: CN) -> CN:
    """Add ``MODEL.SLIM.*`` (widths, loss weighting, per-width head norms) and ``TEST.SLIM_WIDTHS``.

    - ``MODEL.SLIM.WIDTHS``: width multipliers, full width first (SPEC §1).
    - ``MODEL.SLIM.LOSS_WEIGHTING``: how each width's detection loss is weighted inside one step;
      ``uniform`` (every width 1, the reference's slimmable detector) or any scheme of
      :func:`slimdet.modeling.slim.loss_weights`.
    - ``MODEL.SLIM.SWITCHABLE_HEAD_NORMS``: give the shared FPN and heads one BatchNorm per width.
      Their convolutions stay shared (SPEC §6), but zero-padded narrow features have other
      statistics than full-width ones, so shared running statistics would be right for no width.
    - ``TEST.SLIM_WIDTHS``: widths to evaluate (empty = all of ``MODEL.SLIM.WIDTHS``).
    """
    cfg.MODEL.SLIM = CN()
    cfg.MODEL.SLIM.WIDTHS = list(DEFAULT_WIDTHS)
    cfg.MODEL.SLIM.LOSS_WEIGHTING = "uniform"
    cfg.MODEL.SLIM.SWITCHABLE_HEAD_NORMS = True
    cfg.TEST.SLIM_WIDTHS = []
    return cfg


def get_slim_det_cfg() -> CN:
    """Detectron2's defaults plus the slimmable-detection keys."""
    return add_slim_det_config(get_cfg())


def validate_slim_det_cfg(cfg: CN) -> None:
    """Fail early, naming the key, on settings the slimmable detector cannot honour."""
    widths = [float(w) for w in cfg.MODEL.SLIM.WIDTHS]
    if not widths or widths[0] != 1.0 or sorted(widths, reverse=True) != widths:
        raise ValueError(f"MODEL.SLIM.WIDTHS must start with 1.0 and decrease, got {widths}")
    unknown = [w for w in cfg.TEST.SLIM_WIDTHS if float(w) not in widths]
    if unknown:
        raise ValueError(f"TEST.SLIM_WIDTHS {list(cfg.TEST.SLIM_WIDTHS)} has widths {unknown} "
                         f"that are not in MODEL.SLIM.WIDTHS {widths}")
    if cfg.TEST.PRECISE_BN.ENABLED:
        raise ValueError("TEST.PRECISE_BN.ENABLED: Detectron2's PreciseBN hook recomputes the "
                         "statistics of one width only; set it to False (each width keeps its "
                         "own BN statistics from training)")


def eval_widths(cfg: CN) -> list:
    """The widths to evaluate: ``TEST.SLIM_WIDTHS`` or every trained width."""
    return [float(w) for w in (cfg.TEST.SLIM_WIDTHS or cfg.MODEL.SLIM.WIDTHS)]
