"""Checkpoint files in: read safely, recognise the layout, rename to slimdet's keys, infer the
network, check against a model. Every reader of weights in slimdet goes through this module
(the trainer's checkpointer, the probe, export, BN recalibration, the Detectron2 converter and
checkpointer); ``docs/checkpoints.md`` describes the layouts and rules for users.

Reading never runs code from the file: PyTorch files are loaded with ``weights_only=True`` and
an allowlist of the plain types that reference and Detectron2 files hold (numpy arrays, dtypes
and scalars, ``argparse.Namespace``), and pickles (Detectron2 ``.pkl``) with an unpickler that
knows the same allowlist and nothing else. Anything else needs an explicit opt-in for a trusted
file (``MODEL.WEIGHTS_TRUSTED`` / ``--trust-checkpoint``); there is no silent fallback.

Layouts (``docs/method.md`` §8 for the reference's):

========================  =====================================================================
``slimdet``               ``{"model": {backbone.*, projector.*, ...}, "trainer": ..., ...}``
``slimdet backbone``      a bare SlimResNet state dict (``conv1.weight``, ``bn1.bn.0.weight``)
``reference MoCo v2``     ``module.encoder_q.*`` / ``module.encoder_k.*`` / ``module.queue``
``reference MoCo v3``     ``module.base_encoder.*`` / ``module.momentum_encoder.*`` /
                          ``module.predictor.*`` (``base_encoder.fc`` is the projector)
``reference linear probe`` backbone under ``module.`` + ``module.fc.linears.{i}.*``
``reference supervised``  backbone under ``module.`` + ``module.fc.{weight,bias}``
``reference backbone``    backbone under ``module.`` and nothing else
``Detectron2``            ``{"model": ..., "__author__": ...}`` (``.pkl``) or a D2 run's ``.pth``
========================  =====================================================================

Everything is renamed to the keys of slimdet's methods: the backbone under ``backbone.``
(torchvision block names ``layer{s}.{j}``, ``downsample``), heads as the methods name them.
"""
from __future__ import annotations

import argparse
import logging
import math
import pickle
import re
import zipfile
from collections import Counter, OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from iopath.common.file_io import g_pathmgr
from torch import nn

from ..modeling.backbone import STAGE_BLOCKS, SlimResNet
from ..modeling.methods.base import TrainingMethod, backbone_of

logger = logging.getLogger("slimdet")

