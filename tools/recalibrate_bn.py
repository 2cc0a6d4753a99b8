#!/usr/bin/env python
"""Recompute the BN statistics of every width of a checkpoint on N training batches.

    python tools/recalibrate_bn.py --config-file configs/demo/slimclr_mocov2_demo.yaml \
        --weights output/demo_slimclr_mocov2/model_final.pth --num-batches 50 \
        --output output/demo_slimclr_mocov2/model_final_bnrecal.pth [KEY VALUE ...]

Uses fvcore's precise BN per width on the training loader of the config (its augmentation).
After sandwich-rule training (MODEL.SLIM.MODE sandwich) this is what makes the trained widths
evaluable without calibration: the output's bn_statistics_stale flag is cleared; evaluate it
with the run's config and MODEL.SLIM.MODE fixed (a sandwich config asks for calibration, as
the run's own checkpoints need it). Widths the
network was not trained at are estimated where they are used (TEST.WIDTHS with
TEST.CALIBRATE_BATCHES, tools/export_width.py --calibrate-batches): a checkpoint holds the
trained widths' statistics only.
--weights takes slimdet checkpoints and reference files (the whole backbone must be in it); the
output is a slimdet checkpoint ({"model": state_dict}) of the config's method holding exactly the
weights the input had (BN statistics recalibrated), so --eval-only and the probe accept it and
still refuse it if it lacks a part they need; a classifier's file (a probe's, a supervised
model's) with the config of a method without one is refused: the output would lose the
classifier. MODEL.WEIGHTS_TRUSTED True allows full unpickling of a trusted input that needs it.
An existing --output is replaced only with --overwrite (never when it is --weights).

A linear probe (MODEL.METHOD LinearProbe) is refused: its classifiers (and feature_norm) were
trained on the features of the frozen backbone with the statistics it has; new statistics change
those features under classifiers that were not trained for them, so its top-1 would change with
no training to match. Recalibrate the pre-training checkpoint, then train the probe on it.
"""
import argparse
import logging
import sys

import torch

from slimdet.checkpoint import CLASSES_FIELD, count_parts, load_weights
from slimdet.config import ConfigError, config_inputs
from slimdet.engine import load_cfg, parse_tool_args, run_cli
from slimdet.engine.defaults import seed_all
from slimdet.engine.trainer import SlimTrainer, resolve_device
from slimdet.evaluation.calibration import CalibrationImages
from slimdet.layers import recalibrate_bn
from slimdet.modeling import METHOD_REGISTRY, build_model
from slimdet.modeling.methods import LinearProbe, classifier_keys
from slimdet.utils.file_io import atomic_write, check_output_file
from slimdet.utils.registry import lookup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--config-file", default="", metavar="FILE")
    parser.add_argument("--weights", required=True)
    parser.add_argument("--num-batches", type=int, default=200)
    parser.add_argument("--output", required=True)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    parser.add_argument("--eval", action="store_true", help="run TEST.EVALUATORS before and after")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parse_tool_args(parser)
    if args.num_batches < 1:
        raise ConfigError(f"--num-batches {args.num_batches}: the statistics are estimated on that "
                          "many training batches; give at least 1")
    # The output holds the weights only: written over --weights it would lose the trainer state
    # (no --resume) and any part the config's method does not load.
    check_output_file(args.output, "--output", args.overwrite,
                      {"--weights": args.weights, **config_inputs(args.config_file)})
    logging.basicConfig(level=logging.INFO, stream=sys.stdout)  # stderr: errors only
    cfg = load_cfg(args.config_file, args.opts)
    if issubclass(lookup(METHOD_REGISTRY, cfg.MODEL.METHOD, "MODEL.METHOD"), LinearProbe):
        # The probe's backbone is frozen: its classifiers fit the statistics it was trained
        # with. Re-estimating feature_norm too would still leave the classifiers mismatched.
        raise ConfigError(
            f"MODEL.METHOD {cfg.MODEL.METHOD}: {args.weights} is a linear probe, whose "
            "classifiers were trained on the backbone's present BN statistics; recalibrating "
            "them would change its accuracy with classifiers not trained for it. Recalibrate "
            "the pre-training checkpoint and train the probe on the result instead")
    seed_all(cfg.SEED)
    device = resolve_device(cfg)
    method = build_model(cfg)
    # --eval also reads the classifier of a probe / supervised config: then it must be loaded too.
    report = load_weights(method, args.weights, method.eval_parts() if args.eval else ("backbone",),
                          "recalibrate_bn", trusted=cfg.MODEL.WEIGHTS_TRUSTED)
    # A classifier's file with the config of a method without one (a probe's with its
    # pre-training config): the output would be its backbone alone, labelled with its classes.
    lost = count_parts(classifier_keys(report.unused))
    if lost:
        raise ConfigError(
            f"{args.weights} holds a classifier ({lost}), which MODEL.METHOD {cfg.MODEL.METHOD} "
            "does not have: the output would lose it; pass the config of the run that trained "
            "it (a linear probe's is refused: recalibrate its pre-training checkpoint and train "
            "the probe on the result)")
    method.to(device)
    if args.eval:
        SlimTrainer.test(cfg, method)
    recalibrate_bn(method.backbone, CalibrationImages(cfg, device), args.num_batches)
    if args.eval:
        SlimTrainer.test(cfg, method)
    # Only what came from the input: a part it lacked must stay missing, not become random.
    loaded = set(report.loaded)
    state = {k: v.cpu() for k, v in method.state_dict().items() if k in loaded}
    # A classifier's class names go along: an evaluation of the output checks them too. A
    # file without a classifier has no classes its outputs mean.
    fields = ({CLASSES_FIELD: report.classes}
              if report.classes is not None and classifier_keys(state) else {})
    atomic_write(args.output, lambda f: torch.save({"model": state, **fields}, f))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    run_cli(main)
