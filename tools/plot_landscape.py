#!/usr/bin/env python
"""Loss landscape of every width around the final weights, with the training trajectory
(PCA of the saved weights, filter-normalised; see slimdet/analysis/landscape.py).

    python tools/plot_landscape.py --config-file configs/demo/slimclr_mocov2_demo.yaml \
        --checkpoints output/demo_slimclr_mocov2 [--grid 11] [--widths 1.0 0.25] [--batches 2]

Weights: CHECKPOINTS/trajectory/iter_*.pth (ANALYSIS.TRAJECTORY_PERIOD) or CHECKPOINTS/model_*.pth.
Writes OUT/landscape_w{w}.png per width and OUT/landscape.npz (xs, ys, widths, loss[w, y, x],
trajectory, iterations, explained, final_loss); OUT defaults to CHECKPOINTS/landscape.

--widths: any widths in the network's range, each once (default MODEL.WIDTHS). The method's
full width always runs first at each point (SimCLR's narrower widths are scored against its
outputs, as in training), so a width's landscape does not depend on the other widths asked for.
The weights are loaded as every tool loads them: a run of another method or network than the
config's is refused in one line. Files the tool wrote (each records it) are replaced by a new
call; landscape_w{w}.png of widths not asked for this time are left as they are (each is the
landscape of its width; landscape.npz holds this call's widths). Any other file of these names
is replaced only with --overwrite.
"""
import argparse
import logging
import os
import sys
import time
from typing import Dict, Optional, Sequence, Tuple

import torch

from slimdet.analysis.landscape import (LANDSCAPE_TOOL, TaskLossEvaluator, compute_landscape,
                                        load_trajectory, plot_landscape, saved_by_landscape)
from slimdet.analysis.plots import check_own_outputs
from slimdet.analysis.requests import checked_device, requested_widths
from slimdet.data import build_train_loader
from slimdet.config import ConfigError
from slimdet.engine import WidthsAction, load_cfg, parse_tool_args, run_cli
from slimdet.modeling import build_model
from slimdet.utils.file_io import check_output_folder

logger = logging.getLogger("slimdet.landscape")


def fixed_batches(cfg, n: int, batch_size: int, device: torch.device) -> list:
    """The first ``n`` training batches of the config's (seeded, deterministic) loader."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.SOLVER.IMS_PER_BATCH = batch_size
    loader = iter(build_train_loader(cfg, device))
    return [next(loader) for _ in range(n)]


def output_files(out: str, widths: Sequence[float]) -> Tuple[Dict[float, str], str]:
    """The figure of each width and the grid file the tool writes in ``out``."""
    return ({w: os.path.join(out, f"landscape_w{w:g}.png") for w in widths},
            os.path.join(out, "landscape.npz"))


def run(cfg, checkpoints: str, grid: int = 11, widths: Optional[Sequence[float]] = None,
        batches: int = 2, batch_size: int = 128, span: Optional[float] = None, out: str = "",
        device: str = "cpu", batch_list: Optional[list] = None, overwrite: bool = False) -> dict:
    """Compute and draw; returns ``{"npz": path, "png": {width: path}, "landscape": Landscape}``.
    ``batch_list`` replaces the loader's batches (tests). Every argument is checked before the
    weights are read (one-line errors)."""
    if span is not None and not span > 0:
        raise ConfigError(f"--span {span:g}: the grid covers +-SPAN on both axes; give a "
                          "number > 0 (or leave it out: 1.3 x the trajectory)")
    widths = requested_widths(widths or cfg.MODEL.WIDTHS, "--widths", cfg.MODEL.WIDTHS)
    out = out or os.path.join(checkpoints, "landscape")
    check_output_folder(out, "--out")
    pngs, npz = output_files(out, widths)
    check_own_outputs([*pngs.values(), npz], "--out", LANDSCAPE_TOOL, overwrite,
                      owned=saved_by_landscape)
    dev = checked_device(device)
    method = build_model(cfg).to(dev)
    trajectory = load_trajectory(checkpoints, model=method, purpose="plot_landscape")
    method.to(dev)
    data = batch_list if batch_list is not None else fixed_batches(cfg, batches, batch_size, dev)
    evaluate = TaskLossEvaluator(method, data, widths)
    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        if done % max(1, total // 10) == 0 or done == total:
            logger.info("grid %d/%d (%.0f s)", done, total, time.perf_counter() - start)

    ls = compute_landscape(method, trajectory, evaluate, grid=grid, span=span, progress=progress)
    os.makedirs(out, exist_ok=True)
    b = cfg.MODEL.BACKBONE
    for w in ls.widths:
        plot_landscape(ls, w, pngs[w], title=f"{cfg.MODEL.METHOD} {b.NAME}-{b.DEPTH}, width {w:g}")
    return {"npz": ls.save(npz), "png": {w: pngs[w] for w in ls.widths}, "landscape": ls}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--checkpoints", required=True, help="folder with trajectory/ or model_*.pth")
    parser.add_argument("--grid", type=int, default=11, help="odd number of points per axis")
    parser.add_argument("--widths", action=WidthsAction, default=None, help="default: MODEL.WIDTHS")
    parser.add_argument("--batches", type=int, default=2, help="fixed training batches per loss")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--span", type=float, default=None,
                        help="grid covers +-SPAN on both axes (default: 1.3 x the trajectory)")
    parser.add_argument("--out", default="", help="output folder (default CHECKPOINTS/landscape)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace files of the output names that this tool did not write")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parse_tool_args(parser, argv)
    if args.grid < 3 or args.grid % 2 == 0:
        raise ConfigError(f"--grid {args.grid}: give an odd number >= 3 (its centre point is the "
                          "final weights)")
    for flag, value in (("--batches", args.batches), ("--batch-size", args.batch_size)):
        if value < 1:
            raise ConfigError(f"{flag} {value}: give at least 1")
    # stdout: stderr is for errors only (a user error is its one line there).
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    cfg = load_cfg(args.config_file, args.opts)
    res = run(cfg, args.checkpoints, args.grid, args.widths, args.batches, args.batch_size,
              args.span, args.out, args.device, overwrite=args.overwrite)
    for p in list(res["png"].values()) + [res["npz"]]:
        print(p)
    return res


if __name__ == "__main__":
    run_cli(main)  # a missing folder, too few weight files, a bad flag or key: one line, exit 2
