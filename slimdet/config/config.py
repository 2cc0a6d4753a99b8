"""fvcore ``CfgNode`` with error messages that name the file, the key and the value."""
from __future__ import annotations

import os
from typing import Any, Dict, List, Sequence

from fvcore.common.config import CfgNode as _FvCfgNode


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the source, the key and the value."""


def _coerce_numbers(new: Any, default: Any) -> Any:
    """Accept ``1`` for a float key and ``[1, 0.5]`` for a list-of-float key (YAML/CLI users
    write both); everything else is left to yacs' strict type check."""
    if isinstance(default, float) and isinstance(new, int) and not isinstance(new, bool):
        return float(new)
    if isinstance(default, (list, tuple)) and default and isinstance(new, (list, tuple)):
        if all(isinstance(d, float) for d in default):
            return type(new)(float(x) if isinstance(x, int) and not isinstance(x, bool) else x
                             for x in new)
    if isinstance(default, _FvCfgNode) and isinstance(new, dict):
        return {k: _coerce_numbers(v, default[k]) if k in default else v for k, v in new.items()}
    return new


def config_files(path: str) -> List[str]:
    """``path`` and every file of its ``_BASE_`` chain (resolved as fvcore resolves them:
    relative to the file naming them), each once: the files a config is read from, which a
    tool must never write over. A file that cannot be read ends the walk there (loading the
    config reports it)."""
    import yaml

    found: List[str] = []
    todo = [path]
    while todo:
        current = todo.pop(0)
        if current in found or "://" in current or not os.path.isfile(current):
            continue
        found.append(current)
        try:
            with open(current) as f:
                data = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError):
            continue
        bases = data.get("_BASE_") if isinstance(data, dict) else None
        for base in ([bases] if isinstance(bases, str) else bases or []):
            base = os.path.expanduser(str(base))
            todo.append(base if base.startswith("/") else
                        os.path.join(os.path.dirname(current), base))
    return found


def config_inputs(path: str, flag: str = "--config-file") -> Dict[str, str]:
    """``{flag: path}`` and each ``_BASE_`` file of it (:func:`config_files`), as the inputs a
    tool's output must not be (``slimdet.utils.file_io.check_output_file``)."""
    chain = config_files(path) if path else []
    return {flag: path, **{f"{flag}'s _BASE_ {base}": base for base in chain[1:]}}


class CfgNode(_FvCfgNode):
    """slimdet's config node: fvcore's (``_BASE_`` inheritance) with clear errors."""

    def merge_from_file(self, cfg_filename: str, allow_unsafe: bool = False) -> None:
        if not os.path.isfile(cfg_filename):
            raise ConfigError(f"config file not found: {cfg_filename}")
        try:
            loaded = self.load_yaml_with_base(cfg_filename, allow_unsafe=allow_unsafe)
        except (FileNotFoundError, OSError) as e:
            # A missing _BASE_ file: name both files.
            missing = getattr(e, "filename", None) or str(e)
            raise ConfigError(f"{cfg_filename}: cannot read _BASE_ config {missing}") from e
        except Exception as e:  # YAML syntax errors
            raise ConfigError(f"{cfg_filename}: cannot parse: {e}") from e
        loaded = _coerce_numbers(loaded, self)
        try:
            self.merge_from_other_cfg(type(self)(loaded))
        except (KeyError, ValueError, AssertionError) as e:
            raise ConfigError(f"{cfg_filename}: {_describe(e)}") from e

    def merge_from_list(self, cfg_list: Sequence[str]) -> None:
        if len(cfg_list) % 2:
            raise ConfigError(f"command line: {self._missing_value(list(cfg_list))}; overrides "
                              f"are KEY VALUE pairs, got {list(cfg_list)}")
        fixed: List[Any] = []
        for key, value in zip(cfg_list[0::2], cfg_list[1::2]):
            default = self._default_of(key)
            if default is None:
                raise ConfigError(f"command line: unknown config key {key!r} (value {value!r})"
                                  f"{_renamed_hint(key)}")
            value = _coerce_numbers(self._decode_cfg_value(value), default)
            fixed += [key, value]
        try:
            super().merge_from_list(fixed)
        except (KeyError, ValueError, AssertionError) as e:
            raise ConfigError(f"command line: {_describe(e)}") from e

    def _default_of(self, key: str) -> Any:
        """The value ``key`` (``A.B.C``) has in this config, or None when it has no such key."""
        node: Any = self
        for part in key.split("."):
            node = node.get(part) if isinstance(node, _FvCfgNode) else None
        return node

    def _missing_value(self, words: List[str]) -> str:
        """Which KEY of an odd-length override list lacks its value: the first whose next word
        is itself a config key (``SOLVER.MAX_ITER OUTPUT_DIR out``), else the last word."""
        for key, value in zip(words[0::2], words[1::2]):
            if self._default_of(key) is not None and self._default_of(value) is not None:
                return f"{key} has no value (the word after it, {value}, is a config key)"
        return f"{words[-1]} has no value"


