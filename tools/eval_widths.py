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
outputs of this tool), trained widths filled, calibrated ones open.
"""
import argparse
import json
import logging
import os
import sys

from slimdet.checkpoint import load_weights
from slimdet.config import ConfigError
from slimdet.engine import WidthsAction, load_cfg, parse_tool_args, run_cli, verify_run
from slimdet.engine.defaults import seed_all
from slimdet.engine.trainer import SlimTrainer, resolve_device
from slimdet.evaluation import profile_widths
from slimdet.modeling import build_model
from slimdet.utils.file_io import atomic_write
from slimdet.utils.results import split_width_key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--config-file", default="", metavar="FILE")
    parser.add_argument("--weights", default="", help="checkpoint (omit to only --plot --compare)")
    parser.add_argument("--widths", action=WidthsAction, default=None)
    parser.add_argument("--calibrate-batches", type=int, default=None,
                        help="TEST.CALIBRATE_BATCHES (default: the config's)")
    parser.add_argument("--output", default="", help="results JSON to write")
    parser.add_argument("--label", default="", help="curve label (default: the config's name)")
    parser.add_argument("--plot", default="", help="write accuracy vs MACs to this PNG")
    parser.add_argument("--compare", nargs="*", default=[], help="other results JSON to plot")
    parser.add_argument("--metric", default="knn_top1", help="metric to plot")
    parser.add_argument("--title", default="", help="plot title (default: network and data)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parse_tool_args(parser)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout)  # stderr: errors only
    others = []
    for path in args.compare:  # read first: a bad file must not cost an evaluation
        try:
            with open(path) as f:
                others.append(json.load(f))
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"--compare {path}: cannot read it as this tool's output: {e}") from None
    if not args.weights:
        if not (args.plot and others):
            parser.error("give --weights, --widths and --output (or only --plot with --compare)")
        from slimdet.analysis.plots import plot_accuracy_vs_macs

        print(plot_accuracy_vs_macs(others, args.plot, args.title or others[0].get("title", "")))
        return
    if not (args.widths and args.output):
        parser.error("--weights needs --widths and --output")
    opts = list(args.opts) + ["TEST.WIDTHS", str(args.widths)]
    if args.calibrate_batches is not None:
        opts += ["TEST.CALIBRATE_BATCHES", str(args.calibrate_batches)]
    cfg = load_cfg(args.config_file, opts)
    verify_run(cfg, training=False)  # every split the evaluators read, before any work
    seed_all(cfg.SEED)
    method = build_model(cfg)
    load_weights(method, args.weights, method.eval_parts(), "eval_widths",
                 trusted=cfg.MODEL.WEIGHTS_TRUSTED)
    method.to(resolve_device(cfg))
    results = SlimTrainer.test(cfg, method)
    profile = profile_widths(method.backbone, cfg.INPUT.CROP_SIZE, cfg.MODEL.BACKBONE.IN_CHANNELS,
                             args.widths)
    rows = []
    for r in profile:
        row = {"width": r["width"], "macs": r["macs"], "params": r["params"]}
        row.update({metric: v for metric, width, v in
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
           "calibrate_batches": cfg.TEST.CALIBRATE_BATCHES, "metric": args.metric, "rows": rows}
    atomic_write(args.output, lambda f: f.write(json.dumps(out, indent=1).encode()))
    print(f"{label}: {args.metric} per width (* trained)")
    for row in rows:
        star = "*" if row["width"] in trained else " "
        print(f"  {row['width']:5g}{star} {row['macs'] / 1e6:8.2f} MMACs  "
              f"{row.get(args.metric, float('nan')):6.2f}")
    print(f"wrote {args.output}")
    if args.plot:
        from slimdet.analysis.plots import plot_accuracy_vs_macs

        print(plot_accuracy_vs_macs([out] + others, args.plot, title))


if __name__ == "__main__":
    run_cli(main)