# How a user opts in to full unpickling for a file they trust (named in the error message).
TRUST_HINT = "set MODEL.WEIGHTS_TRUSTED True"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, is of an unknown layout, or does not fit the model.
    The message names the file and the first offending keys, with counts; the tools print it as
    one line (a user error, ``slimdet.engine.defaults.user_errors``)."""


# ----------------------------------------------------------------------------------- reading
def _numpy_globals() -> List[Any]:
    """numpy's pickling entry points, under numpy 2's names and numpy 1's (``numpy.core``),
    and the dtype classes whose instances the pickles rebuild."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    dtype_classes = {type(np.dtype(c)) for c in "?bBhHiIlLqQefdgFDG"}
    return ([multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype,
             (multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
             (multiarray.scalar, "numpy.core.multiarray.scalar"),
             (multiarray._reconstruct, "numpy._core.multiarray._reconstruct"),
             (multiarray.scalar, "numpy._core.multiarray.scalar")]
            + sorted(dtype_classes, key=lambda c: c.__name__))


def safe_globals() -> List[Any]:
    """What a checkpoint may reference besides tensors (``torch.serialization.safe_globals``
    format): numpy arrays / dtypes / scalars, ``argparse.Namespace`` (saved arguments)."""
    return _numpy_globals() + [argparse.Namespace]


def _global_names() -> Dict[str, Any]:
    """"module.name" -> object for the pickle reader: :func:`safe_globals` plus the plain
    builtins torch's weights-only unpickler allows by default (protocol-2 pickles encode bytes
    with ``_codecs.encode``)."""
    import _codecs

    names = {}
    for entry in safe_globals() + [OrderedDict, Counter, (_codecs.encode, "_codecs.encode"),
                                   bytearray, complex, set]:
        obj, name = entry if isinstance(entry, tuple) else (entry, f"{entry.__module__}.{entry.__qualname__}")
        names[name] = obj
    return names


class _ForbiddenGlobal(pickle.UnpicklingError):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


class _AllowlistUnpickler(pickle.Unpickler):
    """A pickle reader that builds nothing but the allowlisted plain types."""

    _allowed = None

    def find_class(self, module: str, name: str):
        allowed = type(self)._allowed
        if allowed is None:
            allowed = type(self)._allowed = _global_names()
        full = f"{module}.{name}"
        if full not in allowed:
            raise _ForbiddenGlobal(full)
        return allowed[full]


# How torch's weights-only unpickler names what it refused (its wording varies by version).
_UNSUPPORTED_GLOBAL = re.compile(r"GLOBAL\s+([A-Za-z_][\w.]*)|(?:build|got) <class '([^']+)'>")


def _refused(path: str, name: str, opt_in: str) -> CheckpointError:
    return CheckpointError(
        f"{path!r} needs {name} to be unpickled, which a safe (weights-only) load does not "
        f"allow; if you trust this file, {opt_in}")


def read_file(path: str, trusted: bool = False, opt_in: str = TRUST_HINT) -> Dict[str, Any]:
    """The dict stored in ``path`` (a PyTorch file or a pickle), read without running code.

    ``trusted=True`` unpickles fully (only for files the user vouches for). Missing, empty,
    text, truncated or foreign files and disallowed globals raise :class:`CheckpointError`.
    """
    if not g_pathmgr.exists(path):
        raise CheckpointError(f"checkpoint file {path!r} does not exist")
    if g_pathmgr.isdir(path):
        raise CheckpointError(f"checkpoint {path!r} is a folder, not a file")
    with g_pathmgr.open(path, "rb") as f:
        head = f.read(64)
        f.seek(0)
        if not head:
            raise CheckpointError(f"checkpoint file {path!r} is empty")
        try:
            if head.startswith(b"PK\x03\x04"):  # torch.save's zip format
                data = _torch_load(f, trusted)
            elif head[0] == 0x80:  # a pickle: plain (Detectron2 .pkl) or legacy torch.save
                data = _read_pickle(f, trusted)
            else:
                raise CheckpointError(f"{path!r} is not a PyTorch or Detectron2 checkpoint "
                                      f"({_describe_head(head)})")
        except CheckpointError:
            raise
        except _ForbiddenGlobal as e:
            raise _refused(path, e.name, opt_in) from None
        except pickle.UnpicklingError as e:
            wanted = _wanted_globals(f) if head.startswith(b"PK\x03\x04") else []
            m = _UNSUPPORTED_GLOBAL.search(str(e))
            if wanted or m:
                raise _refused(path, ", ".join(wanted) or m.group(1) or m.group(2), opt_in) from None
            raise CheckpointError(f"cannot read checkpoint {path!r}: it is truncated or corrupt "
                                  f"({_first_line(e)})") from None
        except (EOFError, RuntimeError, zipfile.BadZipFile, ValueError, OSError) as e:
            raise CheckpointError(f"cannot read checkpoint {path!r}: it is truncated or corrupt "
                                  f"({type(e).__name__}: {_first_line(e)})") from None
    if not isinstance(data, Mapping):
        raise CheckpointError(f"checkpoint file {path!r} holds a {type(data).__name__}, not a dict")
    return dict(data)


def _torch_load(f, trusted: bool):
    if trusted:
        return torch.load(f, map_location="cpu", weights_only=False)
    with torch.serialization.safe_globals(safe_globals()):
        return torch.load(f, map_location="cpu", weights_only=True)


def _wanted_globals(f) -> List[str]:
    """The globals of a torch.save file that the allowlist does not cover (torch lists them
    without unpickling anything)."""
    try:
        f.seek(0)
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(f)
    except Exception:  # a damaged archive: the caller falls back to torch's message
        return []
    allowed = set(_global_names())
    return [name for name in unsafe if name not in allowed]


def _read_pickle(f, trusted: bool):
    if trusted:
        first = pickle.load(f, encoding="latin1")
    else:
        first = _AllowlistUnpickler(f, encoding="latin1").load()
    if isinstance(first, int) and first == torch.serialization.MAGIC_NUMBER:
        f.seek(0)  # torch.save(_use_new_zipfile_serialization=False): torch reads it safely
        return _torch_load(f, trusted)
    return first


def _describe_head(head: bytes) -> str:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"it starts with bytes {head[:8]!r}"
    return f"it is a text file starting with {text.splitlines()[0][:40]!r}" if text.strip() \
        else "it holds only white space"


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0][:200] if lines else type(e).__name__


