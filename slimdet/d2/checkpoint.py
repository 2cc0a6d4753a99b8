"""Finding the slimmable backbone in a pre-training checkpoint and exporting it to Detectron2.

Two exports (used by ``tools/convert_to_d2.py``):

- :func:`to_stock_d2_state` — one width as a **stock** Detectron2 ResNet (names ``stem.conv1``,
  ``res2.0.conv1.norm`` ...). Width ``w`` of a slimmable ResNet-50 is exactly Detectron2's
  ResNet-50 with ``STEM_OUT_CHANNELS=64w``, ``RES2_OUT_CHANNELS=256w``, ``WIDTH_PER_GROUP=64w``
  and ``STRIDE_IN_1X1=False``, so the export is a slice plus a rename.
- :func:`to_slim_d2_state` — every width, for ``build_slim_resnet_fpn_backbone``.

:class:`SlimDetectionCheckpointer` loads such files into the slimmable detector and refuses a
backbone of another architecture with an error naming the first mismatched key, instead of
Detectron2's warning-and-continue (a silently random backbone would make every AP meaningless).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer

from ..modeling.backbone.slim_resnet import STAGE_BLOCKS, SlimResNet, extract_subnet


# Where SSL methods keep the student's backbone, most specific first. The last ones are the
# reference implementation's layouts (SPEC §8) and a bare backbone state dict.
KNOWN_PREFIXES = (
    "backbone.", "encoder_q.backbone.", "encoder.backbone.", "student.backbone.",
    "module.encoder_q.backbone.", "module.backbone.", "model.backbone.",
    "module.encoder_q.", "module.base_encoder.", "encoder_q.", "base_encoder.", "module.", "",
)
SLIM_D2_PREFIX = "backbone.bottom_up.resnet."


class CheckpointMismatchError(ValueError):
    """A checkpoint whose backbone does not fit the network it is loaded into."""


@dataclass
class FoundBackbone:
    """A slimmable ResNet state dict (slimdet names) found inside a checkpoint."""
    state: Dict[str, torch.Tensor]
    prefix: str                      # where it was found, e.g. "encoder_q.backbone."
    layout: str                      # "slimdet" or "reference" (features.N / shortcut)
    dropped: List[str] = field(default_factory=list)  # checkpoint keys not used


def _state_dict_of(ckpt: Mapping) -> Dict[str, torch.Tensor]:
    for key in ("model", "state_dict"):
        if isinstance(ckpt.get(key), Mapping):
            return dict(ckpt[key])
    if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return dict(ckpt)
    raise CheckpointMismatchError(
        f"no state dict in checkpoint: expected a 'model' or 'state_dict' entry, found keys "
        f"{sorted(ckpt)[:10]}")


def _reference_to_slimdet(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename a reference backbone (``features.N``, ``shortcut.{0,1}``) to ``layerS.B``, with
    the depth read off the blocks (``slimdet.checkpoint.reference`` does the renaming)."""
    from ..checkpoint.reference import CheckpointFormatError, reference_depth, reference_to_slimdet

    try:
        renamed = reference_to_slimdet(state, reference_depth(state), "reference checkpoint")
    except CheckpointFormatError as e:
        raise CheckpointMismatchError(str(e)) from e
    # Backbone-relative keys come back under ``backbone.`` (the layout of a probe file).
    return {k[len("backbone."):]: v for k, v in renamed.items()}


_BACKBONE_KEY = re.compile(r"^(conv1\.|bn1\.|layer[1-4]\.|features\.\d+\.)")


def find_backbone(ckpt: Mapping, prefixes: Sequence[str] = KNOWN_PREFIXES) -> FoundBackbone:
    """The slimmable ResNet inside ``ckpt`` (the first of ``prefixes`` that holds one)."""
    state = _state_dict_of(ckpt)
    for prefix in prefixes:
        if f"{prefix}conv1.weight" not in state:
            continue
        if f"{prefix}layer1.0.conv1.weight" in state:
            layout = "slimdet"
        elif f"{prefix}features.0.conv1.weight" in state:
            layout = "reference"
        else:
            continue
        taken, dropped = {}, []
        for k, v in state.items():
            rest = k[len(prefix):] if k.startswith(prefix) else None
            if rest is not None and _BACKBONE_KEY.match(rest):
                taken[rest] = v
            else:
                dropped.append(k)
        if layout == "reference":
            taken = _reference_to_slimdet(taken)
        return FoundBackbone(taken, prefix, layout, sorted(dropped))
    sample = sorted(state)[:8]
    raise CheckpointMismatchError(
        "no slimmable ResNet found in checkpoint: looked for '<prefix>conv1.weight' with "
        f"'layer1.0.conv1.weight' or 'features.0.conv1.weight' under prefixes "
        f"{[p or '<none>' for p in prefixes]}; first keys are {sample}")


