"""Detectron2's names for a slimmable backbone, and the slimmable detector's checkpointer.

Two exports (used by ``tools/convert_to_d2.py``):

- :func:`to_stock_d2_state` — one width as a **stock** Detectron2 ResNet (names ``stem.conv1``,
  ``res2.0.conv1.norm`` ...). Width ``w`` of a slimmable ResNet-50 is exactly Detectron2's
  ResNet-50 with ``STEM_OUT_CHANNELS=64w``, ``RES2_OUT_CHANNELS=256w``, ``WIDTH_PER_GROUP=64w``
  and ``STRIDE_IN_1X1=False``, so the export is a slice plus a rename.
- :func:`to_slim_d2_state` — every width, for ``build_slim_resnet_fpn_backbone``.

:class:`SlimDetectionCheckpointer` reads files without running code and refuses a backbone of
another architecture, naming it, instead of Detectron2's warning-and-continue (a silently
random backbone would make every AP meaningless). Reading, layouts and key checks are
:mod:`slimdet.checkpoint`'s; only Detectron2's names live here.
"""
from __future__ import annotations

import re
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer

from ..checkpoint import (CheckpointError, check_architecture, check_keys, read_file,
                          single_width_name)
from ..modeling.backbone.slim_resnet import SlimResNet, extract_subnet

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
    if resnet.depth < 50 and width != 1.0:
        raise ValueError(
            f"stock Detectron2 ResNet-{resnet.depth} requires RES2_OUT_CHANNELS=64, so only width "
            f"1.0 can be exported to it (asked for {width}); use --slimmable instead")
    plain = extract_subnet(resnet, width)
    out, dropped = {}, []
    for k, v in plain.state_dict().items():
        name = _stock_name(k)
        if name is None:
            dropped.append(k)
        else:
            out[name] = v.detach().cpu().numpy()
    return out, dropped


def to_slim_d2_state(resnet: SlimResNet) -> Dict[str, np.ndarray]:
    """Every width, named as ``build_slim_resnet_fpn_backbone``'s parameters in a detector."""
    return {SLIM_D2_PREFIX + k: v.detach().cpu().numpy() for k, v in resnet.state_dict().items()}


def stock_d2_overrides(resnet: SlimResNet, width: float) -> List[str]:
    """``KEY VALUE`` overrides that make stock ``mask_rcnn_R_*_FPN`` fit a converted width.

    Pre-training used torchvision's RGB normalisation, hence the input format and pixel stats.
    """
    stem = int(resnet.conv1.out_channels * width)
    res2 = int(resnet.stage_channels[0] * width)
    return ["MODEL.RESNETS.DEPTH", str(resnet.depth),
            "MODEL.RESNETS.STEM_OUT_CHANNELS", str(stem),
            "MODEL.RESNETS.RES2_OUT_CHANNELS", str(res2),
            "MODEL.RESNETS.WIDTH_PER_GROUP", str(stem),
            "MODEL.RESNETS.STRIDE_IN_1X1", "False",
            "INPUT.FORMAT", "RGB",
            "MODEL.PIXEL_MEAN", "[123.675,116.280,103.530]",
            "MODEL.PIXEL_STD", "[58.395,57.120,57.375]"]


class SlimDetectionCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` that reads files without running code and insists that the
    slimmable backbone fits exactly.

    Heads may be absent (a converted pre-training checkpoint has only the backbone); a backbone
    of another architecture, or a key that is missing, unexpected or of another shape, raises
    :class:`slimdet.checkpoint.CheckpointError` naming the file and the keys.
    """

    def load(self, path, *args, **kwargs):
        if path and not self.path_manager.exists(path):
            raise CheckpointError(f"checkpoint file {path!r} does not exist")
        self._path = path
        return super().load(path, *args, **kwargs)

    def _load_file(self, filename):
        # .pkl (Detectron2 model files are pickles) and .pth alike go through the safe reader.
        data = read_file(filename, opt_in="load it with Detectron2's own DetectionCheckpointer")
        if filename.endswith(".pkl") and not ("model" in data and "__author__" in data):
            raise CheckpointError(f"{filename!r} is not a Detectron2 model file (a dict with "
                                  "'model' and '__author__'); convert pre-training checkpoints "
                                  "with tools/convert_to_d2.py")
        return data if "model" in data else {"model": data}

    def _load_model(self, checkpoint):
        path = getattr(self, "_path", "<checkpoint>")
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
                               "set MODEL.RESNETS.* / MODEL.SLIM.WIDTHS to match the file")
            check_keys(model_backbone, found, repr(path), purpose, SLIM_D2_PREFIX)
        elif model_backbone:
            raise CheckpointError(
                f"{path!r} is a single-width (stock Detectron2) ResNet; the slimmable "
                "detector needs tools/convert_to_d2.py --slimmable")
        return super()._load_model(checkpoint)