# ----------------------------------------------------------------------------------- layouts
SLIMDET = "slimdet"
SLIMDET_BACKBONE = "slimdet backbone"
REF_MOCOV2 = "reference MoCo v2"
REF_MOCOV3 = "reference MoCo v3"
REF_PROBE = "reference linear probe"
REF_SUPERVISED = "reference supervised"
REF_BACKBONE = "reference backbone"
DETECTRON2 = "Detectron2"

# Reference key (after DDP's "module.") -> our key, per layout: (reference prefix, our prefix,
# whether what follows is backbone keys in the reference's block names). A prefix without a
# trailing dot is one exact key. The first match wins, so heads come before their encoder.
_REFERENCE_KEYS: Dict[str, List[Tuple[str, str, bool]]] = {
    REF_MOCOV2: [("encoder_q.fc.", "projector.", False), ("encoder_q.", "backbone.", True),
                 ("encoder_k.fc.", "projector_k.", False), ("encoder_k.", "backbone_k.", True),
                 ("queue", "queue", False), ("queue_ptr", "queue_ptr", False)],
    REF_MOCOV3: [("base_encoder.fc.", "projector.", False), ("base_encoder.", "backbone.", True),
                 ("momentum_encoder.fc.", "projector_k.", False),
                 ("momentum_encoder.", "backbone_k.", True), ("predictor.", "predictor.", False)],
    REF_PROBE: [("fc.linears.", "classifier.linears.", False), ("", "backbone.", True)],
    REF_SUPERVISED: [("fc.", "fc.", False), ("", "backbone.", True)],
    REF_BACKBONE: [("", "backbone.", True)],
}
_REFERENCE_BACKBONE_KEY = re.compile(r"^(conv1\.|bn1\.|features\.\d+\.)")
_D2_KEY = re.compile(r"^(backbone\.bottom_up\.|stem\.|res[2-5]\.|roi_heads\.|proposal_generator\.)")


@dataclass
class Checkpoint:
    """A checkpoint file read and renamed to slimdet's keys.

    ``state``: tensors in slimdet names; ``unused``: the file's keys that name nothing slimdet
    has (kept for the load summary); ``extra``: the file's other top-level fields (trainer
    state, iteration ... of a slimdet file).
    """
    path: str
    layout: str
    state: Dict[str, torch.Tensor]
    unused: List[str] = field(default_factory=list)
    extra: Dict[str, Any] = field(default_factory=dict)

    def backbone_state(self, prefix: str = "backbone.") -> Dict[str, torch.Tensor]:
        return {k[len(prefix):]: v for k, v in self.state.items() if k.startswith(prefix)}


def _strip_ddp(state: Mapping[str, Any]) -> Dict[str, Any]:
    return {(k[len("module."):] if isinstance(k, str) and k.startswith("module.") else k): v
            for k, v in state.items()}


def _has_prefix(keys, prefix: str) -> bool:
    return any(isinstance(k, str) and k.startswith(prefix) for k in keys)


