#!/usr/bin/env python
"""Params, FLOPs (conv + linear MACs) and forward latency of any widths of a config's network.

    python tools/analyze_model.py --config-file configs/Base-SlimCLR.yaml [--latency-batch 8] \
        [--widths 1.0 0.9 0.8 0.7 0.6 0.5 0.4 0.3 0.25] [--num-classes 1000]

--widths: any widths in [min(MODEL.WIDTHS), 1.0], each once (default MODEL.WIDTHS). The network
is the one the config runs: the backbone, plus the MODEL.NUM_CLASSES-way classifier of a probe
or supervised config (a pre-training method has none); tools/eval_widths.py counts the same.
--num-classes N counts an N-way head instead (1000: torchvision's ResNet sizes). Two latency
columns: the slimmable model run at the width, and the exported network (BN folded into the
convolutions, TorchScript-traced: what tools/export_width.py --format torchscript writes).

With ``--results RESULTS --plot out.png`` it also draws accuracy vs FLOPs and params of every
width the results hold (profiled too when --widths leaves them out; a width the network cannot
run is named in a warning; a tools/eval_widths.py output whose MACs are another network's than
the config's is refused). RESULTS: a JSON dict such as {"top1/w1": 70.1, ...}, a run's
eval_results.json or eval_history.jsonl (its latest evaluation), a tools/eval_widths.py output,
or a run's metrics.json (the last value of every key; a run folder reads its metrics.json).
``--reference`` overlays the paper's ImageNet numbers (docs/method.md §7). An existing --plot is
replaced only with --overwrite.
"""
import argparse

import torch

from slimdet.analysis.plots import (FIGURE_EXTENSIONS, check_results_network, load_results,
                                    pick_accuracy_metric, plot_accuracy_vs_cost, result_widths)
from slimdet.analysis.requests import checked_device, head_classes, requested_widths
from slimdet.config import ConfigError, config_inputs
from slimdet.engine import WidthsAction, load_cfg, parse_tool_args, run_cli
from slimdet.evaluation import format_profile, profile_widths
from slimdet.modeling import build_backbone
from slimdet.utils.file_io import check_output_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--config-file", default="", metavar="FILE")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="classifier head size (default: MODEL.NUM_CLASSES for a probe or "
                             "supervised config, none for pre-training)")
    parser.add_argument("--widths", action=WidthsAction, default=None,
                        help="widths to profile (default: MODEL.WIDTHS)")
    parser.add_argument("--latency-batch", type=int, default=1,
                        help="batch size of the latency column (0 = no latency)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--results", default="",
                        help="evaluation results (JSON dict, eval_results.json, "
                             "eval_history.jsonl, eval_widths output, metrics.json or its folder)")
    parser.add_argument("--plot", default="", help="write the accuracy-vs-cost chart to this image")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --plot")
    parser.add_argument("--metric", default=None, help="accuracy key to plot (default: first top-1)")
    parser.add_argument("--reference", action="store_true", help="overlay the paper's numbers")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parse_tool_args(parser)
    if args.latency_batch < 0:
        raise ConfigError(f"--latency-batch {args.latency_batch}: give a batch size (0: no latency)")
    if args.num_classes is not None and args.num_classes < 0:
        raise ConfigError(f"--num-classes {args.num_classes}: give 0 (no head) or a number of classes")
    if args.plot and not args.results:
        raise ConfigError("--plot needs --results (the accuracies to draw)")
    if args.results and not args.plot:
        raise ConfigError("--results is drawn with --plot: give --plot FILE")
    device = checked_device(args.device)
    # Everything the chart needs is read and checked before the (slow) profiling.
    results, metric = {}, ""
    if args.plot:
        check_output_file(args.plot, "--plot", args.overwrite,
                          {"--results": args.results, **config_inputs(args.config_file)},
                          FIGURE_EXTENSIONS)
        results = load_results(args.results)
        metric = pick_accuracy_metric(results, args.metric)
    cfg = load_cfg(args.config_file, args.opts)
    num_classes = head_classes(cfg) if args.num_classes is None else args.num_classes
    model = build_backbone(cfg, num_classes=num_classes)
    widths = requested_widths(args.widths or cfg.MODEL.WIDTHS, "--widths", cfg.MODEL.WIDTHS)
    if metric:
        lo, hi = min(cfg.MODEL.WIDTHS), max(cfg.MODEL.WIDTHS)
        held = result_widths(results, metric)
        outside = [w for w in held if not lo <= w <= hi]
        if outside:
            print(f"warning: {args.results} holds {metric} of widths "
                  f"{', '.join(f'{w:g}' for w in outside)}, outside the network's widths "
                  f"[{lo:g}, {hi:g}]: not drawn")
        # A result's width is profiled even when --widths leaves it out: none is dropped.
        widths += [w for w in held if lo <= w <= hi and w not in widths]
        if args.widths is None:
            widths.sort(reverse=True)
        # Costs first (no latency: quick), so results of another network stop before timing.
        costs = profile_widths(model, cfg.INPUT.CROP_SIZE, cfg.MODEL.BACKBONE.IN_CHANNELS,
                               widths, latency_batch=0, device=str(device))
        check_results_network(args.results, costs,
                              f"--config-file {args.config_file or '(the defaults)'}")
    rows = profile_widths(model, cfg.INPUT.CROP_SIZE, cfg.MODEL.BACKBONE.IN_CHANNELS, widths,
                          latency_batch=args.latency_batch, device=str(device))
    b = cfg.MODEL.BACKBONE
    head = f"{num_classes}-way head" if num_classes else "no classifier head"
    print(f"{cfg.MODEL.BACKBONE.NAME}-{b.DEPTH}, {head}, "
          f"{cfg.INPUT.CROP_SIZE}x{cfg.INPUT.CROP_SIZE} input, latency on {device} "
          f"({torch.get_num_threads()} threads)")
    print(format_profile(rows, args.latency_batch))
    if args.plot:
        title = f"{b.NAME}-{b.DEPTH} (base {b.BASE_CHANNELS}), {cfg.INPUT.CROP_SIZE} px"
        print(plot_accuracy_vs_cost(rows, results, args.plot, metric, args.reference, title))


if __name__ == "__main__":
    run_cli(main)  # a missing config, a bad key or value: one line, exit status 2
