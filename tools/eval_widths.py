#!/usr/bin/env python
"""Evaluate many widths of one checkpoint (any width, untrained ones after BN calibration) and
plot accuracy against MACs.

    python tools/eval_widths.py --config-file configs/demo/slimclr_mocov2_demo.yaml \
        --weights output/demo_slimclr_mocov2/model_final.pth \
        --widths 1.0 0.9 0.8 0.75 0.7 0.6 0.5 0.4 0.3 0.25 --calibrate-batches 20 \
        --output output/demo_slimclr_mocov2/widths.json \
        [--compare output/demo_us_mocov2/widths.json] [--plot docs/img/accuracy_vs_macs_widths.png]
    python tools/eval_widths.py --plot out.png --compare A.json B.json   # plot earlier results

Runs the config's TEST.EVALUATORS (kNN for the pre-training demos) at every width of --widths
(TEST.WIDTHS), estimating the BN statistics of each width that has none (an untrained width;
every width of a sandwich-trained checkpoint) on --calibrate-batches training batches
(TEST.CALIBRATE_BATCHES). Writes one JSON file (widths, MACs, parameters, every metric, the
trained widths) and prints a table; --plot draws it with the curves of --compare files (earlier
outputs of this tool; all curves of one plot must share one metric), trained widths filled,
calibrated ones open. --metric defaults to the accuracy the results hold (a probe's top1 before
kNN's knn_top1); a --metric they lack is refused before --output is written. A probe's
untrained width evaluates only with the calibration its classifier was trained on
(TEST.CALIBRATE_BATCHES, SOLVER.IMS_PER_BATCH, SEED of its run). An existing
--output or --plot is replaced only with --overwrite; --output may not be --weights, the config
or a --compare file. MACs and parameters count the network the config runs (backbone, plus the
classifier of a probe / supervised model), as tools/analyze_model.py does.
"""
import argparse
import json
import logging
import os
import sys

from slimdet.analysis.plots import (FIGURE_EXTENSIONS, common_metric, pick_accuracy_metric,
                                    plot_accuracy_vs_macs, read_widths_results, widths_results)
