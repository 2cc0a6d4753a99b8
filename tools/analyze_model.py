#!/usr/bin/env python
"""Params, FLOPs (conv + linear MACs) and forward latency of every width of a config's backbone.

    python tools/analyze_model.py --config-file configs/Base-SlimCLR.yaml [--latency-batch 8]
"""
import argparse

import torch

from slimdet.engine import load_cfg
from slimdet.evaluation import format_profile, profile_widths
from slimdet.modeling import build_backbone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--config-file", default="", metavar="FILE")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="classifier head size (default: MODEL.NUM_CLASSES)")
    parser.add_argument("--latency-batch", type=int, default=1,
                        help="batch size of the latency column (0 = no latency)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args()
    cfg = load_cfg(args.config_file, args.opts)
    num_classes = cfg.MODEL.NUM_CLASSES if args.num_classes is None else args.num_classes
    model = build_backbone(cfg, num_classes=num_classes)
    rows = profile_widths(model, cfg.INPUT.CROP_SIZE, cfg.MODEL.BACKBONE.IN_CHANNELS,
                          latency_batch=args.latency_batch, device=args.device)
    b = cfg.MODEL.BACKBONE
    print(f"{cfg.MODEL.BACKBONE.NAME}-{b.DEPTH}, {num_classes}-way head, "
          f"{cfg.INPUT.CROP_SIZE}x{cfg.INPUT.CROP_SIZE} input, latency on {args.device} "
          f"({torch.get_num_threads()} threads)")
    print(format_profile(rows, args.latency_batch))


if __name__ == "__main__":
    main()
