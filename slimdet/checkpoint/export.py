"""One width of a slimmable model as a file another program can load.

A width of a slimmable ResNet is an ordinary ResNet with fewer channels: :func:`extract_subnet`
slices every tensor and copies every BN's parameters and statistics at that width (a trained
width, or one added and calibrated: ``slimdet.layers.any_width``). From there:

- ``torchvision``: :func:`export_width_state_dict` drops the switchable BN's ``.bn.0`` level
  (``single_width_name``), giving torchvision's names (``conv1``, ``bn1``,
  ``layer1.0.downsample.1``, ``fc``): width 1.0 of a slimmable ResNet-50 loads strictly into
  ``torchvision.models.resnet50()``.
- ``torchscript`` / ``onnx``: :func:`deployable_width` folds every BN into the convolution before
  it (``w' = w * gamma / sqrt(var + eps)``, ``b' = beta - mean * gamma / sqrt(var + eps)``) and
  keeps only plain ``torch.nn`` modules; :func:`write_torchscript` traces it
  (``torch.jit.load`` reads it without slimdet) and :func:`write_onnx` exports it with a dynamic
  batch dimension (``onnxruntime`` runs it). Both files take images of the config's crop size,
  normalised as in training, and return the pooled features (self-supervised models) or the
  class logits (probe, supervised).

Each TorchScript / ONNX file carries how to feed it and what it returns, as one JSON record
(:func:`export_metadata`; :func:`read_export_metadata` reads it back): in TorchScript the extra
file ``slimdet.json`` (``torch.jit.load(path, _extra_files={"slimdet.json": ""})``), in ONNX the
model's ``metadata_props`` key ``slimdet`` (onnxruntime:
``session.get_modelmeta().custom_metadata_map["slimdet"]``)::

    {"slimdet_export": 1,                  # version of this record
     "width": 0.6,
     "network": {"method": "MoCoV2", "backbone": "SlimResNet", "depth": 18,
                 "base_channels": 16, "cifar_stem": true},   # the config's, at width 1.0
     "weights": "output/demo_slimclr_mocov2/model_final.pth",  # as given to the tool
     "input": {"layout": "NCHW", "dtype": "float32", "channels": 1,
               "channel_order": "grey",    # or "RGB": as the data sets decode images
               "resize_short_side": 36, "resize_interpolation": "bilinear",
               "resize_antialias": true, "crop": "centre", "crop_size": 32,
               "pixel_divisor": 255.0, "mean": [0.286], "std": [0.353],
               "normalize": "(pixel / 255 - mean[c]) / std[c]"},
     "output": {"kind": "features", "dim": 76}}

``input`` is the evaluation view (``slimdet.data.transforms.eval_input_record``). ``output`` of
a classifier is ``{"kind": "logits", "num_classes": N, "classifier": "trained", "classes":
[...]}`` (``classes``: the class names the weights file records, in label order, when it has
them) or ``"classifier": "fresh"`` for an untrained fc added with ``init_fc_classes``.
"""
from __future__ import annotations

import io
import json
from types import ModuleType
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from ..layers import use_width
from ..modeling.backbone import SlimResNet, extract_subnet
from ..modeling.backbone.slim_resnet import Bottleneck
from ..modeling.methods.base import ClassificationMethod, backbone_of
from ..utils.file_io import atomic_write
from .format import CheckpointError, single_width_name

FORMATS = ("torchvision", "torchscript", "onnx")


class ExportError(CheckpointError):
    """An export that cannot be made (a missing optional package, an output that does not
    match the eager model); one line like every checkpoint error."""


def _backbone(method: nn.Module) -> SlimResNet:
    backbone = backbone_of(method)
    if not isinstance(backbone, SlimResNet):
        raise TypeError(f"export needs a SlimResNet backbone, got {type(backbone).__name__}")
    return backbone


FRESH_FC_SEED = 0


