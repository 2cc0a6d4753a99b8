#!/usr/bin/env python
"""Draw a run's curves from OUTPUT_DIR/metrics.json: per-width losses, LR, kNN / probe accuracy,
gradient diagnostics. PNGs go to OUTPUT_DIR/plots/ (or --out).

    python tools/plot_metrics.py output/demo_slimclr_mocov2
"""
import argparse
import sys

from slimdet.analysis.plots import plot_run
from slimdet.engine import run_cli


def main(argv=None) -> list:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", help="a run's OUTPUT_DIR (or its metrics.json)")
    parser.add_argument("--out", default=None, help="folder for the PNGs (default OUTPUT_DIR/plots)")
    args = parser.parse_args(argv)
    written = plot_run(args.output_dir, args.out)
    if not written:
        print(f"nothing to plot in {args.output_dir}", file=sys.stderr)
    for p in written:
        print(p)
    return written


if __name__ == "__main__":
    run_cli(main)  # a missing folder or metrics.json: one line, exit status 2