from slimdet.analysis.requests import head_classes, requested_widths
from slimdet.checkpoint import load_weights
from slimdet.config import ConfigError, config_inputs
from slimdet.engine import WidthsAction, load_cfg, parse_tool_args, run_cli, verify_run
from slimdet.engine.defaults import seed_all
from slimdet.engine.trainer import SlimTrainer, check_classifier_classes, resolve_device
from slimdet.evaluation import profile_widths
from slimdet.modeling import build_backbone, build_model
from slimdet.modeling.methods.base import ClassificationMethod
from slimdet.utils.file_io import atomic_write, check_not_input, check_output_file
from slimdet.utils.results import split_width_key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--config-file", default="", metavar="FILE")
    parser.add_argument("--weights", default="", help="checkpoint (omit to only --plot --compare)")
    parser.add_argument("--widths", action=WidthsAction, default=None)
    parser.add_argument("--calibrate-batches", type=int, default=None,
                        help="TEST.CALIBRATE_BATCHES (default: the config's)")
    parser.add_argument("--output", default="", help="results JSON to write")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --output / --plot file")
    parser.add_argument("--label", default="", help="curve label (default: the config's name)")
    parser.add_argument("--plot", default="", help="write accuracy vs MACs to this image (.png ...)")
    parser.add_argument("--compare", nargs="*", default=[], help="other results JSON to plot")
    parser.add_argument("--metric", default=None,
                        help="metric to tabulate and plot (default: the accuracy the results "
                             "hold, probe top-1 before kNN; with --compare: theirs)")
    parser.add_argument("--title", default="", help="plot title (default: network and data)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parse_tool_args(parser)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout)  # stderr: errors only
    # Everything a mistake can be found in is read or checked first: it must not cost an
    # evaluation, nor replace a file it should not.
    others = [read_widths_results(path) for path in args.compare]
    # The curves of one plot share the metric; without --plot the files are only checked.
    compared = common_metric(others, args.compare) if args.plot else ""
    if args.metric and compared and args.metric != compared:
        raise ConfigError(f"--metric {args.metric}: the --compare files hold {compared}; curves "
                          "of different metrics cannot share one plot")
    inputs = {"--weights": args.weights, **config_inputs(args.config_file)}
    for path in args.compare:
        for flag, out in (("--output", args.output), ("--plot", args.plot)):
            if out:
                check_not_input(out, {"--compare": path}, flag)
    if args.output:
        check_output_file(args.output, "--output", args.overwrite, inputs)
    if args.plot:
        check_output_file(args.plot, "--plot", args.overwrite,
                          {**inputs, "--output": args.output}, FIGURE_EXTENSIONS)
    if not args.weights:
        if not (args.plot and others):
            parser.error("give --weights, --widths and --output (or only --plot with --compare)")
        print(plot_accuracy_vs_macs(others, args.plot, args.title or others[0].get("title", "")))
        return
    if not (args.widths and args.output):
        parser.error("--weights needs --widths and --output")
    if args.calibrate_batches is not None and args.calibrate_batches < 0:
        raise ConfigError(f"--calibrate-batches {args.calibrate_batches}: give a number of "
                          "training batches")
    cfg = load_cfg(args.config_file, list(args.opts))
    widths = requested_widths(args.widths, "--widths", cfg.MODEL.WIDTHS)
    opts = list(args.opts) + ["TEST.WIDTHS", str(widths)]
    if args.calibrate_batches is not None:
        opts += ["TEST.CALIBRATE_BATCHES", str(args.calibrate_batches)]
    cfg = load_cfg(args.config_file, opts)
    verify_run(cfg, training=False)  # every split the evaluators read, before any work
    seed_all(cfg.SEED)
    method = build_model(cfg)
    report = load_weights(method, args.weights, method.eval_parts(), "eval_widths",
                          trusted=cfg.MODEL.WEIGHTS_TRUSTED)
    if isinstance(method, ClassificationMethod):  # its outputs are its training set's labels
        check_classifier_classes(cfg, report.classes, args.weights)
        # A probe's classifier at an untrained width was trained on the statistics of its own
        # calibration: other ones give other numbers, which would stand in the table as its.
        mismatch = method.calibration_mismatch(cfg)
        if mismatch:
            given = ("--calibrate-batches" if args.calibrate_batches is not None
                     else "TEST.CALIBRATE_BATCHES")
            raise ConfigError(f"--widths {' '.join(f'{w:g}' for w in widths)} with {given} "
                              f"{cfg.TEST.CALIBRATE_BATCHES}: {mismatch}")
    method.to(resolve_device(cfg))
    results = SlimTrainer.test(cfg, method)
    # Checked before --output is written: a table of a metric no row has is no result.
    metric = pick_accuracy_metric(results, args.metric or compared or None)
    # The network the config runs, as analyze_model counts it (the same MACs in both tools).
    network = build_backbone(cfg, num_classes=head_classes(cfg))
    profile = profile_widths(network, cfg.INPUT.CROP_SIZE, cfg.MODEL.BACKBONE.IN_CHANNELS, widths)
    rows = []
    for r in profile:
        row = {"width": r["width"], "macs": r["macs"], "params": r["params"]}
        row.update({m: v for m, width, v in
                    ((*split_width_key(k), v) for k, v in results.items()) if width == r["width"]})
        rows.append(row)
    s = cfg.MODEL.SLIM
    trained = list(cfg.MODEL.WIDTHS) if s.MODE == "fixed" else [max(cfg.MODEL.WIDTHS), min(cfg.MODEL.WIDTHS)]
    label = args.label or os.path.splitext(os.path.basename(args.config_file))[0]
    b = cfg.MODEL.BACKBONE
    title = args.title or (f"{b.NAME}-{b.DEPTH} (base {b.BASE_CHANNELS}), {cfg.INPUT.CROP_SIZE} px, "
                           f"{cfg.DATASETS.TEST}")
    out = {"label": label, "title": title, "config": args.config_file, "weights": args.weights,
           "mode": s.MODE, "bn": s.BN, "trained_widths": trained,
           "calibrate_batches": cfg.TEST.CALIBRATE_BATCHES, "metric": metric, "rows": rows}
    widths_results(out, args.output, "--output")  # every row has the metric: or nothing is written
    atomic_write(args.output, lambda f: f.write(json.dumps(out, indent=1).encode()))
    print(f"{label}: {metric} per width (* trained)")
    for row in rows:
        star = "*" if row["width"] in trained else " "
        print(f"  {row['width']:5g}{star} {row['macs'] / 1e6:8.2f} MMACs  {row[metric]:6.2f}")
    print(f"wrote {args.output}")
    if args.plot:
        print(plot_accuracy_vs_macs([out] + others, args.plot, title))


if __name__ == "__main__":
    run_cli(main)
