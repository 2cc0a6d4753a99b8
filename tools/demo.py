#!/usr/bin/env python
"""The README demo: SlimCLR-MoCo v2 pre-training on the embedded Fashion-MNIST set, then kNN and
linear-probe top-1 of every width, next to the same evaluations of a randomly initialised
network and kNN on raw pixels.

    python tools/demo.py [--resume | --overwrite] [--skip-probe] [KEY VALUE ...]

Overrides go to pre-training; those that describe the data and the network (DATASETS.*,
DATALOADER.*, INPUT.CROP_SIZE / PIXEL_MEAN / PIXEL_STD / TEST_*, MODEL.BACKBONE.*, MODEL.WIDTHS,
MODEL.NUM_CLASSES, MODEL.DEVICE, SEED, TEST.IMS_PER_BATCH, TEST.KNN.*) go to the probes too, so
one command points the whole demo at other data. Writes OUTPUT_DIR/demo_results.json and prints
one table with a row per width.
"""
import argparse
import json
import os
import time
from pathlib import Path

from tabulate import tabulate

from slimdet.config import ConfigError
from slimdet.engine import (default_setup, load_cfg, parse_tool_args, run_cli, seed_all,
                            start_run_files, verify_run)
from slimdet.engine.run_folder import check_output_dir, clear_previous_run
from slimdet.engine.linear_probe_run import run_linear_probe
from slimdet.engine.trainer import SlimTrainer
from slimdet.evaluation import KNNEvaluator, knn_top1, profile_widths
from slimdet.modeling import build_model
from slimdet.utils.file_io import atomic_write

ROOT = Path(__file__).resolve().parents[1]
SHARED = ("DATASETS.", "DATALOADER.", "INPUT.CROP_SIZE", "INPUT.PIXEL_", "INPUT.TEST_",
          "MODEL.BACKBONE.", "MODEL.WIDTHS", "MODEL.NUM_CLASSES", "MODEL.DEVICE", "SEED",
          "TEST.IMS_PER_BATCH", "TEST.KNN.")


def shared_overrides(opts):
    pairs = list(zip(opts[0::2], opts[1::2]))
    return [x for key, value in pairs if key.startswith(SHARED) for x in (key, value)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config-file", default=str(ROOT / "configs/demo/slimclr_mocov2_demo.yaml"))
    p.add_argument("--probe-config", default=str(ROOT / "configs/demo/lincls_demo.yaml"))
    p.add_argument("--resume", action="store_true", help="continue an interrupted demo run")
    p.add_argument("--overwrite", action="store_true", help="replace a previous demo run")
    p.add_argument("--skip-probe", action="store_true", help="kNN only (faster)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides (see above)")
    args = parse_tool_args(p)

    cfg = load_cfg(args.config_file, args.opts)
    cfg.freeze()
    probe_cfg = load_cfg(args.probe_config, ["SEED", str(cfg.SEED)] + shared_overrides(args.opts))
    probe_dirs = {k: os.path.join(cfg.OUTPUT_DIR, k) for k in ("probe", "probe_random")}
    for out in [cfg.OUTPUT_DIR, *probe_dirs.values()]:
        check_output_dir(out, args.resume, args.overwrite)
    default_setup(cfg)
    verify_run(cfg)
    if not args.skip_probe:
        try:
            verify_run(probe_cfg)
        except ConfigError as e:
            raise ConfigError(f"{args.probe_config} (the linear probe): {e}") from e
    timings = {}

    t0 = time.perf_counter()
    trainer = SlimTrainer(cfg)
    # --resume after a kill during the probes: the finished pre-training is only evaluated.
    trained = trainer.final_model_iterations() if args.resume else 0  # reads the file once
    finished = trained >= trainer.max_iter
    if 0 < trained < trainer.max_iter:
        raise ConfigError(
            f"--resume: the demo in {cfg.OUTPUT_DIR} finished its pre-training at {trained} "
            f"iterations, and {trainer.max_iter} would continue it under linear probes trained on "
            f"the earlier model: start a new demo (another OUTPUT_DIR, or --overwrite)")
    if finished:
        trainer.load_for_evaluation(resume=True)
    else:
        trainer.resume_or_load(resume=args.resume)
    start_run_files(cfg, overwrite=args.overwrite)
    pretrained = (not finished and trainer.train()) or SlimTrainer.test(cfg, trainer.method)
    timings["pre-training + kNN (s)"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    seed_all(cfg.SEED)
    random_model = build_model(cfg).to(trainer.device)
    random_knn = KNNEvaluator(cfg).evaluate(random_model)
    pixel_knn = knn_top1(cfg, lambda images: images, trainer.device)
    timings["random-init and pixel kNN (s)"] = time.perf_counter() - t0

    probe = {}
    if not args.skip_probe:
        t0 = time.perf_counter()
        if args.overwrite:
            for out in probe_dirs.values():
                clear_previous_run(out)
        weights = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
        probe["slimclr"] = run_linear_probe(probe_cfg, weights, probe_dirs["probe"], args.resume)
        probe["random"] = run_linear_probe(probe_cfg, None, probe_dirs["probe_random"], args.resume)
        timings["linear probes (s)"] = time.perf_counter() - t0

    sizes = {r["width"]: r for r in profile_widths(random_model.backbone.cpu(), cfg.INPUT.CROP_SIZE,
                                                    cfg.MODEL.BACKBONE.IN_CHANNELS)}
    rows, record = [], {}
    for w in cfg.MODEL.WIDTHS:
        key = f"w{w:g}"
        row = {"width": w, "params (M)": sizes[w]["params"] / 1e6, "MMACs": sizes[w]["macs"] / 1e6,
               "kNN pixels": pixel_knn, "kNN random": random_knn[f"knn_top1/{key}"],
               "kNN SlimCLR": pretrained[f"knn_top1/{key}"]}
        if probe:
            row["linear random"] = probe["random"][f"linear_top1/{key}"]
            row["linear SlimCLR"] = probe["slimclr"][f"linear_top1/{key}"]
        rows.append(row)
        record[key] = row
    # SOLVER.MAX_ITER replaces the recipe's length (the epochs then place its schedule only).
    length = (f"{cfg.SOLVER.MAX_ITER} iterations of a {cfg.SOLVER.EPOCHS}-epoch recipe"
              if cfg.SOLVER.MAX_ITER else f"{cfg.SOLVER.EPOCHS} epochs")
    print()
    print(f"SlimCLR-MoCo v2 on {cfg.DATASETS.TRAIN} ({cfg.DATASETS.TRAIN_SUBSET or 'all'} training "
          f"images, {length}), top-1 % on {cfg.DATASETS.TEST_SUBSET or 'all'} "
          f"test images of {cfg.DATASETS.TEST}:")
    print(tabulate([list(r.values()) for r in rows], headers=list(rows[0]), tablefmt="pipe",
                   floatfmt=".2f"))
    print("  ".join(f"{k}: {v:.0f}" for k, v in timings.items()))
    results = {"per_width": record, "timings": timings}
    atomic_write(os.path.join(cfg.OUTPUT_DIR, "demo_results.json"),
                 lambda f: f.write(json.dumps(results, indent=2).encode()))


if __name__ == "__main__":
    run_cli(main)
