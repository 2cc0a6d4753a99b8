"""Evaluation split between the processes of a job (kNN, classification) gives the numbers of a
one-process evaluation of the same weights."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TRAIN = [sys.executable, str(ROOT / "tools/train_net.py"), "--config-file",
         str(ROOT / "configs/demo/supervised_demo.yaml")]
ENV = dict(os.environ, OMP_NUM_THREADS="1")
# 200 bank and 100 test images: shares of 100 and 50, read in batches of 30 (other batches
# than one process's); k 20 of 200, so the merge of the shares' candidates decides. Width 0.75
# is untrained: the main process calibrates it and broadcasts its statistics.
SMALL = ["MODEL.WIDTHS", "[1.0,0.5]", "MODEL.BACKBONE.BASE_CHANNELS", "8",
         "DATASETS.TRAIN_SUBSET", "200", "DATASETS.TEST_SUBSET", "100",
         "SOLVER.IMS_PER_BATCH", "50", "TEST.IMS_PER_BATCH", "30", "TEST.KNN.K", "20",
         "TEST.EVALUATORS", '["ClassificationEvaluator","KNNEvaluator"]',
         "TEST.WIDTHS", "[1.0,0.75,0.5]", "TEST.CALIBRATE_BATCHES", "2"]
KEYS = [f"{metric}/w{w}" for metric in ("knn_top1", "top1", "top5") for w in ("1", "0.75", "0.5")]


def _final_evaluation(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.json").read_text().splitlines()]
    return {k: v for r in rows for k, v in r.items() if k in KEYS}


def test_two_process_evaluation_gives_the_numbers_of_one_process(tmp_path):
    """The final evaluation of a two-process run (each process its share of the bank and test
    set; per-process BN statistics of the trained widths, which the evaluation replaces by the
    main process's, as in the checkpoint) against a one-process ``--eval-only`` of its
    checkpoint. Tolerance: one test image, 100/N = 1 point (each process's batches hold other
    images than one process's, which can change the last bits of convolution outputs and so a
    near tie); on these CPUs the numbers have been equal."""
    run = tmp_path / "two"
    res = subprocess.run(TRAIN + ["--num-gpus", "2"] + SMALL + [
        "SOLVER.MAX_ITER", "24", "SOLVER.BASE_LR", "0.1", "OUTPUT_DIR", str(run)],
        env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    two = _final_evaluation(run)
    assert sorted(two) == sorted(KEYS)
    # Each process evaluated its own share, and counted the whole set.
    rank1 = (run / "log.txt.rank1").read_text()
    assert ("kNN: process 1 of 2 reads images [100, 200) of the memory bank and [50, 100) of "
            "the test set") in rank1
    assert "Classification: process 1 of 2 reads images [50, 100) of 'fashion_mnist_test'" in rank1
    main = (run / "log.txt").read_text()
    assert ("kNN: 100 test images of DATASETS.TEST 'fashion_mnist_test' against a memory bank "
            "of 200 images") in main
    assert "Classification: 100 test images of 'fashion_mnist_test'" in main

    alone = tmp_path / "one"
    res = subprocess.run(TRAIN + ["--eval-only"] + SMALL + [
        "MODEL.WEIGHTS", str(run / "model_final.pth"), "OUTPUT_DIR", str(alone)],
        env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    one = json.loads((alone / "eval_results.json").read_text())["results"]
    assert sorted(one) == sorted(KEYS)
    assert len(set(one.values())) > 3  # a trained network: the widths' numbers differ
    for k in KEYS:
        assert two[k] == pytest.approx(one[k], abs=1.0 + 1e-4), k
