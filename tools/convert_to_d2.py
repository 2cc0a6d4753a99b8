#!/usr/bin/env python
"""Convert a slimmable pre-training checkpoint to Detectron2 weights.

    # one width as a stock Detectron2 ResNet (.pkl), for stock mask_rcnn_R_50_FPN_1x
    python tools/convert_to_d2.py CKPT --width 0.5 -o r50_w0.5.pkl
    # all widths, for our slimmable detector (configs/detection/mask_rcnn_slim_R_50_FPN_1x.yaml)
    python tools/convert_to_d2.py CKPT --slimmable -o slim_r50.pkl

CKPT is any checkpoint slimdet reads (docs/checkpoints.md): a slimdet checkpoint
(``{"model": ...}``, the student backbone under ``backbone.``) or a reference-implementation file
(``module.encoder_q.features.N...``); it is read without running code (--trust-checkpoint
unpickles a trusted file fully). Every backbone weight must be in it. The converter prints the
architecture it found, what it wrote and which parts it dropped (heads, momentum encoder, queue,
classifier), and the config keys that make a detector fit the file. Their pixel statistics
come from the pre-training run's config.yaml when it lies beside CKPT (INPUT.PIXEL_MEAN / STD,
with its _BASE_ chain, x 255 for Detectron2's 0-255 pixels); otherwise the hint says it
assumes ImageNet's, and why. An existing -o file is replaced only with --overwrite.
"""
from __future__ import annotations

import argparse
import os
import pickle
import sys
from typing import Dict, List, Optional, Tuple

import torch

from slimdet.checkpoint import (CheckpointError, backbone_from_checkpoint, infer_architecture,
                               read_checkpoint)
from slimdet.config import ConfigError, check_widths, get_cfg
from slimdet.d2.checkpoint import (IMAGENET_PIXEL_MEAN, IMAGENET_PIXEL_STD, input_meta,
                                   slim_d2_overrides, stock_d2_overrides, to_slim_d2_state,
                                   to_stock_d2_state)
