"""tools/train_det.py and tools/convert_to_d2.py from the command line: a user's mistake ends
in one line and exit status 2, and no weights file ever runs code."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from slimdet.config import ConfigError
from slimdet.d2 import load_det_cfg
from slimdet.d2.datasets import ImageCheckingMapper, tiny_coco_root
from slimdet.data.datasets import DatasetError

from d2_helpers import SLIM_DEMO, SMALL, STOCK_CONVERTED, STOCK_SMALL, one_line_error, run_tool

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import convert_to_d2  # noqa: E402


@pytest.fixture(scope="module")
def backbone_pkl(tmp_path_factory):
    """A converted pre-training backbone (every width, no heads)."""
    path = tmp_path_factory.mktemp("conv") / "slim_r18.pkl"
    assert convert_to_d2.main(["--random-init", "18", "--slimmable", "-o", str(path)]) == 0
    return path


def test_old_width_key_is_one_line_naming_the_new_key(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text(f"_BASE_: {SLIM_DEMO}\nMODEL:\n  SLIM:\n    WIDTHS: [1.0, 0.5]\n")
    one_line_error(run_tool("train_det.py", "--config-file", old),
                   "error: ", str(old), "MODEL.SLIM.WIDTHS was renamed to MODEL.WIDTHS")


def test_converter_says_the_width_key_and_checks_widths(tmp_path, capsys):
    assert convert_to_d2.main(["--random-init", "18", "--slimmable", "-o",
                               str(tmp_path / "a.pkl")]) == 0
    assert 'MODEL.WIDTHS "[1.0, 0.75, 0.5, 0.25]"' in capsys.readouterr().out
    with pytest.raises(ConfigError, match=r"^--widths must start with 1.0 and be strictly "
                                          r"decreasing, got \[0.5, 1.0\]$"):
        convert_to_d2.main(["--random-init", "18", "--slimmable", "--widths", "0.5", "1.0",
                            "-o", str(tmp_path / "x.pkl")])
    with pytest.raises(ConfigError, match=r"not a stock Detectron2 ResNet.*RES2_OUT_CHANNELS = 64"):
        convert_to_d2.main(["--random-init", "18", "--width", "0.5", "-o", str(tmp_path / "y.pkl")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pkl"]


def test_eval_only_needs_the_heads_and_a_file(backbone_pkl, tiny_coco, tmp_path):
    # The folder of a training run: an evaluation logs there but leaves its config alone.
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "config.yaml").write_text("the training run's config\n")
    common = ["--eval-only", "--config-file", SLIM_DEMO, *SMALL, "OUTPUT_DIR", tmp_path / "out"]
    one_line_error(run_tool("train_det.py", *common, "MODEL.WEIGHTS", backbone_pkl),
                   str(backbone_pkl), "has no weights for backbone.fpn (", "roi_heads.box_predictor",
                   "which evaluating the detector (--eval-only) needs", "backbone only")
    one_line_error(run_tool("train_det.py", *common, "MODEL.WEIGHTS", ""),
                   "--eval-only needs the detector to evaluate: set MODEL.WEIGHTS")
    assert (tmp_path / "out" / "config.yaml").read_text() == "the training run's config\n"


def test_stock_detectron2_path_never_runs_a_malicious_pickle(tiny_coco, tmp_path):
    marker = tmp_path / "MARKER"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    evil = tmp_path / "evil.pkl"
    with open(evil, "wb") as f:
        pickle.dump({"model": {"x": Payload()}, "__author__": "someone"}, f)
    common = ["--config-file", STOCK_CONVERTED, *STOCK_SMALL, "MODEL.WEIGHTS", evil,
              "OUTPUT_DIR", tmp_path / "out"]
    for extra in (["--eval-only"], []):  # evaluation, and training from MODEL.WEIGHTS
        one_line_error(run_tool("train_det.py", *extra, *common),
                       "evil.pkl", "needs posix.system", "set MODEL.WEIGHTS_TRUSTED True")
    assert not marker.exists()


def test_a_previous_run_folder_is_continued_or_replaced_never_restarted(tmp_path):
    """tools/train_net.py's run-folder rule: a fresh start into a folder that holds a previous
    run's files is refused before anything is written; --overwrite removes them first."""
    out = tmp_path / "det"
    out.mkdir()
    files = {"model_final.pth": b"weights", "metrics.json": b'{"iteration": 1}\n',
             "last_checkpoint": b"model_final.pth"}
    for name, data in files.items():
        (out / name).write_bytes(data)
    weights = tmp_path / "weights.pkl"  # only its presence is checked before the refusal
    weights.write_bytes(b"x")
    common = ["--config-file", SLIM_DEMO, *SMALL, "OUTPUT_DIR", out]
    one_line_error(run_tool("train_det.py", *common, "MODEL.WEIGHTS", weights), str(out),
                   "--resume", "--overwrite")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files
    # --overwrite whose start fails its checks (a weights file that is not there) is refused
    # in one line before it removes anything.
    one_line_error(run_tool("train_det.py", "--overwrite", *common, "MODEL.WEIGHTS",
                            tmp_path / "missing.pkl"), "MODEL.WEIGHTS", "missing.pkl does not exist")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files
    # ... and a weights file that cannot be read (a truncated download), refused on reading it.
    one_line_error(run_tool("train_det.py", "--overwrite", *common, "MODEL.WEIGHTS", weights),
                   "is not a PyTorch or Detectron2 checkpoint", "weights.pkl")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files
    # ... and the previous run's own model as MODEL.WEIGHTS, which --overwrite would remove.
    one_line_error(run_tool("train_det.py", "--overwrite", *common, "MODEL.WEIGHTS",
                            out / "model_final.pth"), "MODEL.WEIGHTS", "--overwrite removes")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files