def detect_layout(data: Mapping[str, Any], path: str = "<checkpoint>") -> str:
    """Which layout ``data`` (a file's top-level dict) is in; :class:`CheckpointError` if none."""
    model = data.get("model")
    if isinstance(model, Mapping):
        if "__author__" in data or any(_D2_KEY.match(str(k)) for k in model):
            return DETECTRON2
        if _has_prefix(model, "backbone."):
            return SLIMDET
        raise CheckpointError(f"{path!r}: its 'model' field holds no slimmable backbone (no "
                              f"'backbone.*' key); first keys: {_first(sorted(map(str, model)))}")
    state = data.get("state_dict", data)
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(f"{path!r}: 'state_dict' is empty or not a dict")
    state = _strip_ddp(state)
    keys = [k for k in state if isinstance(k, str)]
    if _has_prefix(keys, "encoder_q."):
        return REF_MOCOV2
    if _has_prefix(keys, "base_encoder."):
        return REF_MOCOV3
    if any(k.startswith("features.") for k in keys):
        if _has_prefix(keys, "fc.linears."):
            return REF_PROBE
        return REF_SUPERVISED if "fc.weight" in state else REF_BACKBONE
    if "conv1.weight" in state and any(k.startswith("layer1.") for k in keys):
        if any(".bn.0." in k for k in keys):
            return SLIMDET_BACKBONE
        fc = ", 'fc.weight'" if "fc.weight" in state else ""
        raise CheckpointError(
            f"{path!r} is a torchvision-style single-width ResNet state dict ('conv1.weight', "
            f"'layer1.0...'{fc}, no switchable BN 'bn1.bn.<i>' keys): slimdet loads slimmable checkpoints (a slimdet run's "
            f"model_*.pth or a reference-implementation file)")
    fields = sorted(map(str, data))
    raise CheckpointError(
        f"{path!r} is neither a slimdet checkpoint (no 'model' field with 'backbone.*' keys) "
        f"nor a reference-implementation one (no 'module.encoder_q.' / 'module.base_encoder.' / "
        f"'module.features.' keys); top-level fields: {_first(fields)}")


def _first(items: Sequence[str], n: int = 6) -> str:
    shown = ", ".join(repr(s) for s in items[:n])
    return shown + (f" ... ({len(items)} in all)" if len(items) > n else "")


def _reference_block_names(state: Mapping[str, Any], backbone_prefix: str, path: str) -> List[str]:
    """Our names ``layer{s}.{j}`` of the reference's flat ``features.{k}`` blocks, in order; the
    depth is read off the blocks (their number, and whether they are bottlenecks)."""
    pattern = re.compile(re.escape(backbone_prefix) + r"features\.(\d+)\.(conv3\.)?")
    blocks, bottleneck = set(), False
    for k in state:
        m = pattern.match(k)
        if m:
            blocks.add(int(m.group(1)))
            bottleneck |= m.group(2) is not None
    if not blocks:
        raise CheckpointError(f"{path!r}: no slimmable backbone blocks "
                              f"('module.{backbone_prefix}features.<k>.*') in the file")
    depth = depth_of_blocks(len(blocks), bottleneck, path,
                            f"features.0..{max(blocks, default=-1)}")
    return [f"layer{s + 1}.{j}" for s, n in enumerate(STAGE_BLOCKS[depth]) for j in range(n)]


def depth_of_blocks(blocks: Union[int, Sequence[int]], bottleneck: bool, path: str,
                    where: str = "") -> int:
    """The ResNet depth with ``blocks`` residual blocks (a total, or a count per stage) of the
    given kind. ResNet-34 and -50 both have 16 blocks; only bottlenecks tell them apart."""
    for depth, per_stage in STAGE_BLOCKS.items():
        fits = per_stage == list(blocks) if isinstance(blocks, Sequence) else sum(per_stage) == blocks
        if fits and (depth >= 50) == bottleneck:
            return depth
    raise CheckpointError(
        f"{path!r}: {blocks} {'bottleneck' if bottleneck else 'basic'} blocks"
        f"{f' ({where})' if where else ''} match no ResNet depth of {sorted(STAGE_BLOCKS)}")


