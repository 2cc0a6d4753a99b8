"""Detectron2 config keys added for slimmable detection, and loading a detection config.

Detection configs are Detectron2 configs (``detectron2.config.get_cfg()``), not slimdet's
pre-training configs, so that stock Detectron2 tools and model-zoo ``_BASE_`` files keep working;
this module only adds the keys the slimmable parts need (named as in pre-training where the
concept is the same: ``MODEL.WIDTHS``, ``MODEL.WEIGHTS_TRUSTED``) and turns Detectron2's config
errors into one :class:`~slimdet.config.ConfigError` naming the file or override.
"""
from __future__ import annotations

import difflib
import logging
import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import yaml
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog

from ..config import ConfigError, check_widths
from ..data.datasets import DatasetError
from ..modeling.slim import loss_weights
from .datasets import (COCO_PATH_FORM, PREPARE_COMMAND, TINY_COCO_SPLITS, CocoSummary,
                       coco_summary, datasets_root, is_coco_path, register_coco_path)

logger = logging.getLogger(__name__)

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


OWN_DATA_HINT = (f"name your own COCO-format data by its files, {COCO_PATH_FORM} "
                 "(README, Your own data)")


def _where(path: str) -> str:
    """Where a relative data path is looked for: a job reads it from the folder it runs in."""
    if os.path.isabs(path):
        return ""
    return f" (relative to the current folder {os.getcwd()})"


def _missing(key: str, name: str, path: str, what: str) -> ConfigError:
    if name in TINY_COCO_SPLITS:
        how = (f"prepare it with {PREPARE_COMMAND}, or set $DETECTRON2_DATASETS to the folder "
               "that holds tiny_coco")
    elif is_coco_path(name):
        how = f"the name is {COCO_PATH_FORM}"
    else:
        env = os.getenv("DETECTRON2_DATASETS")
        how = ("data sets are read from $DETECTRON2_DATASETS "
               + (f"({env})" if env else f"(not set: {datasets_root()}/)")
               + ", see datasets/README.md; or " + OWN_DATA_HINT)
    return ConfigError(f"DATASETS.{key}: {name!r} needs the {what} {path}{_where(path)}, which "
                       f"does not exist; {how}")


def _describe_set(key: str, name: str, summary: CocoSummary) -> str:
    return f"DATASETS.{key} {name!r} ({summary.json_file})"


def _first_difference(ours: Sequence[Tuple[int, str]], theirs: Sequence[Tuple[int, str]],
                      us: str, them: str) -> str:
    """Where two (id, name) lists sorted by id first part: the label and both categories."""
    for label, (a, b) in enumerate(zip(ours, theirs)):
        if a != b:
            return f"label {label} is id {b[0]} {b[1]!r} in {them}, id {a[0]} {a[1]!r} in {us}"
    label = min(len(ours), len(theirs))
    longer, where = (ours, us) if len(ours) > len(theirs) else (theirs, them)
    return f"label {label} (id {longer[label][0]} {longer[label][1]!r}) is only in {where}"


def _registered_categories(name: str) -> Optional[Tuple[Tuple[int, str], ...]]:
    """The (id, name) categories a set's metadata fixes before it is loaded (Detectron2's
    builtin coco_* sets: the 80 COCO classes), or None when loading sets them."""
    meta = MetadataCatalog.get(name)
    id_map, classes = meta.get("thing_dataset_id_to_contiguous_id"), meta.get("thing_classes")
    if not id_map or not classes or len(id_map) != len(classes):
        return None
    return tuple((i, classes[label]) for i, label in sorted(id_map.items(), key=lambda x: x[1]))


def _read_set(key: str, name: str) -> Optional[CocoSummary]:
    """The summary of a registered set's annotation file (None: not a COCO-format set), after
    checking that it and the image folder are there and that the file fits the metadata."""
    meta = MetadataCatalog.get(name)
    json_file, image_root = meta.get("json_file"), meta.get("image_root")
    if not json_file:
        return None
    if not os.path.isfile(json_file):
        raise _missing(key, name, json_file, "annotation file")
    if image_root and not os.path.isdir(image_root):
        raise _missing(key, name, image_root, "image folder")
    try:
        summary = coco_summary(json_file)
    except DatasetError as e:
        raise DatasetError(f"DATASETS.{key} {name!r}: {e}") from None
    registered = _registered_categories(name)
    if registered is not None and registered != summary.categories:
        # Detectron2 fixes these names' classes (its builtin metadata): loading the file would
        # fail on them, or map the file's ids to other classes.
        raise ConfigError(
            f"{_describe_set(key, name, summary)} has {len(summary.categories)} categories "
            f"that are not the {len(registered)} this name is registered with (Detectron2's "
            "COCO classes for its coco_* names): "
            f"{_first_difference(registered, summary.categories, 'the registered classes', 'the file')}; "
            + OWN_DATA_HINT)
    return summary


