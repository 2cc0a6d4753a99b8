"""A user's mistakes through the real CLI: exit status 2, one line on stderr naming the culprit,
no traceback anywhere, and nothing written into (or changed in) OUTPUT_DIR."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
TRAIN = [sys.executable, str(ROOT / "tools/train_net.py"), "--config-file",
         str(ROOT / "configs/demo/slimclr_mocov2_demo.yaml")]
TINY = ["DATASETS.TRAIN_SUBSET", "256", "DATASETS.TEST_SUBSET", "100", "TEST.EVALUATORS", "[]",
        "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "64", "MODEL.MOCOV2.QUEUE_SIZE", "128",
        "LOG_PERIOD", "1"]
ENV = dict(os.environ, OMP_NUM_THREADS="1")


def run(args, timeout=300):
    return subprocess.run(TRAIN + args, capture_output=True, text=True, env=ENV, timeout=timeout)


def run_all(arg_lists, timeout=300):
    """Independent starts side by side (most of each is start-up); results in order."""
    procs = [subprocess.Popen(TRAIN + a, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=ENV) for a in arg_lists]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return results


def assert_one_line_error(res, *fragments):
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, res.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr[-3000:]
    assert "Traceback" not in res.stdout + res.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def digests(folder: Path):
    return {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def colour_folder(tmp_path_factory) -> Path:
    """``train/`` and ``val/``, 2 classes of 8 (train) / 4 (val) smooth 24x20 colour JPEGs."""
    root = tmp_path_factory.mktemp("colour")
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 4)):
        for c in ("ant", "bee"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                small = rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)
                Image.fromarray(small).resize((24, 20), Image.BICUBIC).save(
                    root / split / c / f"{i}.jpg", quality=90)
    return root


def folder_keys(root: Path, channels=3):
    mean = "[0.5,0.5,0.5]" if channels == 3 else "[0.5]"
    std = "[0.25,0.25,0.25]" if channels == 3 else "[0.25]"
    return ["DATASETS.TRAIN", f"folder:{root}/train", "DATASETS.TEST", f"folder:{root}/val",
            "DATASETS.TRAIN_SUBSET", "0", "DATASETS.TEST_SUBSET", "0",
            "MODEL.BACKBONE.IN_CHANNELS", str(channels), "INPUT.PIXEL_MEAN", mean,
            "INPUT.PIXEL_STD", std, "INPUT.CROP_SIZE", "16", "SOLVER.IMS_PER_BATCH", "8",
            "MODEL.MOCOV2.QUEUE_SIZE", "16", "SOLVER.MAX_ITER", "2", "TEST.EVALUATORS", "[]"]


def test_config_mistakes_exit_2_in_one_line_before_writing(tmp_path, colour_folder):
    out = tmp_path / "out"
    bee_only = tmp_path / "bee_only"
    shutil.copytree(colour_folder / "val" / "bee", bee_only / "bee")
    cases = [
        (["MODEL.WIDTHS", "[1.0, 0.001]"], ["MODEL.WIDTHS", "0.001", "backbone.conv1"]),
        (["SOLVER.IMS_PER_BATCH", "512"], ["SOLVER.IMS_PER_BATCH 512", "which has 256 images"]),
        # The demo config reads grey images; pointed at a colour folder it must say so.
        (folder_keys(colour_folder, channels=1), ["IN_CHANNELS is 1", "colour", "train"]),
        # A missing test split is found at the start, not after training.
        (folder_keys(colour_folder) + ["DATASETS.TEST", f"folder:{colour_folder}/test",
                                       "TEST.EVALUATORS", '["KNNEvaluator"]'],
         ["DATASETS.TEST", f"{colour_folder}/test"]),
        # A test folder without one of the training classes would shift the labels after it.
        (folder_keys(colour_folder) + ["DATASETS.TEST", f"folder:{bee_only}",
                                       "TEST.EVALUATORS", '["KNNEvaluator"]'],
         ["DATASETS.TEST", "DATASETS.TRAIN", "lacks ['ant']"]),
        # A flag typed among the overrides is read as the flag (not as a config key).
        (["TEST.EVALUATORS", '["KNNEvaluator"]', "MODEL.WEIGHTS", str(tmp_path / "missing.pth"),
          "--eval-only"],
         ["missing.pth", "does not exist"]),
    ]
    results = run_all([TINY + opts + ["OUTPUT_DIR", str(out)] for opts, _ in cases])
    for (opts, fragments), res in zip(cases, results):
        assert_one_line_error(res, *fragments)
    assert not out.exists()


def test_corrupt_image_under_on_bad_image_error_is_one_line(tmp_path, colour_folder):
    root = tmp_path / "data"
    subprocess.run(["cp", "-r", str(colour_folder), str(root)], check=True)
    bad = root / "train" / "bee" / "3.jpg"
    bad.write_bytes(bad.read_bytes()[:100])
    res = run(folder_keys(root) + ["DATALOADER.ON_BAD_IMAGE", "error", "DATALOADER.NUM_WORKERS",
                                   "1", "OUTPUT_DIR", str(tmp_path / "out")])
    assert_one_line_error(res, "cannot decode image", str(bad))
    # The same data under the default policy trains, naming the skipped file.
    res = run(folder_keys(root) + ["OUTPUT_DIR", str(tmp_path / "skip")])
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"skipping unreadable image {bad}" in (tmp_path / "skip" / "log.txt").read_text()


def test_user_error_in_two_processes_is_reported_once(tmp_path):
    res = run(["--num-gpus", "2"] + TINY + ["SOLVER.IMS_PER_BATCH", "63",
                                            "OUTPUT_DIR", str(tmp_path / "out")])
    assert_one_line_error(res, "SOLVER.IMS_PER_BATCH 63", "2 processes")
    assert not (tmp_path / "out").exists()


def test_a_finished_run_is_not_changed_by_later_starts(tmp_path):
    out = tmp_path / "run"
    first = run(TINY + ["OUTPUT_DIR", str(out)])
    assert first.returncode == 0, first.stderr[-3000:]
    before, log = digests(out), (out / "log.txt").read_text()
    assert {"config.yaml", "metrics.json", "model_final.pth", "last_checkpoint"} <= set(before)

    # A fresh start into the folder (same or other config) is refused, naming the ways out; a
    # resume or an overwrite that fails its checks writes nothing.
    refused, resumed, overwritten, no_weights = run_all([
        TINY + ["OUTPUT_DIR", str(out)],
        ["--resume"] + TINY + ["MODEL.WIDTHS", "[1.0, 0.001]", "OUTPUT_DIR", str(out)],
        ["--overwrite"] + TINY + ["SOLVER.IMS_PER_BATCH", "512", "OUTPUT_DIR", str(out)],
        ["--eval-only"] + TINY + ["TEST.EVALUATORS", '["KNNEvaluator"]', "OUTPUT_DIR", str(out)]])
    assert_one_line_error(refused, str(out), "--resume", "--overwrite", "OUTPUT_DIR")
    assert_one_line_error(resumed, "MODEL.WIDTHS")
    assert_one_line_error(overwritten, "SOLVER.IMS_PER_BATCH")
    assert_one_line_error(no_weights, "--eval-only needs the checkpoint", "MODEL.WEIGHTS")
    assert digests(out) == before

    # --eval-only leaves checkpoints, config and metrics alone and writes its own results.
    res = run(["--eval-only", "--resume"] + TINY + ["TEST.EVALUATORS", '["KNNEvaluator"]',
                                                    "OUTPUT_DIR", str(out)])
    assert res.returncode == 0, res.stderr[-3000:]
    after = digests(out)
    assert {k: v for k, v in after.items()
            if k not in ("log.txt", "eval_results.json", "eval_history.jsonl")} == \
        {k: v for k, v in before.items() if k != "log.txt"}
    assert (out / "log.txt").read_text().startswith(log)  # appended to, never rewritten
    record = json.loads((out / "eval_results.json").read_text())
    assert record["weights"] == str(out / "model_final.pth")
    assert set(record["results"]) == {"knn_top1/w1", "knn_top1/w0.5", "knn_top1/w0.25"}
    history = (out / "eval_history.jsonl").read_text().splitlines()
    assert [json.loads(line)["results"] for line in history] == [record["results"]]
    # An evaluation without evaluators measures nothing: refused, the results stay (it wrote
    # an eval_results.json of no numbers over them, exit 0).
    res = run(["--eval-only", "--resume"] + TINY + ["OUTPUT_DIR", str(out)])
    assert_one_line_error(res, "--eval-only with TEST.EVALUATORS []", "nothing to evaluate",
                          "KNNEvaluator")
    assert json.loads((out / "eval_results.json").read_text()) == record
    assert (out / "eval_history.jsonl").read_text().splitlines() == history

    # --resume with other values continues under them, keeps the config the run had so far
    # and names every changed key.
    res = run(["--resume"] + TINY + ["SOLVER.MAX_ITER", "3", "LOG_PERIOD", "2",
                                     "OUTPUT_DIR", str(out)])
    assert res.returncode == 0, res.stderr[-3000:]
    kept = yaml.safe_load((out / "config.before_resume1.yaml").read_text())
    assert kept["SOLVER"]["MAX_ITER"] == 2 and kept["LOG_PERIOD"] == 1
    assert yaml.safe_load((out / "config.yaml").read_text())["SOLVER"]["MAX_ITER"] == 3
    warning = next(line for line in (out / "log.txt").read_text().splitlines()
                   if "--resume with 2 changed config key(s)" in line)
    assert "LOG_PERIOD: 1 -> 2" in warning and "SOLVER.MAX_ITER: 2 -> 3" in warning

    # --overwrite replaces the run: one run in metrics.json, no stale checkpoint or config.
    res = run(["--overwrite"] + TINY + ["SOLVER.MAX_ITER", "1", "OUTPUT_DIR", str(out)])
    assert res.returncode == 0, res.stderr[-3000:]
    assert not (out / "config.before_resume1.yaml").exists()
    iterations = [json.loads(line)["iteration"]
                  for line in (out / "metrics.json").read_text().splitlines()]
    assert iterations == [0]
    assert yaml.safe_load((out / "config.yaml").read_text())["SOLVER"]["MAX_ITER"] == 1


def test_eval_only_checks_only_the_splits_its_evaluators_read(colour_folder):
    """--eval-only (verify_run(training=False)) needs no training split unless an evaluator reads
    it: kNN's memory bank, or the calibration batches of a width without BN statistics."""
    from slimdet.config import ConfigError
    from slimdet.engine import load_cfg, verify_run

    keys = ["DATASETS.TRAIN", f"folder:{colour_folder}/missing", "DATASETS.TEST",
            f"folder:{colour_folder}/val", "MODEL.BACKBONE.IN_CHANNELS", 3,
            "INPUT.PIXEL_MEAN", [0.5] * 3, "INPUT.PIXEL_STD", [0.25] * 3, "MODEL.NUM_CLASSES", 2,
            "DATASETS.TRAIN_SUBSET", 0, "DATASETS.TEST_SUBSET", 0]
    probe = str(ROOT / "configs/demo/lincls_demo.yaml")
    verify_run(load_cfg(probe, keys), training=False)  # ClassificationEvaluator: val/ only
    with pytest.raises(FileNotFoundError, match=r"DATASETS\.TRAIN 'folder:.*missing'"):
        verify_run(load_cfg(probe, keys), training=True)
    with pytest.raises(FileNotFoundError, match=r"DATASETS\.TRAIN 'folder:.*missing'"):
        verify_run(load_cfg(probe, keys + ["TEST.EVALUATORS", ["KNNEvaluator"]]), training=False)
    with pytest.raises(FileNotFoundError, match=r"DATASETS\.TRAIN 'folder:.*missing'"):
        verify_run(load_cfg(probe, keys + ["TEST.WIDTHS", [1.0, 0.6], "TEST.CALIBRATE_BATCHES", 2]),
                   training=False)
    with pytest.raises(ConfigError, match=r"MODEL\.NUM_CLASSES is 1 but DATASETS\.TEST"):
        verify_run(load_cfg(probe, keys + ["MODEL.NUM_CLASSES", 1]), training=False)