def rename_to_slimdet(data: Mapping[str, Any], layout: str,
                      path: str = "<checkpoint>") -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """(state in slimdet names, the file's keys that map to nothing) for ``data`` in ``layout``."""
    if layout == SLIMDET:
        return _as_tensors(data["model"], path), []
    if layout == SLIMDET_BACKBONE:
        return {"backbone." + k: v for k, v in _as_tensors(data, path).items()}, []
    if layout not in _REFERENCE_KEYS:
        raise CheckpointError(f"{path!r} is a {layout} checkpoint; slimdet's methods cannot load "
                              "it (Detectron2 files are for tools/train_det.py)")
    state = _as_tensors(_strip_ddp(data.get("state_dict", data)), path)
    rules = _REFERENCE_KEYS[layout]
    backbone_prefix = next(ref for ref, _, is_backbone in rules if is_backbone)
    blocks = _reference_block_names(state, backbone_prefix, path)
    out, unused = {}, []
    for key, value in state.items():
        for ref, ours, is_backbone in rules:
            exact = not ref.endswith(".") and ref
            if (key == ref) if exact else key.startswith(ref):
                rest = key[len(ref):]
                if not is_backbone:
                    out[ours + rest] = value
                elif _REFERENCE_BACKBONE_KEY.match(rest):
                    out[ours + _reference_backbone_key(rest, blocks, path, key)] = value
                else:
                    continue  # not a backbone key: a later rule or "unused"
                break
        else:
            unused.append(key)
    return out, unused


def _reference_backbone_key(rest: str, blocks: Sequence[str], path: str, key: str) -> str:
    """``features.{k}.<tail>`` -> ``layer{s}.{j}.<tail>`` (``shortcut`` -> ``downsample``)."""
    m = re.match(r"features\.(\d+)\.(.*)$", rest)
    if not m:
        return rest  # conv1.*, bn1.bn.{i}.*
    k = int(m.group(1))
    if k >= len(blocks):  # blocks were counted from the same keys: only a gap can get here
        raise CheckpointError(f"{path!r}: key {key!r} names block features.{k} but the file has "
                              f"{len(blocks)} blocks")
    return f"{blocks[k]}." + re.sub(r"^shortcut\.", "downsample.", m.group(2))


def _as_tensors(state: Mapping[str, Any], path: str) -> Dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        if isinstance(v, np.ndarray):
            v = torch.from_numpy(v)
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{path!r}: entry {k!r} of the state dict is a "
                                  f"{type(v).__name__}, not a tensor")
        out[str(k)] = v
    return out


def single_width_name(key: str) -> str:
    """The torchvision name of a key of a single-width SlimResNet (``widths=[1.0]``, so every
    switchable BN is ``<name>.bn.0``): the BN level is dropped (``bn1.bn.0.weight`` ->
    ``bn1.weight``)."""
    return key.replace(".bn.0.", ".")


# Top-level field of a classifier's checkpoint (linear probe, supervised): the class names of
# its training set, in label order. Its outputs are indices into this list, so an evaluation
# on a set whose class folders differ would score shifted labels (checked on load).
CLASSES_FIELD = "classes"


def classes_of_checkpoint(ckpt: Checkpoint) -> Optional[List[str]]:
    """The class names a classifier in ``ckpt`` was trained on (``CLASSES_FIELD``), or None for
    a file without them (pre-training, reference implementation, older slimdet files)."""
    classes = ckpt.extra.get(CLASSES_FIELD)
    if classes is None:
        return None
    if not isinstance(classes, (list, tuple)) or not all(isinstance(c, str) for c in classes):
        raise CheckpointError(f"{ckpt.path!r}: its {CLASSES_FIELD!r} field is not a list of "
                              "class names")
    return list(classes)


def read_checkpoint(path: str, trusted: bool = False, opt_in: str = TRUST_HINT) -> Checkpoint:
    """Read ``path`` safely and rename it to slimdet's keys, whatever its layout."""
    data = read_file(path, trusted, opt_in)
    layout = detect_layout(data, path)
    state, unused = rename_to_slimdet(data, layout, path)
    extra = {k: v for k, v in data.items() if k not in ("model", "state_dict")} \
        if layout == SLIMDET else {}
    return Checkpoint(path, layout, state, unused, extra)


# ------------------------------------------------------------------------------ architecture
@dataclass(frozen=True)
class ResNetArchitecture:
    """What a slimmable ResNet state dict says about the network that made it."""
    depth: int
    widths: Tuple[float, ...]
    base_channels: int
    in_channels: int
    cifar_stem: bool
    # US-Nets' BN (MODEL.SLIM.BN shared): one affine weight and bias per layer for all widths.
    shared_bn: bool = False

    def __str__(self) -> str:
        return (f"slimmable ResNet-{self.depth} with widths {list(self.widths)}, "
                f"{self.base_channels} stem channels, {self.in_channels} input channel(s)"
                f"{', CIFAR stem' if self.cifar_stem else ''}"
                f"{', shared BN (MODEL.SLIM.BN shared)' if self.shared_bn else ''}")

    def build(self, widths: Optional[Sequence[float]] = None) -> SlimResNet:
        return SlimResNet(depth=self.depth, widths=list(widths or self.widths),
                          base_channels=self.base_channels, in_channels=self.in_channels,
                          cifar_stem=self.cifar_stem, zero_init_residual=False,
                          shared_bn=self.shared_bn)


