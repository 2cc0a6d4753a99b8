#!/usr/bin/env python
"""Recompute the BN statistics of every width of a checkpoint on N training batches.

    python tools/recalibrate_bn.py --config-file configs/demo/slimclr_mocov2_demo.yaml \
        --weights output/demo_slimclr_mocov2/model_final.pth --num-batches 50 \
        --output output/demo_slimclr_mocov2/model_final_bnrecal.pth [KEY VALUE ...]

Uses fvcore's precise BN per width on the training loader of the config (its augmentation).
--weights takes slimdet checkpoints and reference files; the output is a slimdet checkpoint
({"model": state_dict}) of the config's method, so --eval-only and the probe accept it.
"""
import argparse
import logging

import torch

from slimdet.checkpoint import atomic_write
from slimdet.checkpoint.recalibrate_bn import recalibrate_bn, train_images
from slimdet.checkpoint.reference import load_checkpoint
from slimdet.data import build_train_loader
from slimdet.engine import load_cfg, run_cli
from slimdet.engine.defaults import seed_all
from slimdet.engine.trainer import SlimTrainer, resolve_device
from slimdet.modeling import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--config-file", default="", metavar="FILE")
    parser.add_argument("--weights", required=True)
    parser.add_argument("--num-batches", type=int, default=200)
    parser.add_argument("--output", required=True)
    parser.add_argument("--eval", action="store_true", help="run TEST.EVALUATORS before and after")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    cfg = load_cfg(args.config_file, list(args.opts) + ["MODEL.WEIGHTS", ""])
    seed_all(cfg.SEED)
    device = resolve_device(cfg)
    method = build_model(cfg)
    load_checkpoint(method, args.weights, cfg.MODEL.BACKBONE.DEPTH)
    method.to(device)
    if args.eval:
        SlimTrainer.test(cfg, method)
    recalibrate_bn(method.backbone, train_images(build_train_loader(cfg, device)), args.num_batches)
    if args.eval:
        SlimTrainer.test(cfg, method)
    atomic_write(args.output, lambda f: torch.save({"model": method.state_dict()}, f))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    run_cli(main)