def _tiny_copy(tmp_path, edit_val=None) -> tuple:
    """``coco:JSON:IMAGES`` names of copies of the tiny set's files (its val file edited)."""
    tiny = Path(tiny_coco_root()).resolve()
    names = []
    for split in ("train", "val"):
        doc = json.loads((tiny / "annotations" / f"instances_{split}.json").read_text())
        if split == "val" and edit_val:
            edit_val(doc)
        (tmp_path / f"{split}.json").write_text(json.dumps(doc))
        names.append(f"coco:{tmp_path / f'{split}.json'}:{tiny / 'images'}")
    return tuple(names)


def test_own_coco_files_by_path_train_and_evaluate(tiny_coco, tmp_path):
    train, val = _tiny_copy(tmp_path)
    res = run_tool("train_det.py", "--config-file", SLIM_DEMO, *SMALL, "MODEL.WEIGHTS", "",
                   "MODEL.WIDTHS", "[1.0, 0.5]", "SOLVER.MAX_ITER", "1", "DATASETS.TRAIN",
                   f"('{train}',)", "DATASETS.TEST", f"('{val}',)", "OUTPUT_DIR", tmp_path / "out")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "AP of every width" in res.stderr + res.stdout


def test_a_test_set_with_other_category_ids_is_one_line_before_anything_is_written(tiny_coco,
                                                                                  tmp_path):
    def renumber(doc):  # the same names, ids reversed
        n = len(doc["categories"])
        for c in doc["categories"]:
            c["id"] = n + 1 - c["id"]
        for a in doc["annotations"]:
            a["category_id"] = n + 1 - a["category_id"]

    train, val = _tiny_copy(tmp_path, renumber)
    one_line_error(run_tool("train_det.py", "--config-file", SLIM_DEMO, *SMALL, "MODEL.WEIGHTS",
                            "", "DATASETS.TRAIN", f"('{train}',)", "DATASETS.TEST", f"('{val}',)",
                            "OUTPUT_DIR", tmp_path / "out"),
                   f"DATASETS.TEST '{val}' ({tmp_path}/val.json)",
                   f"DATASETS.TRAIN '{train}' ({tmp_path}/train.json)", "label 0 is id 1 'track'")
    assert not (tmp_path / "out").exists()


def test_an_unreadable_image_is_one_error_naming_it(tiny_coco, tmp_path):
    tiny = Path(tiny_coco_root()).resolve() / "images" / "2011_000003.jpg"
    truncated, not_image = tmp_path / "truncated.jpg", tmp_path / "notes.jpg"
    truncated.write_bytes(tiny.read_bytes()[:2000])
    not_image.write_text("not an image\n")
    cfg = load_det_cfg(SLIM_DEMO)
    for is_train in (True, False):
        mapper = ImageCheckingMapper(cfg, is_train)
        with Image.open(tiny) as im:
            good = {"file_name": str(tiny), "width": im.width, "height": im.height, "image_id": 0,
                    "annotations": []}
        assert mapper(dict(good))["image"].shape[0] == 3
        for path, why in ((truncated, "image file is truncated"),
                          (not_image, "not an image file PIL can read")):
            with pytest.raises(DatasetError, match=f"^cannot read image {path} \\({why}"):
                mapper(dict(good, file_name=str(path)))
        with pytest.raises(DatasetError, match=f"^image {tiny}: .*"):
            mapper(dict(good, width=good["width"] + 7))


