"""Detectron2 config keys added for slimmable detection, and loading a detection config.

Detection configs are Detectron2 configs (``detectron2.config.get_cfg()``), not slimdet's
pre-training configs, so that stock Detectron2 tools and model-zoo ``_BASE_`` files keep working;
this module only adds the keys the slimmable parts need (named as in pre-training where the
concept is the same: ``MODEL.WIDTHS``, ``MODEL.WEIGHTS_TRUSTED``) and turns Detectron2's config
errors into one :class:`~slimdet.config.ConfigError` naming the file or override.
"""
from __future__ import annotations

import difflib
import os
from typing import List, Sequence

import yaml
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog

from ..config import ConfigError, check_widths
from ..modeling.slim import loss_weights
from .datasets import PREPARE_COMMAND, TINY_COCO_SPLITS, datasets_root

DEFAULT_WIDTHS = [1.0, 0.75, 0.5, 0.25]
SLIM_META_ARCHITECTURE = "SlimGeneralizedRCNN"


def add_slim_det_config(cfg: CN) -> CN:
    """Add the slimmable-detection keys to a Detectron2 config.

    - ``MODEL.WIDTHS``: width multipliers, full width first, strictly decreasing (docs/method.md
      §1); the same key as pre-training's. ``MODEL.SLIM.WIDTHS``, its old name, is refused
      with a message naming the new one.
    - ``MODEL.WEIGHTS_TRUSTED``: as in pre-training, MODEL.WEIGHTS is read without running code
      (tensors and numpy arrays only); True unpickles that one file fully, for a file you trust
      that needs more (the error names what it needs). Never used for ``--resume``.
    - ``MODEL.SLIM.LOSS_WEIGHTING``: how each width's detection loss is weighted inside one step;
      ``uniform`` (every width 1, the reference's slimmable detector) or any scheme of
      :func:`slimdet.modeling.slim.loss_weights`.
    - ``MODEL.SLIM.SWITCHABLE_HEAD_NORMS``: give the shared FPN and heads one BatchNorm per width.
      Their convolutions stay shared (docs/method.md §6), but zero-padded narrow features have
      other statistics than full-width ones, so shared running statistics would be right for no
      width.
    - ``TEST.SLIM_WIDTHS``: widths to evaluate (empty = all of ``MODEL.WIDTHS``).
    """
    cfg.MODEL.WIDTHS = list(DEFAULT_WIDTHS)
    cfg.MODEL.WEIGHTS_TRUSTED = False
    cfg.MODEL.SLIM = CN()
    cfg.MODEL.SLIM.LOSS_WEIGHTING = "uniform"
    cfg.MODEL.SLIM.SWITCHABLE_HEAD_NORMS = True
    cfg.TEST.SLIM_WIDTHS = []
    cfg.register_renamed_key("MODEL.SLIM.WIDTHS", "MODEL.WIDTHS")
    return cfg


def get_slim_det_cfg() -> CN:
    """Detectron2's defaults plus the slimmable-detection keys."""
    return add_slim_det_config(get_cfg())


def _describe(e: BaseException) -> str:
    """One line for an error of Detectron2's / yacs' config merging."""
    if isinstance(e, OSError) and e.filename:
        return f"cannot read {e.filename} ({e.strerror})"
    if isinstance(e, yaml.YAMLError):
        return f"cannot parse it as YAML ({str(e).splitlines()[0]})"
    msg = str(e.args[0]) if e.args else type(e).__name__
    if msg.startswith(("Non-existent key: ", "Non-existent config key: ")):
        msg = "unknown config key " + msg.split(": ", 1)[1]
    return msg.splitlines()[0]


_MERGE_ERRORS = (KeyError, ValueError, AssertionError, OSError, yaml.YAMLError)


def load_det_cfg(config_file: str = "", opts: Sequence[str] = ()) -> CN:
    """Detectron2's defaults + the slimmable keys <- ``config_file`` (with its ``_BASE_`` chain)
    <- ``KEY VALUE`` overrides. A missing or unparsable file, an unknown or renamed key or a
    value of the wrong type is a :class:`ConfigError` naming the file (or "command line")."""
    cfg = get_slim_det_cfg()
    if config_file:
        try:
            cfg.merge_from_file(config_file)
        except _MERGE_ERRORS as e:
            raise ConfigError(f"{config_file}: {_describe(e)}") from None
    try:
        cfg.merge_from_list(list(opts))
    except _MERGE_ERRORS as e:
        raise ConfigError(f"command line: {_describe(e)}") from None
    return cfg


def is_slimmable(cfg: CN) -> bool:
    """Whether ``cfg`` is the slimmable detector (else stock Detectron2)."""
    return cfg.MODEL.META_ARCHITECTURE == SLIM_META_ARCHITECTURE


def check_datasets(cfg: CN, keys: Sequence[str] = ("TRAIN", "TEST")) -> None:
    """Every data set named in ``DATASETS.<key>`` is registered, and its annotation file (the
    ``json_file`` of its metadata, for COCO-format sets) exists; else one
    :class:`ConfigError` naming the key, the set and the file."""
    registered = DatasetCatalog.list()
    for key in keys:
        for name in cfg.DATASETS[key]:
            if name not in registered:
                close = difflib.get_close_matches(name, registered, n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise ConfigError(f"DATASETS.{key}: {name!r} is not a registered data set{hint}")
            json_file = MetadataCatalog.get(name).get("json_file")
            if json_file and not os.path.isfile(json_file):
                how = (f"prepare it with {PREPARE_COMMAND}" if name in TINY_COCO_SPLITS else
                       f"data sets are read from $DETECTRON2_DATASETS ({datasets_root()}), "
                       "see datasets/README.md")
                raise ConfigError(f"DATASETS.{key}: {name!r} needs {json_file}, which does "
                                  f"not exist; {how}")


def validate_det_cfg(cfg: CN, eval_only: bool = False) -> None:
    """Fail early, naming the key, on settings a detection job cannot honour: data sets that
    are not registered or not there (``DATASETS.TEST``, and ``DATASETS.TRAIN`` unless
    ``eval_only``); for the slimmable detector its own keys (:func:`validate_slim_det_cfg`)."""
    check_datasets(cfg, ("TEST",) if eval_only else ("TRAIN", "TEST"))
    if is_slimmable(cfg):
        validate_slim_det_cfg(cfg)


def validate_slim_det_cfg(cfg: CN) -> None:
    """The slimmable detector's keys: width lists, loss weighting, no PreciseBN."""
    widths = check_widths(cfg.MODEL.WIDTHS, "MODEL.WIDTHS")
    unknown = [w for w in cfg.TEST.SLIM_WIDTHS if float(w) not in widths]
    if unknown:
        raise ConfigError(f"TEST.SLIM_WIDTHS {list(cfg.TEST.SLIM_WIDTHS)} has widths {unknown} "
                          f"that are not in MODEL.WIDTHS {widths}")
    try:
        loss_weights(widths, cfg.MODEL.SLIM.LOSS_WEIGHTING)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if cfg.TEST.PRECISE_BN.ENABLED:
        raise ConfigError("TEST.PRECISE_BN.ENABLED: Detectron2's PreciseBN hook recomputes the "
                          "statistics of one width only; set it to False (each width keeps its "
                          "own BN statistics from training)")


def eval_widths(cfg: CN) -> List[float]:
    """The widths to evaluate: ``TEST.SLIM_WIDTHS`` or every trained width."""
    return [float(w) for w in (cfg.TEST.SLIM_WIDTHS or cfg.MODEL.WIDTHS)]
