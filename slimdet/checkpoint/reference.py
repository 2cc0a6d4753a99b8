"""Import checkpoints of the reference SlimCLR implementation (SPEC §8) into slimdet modules.

The reference code names its ResNet blocks as one flat list ``features.{0..15}`` (ResNet-50)
with ``shortcut.{0,1}`` projections, and wraps everything in DDP's ``module.``; slimdet uses
torchvision's names (``layer{1..4}.{j}``, ``downsample.{0,1}``) so that one width exports to a
torchvision state dict by slicing. Switchable BNs (``.bn.{i}``) and switchable probe heads
(``linears.{i}``) share the index convention (0 = full width), so only prefixes and block names
change. Our own fvcore checkpoints (``{"model": state_dict, ...}``) are read by the same entry
point, so every consumer (linear probe, export, BN recalibration) accepts both.
"""
from __future__ import annotations

import logging
import re
from typing import Dict, List, Mapping, Sequence, Tuple

import torch
from iopath.common.file_io import g_pathmgr
from torch import nn

from ..modeling.backbone import STAGE_BLOCKS

logger = logging.getLogger("slimdet")

# Reference sub-module prefix -> (our backbone module, our head module).
_ENCODER_PREFIXES = {
    "encoder_q.": ("backbone.", "projector."),          # MoCo v2 query encoder
    "encoder_k.": ("backbone_k.", "projector_k."),      # MoCo v2 key encoder
    "base_encoder.": ("backbone.", "projector."),       # MoCo v3 base encoder
    "momentum_encoder.": ("backbone_k.", "projector_k."),  # MoCo v3 momentum encoder
}
# Reference top-level names that map one-to-one.
_PLAIN_PREFIXES = {"predictor.": "predictor.", "queue": "queue", "queue_ptr": "queue_ptr"}


class CheckpointFormatError(ValueError):
    """A checkpoint file that cannot be read or does not match the model; names file and key."""


