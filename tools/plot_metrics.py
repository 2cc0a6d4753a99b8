#!/usr/bin/env python
"""Draw a run's curves from OUTPUT_DIR/metrics.json: per-width losses, LR, kNN / probe accuracy,
gradient diagnostics. PNGs go to OUTPUT_DIR/plots/ (or --out).

    python tools/plot_metrics.py output/demo_slimclr_mocov2

Lines of metrics.json that are not JSON (a run killed mid-write) are skipped, and a warning
names them; a file with no metrics record at all (an eval_results.json ...) is refused. The figures are losses.png, lr.png, accuracy.png and gradients.png; each PNG records
that this tool drew it. A call replaces the figures it drew earlier and removes those whose
metrics are no longer in the file (so the folder never shows a stale figure beside new ones); a
file of one of those names that it did not draw is replaced only with --overwrite, never removed.
"""
import argparse
import sys
from typing import List, Optional

from slimdet.analysis.plots import plot_run, run_plots_folder, skipped_lines_note
from slimdet.engine import run_cli
from slimdet.utils.file_io import check_output_folder


def main(argv: Optional[List[str]] = None) -> List[str]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", help="a run's OUTPUT_DIR (or its metrics.json)")
    parser.add_argument("--out", default=None, help="folder for the PNGs (default OUTPUT_DIR/plots)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace files of the figures' names that this tool did not draw")
    args = parser.parse_args(argv)
    check_output_folder(run_plots_folder(args.output_dir, args.out), "--out")
    done = plot_run(args.output_dir, args.out, args.overwrite)
    note = skipped_lines_note(done.metrics, done.skipped)
    if note:
        print(note)
    for p in done.removed:
        print(f"removed {p}: drawn by an earlier call, its metrics are no longer in {done.metrics}")
    if not done.written:
        print(f"nothing to plot in {args.output_dir}", file=sys.stderr)
    for p in done.written:
        print(p)
    return done.written


if __name__ == "__main__":
    run_cli(main)  # a missing folder or metrics.json, a file that is not one: one line, exit 2
