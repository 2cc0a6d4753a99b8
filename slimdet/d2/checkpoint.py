"""Detectron2's names for a slimmable backbone, and the slimmable detector's checkpointer.

Two exports (used by ``tools/convert_to_d2.py``):

- :func:`to_stock_d2_state` — one width as a **stock** Detectron2 ResNet (names ``stem.conv1``,
  ``res2.0.conv1.norm`` ...). Width ``w`` of a slimmable ResNet-50 with an ImageNet stem is
  Detectron2's ResNet-50 with ``STEM_OUT_CHANNELS=64w``, ``RES2_OUT_CHANNELS=256w``,
  ``WIDTH_PER_GROUP=64w`` and ``STRIDE_IN_1X1=False`` when ``int(c * w)`` doubles from stage
  to stage as Detectron2's channels do (1.0, 0.75, 0.5, 0.25; not 0.35, where 89 -> 179 is not
  89 -> 178), so the export is a slice plus a rename; any other width is refused after a
  shape comparison with the ResNet Detectron2 builds from those keys.
- :func:`to_slim_d2_state` — every width, for ``build_slim_resnet_fpn_backbone``.

Two checkpointers (used by ``slimdet.d2.trainer``), both reading every file without running
code and saying in one line what a load took from the file:

- :class:`SafeDetectionCheckpointer` — stock Detectron2 models;
- :class:`SlimDetectionCheckpointer` — the slimmable detector: it also refuses a backbone of
  another architecture, naming it, instead of Detectron2's warning-and-continue (a silently
  random backbone would make every AP meaningless).

Reading, layouts and key checks are :mod:`slimdet.checkpoint`'s; only Detectron2's names and
file formats live here.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer

from ..checkpoint import (AtomicSaving, CheckpointError, check_architecture, check_keys, count_parts,
                          read_file, single_width_name)
from ..utils.file_io import remove_stale_temp_files
from ..config import ConfigError
from ..modeling.backbone.slim_resnet import STAGE_BLOCKS, SlimResNet, extract_subnet

logger = logging.getLogger(__name__)

SLIM_D2_PREFIX = "backbone.bottom_up.resnet."


def _stock_name(key: str) -> Optional[str]:
    """slimdet (torchvision) name of a single-width network -> stock Detectron2 ResNet name."""
    if key.endswith("num_batches_tracked"):
        return None  # a pre-training counter; Detectron2's BN/FrozenBN do not need it
    key = single_width_name(key)
    if key.startswith("conv1."):
        return "stem.conv1." + key[len("conv1."):]
    if key.startswith("bn1."):
        return "stem.conv1.norm." + key[len("bn1."):]
    m = re.match(r"layer(\d)\.(\d+)\.(.*)", key)
    if not m:
        return None  # classifier (fc) and anything else that is not the trunk
    stage, block, rest = int(m.group(1)) + 1, m.group(2), m.group(3)
    rest = re.sub(r"^bn(\d)\.", r"conv\1.norm.", rest)
    rest = rest.replace("downsample.0.", "shortcut.").replace("downsample.1.", "shortcut.norm.")
    return f"res{stage}.{block}.{rest}"


def to_stock_d2_state(resnet: SlimResNet, width: float) -> Tuple[Dict[str, np.ndarray], List[str]]:
    """Width ``width`` of ``resnet`` in stock Detectron2 ResNet names (numpy, as in D2 .pkl files).

    Returns the state and the keys of the single-width network that were dropped.
    """
    plain = extract_subnet(resnet, width)
    out, dropped = {}, []
    for k, v in plain.state_dict().items():
        name = _stock_name(k)
        if name is None:
            dropped.append(k)
        else:
            out[name] = v.detach().cpu().numpy()
    check_fits_stock_d2(out, resnet, width)
    return out, dropped


def stock_d2_shapes(resnet: SlimResNet, width: float) -> Dict[str, Tuple[int, ...]]:
    """Parameter shapes of the stock Detectron2 ResNet that :func:`stock_d2_overrides` describe,
    built by Detectron2 itself (its rules, not a copy of them: every stage doubles the previous
    one's channels, the stem is a 7x7 convolution and a max-pool, R-18/34 need 64 channels)."""
    from detectron2.config import get_cfg as d2_cfg
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.backbone.resnet import build_resnet_backbone

    cfg = d2_cfg()
    pairs = stock_d2_overrides(resnet, width)
    cfg.merge_from_list([x for k, v in zip(pairs[::2], pairs[1::2])
                         if k.startswith("MODEL.RESNETS.") for x in (k, v)])
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    try:
        net = build_resnet_backbone(cfg, ShapeSpec(channels=resnet.conv1.in_channels))
    except AssertionError as e:  # Detectron2's own rule, e.g. RES2_OUT_CHANNELS 64 for R-18/34
        raise ConfigError(f"width {width:g} of this ResNet-{resnet.depth} is not a stock "
                          f"Detectron2 ResNet ({e}); use --slimmable instead") from None
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def check_fits_stock_d2(state: Mapping[str, np.ndarray], resnet: SlimResNet, width: float) -> None:
    """Refuse a width whose tensors a stock Detectron2 ResNet cannot hold exactly (a width whose
    ``int(c * w)`` channels do not double from stage to stage, a CIFAR stem, base channels other
    than 64 in R-18/34): Detectron2 would load part of it and leave the rest random."""
    if resnet.cifar_stem:
        # --slimmable refuses it too: the slimmable detector's stem is Detectron2's.
        raise ConfigError(f"this ResNet-{resnet.depth} has a CIFAR stem (3x3 convolution, no "
                          "max-pool); Detectron2's detectors (stock and slimmable) have a 7x7 "
                          "stem and a max-pool, so none can load it: pre-train with "
                          "MODEL.BACKBONE.CIFAR_STEM False for detection")
    if resnet.conv1.in_channels != 3:
        raise ConfigError(f"this ResNet-{resnet.depth} reads {resnet.conv1.in_channels}-channel "
                          "images; stock Detectron2 models read RGB: use --slimmable instead")
    expected = stock_d2_shapes(resnet, width)
    wrong = [f"{k} is {tuple(v.shape)} here, {expected[k]} in Detectron2"
             for k, v in state.items() if k in expected and tuple(v.shape) != expected[k]]
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if wrong or missing or extra:
        first = (wrong[:1] + [f"Detectron2 has {k}, this network does not" for k in missing[:1]]
                 + [f"{k} has no place in Detectron2's ResNet" for k in extra[:1]])[0]
        raise ConfigError(
            f"width {width:g} of this ResNet-{resnet.depth} is not a stock Detectron2 ResNet: "
            f"{len(wrong)} tensor(s) of other shapes, {len(missing)} missing, {len(extra)} extra "
            f"(first: {first}); stock Detectron2 stages double their channels and start with a "
            "7x7 stem, so only some widths fit it: use --slimmable instead")


def to_slim_d2_state(resnet: SlimResNet) -> Dict[str, np.ndarray]:
    """Every width, named as ``build_slim_resnet_fpn_backbone``'s parameters in a detector."""
    return {SLIM_D2_PREFIX + k: v.detach().cpu().numpy() for k, v in resnet.state_dict().items()}


IMAGENET_PIXEL_MEAN = [123.675, 116.280, 103.530]  # torchvision's, in 0-255 pixel units
IMAGENET_PIXEL_STD = [58.395, 57.120, 57.375]


def input_overrides(pixel_mean: Sequence[float] = IMAGENET_PIXEL_MEAN,
                    pixel_std: Sequence[float] = IMAGENET_PIXEL_STD) -> List[str]:
    """``INPUT.FORMAT`` and ``MODEL.PIXEL_MEAN/STD`` (0-255 units) of a backbone pre-trained on
    RGB (3 values) or grey (1 value) images normalised by these statistics."""
    fmt = "L" if len(pixel_mean) == 1 else "RGB"
    return ["INPUT.FORMAT", fmt,
            "MODEL.PIXEL_MEAN", "[" + ",".join(f"{v:.3f}" for v in pixel_mean) + "]",
            "MODEL.PIXEL_STD", "[" + ",".join(f"{v:.3f}" for v in pixel_std) + "]"]


def input_meta(pixel_mean: Sequence[float] = IMAGENET_PIXEL_MEAN,
               pixel_std: Sequence[float] = IMAGENET_PIXEL_STD) -> Dict[str, Any]:
    """What a converted file records of the images its backbone was pre-trained on (the
    ``slimdet`` field of tools/convert_to_d2.py's output), checked by :func:`check_cfg_fits_file`."""
    return {"format": "L" if len(pixel_mean) == 1 else "RGB",
            "pixel_mean": [float(v) for v in pixel_mean],
            "pixel_std": [float(v) for v in pixel_std]}


def _as_list(value: Any) -> List[float]:
    return [float(v) for v in value]


def check_cfg_fits_file(cfg, meta: Optional[Mapping[str, Any]], path: str) -> None:
    """Refuse a detector config that reads a converted backbone differently from how it was
    pre-trained: a tools/convert_to_d2.py --width export in a stock Detectron2 config keeps
    STRIDE_IN_1X1 True (the stride on the 1x1 convolution: a different network), BGR input and
    Caffe2's pixel statistics, so its features are off from the first layer on and every AP is
    low without an error. ``meta`` is the file's ``slimdet`` field; a file without one (not
    converted by slimdet) is not checked, nor are statistics an older converter did not record."""
    if not isinstance(meta, Mapping):
        return
    wrong = []  # (key, the file's value, the config's)
    if "width" in meta and cfg.MODEL.RESNETS.STRIDE_IN_1X1:
        wrong.append(("MODEL.RESNETS.STRIDE_IN_1X1", "False", "True"))
    seen = meta.get("input")
    if isinstance(seen, Mapping):
        if cfg.INPUT.FORMAT != seen.get("format", cfg.INPUT.FORMAT):
            wrong.append(("INPUT.FORMAT", seen["format"], cfg.INPUT.FORMAT))
        for key, field in (("MODEL.PIXEL_MEAN", "pixel_mean"), ("MODEL.PIXEL_STD", "pixel_std")):
            ours = _as_list(getattr(cfg.MODEL, key.split(".")[1]))
            theirs = _as_list(seen.get(field, ours))
            if len(ours) != len(theirs) or not np.allclose(ours, theirs, rtol=1e-3, atol=1e-3):
                wrong.append((key, "[" + ",".join(f"{v:.3f}" for v in theirs) + "]",
                              "[" + ",".join(f"{v:g}" for v in ours) + "]"))
    if wrong:
        what = (f"width {float(meta['width']):g} of a slimmable ResNet" if "width" in meta
                else "a slimmable ResNet")
        raise ConfigError(
            f"{path!r} is {what} converted by tools/convert_to_d2.py, which this config reads "
            "differently from its pre-training (" +
            ", ".join(f"{k} is {ours} here" for k, _, ours in wrong) + "), so its features "
            "would be wrong from the first layer on: pass " +
            " ".join(f"{k} {theirs}" for k, theirs, _ in wrong))


def stock_d2_overrides(resnet: SlimResNet, width: float,
                       pixel_mean: Sequence[float] = IMAGENET_PIXEL_MEAN,
                       pixel_std: Sequence[float] = IMAGENET_PIXEL_STD) -> List[str]:
    """``KEY VALUE`` overrides that make stock ``mask_rcnn_R_*_FPN`` fit a converted width.

    Pre-training normalised RGB images with ``pixel_mean`` / ``pixel_std`` (0-255 units;
    default torchvision's ImageNet statistics), hence the input format and pixel stats.
    """
    stem = int(resnet.conv1.out_channels * width)
    res2 = int(resnet.stage_channels[0] * width)
    return ["MODEL.RESNETS.DEPTH", str(resnet.depth),
            "MODEL.RESNETS.STEM_OUT_CHANNELS", str(stem),
            "MODEL.RESNETS.RES2_OUT_CHANNELS", str(res2),
            "MODEL.RESNETS.WIDTH_PER_GROUP", str(stem),
            "MODEL.RESNETS.STRIDE_IN_1X1", "False"] + input_overrides(pixel_mean, pixel_std)


def slim_d2_overrides(resnet: SlimResNet,
                      pixel_mean: Sequence[float] = IMAGENET_PIXEL_MEAN,
                      pixel_std: Sequence[float] = IMAGENET_PIXEL_STD) -> List[str]:
    """``KEY VALUE`` overrides that make the slimmable detector's backbone (``MODEL.RESNETS.*``
    at full width, ``MODEL.WIDTHS``) fit a ``--slimmable`` export: a ResNet-18/34 has 64
    res2 channels, not the 256 of the R-50 configs."""
    stem = resnet.conv1.out_channels
    return ["MODEL.RESNETS.DEPTH", str(resnet.depth),
            "MODEL.RESNETS.STEM_OUT_CHANNELS", str(stem),
            "MODEL.RESNETS.RES2_OUT_CHANNELS", str(resnet.stage_channels[0]),
            "MODEL.RESNETS.WIDTH_PER_GROUP", str(stem),
            "MODEL.WIDTHS", f'"{resnet.widths}"'] + input_overrides(pixel_mean, pixel_std)


def detector_part(key: str) -> str:
    """The part of a detector a weight belongs to, for load summaries: ``backbone.bottom_up``
    (the ResNet), ``backbone.fpn``, ``proposal_generator.rpn_head``, ``roi_heads.box_head`` ..."""
    first, _, rest = key.partition(".")
    second = rest.split(".", 1)[0]
    if first == "backbone":
        if second == "bottom_up":
            return "backbone.bottom_up"
        return "backbone.fpn" if second.startswith("fpn_") else "backbone"
    if first in ("proposal_generator", "roi_heads") and rest:
        return f"{first}.{second}"
    return first


def _parts(keys: Sequence[str]) -> str:
    return count_parts(keys, detector_part)


def _optional(key: str) -> bool:
    # BN's batch counter: nothing reads it, and Detectron2 model files do not have it.
    return key.endswith("num_batches_tracked")


def detectron2_checkpoint(data: Dict[str, Any], filename: str) -> Dict[str, Any]:
    """The checkpoint dict Detectron2's own ``DetectionCheckpointer._load_file`` (0.6) makes of a
    file's contents (read here without running code): model-zoo ``.pkl`` files as they are,
    Caffe2 / Detectron1 ``.pkl`` and pycls ``.pyth`` files renamed by name-matching heuristics,
    anything else ``{"model": ...}``."""
    if filename.endswith(".pkl") and not ("model" in data and "__author__" in data):
        blobs = data.get("blobs", data)  # detection models have "blobs", ImageNet models not
        data = {"model": {k: v for k, v in blobs.items() if not str(k).endswith("_momentum")},
                "__author__": "Caffe2", "matching_heuristics": True}
    elif filename.endswith(".pyth"):
        if not isinstance(data.get("model_state"), Mapping):
            raise CheckpointError(f"{filename!r}: a .pyth file is read as a pycls checkpoint, "
                                  "which holds 'model_state'")
        data = {"model": {k: v for k, v in data["model_state"].items() if not _optional(k)},
                "__author__": "pycls", "matching_heuristics": True}
    elif "model" not in data:
        data = {"model": data}
    if not isinstance(data["model"], Mapping):
        raise CheckpointError(f"{filename!r}: its 'model' field is a "
                              f"{type(data['model']).__name__}, not a dict of weights")
    for k, v in data["model"].items():
        if not isinstance(v, (torch.Tensor, np.ndarray)):
            raise CheckpointError(f"{filename!r}: weight {k!r} is a {type(v).__name__}, not a "
                                  "tensor or array")
    return data


def _backbone_hint(in_file: Mapping[str, Any], meta: Optional[Mapping[str, Any]]) -> str:
    """What makes the detector's ResNet fit a file's backbone: for one in stock Detectron2
    names (a tools/convert_to_d2.py --width export), the MODEL.RESNETS overrides read from its
    shapes, with the width and depth its slimdet metadata records."""
    meta = meta if isinstance(meta, Mapping) else {}
    if any(str(k).startswith(SLIM_D2_PREFIX) for k in in_file):
        return ("it holds a slimmable backbone (tools/convert_to_d2.py --slimmable), which only "
                "the slimmable detector loads: train with configs/detection/"
                "mask_rcnn_slim_R_50_FPN_1x.yaml, or convert one width with --width")
    trunk = "backbone.bottom_up."  # how a whole detector's file names its ResNet
    in_file = {str(k)[len(trunk):] if str(k).startswith(trunk) else str(k): v
               for k, v in in_file.items()}
    if "stem.conv1.weight" not in in_file or "res2.0.conv1.weight" not in in_file:
        return ("set MODEL.RESNETS.DEPTH / STEM_OUT_CHANNELS / RES2_OUT_CHANNELS / "
                "WIDTH_PER_GROUP to the file's ResNet")
    stem = np.shape(in_file["stem.conv1.weight"])[0]
    bottleneck = "res2.0.conv3.weight" in in_file
    res2 = np.shape(in_file["res2.0.conv3.weight" if bottleneck else "res2.0.conv2.weight"])[0]
    depth = meta.get("depth", _depth_of(in_file, bottleneck))
    keys = ([f"MODEL.RESNETS.DEPTH {depth}"] if depth else []) + [
        f"MODEL.RESNETS.STEM_OUT_CHANNELS {stem}", f"MODEL.RESNETS.RES2_OUT_CHANNELS {res2}"]
    if bottleneck:
        keys.append(f"MODEL.RESNETS.WIDTH_PER_GROUP {np.shape(in_file['res2.0.conv1.weight'])[0]}")
    if "width" not in meta:
        return f"set the detector's ResNet to the file's ({' '.join(keys)})"
    keys.append("MODEL.RESNETS.STRIDE_IN_1X1 False")
    name = f"ResNet-{depth}" if depth else "ResNet"
    return (f"it is width {float(meta['width']):g} of a slimmable {name} "
            f"(tools/convert_to_d2.py): pass the overrides the converter printed "
            f"({' '.join(keys)}, and its INPUT.FORMAT / MODEL.PIXEL_MEAN / PIXEL_STD)")


def _depth_of(stock: Mapping[str, Any], bottleneck: bool) -> Optional[int]:
    """The ResNet depth whose blocks per stage a file in stock Detectron2 names has."""
    blocks = [1 + max((int(m.group(1)) for k in stock
                       for m in [re.match(rf"res{s}\.(\d+)\.", k)] if m), default=-1)
              for s in (2, 3, 4, 5)]
    return next((d for d, b in STAGE_BLOCKS.items()
                 if b == blocks and (d >= 50) == bottleneck), None)


def _filled_in(model_state: Mapping[str, Any], handed: set, reported: Sequence[str]) -> List[str]:
    """Model keys the file did not give that fvcore does not report, because a module
    filled them in: Detectron2's FrozenBatchNorm2d sets ``running_mean``/``running_var`` to 0/1
    when a file lacks them (Caffe2 files fold the statistics into ``weight``/``bias``). That is
    right for a norm whose ``weight`` came from the file; for one whose every tensor is absent it
    counted a backbone as loaded that was random (a stock config with a --slimmable export)."""
    known = set(reported)
    out = []
    for k in model_state:
        if k in handed or k in known or _optional(k):
            continue
        prefix, _, field = k.rpartition(".")
        if field in ("running_mean", "running_var") and f"{prefix}.weight" in handed:
            continue
        out.append(k)
    return out


def _missing(incompatible) -> List[str]:
    """Model keys the file does not have (fvcore also lists the ones it had in another shape)."""
    reshaped = {k for k, _, _ in incompatible.incorrect_shapes}
    return [k for k in incompatible.missing_keys if k not in reshaped and not _optional(k)]


@dataclass
class _Load:
    """What the load in progress is: the file as the user named it, whether it may be
    unpickled fully, whether the model needs every weight from it, and for what."""
    path: str
    trusted: bool
    complete: bool
    purpose: str


class SafeDetectionCheckpointer(AtomicSaving, DetectionCheckpointer):
    """Detectron2's ``DetectionCheckpointer``, reading without running code and strict where a
    job needs every weight.

    - Every file (``.pkl``, ``.pth``, ``.pyth``; local or a Detectron2 URL) is read with
      :func:`slimdet.checkpoint.read_file`: tensors, numpy arrays and plain types only, so a
      malicious pickle fails before any of it runs. ``trusted_path`` (MODEL.WEIGHTS when
      MODEL.WEIGHTS_TRUSTED is set) is that one file the user vouches for: it is unpickled
      fully; a resume never is.
    - ``load(path)`` (every checkpointable: ``--resume``, inference) and ``load(...,
      complete=True)`` (``--eval-only``) need every weight of the model in the file, in the
      model's shape; otherwise :class:`~slimdet.checkpoint.CheckpointError` names the parts that
      are not. ``load(path, checkpointables=[])``, what ``DefaultTrainer`` does with MODEL.WEIGHTS
      before training, keeps what the file lacks (new heads) or has in another shape (another
      class count) at initialisation, as Detectron2 does.
    - Every load logs one summary line (what came from the file, what did not, what it had
      that the model does not use) instead of Detectron2's key lists.
    - Files are written atomically (a run killed while saving keeps the previous checkpoint and
      ``last_checkpoint``); ``fields`` are top-level fields every saved file holds (the
      trainer's ``slimdet`` field: the categories the detector's labels are).
    """

    def __init__(self, model, save_dir: str = "", *, trusted_path: str = "",
                 fields: Optional[Dict[str, Any]] = None, **checkpointables):
        super().__init__(model, save_dir, **checkpointables)
        self.fields = dict(fields or {})
        if save_dir and self.save_to_disk:
            remove_stale_temp_files(save_dir)
        self.trusted_path = trusted_path
        self._current: Optional[_Load] = None
        self.file_meta: Optional[Mapping[str, Any]] = None  # the last file's "slimdet" field

    def load(self, path: str, checkpointables: Optional[List[str]] = None, *,
             complete: Optional[bool] = None, purpose: str = "") -> Dict[str, Any]:
        """fvcore's ``load``; ``complete`` (default: when every checkpointable is loaded) needs
        every weight of the model in the file; ``purpose`` names the job in errors."""
        if complete is None:
            complete = checkpointables is None
        self.file_meta = None
        if not path:
            if complete:
                raise ConfigError("no checkpoint to load: set MODEL.WEIGHTS")
            return super().load(path, checkpointables)  # training from scratch
        local = path
        if not os.path.isfile(path):
            try:
                local = self.path_manager.get_local_path(path)  # fetches Detectron2 URLs
            except OSError as e:
                raise CheckpointError(f"cannot fetch checkpoint {path!r}: {e}") from None
        if os.path.isdir(local):
            raise CheckpointError(f"checkpoint {path!r} is a folder, not a file")
        if not os.path.isfile(local):
            raise CheckpointError(f"checkpoint file {path!r} does not exist")
        self._current = _Load(path, bool(self.trusted_path) and path == self.trusted_path,
                              complete, purpose or "a complete load (resume, inference)")
        try:
            return super().load(local, checkpointables)
        finally:
            self._current = None

    @property
    def _source(self) -> str:
        return self._current.path if self._current else "<checkpoint>"

    def _load_file(self, filename: str) -> Dict[str, Any]:
        trusted = self._current is not None and self._current.trusted
        return detectron2_checkpoint(read_file(filename, trusted), filename)

    def _load_model(self, checkpoint: Dict[str, Any]):
        # Names and shapes as in the file: Detectron2's name matching replaces the dict, and
        # fvcore drops tensors of other shapes from it.
        in_file = dict(checkpoint["model"])
        self.file_meta = checkpoint.get("slimdet")
        handed: set = set()

        def record_keys(module, state_dict, *_):
            # The model's own pre-hook runs before any submodule's _load_from_state_dict, so it
            # sees the keys the file gave, before a FrozenBatchNorm2d adds the ones it lacks.
            handed.update(state_dict)

        hook = self.model.register_load_state_dict_pre_hook(record_keys)
        try:
            incompatible = super()._load_model(checkpoint)
        finally:
            hook.remove()
        reported = incompatible.missing_keys + [k for k, _, _ in incompatible.incorrect_shapes]
        incompatible.missing_keys.extend(_filled_in(self.model.state_dict(), handed, reported))
        if self._current is not None and self._current.complete:
            self._require_every_weight(incompatible)
        elif self._current is not None:
            self._require_the_backbone(incompatible, in_file, self.file_meta)
        return incompatible

    def _require_the_backbone(self, incompatible, in_file: Mapping[str, Any],
                              meta: Optional[Mapping[str, Any]]) -> None:
        """Training from MODEL.WEIGHTS: the heads may be new, the backbone may not. A file that
        leaves any backbone tensor at initialisation (missing or of another shape: a converted
        width without its channel overrides, an R-50 file in an R-101 config) is refused;
        Detectron2 would warn and train a partly or wholly random backbone."""
        backbone = [k for k in self.model.state_dict()
                    if detector_part(k) == "backbone.bottom_up" and not _optional(k)]
        not_loaded = set(incompatible.missing_keys) | {k for k, _, _ in incompatible.incorrect_shapes}
        left = [k for k in backbone if k in not_loaded]
        if not left:
            return
        ours = self.model.state_dict()
        first = f"{left[0]!r} is not in the file"
        for k in left:  # the file's name: the model's, or without the detector's prefix
            name = next((n for n in (k, k[len("backbone.bottom_up."):]) if n in in_file), None)
            if name is not None:
                first = (f"{name!r} is {tuple(np.shape(in_file[name]))} in the file, "
                         f"{tuple(ours[k].shape)} in the model")
                break
        if len(left) == len(backbone):
            what = (f"gives the backbone no weight: all {len(backbone)} backbone.bottom_up "
                    "tensors are missing from it or of another shape")
        else:
            what = (f"gives the backbone {len(backbone) - len(left)} of its {len(backbone)} "
                    f"tensors: {len(left)} are missing from it or of another shape")
        raise CheckpointError(
            f"{self._source!r} {what} (first: {first}), so it would train from a "
            f"{'random' if len(left) == len(backbone) else 'partly random'} backbone; "
            f"{_backbone_hint(in_file, meta)}")

    def _require_every_weight(self, incompatible) -> None:
        path, purpose = self._source, self._current.purpose
        missing = _missing(incompatible)
        if missing:
            loaded = [k for k in self.model.state_dict() if k not in incompatible.missing_keys]
            backbone_only = loaded and all(detector_part(k) == "backbone.bottom_up" for k in loaded)
            hint = ("; it holds a backbone only (a tools/convert_to_d2.py output?): train a "
                    "detector from it first") if backbone_only else ""
            raise CheckpointError(
                f"{path!r} has no weights for {_parts(missing)} ({len(missing)} tensors, e.g. "
                f"{missing[0]!r}), which {purpose} needs{hint}")
        if incompatible.incorrect_shapes:
            k, theirs, ours = incompatible.incorrect_shapes[0]
            raise CheckpointError(
                f"{path!r} does not fit the detector for {purpose}: "
                f"{len(incompatible.incorrect_shapes)} shape mismatch(es) (first: {k!r} is "
                f"{tuple(theirs)} in the file, {tuple(ours)} in the model)")

    def _log_incompatible_keys(self, incompatible) -> None:
        # Real weights only: BN's batch counters are never "missing" (torch's BN fills them in
        # when a file lacks them), so counting them said a backbone loaded when none did.
        own = [k for k in self.model.state_dict() if not _optional(k)]
        reshaped = [k for k, _, _ in incompatible.incorrect_shapes]
        left_out = _missing(incompatible)
        loaded = [k for k in own if k not in incompatible.missing_keys and k not in reshaped]
        line = (f"loaded {len(loaded)} of {len(own)} tensors ({_parts(loaded) or 'none'}) from "
                f"{self._source}")
        if left_out:
            line += f"; not in the file, left at initialisation: {_parts(left_out)}"
        if reshaped:
            line += (f"; of another shape in the file, left at initialisation: "
                     f"{_parts(reshaped)}")
        if incompatible.unexpected_keys:
            line += f"; in the file, not used: {_parts(incompatible.unexpected_keys)}"
        (logger.warning if left_out or reshaped else logger.info)("%s", line)


class SlimDetectionCheckpointer(SafeDetectionCheckpointer):
    """:class:`SafeDetectionCheckpointer` for the slimmable detector: every weight of the
    slimmable backbone must be in the file (a converted pre-training checkpoint has only the
    backbone, which is enough to train from, not to evaluate); a backbone of another
    architecture, or a backbone key that is missing, unexpected or of another shape, raises
    :class:`slimdet.checkpoint.CheckpointError` naming the file and the keys.
    """

    def _load_model(self, checkpoint):
        path = self._source
        model_backbone = {k[len(SLIM_D2_PREFIX):]: v for k, v in self.model.state_dict().items()
                          if k.startswith(SLIM_D2_PREFIX)}
        if model_backbone and not checkpoint.get("matching_heuristics", False):
            found = {k[len("module."):] if k.startswith("module.") else k: v
                     for k, v in checkpoint["model"].items()}
            found = {k[len(SLIM_D2_PREFIX):]: torch.as_tensor(v) for k, v in found.items()
                     if k.startswith(SLIM_D2_PREFIX)}
            if not found:
                raise CheckpointError(
                    f"{path!r} has no slimmable backbone (no key starting with "
                    f"'{SLIM_D2_PREFIX}'); convert a pre-training checkpoint with "
                    f"tools/convert_to_d2.py --slimmable")
            purpose = "this slimmable detector"
            check_architecture(model_backbone, found, path, purpose,
                               "set MODEL.RESNETS.* / MODEL.WIDTHS to match the file")
            check_keys(model_backbone, found, repr(path), purpose, SLIM_D2_PREFIX)
        elif model_backbone:
            raise CheckpointError(
                f"{path!r} is a single-width (stock Detectron2) ResNet; the slimmable "
                "detector needs tools/convert_to_d2.py --slimmable")
        return super()._load_model(checkpoint)
