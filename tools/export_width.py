#!/usr/bin/env python
"""Write one width of a slimmable checkpoint, trained or not, as a file other programs load.

    python tools/export_width.py --config-file configs/demo/slimclr_mocov2_demo.yaml \
        --weights output/demo_slimclr_mocov2/model_final.pth --width 0.6 \
        --calibrate-batches 4 --format onnx --output export/w0.6.onnx [KEY VALUE ...]

--format torchvision (default): the bare state dict with torchvision names (width 1.0 of a
ResNet-50 loads strictly into torchvision.models.resnet50() when it has an fc: from a probe /
supervised model, or a fresh one with --init-fc-classes). torchscript / onnx: the network with
every BN folded into its convolution, traced (torch.jit.load) or exported to ONNX (onnxruntime;
needs pip install -e .[onnx]); input: images of INPUT.CROP_SIZE normalised as in training (any
batch size); output: pooled features, or class logits for a probe / supervised model. Each file
is run after writing and compared with the eager model at that width (max |difference| printed;
a mismatch is an error, and the file replaces --output only once it passed).

A torchscript / onnx file records how to feed it, as JSON (slimdet.checkpoint.export's module
docstring; read_export_metadata(path, fmt) reads it): in TorchScript the extra file
slimdet.json (torch.jit.load(path, _extra_files={"slimdet.json": ""})), in ONNX the metadata
key "slimdet" (onnxruntime: session.get_modelmeta().custom_metadata_map). It holds
"slimdet_export" (1, its version), "width", "network" (MODEL.METHOD, MODEL.BACKBONE.NAME /
DEPTH / BASE_CHANNELS / CIFAR_STEM), "weights" (--weights as given), "input" (NCHW float32,
MODEL.BACKBONE.IN_CHANNELS channels, "RGB" or "grey" as the data sets decode; the evaluation
view: short side resized to "resize_short_side" (bilinear, antialiased), centre crop of
INPUT.CROP_SIZE; then (pixel / 255 - mean[c]) / std[c] with INPUT.PIXEL_MEAN / PIXEL_STD) and
"output": {"kind": "features", "dim"} or {"kind": "logits", "num_classes", "classifier":
"trained" or "fresh" (--init-fc-classes), "classes": the class names of the --weights file when
it has them}. The line before the last sums it up. --format torchvision stays a bare state dict.

A width the checkpoint was not trained at (any width in [min(MODEL.WIDTHS), 1.0]; every width of
a sandwich-trained checkpoint) needs --calibrate-batches N: its BN statistics are estimated on N
training batches of the config first (its BN parameters come from the nearest trained width at
or above it). --weights takes slimdet checkpoints and reference files; every weight the export
uses must be in it; a probe's or supervised model's file with the config of a method without
a classifier exports the backbone alone (the last line says so; --init-fc-classes is refused
then: a fresh fc would stand in for the trained one). MODEL.WEIGHTS_TRUSTED True allows full
unpickling of a file you trust.
The output folder is created if missing; an existing --output is replaced only with
--overwrite (and never when it is --weights).
"""
import argparse
import logging
import sys

import torch

from slimdet.checkpoint import CheckpointError, count_parts, load_weights
from slimdet.checkpoint.export import (FORMATS, ExportError, deployable_width, eager_output,
                                       export_metadata, export_width_state_dict,
                                       metadata_summary, run_exported, write_onnx,
                                       write_torchscript)