def _describe(e: BaseException) -> str:
    msg = e.args[0] if e.args else str(e)
    if isinstance(msg, str) and msg.startswith("Non-existent config key"):
        key = msg.split(":", 1)[1].strip()
        return f"unknown config key {key}{_renamed_hint(key)}"
    return str(msg)


def _renamed_hint(key: str) -> str:
    """``"; MODEL.MOCO was renamed MODEL.MOCOV2: use MODEL.MOCOV2.DIM"`` for a key under a
    renamed one (``defaults.RENAMED_KEYS``), else ``""``."""
    from .defaults import RENAMED_KEYS

    for old, new in RENAMED_KEYS.items():
        if key == old or key.startswith(old + "."):
            return f"; {old} was renamed {new}: use {new + key[len(old):]}"
    return ""


def validate_cfg(cfg: CfgNode) -> None:
    """Checks that span several keys; each error names the key and the value."""
    from .widths import check_widths, validate_widths

    check_widths(cfg.MODEL.WIDTHS, "MODEL.WIDTHS")
    # MODEL.BACKBONE.DEPTH and MODEL.SLIM.LOSS_WEIGHTING are checked where their choices are
    # defined (SlimResNet.from_config, slimdet.modeling.slim.weights), when the trainer builds
    # the model and its width loop: before a start writes anything.
    if cfg.DATALOADER.BACKEND not in ("torch", "dali"):
        raise ConfigError(f"DATALOADER.BACKEND must be torch or dali, got {cfg.DATALOADER.BACKEND!r}")
    compile_modes = ("", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
    if cfg.MODEL.COMPILE not in compile_modes:
        raise ConfigError(f"MODEL.COMPILE must be one of {list(compile_modes)}, got {cfg.MODEL.COMPILE!r}")
    if cfg.MODEL.COMPILE and cfg.MODEL.SLIM.MODE == "sandwich":
        # Each compiled graph is specialised to one width; sandwich draws new widths every step.
        raise ConfigError("MODEL.COMPILE needs MODEL.SLIM.MODE fixed: sandwich draws new widths "
                          f"every step, each would compile anew (got MODEL.COMPILE "
                          f"{cfg.MODEL.COMPILE!r} with MODEL.SLIM.MODE 'sandwich')")
    if cfg.MODEL.DEVICE not in ("", "cpu", "cuda"):
        raise ConfigError(f"MODEL.DEVICE must be cpu, cuda or '' (cuda when available), got "
                          f"{cfg.MODEL.DEVICE!r}")
    if cfg.MODEL.BACKBONE.OUT_FEATURES:
        # Every method here reads the pooled feature; a dict of stage outputs fails late.
        raise ConfigError(f"MODEL.BACKBONE.OUT_FEATURES {list(cfg.MODEL.BACKBONE.OUT_FEATURES)}: "
                          "every method of tools/train_net.py reads the backbone's pooled "
                          "feature; stage outputs are the detector's (tools/train_det.py, "
                          "MODEL.RESNETS.OUT_FEATURES): leave it empty")
    _validate_ranges(cfg)
    validate_widths(cfg)
    _validate_input(cfg)


# Numeric keys whose value outside its range would fail late with a traceback (a batch of 0
# images, a period of 0 iterations) or give a number that means nothing (kNN with k 0, a
# temperature of 0): each is refused at the start, naming the key.
POSITIVE_KEYS = (
    "SOLVER.IMS_PER_BATCH", "TEST.IMS_PER_BATCH", "TEST.KNN.K", "TEST.KNN.TEMPERATURE",
    "LOG_PERIOD", "MODEL.NUM_CLASSES", "MODEL.BACKBONE.BASE_CHANNELS",
    "MODEL.SLIM.DISTILL_TEMPERATURE", "MODEL.MOCOV2.TEMPERATURE", "MODEL.MOCOV3.TEMPERATURE",
    "MODEL.SIMCLR.TEMPERATURE", "SOLVER.GAMMA",
)
NON_NEGATIVE_KEYS = (
    "DATASETS.TRAIN_SUBSET", "DATASETS.TEST_SUBSET", "DATALOADER.NUM_WORKERS", "SOLVER.BASE_LR",
    "SOLVER.BASE_LR_AFTER_SLOW_START", "SOLVER.REFERENCE_BATCH_SIZE", "SOLVER.WARMUP_EPOCHS", "SOLVER.MOMENTUM",
    "SOLVER.WEIGHT_DECAY", "SOLVER.WEIGHT_DECAY_NORM", "SOLVER.WEIGHT_DECAY_BIAS",
    "SOLVER.CHECKPOINT_PERIOD", "SOLVER.MAX_TO_KEEP", "SOLVER.CLIP_GRAD_NORM", "SOLVER.MAX_ITER",
    "TEST.EVAL_PERIOD", "TEST.EVAL_PERIOD_EPOCHS", "TEST.CALIBRATE_BATCHES",
    "MODEL.SLIM.SLOW_START_EPOCH", "MODEL.SLIM.DISTILL_WEIGHT", "ANALYSIS.GRAD_PERIOD",
    "ANALYSIS.TRAJECTORY_PERIOD",
)
UNIT_INTERVAL_KEYS = ("MODEL.SLIM.DISTILL_WEIGHT", "MODEL.MOCOV2.MOMENTUM", "MODEL.MOCOV3.MOMENTUM")


def _value(cfg: CfgNode, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _validate_ranges(cfg: CfgNode) -> None:
    for key in POSITIVE_KEYS:
        if _value(cfg, key) <= 0:
            raise ConfigError(f"{key} must be positive, got {_value(cfg, key)}")
    for key in NON_NEGATIVE_KEYS:
        if _value(cfg, key) < 0:
            raise ConfigError(f"{key} must not be negative, got {_value(cfg, key)} "
                              "(defaults.py says what 0 means)")
    for key in UNIT_INTERVAL_KEYS:
        if not 0.0 <= _value(cfg, key) <= 1.0:
            raise ConfigError(f"{key} must be in [0, 1], got {_value(cfg, key)}")


def _validate_input(cfg: CfgNode) -> None:
    i, channels = cfg.INPUT, cfg.MODEL.BACKBONE.IN_CHANNELS
    if channels not in (1, 3):
        raise ConfigError("MODEL.BACKBONE.IN_CHANNELS must be 1 (grey images) or 3 (colour), "
                          f"got {channels}")
    for key in ("PIXEL_MEAN", "PIXEL_STD"):
        if len(i[key]) != channels:
            raise ConfigError(f"INPUT.{key} has {len(i[key])} values {list(i[key])} but "
                              f"MODEL.BACKBONE.IN_CHANNELS is {channels}: give one per channel")
    if any(s <= 0 for s in i.PIXEL_STD):
        raise ConfigError(f"INPUT.PIXEL_STD must be positive, got {list(i.PIXEL_STD)}")
    for key, top in (("PIXEL_MEAN", 1.0), ("PIXEL_STD", 1.0)):
        if any(not 0.0 <= v <= top for v in i[key]):
            # Detectron2's MODEL.PIXEL_MEAN is in 0-255 units; copied here it would normalise
            # every image to about -2 and train on that without an error.
            scaled = "[" + ", ".join(f"{v / 255:.3f}" for v in i[key]) + "]"
            raise ConfigError(
                f"INPUT.{key} {list(i[key])} is not in [0, 1]: slimdet reads pixels as values in "
                f"[0, 1], so the statistics are in those units"
                + (f" (0-255 values divided by 255: {scaled})" if max(i[key]) > top else ""))
    if i.CROP_SIZE <= 0:
        raise ConfigError(f"INPUT.CROP_SIZE must be positive, got {i.CROP_SIZE}")
    if i.TEST_RESIZE and i.TEST_RESIZE < i.CROP_SIZE:
        raise ConfigError(f"INPUT.TEST_RESIZE {i.TEST_RESIZE} is smaller than INPUT.CROP_SIZE "
                          f"{i.CROP_SIZE}: the centre crop would not fit (0 = from "
                          "INPUT.TEST_CROP_FRACTION)")
    if not 0.0 < i.TEST_CROP_FRACTION <= 1.0:
        raise ConfigError(f"INPUT.TEST_CROP_FRACTION must be in (0, 1], got {i.TEST_CROP_FRACTION}")
    if not 0.0 < i.MIN_SCALE <= i.MAX_SCALE <= 1.0:
        raise ConfigError("INPUT.MIN_SCALE / MAX_SCALE must satisfy 0 < MIN_SCALE <= MAX_SCALE "
                          f"<= 1, got {i.MIN_SCALE} / {i.MAX_SCALE}")


def get_cfg() -> CfgNode:
    """A fresh copy of the defaults (slimdet/config/defaults.py)."""
    from .defaults import _C

    return _C.clone()