def _classifier(method: nn.Module, width: float, init_fc_classes: int = 0):
    """The width's classifier as a plain Linear: a classification method's, a fresh one (N(0,
    0.01), zero bias, the probe's init) of ``init_fc_classes`` outputs, or None.

    The fresh one is drawn from its own generator seeded with ``FRESH_FC_SEED``: every call
    returns the same weights (the exported file, the eager reference it is checked against and a
    torchvision export of the same width all hold one fc), whatever the global random state."""
    head = method.classifier_for(float(width)) if isinstance(method, ClassificationMethod) else None
    if head is None and init_fc_classes > 0:
        # skip_init: nn.Linear's own init would draw from the global generator for nothing.
        head = nn.utils.skip_init(nn.Linear, _backbone(method).feature_dim(float(width)),
                                  init_fc_classes)
        with torch.no_grad():
            nn.init.normal_(head.weight, 0.0, 0.01,
                            generator=torch.Generator().manual_seed(FRESH_FC_SEED))
            nn.init.zeros_(head.bias)
    return head


def export_width_state_dict(method: nn.Module, width: float,
                            init_fc_classes: int = 0) -> Dict[str, torch.Tensor]:
    """torchvision-style state dict of ``method``'s backbone (+ classifier) at ``width``.

    The classifier comes from a classification method (probe, supervised:
    ``classifier_for(width)``). A self-supervised model has none: ``init_fc_classes > 0`` then
    adds a fresh ``fc`` (N(0, 0.01), zero bias, the probe's init) so that the file loads
    strictly into a torchvision classifier; 0 leaves ``fc`` out.
    """
    plain = extract_subnet(_backbone(method), float(width))
    state = {single_width_name(k): v.detach().cpu().clone()
             for k, v in plain.state_dict().items()
             if not k.startswith("fc.") and k != "bn_statistics_stale"}
    head = _classifier(method, width, init_fc_classes)
    if head is not None:
        state["fc.weight"] = head.weight.detach().cpu().clone()
        if head.bias is not None:
            state["fc.bias"] = head.bias.detach().cpu().clone()
    return state


def _conv_bn_pairs(net: SlimResNet) -> Iterator[Tuple[nn.Module, str, str]]:
    """(parent, conv name, BN name) of every convolution followed by a BN."""
    yield net, "conv1", "bn1"
    for stage in net.stages:
        for block in stage:
            for i in range(1, 4 if isinstance(block, Bottleneck) else 3):
                yield block, f"conv{i}", f"bn{i}"
            if block.downsample is not None:
                yield block.downsample, "0", "1"


@torch.no_grad()
def _folded_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    plain = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                      conv.padding, conv.dilation, bias=True)
    plain.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    plain.bias.copy_(bn.bias + (bias - bn.running_mean) * scale)
    return plain


def fold_batchnorm(plain: SlimResNet) -> SlimResNet:
    """``plain`` (a single-width SlimResNet, e.g. from ``extract_subnet``) in eval mode with
    every BN folded into the convolution before it and plain ``torch.nn`` convolutions and
    linear layer: the same function, fewer operations, traceable by any exporter."""
    plain = plain.eval()
    for parent, conv_name, bn_name in _conv_bn_pairs(plain):
        conv, bn = getattr(parent, conv_name), getattr(parent, bn_name).bn[0]
        setattr(parent, conv_name, _folded_conv(conv, bn))
        setattr(parent, bn_name, nn.Identity())
    if plain.fc is not None:
        fc = nn.Linear(plain.fc.in_features, plain.fc.out_features)
        fc.load_state_dict(plain.fc.state_dict())
        plain.fc = fc
    return plain


def deployable_width(method: nn.Module, width: float, init_fc_classes: int = 0) -> nn.Module:
    """``method`` at ``width`` as an eval-mode network of plain ``torch.nn`` modules with every
    BN folded into its convolution: pooled features, or class logits when the method has a
    classifier (or ``init_fc_classes`` > 0)."""
    plain = fold_batchnorm(extract_subnet(_backbone(method), float(width)))
    plain.fc = None
    head = _classifier(method, width, init_fc_classes)
    model = nn.Sequential(plain, head) if head is not None else nn.Sequential(plain)
    return model.eval().requires_grad_(False)