def check_datasets(cfg: CN, keys: Sequence[str] = ("TRAIN", "TEST")) -> None:
    """The data sets of ``DATASETS.<key>`` before anything runs: each one registered
    (``coco:JSON_FILE:IMAGE_FOLDER`` names are registered here), its annotation file and image
    folder there, the file a COCO instances file read once (:func:`coco_summary`), and every
    split with the categories of the first training set, which the model's labels are
    (indices of the sorted category ids: the same names under other ids, or a category less,
    give other labels and wrong AP without an error). With only ``TEST`` (``--eval-only``) the
    test sets are compared with ``DATASETS.TRAIN`` where its categories can be known without
    it, or its file is there. ``MODEL.ROI_HEADS.NUM_CLASSES`` holds every category.
    A mistake is one :class:`ConfigError` / :class:`DatasetError` naming the key and the set."""
    for key in ("TRAIN", "TEST"):
        for name in cfg.DATASETS[key]:
            if is_coco_path(name):
                try:
                    register_coco_path(name)
                except ValueError as e:
                    raise ConfigError(f"DATASETS.{key}: {e}") from None
    registered = DatasetCatalog.list()
    read: Dict[Tuple[str, str], Optional[CocoSummary]] = {}
    for key in keys:
        for name in cfg.DATASETS[key]:
            if name not in registered:
                close = difflib.get_close_matches(name, registered, n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise ConfigError(f"DATASETS.{key}: {name!r} is not a registered data set"
                                  f"{hint}; or {OWN_DATA_HINT}")
            read[(key, name)] = summary = _read_set(key, name)
            if summary is None:
                continue
            if key == "TRAIN" and not summary.has_annotations:
                raise DatasetError(f"{_describe_set(key, name, summary)} has no 'annotations': "
                                   "an image-info file, nothing to train on")
            if key == "TRAIN" and not summary.annotated_images:
                raise DatasetError(f"{_describe_set(key, name, summary)}: none of its "
                                   f"{summary.images} images has an annotation (crowd ones aside), "
                                   "so Detectron2 has no image to train on")
            if key == "TEST" and not summary.has_annotations:
                logger.warning("%s has no 'annotations': its predictions are written, not "
                               "evaluated", _describe_set(key, name, summary))
    reference = _training_categories(cfg, read)
    if reference is None:
        return
    ref_key, ref_name, ref_file, ref_categories = reference
    for (key, name), summary in read.items():
        if summary is None or summary.categories == ref_categories:
            continue
        first = _first_difference(ref_categories, summary.categories, f"DATASETS.{ref_key}",
                                  f"DATASETS.{key}")
        raise ConfigError(
            f"{_describe_set(key, name, summary)} has {len(summary.categories)} categories, "
            f"DATASETS.{ref_key} {ref_name!r} ({ref_file}) {len(ref_categories)}, and they "
            f"differ: {first}; labels are indices of the sorted category ids, so every split "
            "needs the same categories (ids and names), also those it has no annotation of")
    _check_num_classes(cfg, f"DATASETS.{ref_key} {ref_name!r} ({ref_file})", len(ref_categories))


def _training_categories(cfg: CN, read) -> Optional[Tuple[str, str, str, Tuple]]:
    """(key, name, file, categories) of the first training set, whose categories the model's
    labels are; without it (--eval-only, its file not there) the first test set's."""
    train = list(cfg.DATASETS.TRAIN)
    if train and ("TRAIN", train[0]) not in read:
        # --eval-only: the training set is read only where its labels cannot be known otherwise.
        name = train[0]
        registered = _registered_categories(name) if name in DatasetCatalog.list() else None
        if registered is not None:
            return "TRAIN", name, "its registered classes", registered
        json_file = MetadataCatalog.get(name).get("json_file")
        if json_file and os.path.isfile(json_file):
            summary = _read_set("TRAIN", name)
            return "TRAIN", name, summary.json_file, summary.categories
        logger.warning("Cannot compare the categories of DATASETS.TEST with those of "
                       "DATASETS.TRAIN %r, which the model was trained on (its annotation file "
                       "is not there): the test set must have the same categories (ids and "
                       "names)", name)
    first = next(((k, n, s) for (k, n), s in read.items() if s is not None), None)
    return None if first is None else (first[0], first[1], first[2].json_file,
                                       first[2].categories)


def label_categories(cfg: CN) -> Optional[List[List]]:
    """The ``[id, name]`` categories the detector's labels are (label ``i`` is the ``i``-th),
    those of the first training set: its registered classes or its annotation file's (read once
    per process: :func:`check_datasets` has read it); None when they cannot be known (no
    training set, not a COCO-format set). Recorded in the detection checkpoints."""
    if not cfg.DATASETS.TRAIN or cfg.DATASETS.TRAIN[0] not in DatasetCatalog.list():
        return None
    name = cfg.DATASETS.TRAIN[0]
    categories = _registered_categories(name)
    json_file = MetadataCatalog.get(name).get("json_file")
    if categories is None and json_file and os.path.isfile(json_file):
        categories = coco_summary(json_file).categories
    return None if categories is None else [[int(i), str(n)] for i, n in categories]


def check_test_categories(cfg: CN, meta: Optional[Mapping], path: str) -> None:
    """``--eval-only``: every ``DATASETS.TEST`` set has the categories the detector in ``path``
    was trained on (``meta``: the checkpoint's ``slimdet`` field, which slimdet's detection
    checkpoints fill). A set with a category less or the same names under other ids maps
    the detector's labels to other classes: wrong AP without an error, or a failure in the
    evaluator. Files of other origin record no categories and are not checked."""
    recorded = meta.get("categories") if isinstance(meta, Mapping) else None
    if not recorded:
        return
    trained = tuple((int(i), str(n)) for i, n in recorded)
    for name in cfg.DATASETS.TEST:
        json_file = MetadataCatalog.get(name).get("json_file")
        if not json_file or not os.path.isfile(json_file):
            continue
        summary = coco_summary(json_file)
        if summary.categories != trained:
            first = _first_difference(trained, summary.categories, repr(path), "the test set")
            raise ConfigError(
                f"{_describe_set('TEST', name, summary)} has {len(summary.categories)} "
                f"categories, the detector in {path!r} was trained on {len(trained)}, and they "
                f"differ: {first}; labels are indices of the sorted category ids, so the test "
                "set needs the training set's categories (ids and names), also those it has no "
                "annotation of")


def num_classes_setting(cfg: CN) -> Tuple[str, int]:
    """The config key of the detector's number of classes and its value."""
    if cfg.MODEL.META_ARCHITECTURE == "RetinaNet":
        return "MODEL.RETINANET.NUM_CLASSES", cfg.MODEL.RETINANET.NUM_CLASSES
    return "MODEL.ROI_HEADS.NUM_CLASSES", cfg.MODEL.ROI_HEADS.NUM_CLASSES


def _check_num_classes(cfg: CN, source: str, categories: int) -> None:
    key, value = num_classes_setting(cfg)
    if value < categories:
        raise ConfigError(f"{key} {value} is smaller than the {categories} categories of "
                          f"{source}: the last ones would be trained as background (or "
                          f"fail); set {key} {categories}")
    if value > categories:
        logger.warning("%s %d is larger than the %d categories of %s: the %d extra classes are "
                       "never trained", key, value, categories, source, value - categories)


def validate_det_cfg(cfg: CN, eval_only: bool = False) -> None:
    """Fail early, naming the key, on settings a detection job cannot honour: numbers out of
    range; the data sets (:func:`check_datasets`: ``DATASETS.TEST``, and ``DATASETS.TRAIN``
    unless ``eval_only``); for the slimmable detector its own keys
    (:func:`validate_slim_det_cfg`)."""
    key, num_classes = num_classes_setting(cfg)
    if num_classes < 1:
        raise ConfigError(f"{key} must be at least 1 (the number of categories), got "
                          f"{num_classes}")
    if cfg.SOLVER.IMS_PER_BATCH < 1:
        raise ConfigError(f"SOLVER.IMS_PER_BATCH must be at least 1, got "
                          f"{cfg.SOLVER.IMS_PER_BATCH}")
    if not is_slimmable(cfg):
        _refuse_slim_keys(cfg)  # a key to remove is said before any data is read
    check_datasets(cfg, ("TEST",) if eval_only else ("TRAIN", "TEST"))
    if is_slimmable(cfg):
        validate_slim_det_cfg(cfg)


def _refuse_slim_keys(cfg: CN) -> None:
    """A stock detector runs one width (that of the file convert_to_d2.py wrote) and reads no
    slimmable key: one set to other than its default would be ignored, so it is refused."""
    defaults = add_slim_det_config(CN({"MODEL": CN(), "TEST": CN()}))
    keys = [("MODEL.WIDTHS", cfg.MODEL.WIDTHS, defaults.MODEL.WIDTHS),
            ("TEST.SLIM_WIDTHS", cfg.TEST.SLIM_WIDTHS, defaults.TEST.SLIM_WIDTHS)]
    keys += [(f"MODEL.SLIM.{name}", value, defaults.MODEL.SLIM[name])
             for name, value in cfg.MODEL.SLIM.items()]

    def plain(value):  # a YAML list and a command-line tuple of the same values are equal
        return list(value) if isinstance(value, (list, tuple)) else value

    changed = [f"{key} {plain(value)}" for key, value, default in keys
               if plain(value) != plain(default)]
    if changed:
        raise ConfigError(
            f"{', '.join(changed)}: only the slimmable detector (MODEL.META_ARCHITECTURE "
            f"{SLIM_META_ARCHITECTURE}) reads these keys; MODEL.META_ARCHITECTURE "
            f"{cfg.MODEL.META_ARCHITECTURE} runs the one width of its MODEL.WEIGHTS "
            f"(tools/convert_to_d2.py --width): remove them")


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