from slimdet.engine import run_cli
from slimdet.engine.defaults import one_line
from slimdet.layers import uncalibrated_widths
from slimdet.modeling.backbone import STAGE_BLOCKS, SlimResNet
from slimdet.utils.file_io import atomic_write, check_output_file


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[1:]))
    p.add_argument("input", nargs="?", help="pre-training checkpoint (.pth / .pth.tar)")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--width", type=float, help="export this width as a stock Detectron2 ResNet")
    mode.add_argument("--slimmable", action="store_true",
                      help="export every width for build_slim_resnet_fpn_backbone")
    p.add_argument("-o", "--output", required=True, help="output .pkl")
    p.add_argument("--overwrite", action="store_true", help="replace an existing -o file")
    p.add_argument("--widths", type=float, nargs="+", default=None,
                   help="width list of the checkpoint (default: inferred from its BN sizes)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="unpickle CKPT fully if it needs more than tensors (only for a file you "
                        "trust: unpickling can run code)")
    p.add_argument("--random-init", type=int, metavar="DEPTH", default=None,
                   choices=sorted(STAGE_BLOCKS),
                   help="no checkpoint: convert a randomly initialised slimmable ResNet-DEPTH "
                        "(demos and tests only; its detection AP means nothing)")
    args = p.parse_args(argv)
    if (args.input is None) == (args.random_init is None):
        p.error("give either a checkpoint path or --random-init DEPTH")
    if args.widths is not None:
        args.widths = check_widths(args.widths, "--widths")
    return args


def _list(keys: List[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def _group(keys: List[str]) -> str:
    """``backbone_k.* (120 keys), projector.* (4 keys), queue``: keys by top-level part."""
    groups: Dict[str, List[str]] = {}
    for k in keys:
        groups.setdefault(k.split(".", 1)[0], []).append(k)
    return ", ".join(members[0] if len(members) == 1 else f"{part}.* ({len(members)} keys)"
                     for part, members in groups.items())


def _config_pixel_statistics(config: str) -> Tuple[Optional[List[float]], Optional[List[float]], str]:
    """INPUT.PIXEL_MEAN / STD of ``config`` as slimdet reads it (its _BASE_ chain, the defaults
    for keys it leaves out: statistics in its _BASE_ were taken for ImageNet's, noted as "no
    config.yaml"), else those the file itself holds (a run's config.yaml of a slimdet with
    other keys), else (None, None, why not)."""
    import yaml

    cfg = get_cfg()
    try:
        cfg.merge_from_file(config)
        return [float(v) for v in cfg.INPUT.PIXEL_MEAN], [float(v) for v in cfg.INPUT.PIXEL_STD], ""
    except (ConfigError, OSError) as e:
        why = f"config.yaml beside the checkpoint not read: {one_line(e)}"
    try:
        with open(config) as f:
            inp = (yaml.safe_load(f) or {}).get("INPUT", {})
        return [float(v) for v in inp["PIXEL_MEAN"]], [float(v) for v in inp["PIXEL_STD"]], ""
    except (OSError, yaml.YAMLError, AttributeError, KeyError, TypeError, ValueError):
        return None, None, why  # not a slimdet pre-training config: say what is assumed instead


def pixel_statistics(ckpt_path: Optional[str], in_channels: int) -> Tuple[List[float], List[float], str]:
    """MODEL.PIXEL_MEAN / PIXEL_STD (0-255) for a backbone pre-trained by the run whose
    ``config.yaml`` lies beside ``ckpt_path`` (its INPUT.PIXEL_MEAN / STD, in [0, 1] units), and
    where they come from; ImageNet's when there is no such config, which the note says."""
    config = os.path.join(os.path.dirname(os.path.abspath(ckpt_path)), "config.yaml") \
        if ckpt_path else ""
    unusable = ""
    if config and os.path.isfile(config):
        mean, std, unusable = _config_pixel_statistics(config)
        if mean is not None:
            if len(mean) != in_channels or len(std) != in_channels:
                raise ConfigError(f"{config}: INPUT.PIXEL_MEAN / PIXEL_STD have {len(mean)} / "
                                  f"{len(std)} values, but the backbone in {ckpt_path} reads "
                                  f"{in_channels}-channel images")
            return ([v * 255 for v in mean], [v * 255 for v in std],
                    f"pixel statistics: INPUT.PIXEL_MEAN / PIXEL_STD of {config} (x 255)")
    if in_channels != 3:
        raise ConfigError(f"the backbone reads {in_channels}-channel images and no pre-training "
                          f"config.yaml lies beside {ckpt_path or 'it'} to give its pixel "
                          f"statistics{f' ({unusable})' if unusable else ''}: copy the run's "
                          "config.yaml next to the checkpoint")
    why = unusable or ("no config.yaml beside the checkpoint" if ckpt_path
                       else "random initialisation")
    return (IMAGENET_PIXEL_MEAN, IMAGENET_PIXEL_STD,
            f"pixel statistics: ImageNet's assumed ({why}); if pre-training used other "
            "INPUT.PIXEL_MEAN / PIXEL_STD, pass those x 255 instead")


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    # Before the checkpoint is read: the input itself, a folder, someone's file (replaced only
    # with --overwrite) or a place no file can be made in is refused now, not after the work.
    check_output_file(args.output, "-o/--output", args.overwrite, {"CKPT": args.input or ""})
    if args.random_init is not None:
        widths = args.widths or [1.0, 0.75, 0.5, 0.25]
        resnet = SlimResNet(depth=args.random_init, widths=widths).eval()
        source = f"random-init slimmable ResNet-{args.random_init}"
    else:
        ckpt = read_checkpoint(args.input, args.trust_checkpoint, opt_in="pass --trust-checkpoint")
        backbone = ckpt.backbone_state()
        print(f"found a {infer_architecture(backbone, args.input)} in {ckpt.layout} layout "
              f"({len(backbone)} backbone tensors)")
        resnet = backbone_from_checkpoint(ckpt, args.widths, "convert_to_d2",
                                          "pass --widths the file's own widths (or leave it out)")
        source = args.input
        dropped = [k for k in ckpt.state if not k.startswith("backbone.")] + ckpt.unused
        if dropped:
            print(f"dropped {len(dropped)} checkpoint tensors that are not the student "
                  f"backbone: {_group(dropped)}")

    pixel_mean, pixel_std, pixel_note = pixel_statistics(args.input, resnet.conv1.in_channels)
    if args.slimmable:
        if resnet.cifar_stem:
            # The detector's SlimResNet always has the ImageNet stem; no config key changes it.
            raise ConfigError(
                f"{source!r} has a CIFAR stem (3x3 convolution, no max-pool); the slimmable "
                "detector's backbone has a 7x7 stem and a max-pool, so no detector config can "
                "load it: pre-train with MODEL.BACKBONE.CIFAR_STEM False for detection")
        stale = uncalibrated_widths(resnet, resnet.widths)
        if stale:
            # Detection keeps the converted statistics (frozen or as BN's start): stale ones
            # would be wrong at every width from the first step.
            raise CheckpointError(
                f"widths {[f'{w:g}' for w in stale]} of {source!r} have stale BN statistics "
                "(sandwich-rule training): re-estimate them first with tools/recalibrate_bn.py "
                f"--config-file CONFIG --weights {source} --output NEW.pth, then convert NEW.pth")
        state = to_slim_d2_state(resnet)
        meta = {"widths": resnet.widths, "depth": resnet.depth,
                "input": input_meta(pixel_mean, pixel_std)}
        # Exact Detectron2 parameter names: no name-matching heuristics needed (or wanted).
        out = {"model": state, "__author__": f"slimdet convert_to_d2 --slimmable ({source})",
               "matching_heuristics": False, "slimdet": meta}
        hint = (f"use it with MODEL.WEIGHTS {args.output} "
                + " ".join(slim_d2_overrides(resnet, pixel_mean, pixel_std)))
    else:
        if args.width not in resnet.widths:
            print(f"error: width {args.width} is not one of the checkpoint's widths {resnet.widths}",
                  file=sys.stderr)
            return 2
        if uncalibrated_widths(resnet, [args.width]):
            # A trained width without statistics: sandwich-rule training keeps none that fit.
            raise CheckpointError(
                f"width {args.width:g} of {source!r} has stale BN statistics (sandwich-rule "
                "training): re-estimate them first with tools/recalibrate_bn.py --config-file "
                f"CONFIG --weights {source} --output NEW.pth, then convert NEW.pth")
        state, dropped = to_stock_d2_state(resnet, args.width)
        counters = [k for k in dropped if k.endswith("num_batches_tracked")]
        others = [k for k in dropped if k not in counters]
        if counters:
            print(f"not exported: {len(counters)} BN batch counters (num_batches_tracked; "
                  "Detectron2's BN does not need them)")
        if others:
            print(f"not exported from the width-{args.width:g} network: {_list(others)}")
        out = {"model": state, "__author__": f"slimdet convert_to_d2 --width {args.width:g} ({source})",
               "matching_heuristics": True,
               "slimdet": {"width": args.width, "widths": resnet.widths, "depth": resnet.depth,
                           "input": input_meta(pixel_mean, pixel_std)}}
        hint = ("use it in stock Detectron2 with MODEL.WEIGHTS " + args.output + " " +
                " ".join(stock_d2_overrides(resnet, args.width, pixel_mean, pixel_std)))
    atomic_write(args.output, lambda f: pickle.dump(out, f))
    n_params = sum(v.size for v in state.values())
    print(f"wrote {args.output}: {len(state)} tensors, {n_params / 1e6:.2f}M values "
          f"(e.g. {_list(sorted(state), 3)})")
    print(hint)
    print(pixel_note)
    return 0


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(run_cli(main))  # a bad checkpoint, width or path: one line, exit status 2