def read_checkpoint_file(path: str) -> Dict:
    """The raw dict stored in ``path``; unreadable / truncated files give one clear error."""
    if not g_pathmgr.exists(path):
        raise CheckpointFormatError(f"checkpoint file {path!r} does not exist")
    try:
        with g_pathmgr.open(path, "rb") as f:
            try:
                data = torch.load(f, map_location="cpu", weights_only=True)
            except Exception:  # not tensors only: fvcore / reference files hold more
                logger.warning("%s holds more than tensors; loading it with full unpickling "
                               "(only do this for files you trust)", path)
                f.seek(0)
                data = torch.load(f, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises several types for truncated / foreign files
        raise CheckpointFormatError(
            f"cannot read checkpoint file {path!r} (truncated or not a PyTorch checkpoint): "
            f"{type(e).__name__}: {e}") from e
    if not isinstance(data, Mapping):
        raise CheckpointFormatError(f"checkpoint file {path!r} holds a {type(data).__name__}, "
                                    "not a dict")
    return dict(data)


def is_reference_layout(data: Mapping) -> bool:
    """True for reference files: ``state_dict`` field, or a bare state dict with ``module.`` keys."""
    if "state_dict" in data and "model" not in data:
        return True
    return any(isinstance(k, str) and k.startswith("module.") for k in data)


def block_names(depth: int) -> List[str]:
    """Our names of the reference's ``features.{k}`` blocks, in order: ``layer{s}.{j}``."""
    return [f"layer{s + 1}.{j}" for s, n in enumerate(STAGE_BLOCKS[depth]) for j in range(n)]


def _backbone_key(rest: str, blocks: Sequence[str], path: str, full_key: str) -> str:
    """Reference backbone key (without its encoder prefix) -> our backbone key."""
    m = re.match(r"features\.(\d+)\.(.*)$", rest)
    if not m:
        return rest  # conv1, bn1.bn.{i}, fc.* of a classifier backbone
    k, tail = int(m.group(1)), m.group(2)
    if k >= len(blocks):
        raise CheckpointFormatError(
            f"{path!r}: key {full_key!r} names block features.{k} but a ResNet-"
            f"{_depth_of(blocks)} has {len(blocks)} blocks (wrong MODEL.BACKBONE.DEPTH?)")
    tail = re.sub(r"^shortcut\.", "downsample.", tail)
    return f"{blocks[k]}.{tail}"


def reference_depth(state_dict: Mapping[str, torch.Tensor], path: str = "<state dict>") -> int:
    """ResNet depth of a reference state dict: its number of ``features.{k}`` blocks and whether
    they are bottlenecks (``conv3``). ResNet-34 and -50 both have 16 blocks."""
    blocks = {int(m.group(1)) for k in state_dict
              if (m := re.search(r"(?:^|\.)features\.(\d+)\.", k))}
    bottleneck = any(re.search(r"(?:^|\.)features\.\d+\.conv3\.", k) for k in state_dict)
    for depth, per_stage in STAGE_BLOCKS.items():
        if sum(per_stage) == len(blocks) and (depth >= 50) == bottleneck:
            return depth
    raise CheckpointFormatError(
        f"{path!r}: {len(blocks)} {'bottleneck' if bottleneck else 'basic'} blocks "
        f"(features.0..{max(blocks, default=-1)}) match no ResNet depth of {sorted(STAGE_BLOCKS)}")


def _depth_of(blocks: Sequence[str]) -> str:
    return next((str(d) for d, n in STAGE_BLOCKS.items() if sum(n) == len(blocks)), "?")


def reference_to_slimdet(state_dict: Mapping[str, torch.Tensor], depth: int,
                         path: str = "<state dict>") -> Dict[str, torch.Tensor]:
    """Rename a reference state dict (MoCo v2 / v3 / linear probe) to slimdet's names.

    MoCo encoders become ``backbone``/``projector`` (``_k`` for the momentum side); a linear-probe
    file (backbone directly under ``module.``) becomes ``backbone.*`` and ``classifier.linears.*``.
    """
    blocks = block_names(depth)
    out: Dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        rest = key[len("module."):] if key.startswith("module.") else key
        new = None
        for ref_prefix, (bb, head) in _ENCODER_PREFIXES.items():
            if rest.startswith(ref_prefix):
                inner = rest[len(ref_prefix):]
                new = head + inner[len("fc."):] if inner.startswith("fc.") else \
                    bb + _backbone_key(inner, blocks, path, key)
                break
        if new is None:
            for ref_prefix, ours in _PLAIN_PREFIXES.items():
                if rest == ref_prefix or (ref_prefix.endswith(".") and rest.startswith(ref_prefix)):
                    new = ours + rest[len(ref_prefix):]
                    break
        if new is None:  # linear-probe file: backbone under module., probe at module.fc.linears
            new = "classifier." + rest[len("fc."):] if rest.startswith("fc.linears.") else \
                "backbone." + _backbone_key(rest, blocks, path, key)
        out[new] = value
    return out


def checkpoint_state_dict(path: str, depth: int) -> Tuple[Dict[str, torch.Tensor], str]:
    """(state dict in slimdet names, "slimdet" | "reference") of any supported checkpoint file."""
    data = read_checkpoint_file(path)
    if "model" in data and isinstance(data["model"], Mapping):
        return dict(data["model"]), "slimdet"
    if is_reference_layout(data):
        sd = data.get("state_dict", data)
        if not isinstance(sd, Mapping) or not sd:
            raise CheckpointFormatError(f"{path!r}: 'state_dict' field is empty or not a dict")
        return reference_to_slimdet(sd, depth, path), "reference"
    raise CheckpointFormatError(
        f"{path!r} is neither a slimdet checkpoint (no 'model' field) nor a reference "
        f"checkpoint (no 'state_dict' field, no 'module.' keys); top-level fields: "
        f"{sorted(map(str, data))[:10]}")


def load_into(module: nn.Module, state: Mapping[str, torch.Tensor], path: str,
              required_prefixes: Sequence[str] = ("backbone.",)) -> Dict[str, List[str]]:
    """Copy ``state`` into ``module``, checking it against the module's own keys.

    Every key of ``module`` under ``required_prefixes`` must be in ``state``; keys of other
    sub-modules are loaded when the file has that sub-module at all (a probe file's classifier)
    and left alone otherwise (a pre-training file has none). Keys of ``state`` for sub-modules
    the module lacks (a projector when loading into a probe) are skipped. Any other difference
    (a missing or unexpected key inside a loaded sub-module, a wrong shape) raises
    :class:`CheckpointFormatError` naming the file and the first offending key.
    Returns ``{"loaded": [...], "skipped": [...]}``.
    """
    own = module.state_dict()
    file_tops = {k.split(".", 1)[0] for k in state}
    own_tops = {k.split(".", 1)[0] for k in own}
    required = [k for k in own if any(k.startswith(p) for p in required_prefixes)
                or k.split(".", 1)[0] in file_tops]
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointFormatError(
            f"{path!r} lacks {len(missing)} key(s) the model needs; first missing: {missing[0]!r}")
    unexpected = sorted(k for k in state if k.split(".", 1)[0] in own_tops and k not in own)
    if unexpected:
        raise CheckpointFormatError(
            f"{path!r} has {len(unexpected)} key(s) the model does not; first unexpected: "
            f"{unexpected[0]!r}")
    for k in required:
        if tuple(state[k].shape) != tuple(own[k].shape):
            raise CheckpointFormatError(
                f"{path!r}: key {k!r} has shape {tuple(state[k].shape)}, the model expects "
                f"{tuple(own[k].shape)} (other widths or depth?)")
    module.load_state_dict({k: state[k] for k in required}, strict=False)
    skipped = sorted(k for k in state if k.split(".", 1)[0] not in own_tops)
    if skipped:
        logger.info("%s: skipped %d key(s) of parts this model lacks (%s)", path, len(skipped),
                    ", ".join(sorted({k.split(".", 1)[0] for k in skipped})))
    return {"loaded": required, "skipped": skipped}


def load_checkpoint(module: nn.Module, path: str, depth: int,
                    required_prefixes: Sequence[str] = ("backbone.",)) -> Dict[str, List[str]]:
    """Load a slimdet or reference checkpoint file into ``module`` (see :func:`load_into`)."""
    state, kind = checkpoint_state_dict(path, depth)
    report = load_into(module, state, path, required_prefixes)
    logger.info("Loaded %d tensors from %s checkpoint %s", len(report["loaded"]), kind, path)
    return report