@torch.no_grad()
def eager_output(method: nn.Module, width: float, images: torch.Tensor,
                 init_fc_classes: int = 0) -> torch.Tensor:
    """What ``method`` computes at ``width`` in eval mode: the reference an export must match
    (logits of a classification method, else pooled features)."""
    was_training = method.training
    method.eval()
    try:
        with use_width(method, width):
            if isinstance(method, ClassificationMethod):
                return method.classify(images)
            features = _backbone(method)(images)
            head = _classifier(method, width, init_fc_classes)
            return head(features) if head is not None else features
    finally:
        method.train(was_training)


METADATA_VERSION_KEY, METADATA_VERSION = "slimdet_export", 1
TORCHSCRIPT_METADATA_FILE = "slimdet.json"  # extra file of the TorchScript archive
ONNX_METADATA_KEY = "slimdet"  # key of the ONNX model's metadata_props


def output_record(method: nn.Module, width: float, init_fc_classes: int = 0,
                  classes: Optional[Sequence[str]] = None,
                  weights: str = "the weights file") -> Dict[str, Any]:
    """What :func:`deployable_width` of the same arguments returns, as the metadata's
    ``output``: pooled ``features`` of their ``dim``, or ``logits`` of ``num_classes``, from the
    method's ``trained`` classifier (with ``classes``, the names the weights file records, when
    given) or a ``fresh`` one (``init_fc_classes``: its outputs name no class yet)."""
    head = _classifier(method, width, init_fc_classes)
    if head is None:
        return {"kind": "features", "dim": _backbone(method).feature_dim(float(width))}
    record: Dict[str, Any] = {"kind": "logits", "num_classes": head.out_features}
    if not isinstance(method, ClassificationMethod):
        return {**record, "classifier": "fresh"}
    record["classifier"] = "trained"
    if classes is not None:
        if len(classes) != head.out_features:
            raise ExportError(f"{weights}: its {len(classes)} class names do not match the "
                              f"{head.out_features} outputs of its classifier at width {width:g}")
        record["classes"] = list(classes)
    return record


def export_metadata(method: nn.Module, width: float, weights: str, network: Mapping[str, Any],
                    input_record: Mapping[str, Any], init_fc_classes: int = 0,
                    classes: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """The JSON record a TorchScript / ONNX file of ``method`` at ``width`` carries (module
    docstring): ``network`` (the config's method and backbone) and ``input_record`` (how
    images are prepared: ``slimdet.data.transforms.eval_input_record``) come from the config,
    as plain values, since this package does not read configs; ``output`` is
    :func:`output_record`."""
    return {METADATA_VERSION_KEY: METADATA_VERSION, "width": float(width),
            "network": dict(network), "weights": weights, "input": dict(input_record),
            "output": output_record(method, width, init_fc_classes, classes, weights)}


def metadata_summary(record: Mapping[str, Any]) -> str:
    """One line of a record for people: input size and normalisation, output kind."""
    i, o = record["input"], record["output"]
    size = f"{i['channels']}x{i['crop_size']}x{i['crop_size']}"
    output = (f"logits of {o['num_classes']} classes ({o['classifier']}"
              f"{', named' if 'classes' in o else ''})" if o["kind"] == "logits"
              else f"features of dim {o['dim']}")
    return (f"input {i['layout']} {size} {i['channel_order']} (short side resized to "
            f"{i['resize_short_side']}, centre crop), (pixel / {i['pixel_divisor']:g} - mean "
            f"{i['mean']}) / std {i['std']}; output {output}")


def write_torchscript(model: nn.Module, example: torch.Tensor, path: str,
                      check: Optional[Callable[[str], None]] = None,
                      metadata: Optional[Mapping[str, Any]] = None) -> None:
    """Trace ``model`` on ``example`` and write it atomically (``torch.jit.load`` reads it);
    ``check(temporary path)`` may refuse the complete file before it replaces ``path``.
    ``metadata`` (:func:`export_metadata`) goes in as the extra file ``slimdet.json``."""
    with torch.no_grad():
        traced = torch.jit.trace(model, example)
    extra = {TORCHSCRIPT_METADATA_FILE: json.dumps(metadata)} if metadata is not None else {}
    atomic_write(path, lambda f: torch.jit.save(traced, f, _extra_files=extra), check=check)


def _import_onnx(need: str) -> ModuleType:
    """The ``onnx`` package, or a one-line error: ``need`` (what uses it) needs it, and how to
    install it."""
    try:
        import onnx
    except ImportError:
        raise ExportError(f"{need} needs the onnx package: pip install -e .[onnx]") from None
    return onnx


def write_onnx(model: nn.Module, example: torch.Tensor, path: str, opset: int = 17,
               check: Optional[Callable[[str], None]] = None,
               metadata: Optional[Mapping[str, Any]] = None) -> None:
    """Export ``model`` to ONNX with a dynamic batch dimension, written atomically (``check`` as
    in :func:`write_torchscript`); ``metadata`` (:func:`export_metadata`) goes in the model's
    ``metadata_props`` under the key ``slimdet``.

    Uses torch's TorchScript-based exporter (``dynamo=False``): it needs only the ``onnx``
    package, where the default dynamo exporter of torch 2.14 also needs ``onnxscript``.
    """
    # The exporter serialises through onnx; the record is added with it.
    onnx = _import_onnx("--format onnx (and onnxruntime to check the file)")
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=opset,
                          input_names=["images"], output_names=["output"],
                          dynamic_axes={"images": {0: "batch"}, "output": {0: "batch"}})
    data = buffer.getvalue()
    if metadata is not None:
        proto = onnx.load_from_string(data)
        # set_model_props replaces every property: keep any the exporter wrote.
        props = {p.key: p.value for p in proto.metadata_props}
        onnx.helper.set_model_props(proto, {**props, ONNX_METADATA_KEY: json.dumps(metadata)})
        data = proto.SerializeToString()
    atomic_write(path, lambda f: f.write(data), check=check)


