#!/usr/bin/env python
"""Params, FLOPs (conv + linear MACs) and forward latency of any widths of a config's backbone.

    python tools/analyze_model.py --config-file configs/Base-SlimCLR.yaml [--latency-batch 8] \
        [--widths 1.0 0.9 0.8 0.7 0.6 0.5 0.4 0.3 0.25]

--widths: any widths in [min(MODEL.WIDTHS), 1.0] (default MODEL.WIDTHS). Two latency columns:
the slimmable model run at the width, and the exported network (BN folded into the
convolutions, TorchScript-traced: what tools/export_width.py --format torchscript writes).

With ``--results RESULTS.json --plot out.png`` it also draws accuracy vs FLOPs and params of
every width (RESULTS: a JSON dict such as {"top1/w1": 70.1, ...} or a run's metrics.json);
``--reference`` overlays the paper's ImageNet numbers (docs/method.md §7).
"""
import argparse
import os

import torch

from slimdet.config import ConfigError
from slimdet.engine import WidthsAction, load_cfg, parse_tool_args, run_cli
from slimdet.evaluation import format_profile, profile_widths
from slimdet.modeling import build_backbone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--config-file", default="", metavar="FILE")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="classifier head size (default: MODEL.NUM_CLASSES)")
    parser.add_argument("--widths", action=WidthsAction, default=None,
                        help="widths to profile (default: MODEL.WIDTHS)")
    parser.add_argument("--latency-batch", type=int, default=1,
                        help="batch size of the latency column (0 = no latency)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--results", default="", help="evaluation results (JSON dict or metrics.json)")
    parser.add_argument("--plot", default="", help="write the accuracy-vs-cost chart to this PNG")
    parser.add_argument("--metric", default=None, help="accuracy key to plot (default: first top-1)")
    parser.add_argument("--reference", action="store_true", help="overlay the paper's numbers")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parse_tool_args(parser)
    if args.latency_batch < 0:
        raise ConfigError(f"--latency-batch {args.latency_batch}: give a batch size (0: no latency)")
    if args.plot and not args.results:
        raise ConfigError("--plot needs --results (the accuracies to draw)")
    if args.results and not os.path.isfile(args.results):
        raise ConfigError(f"--results {args.results!r}: no such file")
    cfg = load_cfg(args.config_file, args.opts)
    num_classes = cfg.MODEL.NUM_CLASSES if args.num_classes is None else args.num_classes
    model = build_backbone(cfg, num_classes=num_classes)
    widths = args.widths or list(cfg.MODEL.WIDTHS)
    outside = [w for w in widths if not min(cfg.MODEL.WIDTHS) <= w <= max(cfg.MODEL.WIDTHS)]
    if outside:
        raise ConfigError(f"--widths {outside[0]:g} is outside MODEL.WIDTHS' range "
                          f"[{min(cfg.MODEL.WIDTHS):g}, {max(cfg.MODEL.WIDTHS):g}]")
    rows = profile_widths(model, cfg.INPUT.CROP_SIZE, cfg.MODEL.BACKBONE.IN_CHANNELS, widths,
                          latency_batch=args.latency_batch, device=args.device)
    b = cfg.MODEL.BACKBONE
    print(f"{cfg.MODEL.BACKBONE.NAME}-{b.DEPTH}, {num_classes}-way head, "
          f"{cfg.INPUT.CROP_SIZE}x{cfg.INPUT.CROP_SIZE} input, latency on {args.device} "
          f"({torch.get_num_threads()} threads)")
    print(format_profile(rows, args.latency_batch))
    if args.plot:
        from slimdet.analysis.plots import load_results, plot_accuracy_vs_cost

        title = f"{b.NAME}-{b.DEPTH} (base {b.BASE_CHANNELS}), {cfg.INPUT.CROP_SIZE} px"
        print(plot_accuracy_vs_cost(rows, load_results(args.results), args.plot, args.metric,
                                    args.reference, title))


if __name__ == "__main__":
    run_cli(main)  # a missing config, a bad key or value: one line, exit status 2