def infer_architecture(state: Mapping[str, torch.Tensor]) -> Dict:
    """Depth, widths, stem channels and stem type of a slimmable ResNet state dict.

    Widths are not stored in a state dict; they are the ratios of each width's BN size to the
    full width's, measured on the widest layer (the last block's output BN).
    """
    counts = []
    for stage in range(1, 5):
        n = len({int(m.group(1)) for k in state
                 if (m := re.match(rf"layer{stage}\.(\d+)\.", k))})
        counts.append(n)
    bottleneck = "layer1.0.conv3.weight" in state
    depths = [d for d, blocks in STAGE_BLOCKS.items() if blocks == counts and (d >= 50) == bottleneck]
    if not depths:
        raise CheckpointMismatchError(
            f"blocks per stage {counts} ({'bottleneck' if bottleneck else 'basic'} blocks) match "
            f"no ResNet depth of {sorted(STAGE_BLOCKS)}")
    last_bn = f"layer4.{counts[3] - 1}.bn{3 if bottleneck else 2}.bn"
    sizes = []
    i = 0
    while f"{last_bn}.{i}.weight" in state or f"{last_bn}.{i}.running_mean" in state:
        key = f"{last_bn}.{i}.weight"
        key = key if key in state else f"{last_bn}.{i}.running_mean"
        sizes.append(state[key].shape[0])
        i += 1
    if not sizes:
        raise CheckpointMismatchError(f"no switchable BN '{last_bn}.<i>' in the checkpoint")
    conv1 = state["conv1.weight"]
    return {
        "depth": depths[0],
        "widths": [round(s / sizes[0], 6) for s in sizes],
        "base_channels": conv1.shape[0],
        "in_channels": conv1.shape[1],
        "cifar_stem": conv1.shape[-1] == 3,
    }


def check_state_dict(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor],
                     what: str, prefix: str = "") -> None:
    """Raise :class:`CheckpointMismatchError` naming the first mismatched key(s).

    Every key of ``expected`` must be in ``found`` with the same shape and vice versa.
    """
    # BN's batch counter is optional: torch fills it in when an old checkpoint lacks it.
    missing = [k for k in expected if k not in found and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in found if k not in expected]
    shapes = [(k, tuple(found[k].shape), tuple(expected[k].shape)) for k in expected
              if k in found and tuple(found[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or shapes):
        return
    parts = []
    if shapes:
        k, got, want = shapes[0]
        parts.append(f"key '{prefix}{k}' has shape {got} in the checkpoint but {want} in the "
                     f"model ({len(shapes)} shape mismatches)")
    if missing:
        parts.append(f"key '{prefix}{missing[0]}' is missing from the checkpoint "
                     f"({len(missing)} missing)")
    if unexpected:
        parts.append(f"key '{prefix}{unexpected[0]}' in the checkpoint is not in the model "
                     f"({len(unexpected)} unexpected)")
    raise CheckpointMismatchError(f"{what}: " + "; ".join(parts))


def build_resnet_from_checkpoint(found: FoundBackbone,
                                 widths: Optional[Sequence[float]] = None) -> SlimResNet:
    """A :class:`SlimResNet` holding the checkpoint's weights (architecture inferred)."""
    arch = infer_architecture(found.state)
    if widths is not None:
        arch["widths"] = [float(w) for w in widths]
    model = SlimResNet(depth=arch["depth"], widths=arch["widths"],
                       base_channels=arch["base_channels"], in_channels=arch["in_channels"],
                       cifar_stem=arch["cifar_stem"], zero_init_residual=False)
    state = found.state
    check_state_dict(model.state_dict(), state, f"checkpoint backbone (prefix '{found.prefix}') does not "
                     f"fit a slimmable ResNet-{arch['depth']} with widths {arch['widths']}",
                     found.prefix)
    model.load_state_dict(state)
    return model.eval()


def _stock_name(key: str) -> Optional[str]:
    """slimdet (torchvision) name of a single-width network -> stock Detectron2 ResNet name."""
    if key.endswith("num_batches_tracked"):
        return None  # a pre-training counter; Detectron2's BN/FrozenBN do not need it
    key = key.replace(".bn.0.", ".")
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
    """``DetectionCheckpointer`` that insists the slimmable backbone fits exactly.

    Heads may be absent (a converted pre-training checkpoint has only the backbone); a backbone
    key that is missing, unexpected or of another shape raises :class:`CheckpointMismatchError`.
    """

    def _load_model(self, checkpoint):
        model_state = self.model.state_dict()
        model_backbone = {k: v for k, v in model_state.items() if k.startswith(SLIM_D2_PREFIX)}
        if model_backbone and not checkpoint.get("matching_heuristics", False):
            found = {k[len("module."):] if k.startswith("module.") else k: v
                     for k, v in checkpoint["model"].items()}
            found = {k: v for k, v in found.items() if k.startswith(SLIM_D2_PREFIX)}
            if not found:
                raise CheckpointMismatchError(
                    f"the checkpoint has no slimmable backbone (no key starting with "
                    f"'{SLIM_D2_PREFIX}'); convert a pre-training checkpoint with "
                    f"tools/convert_to_d2.py --slimmable")
            check_state_dict(model_backbone, found,
                             "checkpoint does not fit this slimmable backbone")
        elif model_backbone:
            raise CheckpointMismatchError(
                "this checkpoint is a single-width (stock Detectron2) ResNet; the slimmable "
                "detector needs tools/convert_to_d2.py --slimmable")
        return super()._load_model(checkpoint)