def _simplest_width(sizes: Sequence[Tuple[int, int]]) -> Optional[float]:
    """The width ``w`` with the fewest decimals (the smallest of those) for which
    ``int(full * w) == size`` (``slimdet.layers.scaled``) holds for every ``(full, size)``, or
    None when no width of up to 6 decimals (``normalized_width``) fits them all.

    Each pair allows ``w`` in ``[size / full, (size + 1) / full)``; every candidate of the
    intersection is verified with the very arithmetic that sized the layers."""
    lo = max(size / full for full, size in sizes)
    hi = min((size + 1) / full for full, size in sizes)
    for decimals in range(1, 7):
        scale = 10 ** decimals
        first = math.ceil(lo * scale - 1e-6)
        for k in range(first, min(math.floor(hi * scale + 1e-6), first + 1000) + 1):
            w = round(k / scale, decimals)
            if 0 < w <= 1 and all(int(full * w) == size for full, size in sizes):
                return w
    return None


def infer_architecture(state: Mapping[str, torch.Tensor], path: str = "<checkpoint>") -> ResNetArchitecture:
    """Depth, widths, stem of a slimmable ResNet state dict in slimdet names (no prefix).

    Widths are not stored in a checkpoint: width ``i`` is the simplest multiplier (fewest
    decimals) that gives every switchable BN ``<name>.bn.<i>`` its stored size from the full
    width's ``<name>.bn.0`` (a single ratio would be rounded: 716 / 2048 = 0.349609 for 0.35).
    A file whose sizes fit no such multiplier gets the ratios of the widest layer, for the
    shape check to report.
    """
    if "conv1.weight" not in state:
        raise CheckpointError(f"{path!r}: no slimmable ResNet (no 'conv1.weight' in the backbone)")
    counts = [len({int(m.group(1)) for k in state if (m := re.match(rf"layer{s}\.(\d+)\.", k))})
              for s in range(1, 5)]
    bottleneck = "layer1.0.conv3.weight" in state
    depth = depth_of_blocks(counts, bottleneck, path, "blocks per stage")
    last_bn = f"layer4.{counts[3] - 1}.bn{3 if bottleneck else 2}.bn"
    sizes = []
    while f"{last_bn}.{len(sizes)}.running_mean" in state:
        sizes.append(state[f"{last_bn}.{len(sizes)}.running_mean"].shape[0])
    if not sizes:
        raise CheckpointError(f"{path!r}: no switchable BN '{last_bn}.<i>' in the backbone")
    # (full size, size at width i) of every switchable BN, per width index.
    per_width: Dict[int, List[Tuple[int, int]]] = {i: [] for i in range(1, len(sizes))}
    for key, value in state.items():
        m = re.fullmatch(r"(.*)\.bn\.(\d+)\.running_mean", key)
        full = state.get(f"{m.group(1)}.bn.0.running_mean") if m else None
        if full is not None and int(m.group(2)) in per_width:
            per_width[int(m.group(2))].append((full.shape[0], value.shape[0]))
    widths = [1.0]
    for i in range(1, len(sizes)):
        w = _simplest_width(per_width[i])
        widths.append(w if w is not None else round(sizes[i] / sizes[0], 6))
    conv1 = state["conv1.weight"]
    # Shared BN keeps the affine parameters beside the per-width statistics (bn1.weight), the
    # switchable one inside each width's BN (bn1.bn.0.weight).
    return ResNetArchitecture(depth, tuple(widths), conv1.shape[0], conv1.shape[1],
                              conv1.shape[-1] == 3, shared_bn="bn1.weight" in state)