from slimdet.config import ConfigError, config_inputs
from slimdet.data.transforms import eval_input_record
from slimdet.engine import load_cfg, parse_tool_args, run_cli
from slimdet.engine.defaults import seed_all
from slimdet.evaluation.calibration import CalibrationImages
from slimdet.layers import add_widths, normalized_width, recalibrate_bn, uncalibrated_widths
from slimdet.modeling import build_model
from slimdet.modeling.methods import ClassificationMethod, classifier_keys
from slimdet.utils.file_io import atomic_write, check_output_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--config-file", default="", metavar="FILE")
    parser.add_argument("--weights", required=True, help="checkpoint to export from")
    parser.add_argument("--width", type=float, required=True, help="width multiplier to export")
    parser.add_argument("--format", choices=FORMATS, default="torchvision")
    parser.add_argument("--output", required=True, help="file to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    parser.add_argument("--calibrate-batches", type=int, default=0,
                        help="estimate the width's BN statistics on N training batches first")
    parser.add_argument("--init-fc-classes", type=int, default=0,
                        help="add a freshly initialised fc of this size when the model has none")
    parser.add_argument("--check-batch", type=int, default=4,
                        help="images of the check against the eager model (torchscript, onnx)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parse_tool_args(parser)
    if args.check_batch < 1:
        raise ConfigError(f"--check-batch {args.check_batch}: the written file is checked on that "
                          "many images; give at least 1")
    if args.init_fc_classes < 0:
        raise ConfigError(f"--init-fc-classes {args.init_fc_classes}: give 0 (no fc) or a number "
                          "of classes")
    if args.calibrate_batches < 0:
        raise ConfigError(f"--calibrate-batches {args.calibrate_batches}: give a number of "
                          "training batches (0: no calibration)")
    check_output_file(args.output, "--output", args.overwrite,
                      {"--weights": args.weights, **config_inputs(args.config_file)})
    logging.basicConfig(level=logging.INFO, stream=sys.stdout)  # stderr: errors only
    cfg = load_cfg(args.config_file, args.opts)
    seed_all(cfg.SEED)
    method = build_model(cfg)
    report = load_weights(method, args.weights, method.eval_parts(), "export_width",
                          trusted=cfg.MODEL.WEIGHTS_TRUSTED)
    # A probe's or supervised model's file with a config of a method without a classifier:
    # the export is its backbone alone, which is said (and a fresh fc in place of the trained
    # one is refused).
    unexported = count_parts(classifier_keys(report.unused))
    if unexported and args.init_fc_classes > 0:
        raise ConfigError(f"--init-fc-classes {args.init_fc_classes}: {args.weights} holds a "
                          f"trained classifier ({unexported}), which MODEL.METHOD "
                          f"{cfg.MODEL.METHOD} does not have: a fresh fc would take its place; "
                          "pass the config of the run that trained it (its config.yaml) to "
                          "export that classifier")
    backbone_only = (f"; backbone only (pooled features): the classifier in {args.weights} "
                     f"({unexported}) is not part of MODEL.METHOD {cfg.MODEL.METHOD}, the config "
                     "of the run that trained it exports it" if unexported else "")
    method.eval()
    w, widths = normalized_width(args.width), method.backbone.widths
    if not min(widths) <= w <= max(widths):
        raise CheckpointError(f"--width {w:g}: {args.weights!r} holds widths {widths}; any width "
                              f"from {min(widths):g} to {max(widths):g} can be exported")
    heads = method.classifier_widths() if isinstance(method, ClassificationMethod) else None
    if heads is not None and w not in heads:
        # The classifiers built are the config's TEST.WIDTHS; the file may hold more.
        raise CheckpointError(f"--width {w:g}: the probe of this config has classifiers for "
                              f"TEST.WIDTHS {heads} only: if {args.weights!r} was trained at "
                              f"{w:g}, pass its run's config.yaml (or TEST.WIDTHS), else train a "
                              "probe at this width with TEST.WIDTHS")
    add_widths(method.backbone, [w])
    if not uncalibrated_widths(method.backbone, [w]) and args.calibrate_batches > 0:
        print(f"width {w:g} has BN statistics in {args.weights}, which are exported: "
              "--calibrate-batches is not used (tools/recalibrate_bn.py re-estimates them)")
    if uncalibrated_widths(method.backbone, [w]):
        if args.calibrate_batches <= 0:
            stale = bool(method.backbone.bn_statistics_stale)
            # A stale trained width can also be fixed in the checkpoint itself, once for all uses.
            once = (" (or once in the checkpoint: tools/recalibrate_bn.py)"
                    if stale and w in widths else "")
            raise CheckpointError(
                f"--width {w:g} has no BN statistics in {args.weights!r} (trained widths "
                f"{widths}{', statistics stale after sandwich-rule training' if stale else ''}): "
                f"pass --calibrate-batches N to estimate them on N training batches{once}")
        calibration = cfg.clone()
        calibration.defrost()
        calibration.TEST.CALIBRATE_BATCHES = args.calibrate_batches
        # A probe's classifier at this width was trained on statistics of its own calibration:
        # other statistics export a network with other logits (and accuracy), without a word.
        mismatch = (method.calibration_mismatch(calibration)
                    if isinstance(method, ClassificationMethod) else "")
        if mismatch:
            raise ConfigError(f"--width {w:g} with --calibrate-batches {args.calibrate_batches} "
                              f"(TEST.CALIBRATE_BATCHES here): {mismatch}")
        recalibrate_bn(method.backbone, CalibrationImages(calibration, torch.device("cpu")),
                       args.calibrate_batches, widths=[w])

    if args.format == "torchvision":
        state = export_width_state_dict(method, w, args.init_fc_classes)
        atomic_write(args.output, lambda f: torch.save(state, f))
        params = sum(v.numel() for k, v in state.items() if "running" not in k and "num_batches" not in k)
        print(f"wrote width {w:g} ({len(state)} tensors, {params / 1e6:.2f} M parameters) to "
              f"{args.output}{backbone_only}")
        return
    size, channels = cfg.INPUT.CROP_SIZE, cfg.MODEL.BACKBONE.IN_CHANNELS
    g = torch.Generator().manual_seed(0)
    example = torch.randn(2, channels, size, size, generator=g)
    model = deployable_width(method, w, args.init_fc_classes)
    # The file as its users run it, on another batch size than the traced one, against eager;
    # checked before it replaces --output, so a file that fails never takes an earlier one's place.
    images = torch.randn(args.check_batch, channels, size, size, generator=g)
    want = eager_output(method, w, images, args.init_fc_classes)
    measured = {}

    def check(written: str) -> None:
        got = run_exported(written, args.format, images)
        diff = (got - want).abs().max().item() if got.shape == want.shape else float("nan")
        tolerance = 1e-4 * max(1.0, want.abs().max().item())
        if not diff <= tolerance:
            raise ExportError(f"{args.output}: the {args.format} model's output differs from the "
                              f"eager model's at width {w:g} by {diff:.3g} (shape "
                              f"{tuple(got.shape)} vs {tuple(want.shape)}); not written (an "
                              "existing file there is left as it was)")
        measured.update(shape=tuple(got.shape), diff=diff)

    backbone = cfg.MODEL.BACKBONE
    network = {"method": cfg.MODEL.METHOD, "backbone": backbone.NAME, "depth": backbone.DEPTH,
               "base_channels": backbone.BASE_CHANNELS, "cifar_stem": backbone.CIFAR_STEM}
    metadata = export_metadata(method, w, args.weights, network, eval_input_record(cfg),
                               args.init_fc_classes, report.classes)
    (write_onnx if args.format == "onnx" else write_torchscript)(model, example, args.output,
                                                                 check=check, metadata=metadata)
    # The summary first: the last line stays the one that names a classifier left out.
    print(f"{args.output} records {metadata_summary(metadata)}")
    print(f"wrote width {w:g} as {args.format} to {args.output}: output {measured['shape']} on "
          f"{args.check_batch} images, max |difference| to the eager model {measured['diff']:.2e}"
          f"{backbone_only}")


if __name__ == "__main__":
    run_cli(main)