def _digests(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_a_run_folder_survives_refused_starts_and_evaluations_of_other_weights(
        backbone_pkl, tiny_coco, tmp_path):
    out = tmp_path / "run"
    common = ["--config-file", SLIM_DEMO, *SMALL, "SOLVER.WARMUP_ITERS", "0",
              "SOLVER.CHECKPOINT_PERIOD", "1", "OUTPUT_DIR", out]
    first = run_tool("train_det.py", *common, "MODEL.WEIGHTS", backbone_pkl, "SOLVER.MAX_ITER", 2)
    assert first.returncode == 0, first.stderr[-3000:]
    # Every console line once (Detectron2's set-up added a second handler to each logger).
    assert first.stdout.count("Starting training from iteration 0") == 1, first.stdout[-3000:]
    before = _digests(out)
    assert {"model_final.pth", "model_0000000.pth", "metrics.json", "config.yaml",
            "inference/tiny_coco_val/w1/coco_instances_results.json"} <= set(before)
    run_files = {k: v for k, v in before.items() if k != "log.txt"}

    def unchanged():  # the run's files; an evaluation adds only its own folder
        return {k: v for k, v in _digests(out).items()
                if k != "log.txt" and not k.startswith("eval_earlier/")} == run_files

    # --overwrite from a backbone of other widths: refused when it is loaded, before the
    # previous run is removed (it was removed first, then the load failed).
    other = tmp_path / "slim_r18_two_widths.pkl"
    assert convert_to_d2.main(["--random-init", "18", "--slimmable", "--widths", "1.0", "0.5",
                               "-o", str(other)]) == 0
    one_line_error(run_tool("train_det.py", "--overwrite", *common, "MODEL.WEIGHTS", other,
                            "SOLVER.MAX_ITER", 2), str(other), "widths [1.0, 0.5]", "MODEL.WIDTHS")
    assert _digests(out) == before
    # --resume with a SOLVER.MAX_ITER it has already run: one line (it ended at once, exit 0,
    # config.yaml replaced and no model_final.pth).
    for max_iter in (1, 2):
        one_line_error(run_tool("train_det.py", "--resume", *common, "MODEL.WEIGHTS", backbone_pkl,
                                "SOLVER.MAX_ITER", max_iter),
                       "--resume", str(out), f"SOLVER.MAX_ITER {max_iter}",
                       "raise SOLVER.MAX_ITER above 2")
        assert _digests(out) == before

    # --eval-only of another model into the folder: its files go to eval_<name>, with the AP
    # numbers in eval_results.json; the run's own inference files stay its own.
    earlier = tmp_path / "earlier.pth"
    earlier.write_bytes(before["model_0000000.pth"])
    res = run_tool("train_det.py", "--eval-only", *common, "MODEL.WEIGHTS", earlier)
    assert res.returncode == 0, res.stderr[-3000:]
    assert unchanged()
    assert res.stdout.count("Evaluating tiny_coco_val at width 0.5") == 1, res.stdout[-3000:]
    folder = out / "eval_earlier"
    assert f"go to {folder}" in res.stdout
    record = json.loads((folder / "eval_results.json").read_text())
    assert record["weights"] == str(earlier)
    for w in ("1", "0.75", "0.5", "0.25"):
        assert 0.0 <= record["results"][f"bbox/AP/w{w}"] <= 100.0
        assert (folder / "inference/tiny_coco_val" / f"w{w}" / "coco_instances_results.json").is_file()
    assert "Evaluation results saved to" in (out / "log.txt").read_text()

    # --eval-only --resume evaluates the run's last checkpoint: a MODEL.WEIGHTS that is gone
    # since (the backbone the run started from) is not read, so not required.
    res = run_tool("train_det.py", "--eval-only", "--resume", *common, "TEST.SLIM_WIDTHS",
                   "[0.25]", "MODEL.WEIGHTS", tmp_path / "moved_away.pkl")
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"go to {out / 'eval_model_final'}" in res.stdout
    assert (out / "eval_model_final/eval_results.json").is_file()

    # --resume with other values continues under them, keeps the old config, names the keys.
    res = run_tool("train_det.py", "--resume", *common, "MODEL.WEIGHTS", backbone_pkl,
                   "SOLVER.MAX_ITER", 3, "SOLVER.BASE_LR", 0.005)
    assert res.returncode == 0, res.stderr[-3000:]
    kept = yaml.safe_load((out / "config.before_resume1.yaml").read_text())
    assert kept["SOLVER"]["MAX_ITER"] == 2
    assert yaml.safe_load((out / "config.yaml").read_text())["SOLVER"]["MAX_ITER"] == 3
    warning = next(line for line in (out / "log.txt").read_text().splitlines()
                   if "--resume with 2 changed config key(s)" in line)
    assert "SOLVER.MAX_ITER: 2 -> 3" in warning and "SOLVER.BASE_LR: 0.01 -> 0.005" in warning
    iterations = [json.loads(line).get("iteration")
                  for line in (out / "metrics.json").read_text().splitlines()]
    assert 2 in iterations and (out / "model_final.pth").read_bytes() != before["model_final.pth"]
    # That evaluation's numbers were of the model_final.pth just replaced: its eval_results.json
    # is removed (they would read as the new file's); the history keeps them.
    assert not (out / "eval_model_final/eval_results.json").exists()
    assert "model_final.pth" in (out / "eval_model_final/eval_history.jsonl").read_text()



def test_an_unreadable_test_image_ends_the_run_in_one_line_naming_it(tiny_coco, tmp_path):
    """The loaders of train_det read through ImageCheckingMapper (here the evaluation's after
    training), so a truncated image is one `error:` line, not PIL's traceback from a worker."""
    tiny = Path(tiny_coco_root()).resolve()
    images = tmp_path / "images"
    shutil.copytree(tiny / "images", images)
    val_file = tiny / "annotations" / "instances_val.json"
    bad = images / json.loads(val_file.read_text())["images"][0]["file_name"]
    bad.write_bytes(bad.read_bytes()[:2000])
    train = f"coco:{tiny / 'annotations' / 'instances_train.json'}:{tiny / 'images'}"
    val = f"coco:{val_file}:{images}"
    one_line_error(run_tool("train_det.py", "--config-file", SLIM_DEMO, *SMALL, "MODEL.WEIGHTS",
                            "", "SOLVER.MAX_ITER", "1", "DATASETS.TRAIN", f"('{train}',)",
                            "DATASETS.TEST", f"('{val}',)", "OUTPUT_DIR", tmp_path / "out"),
                   f"cannot read image {bad}", "image file is truncated")


@pytest.mark.parametrize("dropped", ["first", "last"])
def test_eval_only_on_a_test_set_without_a_trained_category_is_one_line(dropped, tiny_coco,
                                                                         tmp_path):
    """With DATASETS.TRAIN empty nothing says which categories the labels are but the
    checkpoint, which records them: a test set with a category less shifted every label (the
    first dropped: wrong AP, exit 0) or failed in the evaluator (the last)."""
    from slimdet.checkpoint import read_file
    from slimdet.d2 import DetectionTrainer

    cfg = load_det_cfg(STOCK_CONVERTED, STOCK_SMALL + ["MODEL.WEIGHTS", "", "DATASETS.TEST", "()",
                                                       "OUTPUT_DIR", str(tmp_path / "run")])
    trainer = DetectionTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    weights = tmp_path / "run" / "model_final.pth"
    tiny = json.loads((Path(tiny_coco_root()) / "annotations/instances_train.json").read_text())
    trained = sorted([c["id"], c["name"]] for c in tiny["categories"])
    assert read_file(str(weights))["slimdet"] == {"categories": trained}

    def drop(doc):
        gone = sorted(c["id"] for c in doc["categories"])[0 if dropped == "first" else -1]
        doc["categories"] = [c for c in doc["categories"] if c["id"] != gone]
        doc["annotations"] = [a for a in doc["annotations"] if a["category_id"] != gone]

    _, val = _tiny_copy(tmp_path, drop)
    label, (cid, name) = (0, trained[0]) if dropped == "first" else (len(trained) - 1, trained[-1])
    expected = (f"label {label} is id {trained[1][0]} {trained[1][1]!r} in the test set"
                if dropped == "first" else f"label {label} (id {cid} {name!r}) is only in "
                f"{str(weights)!r}")
    one_line_error(run_tool("train_det.py", "--eval-only", "--config-file", STOCK_CONVERTED,
                            *STOCK_SMALL, "DATASETS.TRAIN", "()", "DATASETS.TEST", f"('{val}',)",
                            "MODEL.WEIGHTS", weights, "OUTPUT_DIR", tmp_path / "run"),
                   f"DATASETS.TEST '{val}' ({tmp_path}/val.json) has {len(trained) - 1} categories",
                   f"the detector in {str(weights)!r} was trained on {len(trained)}", expected)