def read_export_metadata(path: str, fmt: str) -> Dict[str, Any]:
    """The record (:func:`export_metadata`) a TorchScript or ONNX file written by slimdet
    carries; a one-line :class:`ExportError` for a file without one."""
    if fmt == "torchscript":
        where = f"extra file {TORCHSCRIPT_METADATA_FILE!r}"
        extra = {TORCHSCRIPT_METADATA_FILE: ""}
        try:
            torch.jit.load(path, map_location="cpu", _extra_files=extra)
        except (OSError, RuntimeError, ValueError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ExportError(f"{path}: not a readable TorchScript file ({first})") from None
        text = extra[TORCHSCRIPT_METADATA_FILE]
        text = text.decode("utf-8") if isinstance(text, bytes) else text
    elif fmt == "onnx":
        onnx = _import_onnx("reading an ONNX file's metadata")
        from google.protobuf.message import DecodeError  # onnx's own dependency

        where = f"metadata_props key {ONNX_METADATA_KEY!r}"
        try:
            proto = onnx.load(path, load_external_data=False)
        except (OSError, DecodeError) as e:
            raise ExportError(f"{path}: not a readable ONNX file ({e})") from None
        text = {p.key: p.value for p in proto.metadata_props}.get(ONNX_METADATA_KEY, "")
    else:
        raise ValueError(f"no metadata in format {fmt!r}: torchscript or onnx")
    if not text:
        raise ExportError(f"{path}: no slimdet metadata ({where}): not written by "
                          "tools/export_width.py, or by a version before it recorded one")
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        raise ExportError(f"{path}: its {where} is not valid JSON ({e})") from None
    version = record.get(METADATA_VERSION_KEY) if isinstance(record, dict) else None
    if version != METADATA_VERSION:
        raise ExportError(f"{path}: its {where} has {METADATA_VERSION_KEY} {version!r}; this "
                          f"slimdet reads version {METADATA_VERSION}")
    return record


def run_exported(path: str, fmt: str, images: torch.Tensor) -> torch.Tensor:
    """Run an exported file the way a user of the format would (``torch.jit.load``,
    ``onnxruntime``) on ``images``."""
    if fmt == "torchscript":
        with torch.no_grad():
            return torch.jit.load(path, map_location="cpu")(images.cpu())
    if fmt == "onnx":
        try:
            import onnxruntime
        except ImportError:
            raise ExportError("checking an ONNX file needs onnxruntime: pip install -e .[onnx]") from None
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(None, {"images": images.cpu().numpy()})[0])
    raise ValueError(f"no runtime for format {fmt!r}")