# ----------------------------------------------------------------------------------- loading
ALL_PARTS = "all"
# What to change when a file's backbone is not the config's (the default hint).
CONFIG_FIX = ("set MODEL.BACKBONE.DEPTH / MODEL.WIDTHS / MODEL.BACKBONE.* / MODEL.SLIM.BN to "
              "match the file")


@dataclass
class LoadReport:
    """What a load did: ``loaded`` model keys, model keys ``left_out`` (not in the file: they
    keep their initialisation), file keys ``unused`` (parts the model does not have)."""
    path: str
    layout: str
    loaded: List[str]
    left_out: List[str]
    unused: List[str]
    classes: Optional[List[str]] = None  # the file's CLASSES_FIELD, when it has one

    def summary(self) -> str:
        """One line: what came from the file, what did not, what the file had in excess."""
        line = (f"loaded {len(self.loaded)} tensors ({count_parts(self.loaded)}) from {self.layout} "
                f"checkpoint {self.path}")
        # Optional state (a probe's calibration record ...) is no news when a file lacks it.
        left_out = [k for k in self.left_out if not _optional(k)]
        if left_out:
            line += f"; not in the file, left at initialisation: {count_parts(left_out)}"
        if self.unused:
            line += f"; in the file, not used: {count_parts(self.unused)}"
        return line


def _part(key: str) -> str:
    return key.split(".", 1)[0]


def count_parts(keys: Sequence[str], part_of: Callable[[str], str] = _part) -> str:
    """``"backbone (320), projector (4)"``: how many of ``keys`` each part holds, for messages
    (``part_of``: a key's part; by default its first component)."""
    counts: Dict[str, int] = {}
    for k in keys:
        counts[part_of(k)] = counts.get(part_of(k), 0) + 1
    return ", ".join(p if n == 1 else f"{p} ({n})" for p, n in counts.items())


def _optional(key: str) -> bool:
    # BN's batch counter: PyTorch fills it in when a checkpoint lacks it; nothing reads it.
    # The backbone's stale-statistics flag: files from before it (and reference files) hold
    # statistics trained per width, which is what its absence means (SlimResNet).
    # A probe's record of the calibration its classifiers were trained on: a file without it
    # (older, or a reference probe) keeps the config's, and no difference is reported.
    return key.endswith(("num_batches_tracked", "bn_statistics_stale", "trained_calibration"))


def load_state(module: nn.Module, ckpt: Checkpoint,
               required: Union[str, Sequence[str]] = ALL_PARTS,
               purpose: str = "this job", fix: str = CONFIG_FIX) -> LoadReport:
    """Copy ``ckpt`` into ``module`` after checking it.

    Parts are ``module``'s top-level sub-modules / buffers (``backbone``, ``projector``,
    ``classifier``, ``queue`` ...). Every part in ``required`` (``ALL_PARTS``: every part)
    must be in the file; every part the file has must match exactly (no missing, extra or
    differently shaped key: that is another architecture). Parts the file lacks keep their
    initialisation and parts the model lacks are ignored; both are in the returned report.
    Raises :class:`CheckpointError` naming the file, the first offending keys and counts
    (``fix``: what to change when the backbone's architecture differs).
    """
    own = module.state_dict()
    own_parts = list(dict.fromkeys(_part(k) for k in own))
    file_parts = {_part(k) for k in ckpt.state}
    need = own_parts if required == ALL_PARTS else list(required)
    backbone = backbone_of(module)
    if isinstance(backbone, SlimResNet) and "backbone" in file_parts:
        check_architecture(backbone.state_dict(), ckpt.backbone_state(), ckpt.path, purpose, fix)
    absent = [p for p in need if p in own_parts and p not in file_parts
              and not all(_optional(k) for k in own if _part(k) == p)]
    if absent:
        keys = [k for k in own if _part(k) in absent]
        raise CheckpointError(
            f"{ckpt.path!r} ({ckpt.layout}) has no weights for {', '.join(map(repr, absent))} "
            f"({len(keys)} tensors, e.g. {keys[0]!r}), which {purpose} needs")
    expected = {k: v for k, v in own.items() if _part(k) in file_parts}
    found = {k: v for k, v in ckpt.state.items() if _part(k) in own_parts}
    check_keys(expected, found, f"{ckpt.path!r} ({ckpt.layout})", purpose)
    loaded = [k for k in expected if k in found]
    module.load_state_dict({k: found[k] for k in loaded}, strict=False)
    left_out = [k for k in own if _part(k) not in file_parts]
    unused = [k for k in ckpt.state if _part(k) not in own_parts] + ckpt.unused
    return LoadReport(ckpt.path, ckpt.layout, loaded, left_out, unused)


