#!/usr/bin/env python
"""The README demo: SlimCLR-MoCo v2 pre-training on the embedded Fashion-MNIST set, then kNN and
linear-probe top-1 of every width, next to the same evaluations of a randomly initialised network.

    python tools/demo.py [--skip-probe] [--resume] [KEY VALUE ...]   (overrides go to pre-training)

Writes OUTPUT_DIR/demo_results.json and prints one table with a row per width.
"""
import argparse
import json
import os
import time
from pathlib import Path

from tabulate import tabulate

from slimdet.engine import default_setup, load_cfg, seed_all
from slimdet.engine.trainer import SlimTrainer
from slimdet.evaluation import KNNEvaluator, profile_widths
from slimdet.engine.linear_probe_run import run_linear_probe
from slimdet.modeling import build_model

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config-file", default=str(ROOT / "configs/demo/slimclr_mocov2_demo.yaml"))
    p.add_argument("--probe-config", default=str(ROOT / "configs/demo/lincls_demo.yaml"))
    p.add_argument("--resume", action="store_true", help="continue an interrupted demo run")
    p.add_argument("--skip-probe", action="store_true", help="kNN only (faster)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides of pre-training")
    args = p.parse_args()

    cfg = load_cfg(args.config_file, args.opts)
    cfg.freeze()
    default_setup(cfg)
    timings = {}

    t0 = time.perf_counter()
    trainer = SlimTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    pretrained = trainer.train() or SlimTrainer.test(cfg, trainer.method)
    timings["pre-training + kNN (s)"] = time.perf_counter() - t0
    weights = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")

    t0 = time.perf_counter()
    seed_all(cfg.SEED)
    random_model = build_model(cfg).to(trainer.device)
    random_knn = KNNEvaluator(cfg).evaluate(random_model)
    timings["random-init kNN (s)"] = time.perf_counter() - t0

    probe = {}
    if not args.skip_probe:
        t0 = time.perf_counter()
        probe_cfg = load_cfg(args.probe_config, ["SEED", str(cfg.SEED)])
        probe["slimclr"] = run_linear_probe(probe_cfg, weights, os.path.join(cfg.OUTPUT_DIR, "probe"))
        probe["random"] = run_linear_probe(probe_cfg, None, os.path.join(cfg.OUTPUT_DIR, "probe_random"))
        timings["linear probes (s)"] = time.perf_counter() - t0

    sizes = {r["width"]: r for r in profile_widths(random_model.backbone.cpu(), cfg.INPUT.CROP_SIZE,
                                                    cfg.MODEL.BACKBONE.IN_CHANNELS)}
    rows, record = [], {}
    for w in cfg.MODEL.WIDTHS:
        key = f"w{w:g}"
        row = {"width": w, "params (M)": sizes[w]["params"] / 1e6, "MMACs": sizes[w]["macs"] / 1e6,
               "kNN random": random_knn[f"knn_top1/{key}"], "kNN SlimCLR": pretrained[f"knn_top1/{key}"]}
        if probe:
            row["linear random"] = probe["random"][f"linear_top1/{key}"]
            row["linear SlimCLR"] = probe["slimclr"][f"linear_top1/{key}"]
        rows.append(row)
        record[key] = row
    print()
    print(f"SlimCLR-MoCo v2 on Fashion-MNIST ({cfg.DATASETS.TRAIN_SUBSET or 'all'} training images, "
          f"{cfg.SOLVER.EPOCHS} epochs), top-1 % on {cfg.DATASETS.TEST_SUBSET or 'all'} test images:")
    print(tabulate([list(r.values()) for r in rows], headers=list(rows[0]), tablefmt="pipe",
                   floatfmt=".2f"))
    print("  ".join(f"{k}: {v:.0f}" for k, v in timings.items()))
    with open(os.path.join(cfg.OUTPUT_DIR, "demo_results.json"), "w") as f:
        json.dump({"per_width": record, "timings": timings}, f, indent=2)


if __name__ == "__main__":
    main()
