#!/usr/bin/env python
"""Spread of the short training recipe of tests/modeling/test_supervised.py over seeds and thread counts.

A test that trains must pass on any machine of this kind, where the last bits of the arithmetic
(and so the run's path) differ; seeds and thread counts are the stand-in for that here. Prints
one JSON line per run with the top-1 (%) of every width; the test asserts > 15 % (chance: 10).

    python benchmarks/recipe_spread.py [--seeds 0,1,2] [--threads 1,2] [KEY VALUE ...]

Extra KEY VALUE pairs replace the test's recipe (e.g. SOLVER.BASE_LR 0.5 SOLVER.WARMUP_EPOCHS
0.2 for the demo's, which left width 0.25 at chance on another machine).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# tests/modeling/test_supervised.py::test_supervised_demo_trains_and_reports_every_width
TEST_RECIPE = ["DATASETS.TRAIN_SUBSET", "1000", "DATASETS.TEST_SUBSET", "500", "MODEL.DEVICE",
               "cpu", "SOLVER.MAX_ITER", "40", "SOLVER.EPOCHS", "4", "SOLVER.IMS_PER_BATCH", "100",
               "SOLVER.BASE_LR", "0.2", "SOLVER.WARMUP_EPOCHS", "1.0", "TEST.EVALUATORS",
               '["ClassificationEvaluator"]', "LOG_PERIOD", "1000"]


def one_run(seed: int, opts) -> None:
    import torch

    from slimdet.engine import load_cfg, seed_all
    from slimdet.engine.trainer import SlimTrainer

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    with tempfile.TemporaryDirectory() as out:
        cfg = load_cfg(str(ROOT / "configs/demo/supervised_demo.yaml"),
                       TEST_RECIPE + list(opts) + ["SEED", str(seed), "OUTPUT_DIR", out])
        seed_all(seed)
        trainer = SlimTrainer(cfg)
        trainer.resume_or_load(resume=False)
        results = trainer.train()
    print(json.dumps({"threads": torch.get_num_threads(), "seed": seed, "opts": list(opts),
                      "top1": {f"w{w:g}": round(results[f"top1/w{w:g}"], 1)
                               for w in cfg.MODEL.WIDTHS}}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--one-run", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("opts", nargs=argparse.REMAINDER)
    args = p.parse_args()
    if args.one_run is not None:
        return one_run(args.one_run, args.opts)
    for threads in args.threads.split(","):
        env = dict(os.environ, OMP_NUM_THREADS=threads)
        for seed in args.seeds.split(","):
            subprocess.run([sys.executable, __file__, "--one-run", seed] + args.opts, env=env,
                           check=True)


if __name__ == "__main__":
    main()