def test_eval_only_of_a_classifier_compares_test_classes_with_its_training_classes(
        tmp_path, colour_folder, caplog, capsys):
    """A probe evaluated on a folder without one of its training classes would score shifted
    labels. Its checkpoint records the class names it was trained on, so --eval-only refuses
    such a test folder whatever the config's DATASETS.TRAIN (here the default in-memory set,
    which has other class names); a file without class names is compared with the config's
    DATASETS.TRAIN, and a training split that is not there leaves a warning instead."""
    from slimdet.config import ConfigError
    from slimdet.engine import load_cfg
    from slimdet.engine.trainer import check_classifier_classes

    bee_only = tmp_path / "bee_only"
    shutil.copytree(colour_folder / "val" / "bee", bee_only / "bee")
    colour = ["MODEL.BACKBONE.IN_CHANNELS", "3", "INPUT.PIXEL_MEAN", "[0.5,0.5,0.5]",
              "INPUT.PIXEL_STD", "[0.25,0.25,0.25]", "MODEL.NUM_CLASSES", "2",
              "DATASETS.TRAIN_SUBSET", "0", "DATASETS.TEST_SUBSET", "0",
              "MODEL.BACKBONE.BASE_CHANNELS", "8", "SOLVER.IMS_PER_BATCH", "8",
              "TEST.IMS_PER_BATCH", "8", "DATALOADER.NUM_WORKERS", "0"]
    probe_cfg = ["--config-file", str(ROOT / "configs/demo/lincls_demo.yaml")]
    out = tmp_path / "probe"
    trained = run(probe_cfg + colour + ["DATASETS.TRAIN", f"folder:{colour_folder}/train",
                                        "DATASETS.TEST", f"folder:{colour_folder}/val",
                                        "SOLVER.MAX_ITER", "1", "OUTPUT_DIR", str(out)])
    assert trained.returncode == 0, trained.stderr[-3000:]
    weights = out / "model_final.pth"
    import torch
    assert torch.load(weights, weights_only=True)["classes"] == ["ant", "bee"]

    refused, resumed, right = run_all([
        probe_cfg + ["--eval-only"] + colour + ["DATASETS.TEST", f"folder:{bee_only}",
                                                "MODEL.WEIGHTS", str(weights),
                                                "OUTPUT_DIR", str(tmp_path / "ev")],
        probe_cfg + ["--eval-only", "--resume"] + colour + ["DATASETS.TEST", f"folder:{bee_only}",
                                                            "OUTPUT_DIR", str(out)],
        probe_cfg + ["--eval-only"] + colour + ["DATASETS.TEST", f"folder:{colour_folder}/val",
                                                "MODEL.WEIGHTS", str(weights),
                                                "OUTPUT_DIR", str(tmp_path / "ev_right")]])
    assert_one_line_error(refused, "DATASETS.TEST", "bee_only", "lacks ['ant']", str(weights))
    assert_one_line_error(resumed, "DATASETS.TEST", "bee_only", "lacks ['ant']")
    assert not (tmp_path / "ev" / "eval_results.json").exists()
    assert right.returncode == 0, right.stderr[-3000:]
    results = json.loads((tmp_path / "ev_right" / "eval_results.json").read_text())["results"]
    # Two classes: top-1 of each width, no top-5 (100 by construction).
    assert set(results) == {"top1/w1", "top1/w0.5", "top1/w0.25"}, results

    # tools/eval_widths.py reads the file's class names too.
    from tests.helpers import run_tool

    widths = run_tool(capsys, "eval_widths", probe_cfg + ["--weights", weights, "--widths", "1",
                                                          "--output", tmp_path / "w.json"]
                      + colour + ["DATASETS.TEST", f"folder:{bee_only}"])
    assert_one_line_error(widths, "DATASETS.TEST", "bee_only", "lacks ['ant']", str(weights))
    assert not (tmp_path / "w.json").exists()

    # A file without class names (older or reference files): the config's DATASETS.TRAIN.
    keys = colour + ["DATASETS.TRAIN", f"folder:{colour_folder}/train",
                     "DATASETS.TEST", f"folder:{bee_only}"]
    probe = str(ROOT / "configs/demo/lincls_demo.yaml")
    with pytest.raises(ConfigError, match=r"DATASETS\.TEST .*bee_only.* lacks \['ant'\]"):
        check_classifier_classes(load_cfg(probe, keys), None, "old.pth")
    check_classifier_classes(load_cfg(probe, keys), ["bee"], "other.pth")  # the file's names win
    keys[keys.index("DATASETS.TRAIN") + 1] = f"folder:{colour_folder}/missing"
    check_classifier_classes(load_cfg(probe, keys), None, "old.pth")
    assert "Cannot compare the classes of DATASETS.TEST" in caplog.text
    caplog.clear()
    # The config's default in-memory set is no evidence of what an old file was trained on.
    keys[keys.index("DATASETS.TRAIN") + 1] = "fashion_mnist_train"
    check_classifier_classes(load_cfg(probe, keys), None, "old.pth")
    assert "is not an image set on disk with class names" in caplog.text