def check_keys(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor],
               source: str, purpose: str = "this job", prefix: str = "") -> None:
    """:class:`CheckpointError` unless ``found`` has exactly ``expected``'s keys and shapes
    (BN batch counters may be absent). The message names ``source`` (the file), the first
    offending keys (with ``prefix``) and their counts."""
    missing = [k for k in expected if k not in found and not _optional(k)]
    unexpected = [k for k in found if k not in expected]
    shapes = [k for k in expected if k in found and tuple(found[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or shapes):
        return
    problems = []
    if missing:
        problems.append(f"{len(missing)} key(s) of the model missing from the file (first: "
                        f"{_first([prefix + k for k in missing], 3)})")
    if unexpected:
        problems.append(f"{len(unexpected)} key(s) in the file the model does not have (first: "
                        f"{_first([prefix + k for k in unexpected], 3)})")
    if shapes:
        k = shapes[0]
        problems.append(f"{len(shapes)} shape mismatch(es) (first: {prefix + k!r} is "
                        f"{tuple(found[k].shape)} in the file, {tuple(expected[k].shape)} in "
                        "the model)")
    raise CheckpointError(f"{source} does not fit the model for {purpose}: " + "; ".join(problems))


def check_architecture(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor],
                       path: str, purpose: str = "this job", fix: str = CONFIG_FIX) -> None:
    """One message when a backbone state dict (slimdet names, no prefix) is of another depth,
    widths or stem than the model's (before the per-key differences that would follow)."""
    theirs = infer_architecture(found, path)
    ours = infer_architecture(expected, "<model>")
    if theirs != ours:
        raise CheckpointError(f"{path!r} holds a {theirs}, but {purpose} uses a {ours}: {fix}")


def backbone_from_checkpoint(ckpt: Checkpoint, widths: Optional[Sequence[float]] = None,
                             purpose: str = "this job",
                             fix: str = "pass the file's own widths") -> SlimResNet:
    """A :class:`SlimResNet` of the architecture ``ckpt``'s backbone has (``widths`` may
    override the inferred widths) holding exactly its weights, in eval mode."""
    arch = infer_architecture(ckpt.backbone_state(), ckpt.path)
    holder = nn.Module()
    holder.backbone = arch.build(widths)
    backbone_only = Checkpoint(ckpt.path, ckpt.layout,
                               {k: v for k, v in ckpt.state.items() if k.startswith("backbone.")})
    load_state(holder, backbone_only, ALL_PARTS, purpose, fix)
    return holder.backbone.eval()


def load_weights(module: nn.Module, path: str, required: Union[str, Sequence[str]] = ALL_PARTS,
                 purpose: str = "this job", trusted: bool = False,
                 opt_in: str = TRUST_HINT) -> LoadReport:
    """Read ``path`` (any layout) and load it into ``module`` (:func:`load_state`) as the method
    ``module`` sees it (:meth:`TrainingMethod.state_from_file`; a resume loads its own run's file
    as it is); logs the one-line summary, as a warning when some of the model's weights did not
    come from the file."""
    ckpt = read_checkpoint(path, trusted, opt_in)
    if isinstance(module, TrainingMethod):  # the method's own view of the file (a probe's widths)
        try:
            ckpt = replace(ckpt, state=module.state_from_file(ckpt.state))
        except ValueError as e:
            raise CheckpointError(f"{ckpt.path!r} ({ckpt.layout}) does not fit the model for "
                                  f"{purpose}: {e}") from None
    report = replace(load_state(module, ckpt, required, purpose),
                     classes=classes_of_checkpoint(ckpt))
    news = any(not _optional(k) for k in report.left_out)
    (logger.warning if news else logger.info)("%s", report.summary())
    return report