def test_every_tool_reports_a_users_mistake_in_one_line(tmp_path):
    """Each tool's main runs under run_cli: a missing file, a bad key, flag value or an output
    that is the input itself ends in one line and exit status 2; the input is left as it was."""
    import torch

    from slimdet.engine import load_cfg
    from slimdet.modeling import build_model

    demo = str(ROOT / "configs/demo/slimclr_mocov2_demo.yaml")
    weights = tmp_path / "model_final.pth"
    torch.save({"model": build_model(load_cfg(demo)).state_dict(), "trainer": {"iteration": 2}},
               weights)
    digest = hashlib.sha1(weights.read_bytes()).hexdigest()
    recal = ["tools/recalibrate_bn.py", "--config-file", demo, "--weights", str(weights)]
    cases = [
        (recal + ["--num-batches", "0", "--output", str(tmp_path / "r.pth")], ["--num-batches 0"]),
        (recal + ["--num-batches", "-1", "--output", str(tmp_path / "r.pth")], ["--num-batches -1"]),
        (recal + ["--output", str(tmp_path / "." / "model_final.pth")],
         ["model_final.pth", "is the --weights file itself"]),
        (["tools/convert_to_d2.py", str(weights), "--width", "1.0", "-o", str(weights)],
         ["is the CKPT file itself"]),
        (["tools/analyze_model.py", "--config-file", str(ROOT / "configs/demo/nope.yaml")],
         ["nope.yaml"]),
        (["tools/analyze_model.py", "--config-file", demo, "MODEL.BACKBONE.DEPTH", "19"],
         ["MODEL.BACKBONE.DEPTH", "19"]),
        (["tools/plot_metrics.py", str(tmp_path / "nonexist")], ["nonexist"]),
        (["tools/plot_landscape.py", "--config-file", demo, "--checkpoints",
          str(tmp_path / "nonexist")], ["nonexist"]),
        (["tools/plot_landscape.py", "--config-file", demo, "--checkpoints", str(tmp_path),
          "--grid", "4"], ["--grid 4"]),
        # One weight file: too few for the trajectory's PCA (found after loading, not a crash).
        (["tools/plot_landscape.py", "--config-file", demo, "--checkpoints", str(tmp_path),
          "--grid", "3", "--batches", "1", "--batch-size", "8", "DATASETS.TRAIN_SUBSET", "64",
          "--out", str(tmp_path / "ls")], ["at least 4 weight files"]),
    ]
    procs = [subprocess.Popen([sys.executable, str(ROOT / args[0]), *args[1:]], text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
             for args, _ in cases]
    for p, (args, fragments) in zip(procs, cases):
        out, err = p.communicate(timeout=300)
        assert_one_line_error(subprocess.CompletedProcess(args, p.returncode, out, err), *fragments)
    assert hashlib.sha1(weights.read_bytes()).hexdigest() == digest
    assert not (tmp_path / "r.pth").exists()


def test_sync_bn_on_cpu_processes_is_one_line_naming_the_key(tmp_path):
    """The MoCo v3 and SimCLR recipes set MODEL.SYNC_BN; torch's SyncBatchNorm needs CUDA, so
    `--num-gpus 2` on the CPU (gloo) says which key to change instead of a worker traceback."""
    out = tmp_path / "run"
    res = run(["--num-gpus", "2"] + TINY + ["MODEL.SYNC_BN", "True", "OUTPUT_DIR", str(out)])
    assert_one_line_error(res, "MODEL.SYNC_BN True", "CUDA devices only", "set MODEL.SYNC_BN False")
    assert not out.exists()
