"""Detection configs: MODEL.WIDTHS (the old MODEL.SLIM.WIDTHS named), one ConfigError naming the
file or key for every mistake, checked before anything is built."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from detectron2.data import MetadataCatalog

from slimdet.config import ConfigError
from slimdet.d2 import load_det_cfg, validate_det_cfg
from slimdet.d2.datasets import tiny_coco_root
from slimdet.data.datasets import DatasetError

from d2_helpers import SLIM_DEMO, STOCK_CONVERTED


def _error(*args, validate=False, error=ConfigError, **kwargs) -> str:
    with pytest.raises(error) as err:
        cfg = load_det_cfg(*args)
        if validate:
            validate_det_cfg(cfg, **kwargs)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_widths_key_is_pre_trainings(tmp_path):
    cfg = load_det_cfg(SLIM_DEMO, ["MODEL.WIDTHS", "[1.0, 0.5]"])
    assert cfg.MODEL.WIDTHS == [1.0, 0.5] and "WIDTHS" not in cfg.MODEL.SLIM
    validate_det_cfg(cfg)

    old = tmp_path / "old.yaml"
    old.write_text(f"_BASE_: {SLIM_DEMO}\nMODEL:\n  SLIM:\n    WIDTHS: [1.0, 0.5]\n")
    msg = _error(str(old))
    assert msg.startswith(f"{old}: ") and "MODEL.SLIM.WIDTHS was renamed to MODEL.WIDTHS" in msg
    msg = _error(SLIM_DEMO, ["MODEL.SLIM.WIDTHS", "[1.0, 0.5]"])
    assert msg.startswith("command line: ") and "renamed to MODEL.WIDTHS" in msg


def test_width_lists_are_checked_by_the_one_check():
    assert "MODEL.WIDTHS must start with 1.0 and be strictly decreasing, got [0.5, 1.0]" in \
        _error(SLIM_DEMO, ["MODEL.WIDTHS", "[0.5, 1.0]"], validate=True)
    assert "MODEL.WIDTHS must be multipliers in (0, 1]" in \
        _error(SLIM_DEMO, ["MODEL.WIDTHS", "[1.0, 2.0]"], validate=True)
    assert "TEST.SLIM_WIDTHS [0.3] has widths [0.3] that are not in MODEL.WIDTHS" in \
        _error(SLIM_DEMO, ["TEST.SLIM_WIDTHS", "[0.3]"], validate=True)
    assert "MODEL.SLIM.LOSS_WEIGHTING must be size, uniform or proportional, got 'sizes'" in \
        _error(SLIM_DEMO, ["MODEL.SLIM.LOSS_WEIGHTING", "sizes"], validate=True)
    # A stock Detectron2 config runs the one width of its weights: a width key, which it
    # would ignore, is refused, naming the key and the architecture that reads it.
    tiny = ["DATASETS.TRAIN", "('tiny_coco_train',)", "DATASETS.TEST", "('tiny_coco_val',)"]
    validate_det_cfg(load_det_cfg(STOCK_CONVERTED, tiny))
    for key, value in (("MODEL.WIDTHS", "[0.5]"), ("TEST.SLIM_WIDTHS", "[1.0]"),
                       ("MODEL.SLIM.LOSS_WEIGHTING", "size")):
        msg = _error(STOCK_CONVERTED, tiny + [key, value], validate=True)
        assert msg.startswith(f"{key} ") and "SlimGeneralizedRCNN" in msg and \
            "GeneralizedRCNN runs the one width" in msg, msg


def test_file_key_and_value_mistakes_name_them(tmp_path):
    assert "unknown config key MODEL.NOPE" in _error(SLIM_DEMO, ["MODEL.NOPE", "1"])
    assert "Type mismatch" in _error(SLIM_DEMO, ["SOLVER.MAX_ITER", "many"])
    assert "does not exist" in _error(str(tmp_path / "nowhere.yaml"))
    broken = tmp_path / "broken.yaml"
    broken.write_text("MODEL: [\n")
    assert _error(str(broken)).startswith(f"{broken}: cannot parse it as YAML")
    orphan = tmp_path / "orphan.yaml"
    orphan.write_text("_BASE_: missing-base.yaml\n")
    assert "cannot read" in _error(str(orphan)) and "missing-base.yaml" in _error(str(orphan))


def test_data_sets_are_checked_before_anything_is_built(tmp_path, monkeypatch):
    msg = _error(SLIM_DEMO, ["DATASETS.TEST", "('tiny_coco_vall',)"], validate=True)
    assert "DATASETS.TEST: 'tiny_coco_vall' is not a registered data set; did you mean " \
           "tiny_coco_val" in msg
    # --eval-only reads only the test set (the training set's file is not there: a warning).
    missing = f"coco:{tmp_path}/none.json:{tmp_path}"
    cfg = load_det_cfg(SLIM_DEMO, ["DATASETS.TRAIN", f"('{missing}',)"])
    validate_det_cfg(cfg, eval_only=True)
    with pytest.raises(ConfigError, match=r"DATASETS.TRAIN: 'coco:.*' needs the annotation file "
                                          r".*none.json, which does not exist"):
        validate_det_cfg(cfg)
    # COCO 2017 is registered by Detectron2 (relative to where a job runs); not in tmp_path.
    monkeypatch.chdir(tmp_path)
    json_file = MetadataCatalog.get("coco_2017_val").json_file
    msg = _error(SLIM_DEMO, ["DATASETS.TEST", "('coco_2017_val',)"], validate=True, eval_only=True)
    assert (f"DATASETS.TEST: 'coco_2017_val' needs the annotation file {json_file} (relative to "
            f"the current folder {tmp_path}), which does not exist") in msg
    assert "$DETECTRON2_DATASETS" in msg and "datasets/README.md" in msg


TINY = Path(tiny_coco_root()).resolve()  # before a test changes the current folder


def _coco(tmp_path, split: str, edit=None, name=None) -> str:
    """A ``coco:JSON:IMAGES`` name for tiny COCO's ``split`` file changed by ``edit`` (the
    parsed file in, a file or text out), read from tmp_path with the set's own images."""
    doc = json.loads((TINY / "annotations" / f"instances_{split}.json").read_text())
    out = edit(doc) if edit else doc
    path = tmp_path / f"{name or split}.json"
    path.write_text(out if isinstance(out, str) else json.dumps(out))
    return f"coco:{path}:{TINY / 'images'}"


def _data(train: str, test: str, *extra) -> list:
    return [SLIM_DEMO, ["DATASETS.TRAIN", f"('{train}',)", "DATASETS.TEST", f"('{test}',)",
                        *extra]]


def _renumbered(doc):
    """The same category names under other ids (reversed), its annotations following them."""
    n = len(doc["categories"])
    for c in doc["categories"]:
        c["id"] = n + 1 - c["id"]
    for a in doc["annotations"]:
        a["category_id"] = n + 1 - a["category_id"]
    return doc


def _only_used(doc):
    used = {a["category_id"] for a in doc["annotations"]}
    doc["categories"] = [c for c in doc["categories"] if c["id"] in used]
    return doc


def test_every_split_needs_the_training_sets_categories(tiny_coco, tmp_path):
    train = _coco(tmp_path, "train")
    validate_det_cfg(load_det_cfg(*_data(train, _coco(tmp_path, "val"))))
    for edit, count, first in ((_renumbered, 25, "label 0 is id 1 'track' in DATASETS.TEST, "
                                                 "id 1 'aeroplane' in DATASETS.TRAIN"),
                               (_only_used, 6, "label 0 is id 5 'bottle' in DATASETS.TEST")):
        val = _coco(tmp_path, "val", edit, name=edit.__name__)
        for eval_only in (False, True):  # --eval-only reads the training set's categories too
            msg = _error(*_data(train, val), validate=True, eval_only=eval_only)
            assert f"DATASETS.TEST '{val}' ({tmp_path}/{edit.__name__}.json) has {count} " \
                   f"categories, DATASETS.TRAIN '{train}' ({tmp_path}/train.json) 25" in msg
            assert first in msg and "same categories (ids and names)" in msg


def test_num_classes_and_batch_size_are_checked(tiny_coco, tmp_path, caplog):
    data = _data(_coco(tmp_path, "train"), _coco(tmp_path, "val"))
    for value in (24, 5):
        msg = _error(data[0], data[1] + ["MODEL.ROI_HEADS.NUM_CLASSES", str(value)], validate=True)
        assert msg.startswith(f"MODEL.ROI_HEADS.NUM_CLASSES {value} is smaller than the 25 "
                              f"categories of DATASETS.TRAIN") and "train.json" in msg
    assert "MODEL.ROI_HEADS.NUM_CLASSES must be at least 1 (the number of categories), got 0" in \
        _error(data[0], data[1] + ["MODEL.ROI_HEADS.NUM_CLASSES", "0"], validate=True)
    assert "SOLVER.IMS_PER_BATCH must be at least 1, got 0" in \
        _error(data[0], data[1] + ["SOLVER.IMS_PER_BATCH", "0"], validate=True)
    # More classes than categories is Detectron2's to allow (e.g. COCO's 80 on a subset).
    validate_det_cfg(load_det_cfg(data[0], data[1] + ["MODEL.ROI_HEADS.NUM_CLASSES", "30"]))
    assert "the 5 extra classes are never trained" in caplog.text


def _renamed_key(doc):
    doc["annotation"] = doc.pop("annotations")
    return doc


def _no_categories(doc):
    del doc["categories"]
    return doc


def _unknown_category(doc):
    doc["annotations"][0]["category_id"] = 777
    return doc


def _no_annotations(doc):
    doc["annotations"] = []
    return doc


@pytest.mark.parametrize("split, edit, needle", [
    ("val", _renamed_key, "has no 'annotations' list but 'annotation': a misspelt key?"),
    ("train", _no_categories, "is not a COCO instances file: it has no 'categories' list "
                              "(its keys: 'info', 'licenses', 'images', 'annotations')"),
    ("train", lambda doc: json.dumps(doc)[:-10], "is not valid JSON (Unterminated string"),
    ("train", lambda doc: [doc], "is not a COCO annotation file: it holds a list"),
    ("train", _unknown_category, "annotation 1 (image 1) has category_id 777, which is not one "
                                 "of its categories (ids 1..25, 25 categories)"),
    ("train", _no_annotations, "none of its 9 images has an annotation"),
])
def test_annotation_file_mistakes_are_one_error_naming_the_file(tiny_coco, tmp_path, split,
                                                               edit, needle):
    names = {s: _coco(tmp_path, s, edit if s == split else None) for s in ("train", "val")}
    msg = _error(*_data(names["train"], names["val"]), validate=True, error=DatasetError)
    assert f"DATASETS.{split.replace('val', 'test').upper()} '{names[split]}'" in msg
    assert f"{tmp_path}/{split}.json" in msg and needle in msg


def test_own_data_under_a_builtin_coco_name_is_refused_naming_the_path_form(tiny_coco, tmp_path,
                                                                           monkeypatch):
    """Detectron2 registers coco_2017_* with COCO's 80 classes: a file with others is refused
    before it fails in loading; named by its files, the same data runs."""
    monkeypatch.chdir(tmp_path)  # Detectron2's coco_2017_* paths are relative to the job's folder
    ann = tmp_path / "datasets" / "coco" / "annotations"
    ann.mkdir(parents=True)
    for split in ("train", "val"):
        shutil.copy(TINY / "annotations" / f"instances_{split}.json",
                    ann / f"instances_{split}2017.json")
        os.symlink(TINY / "images", tmp_path / "datasets" / "coco" / f"{split}2017")
    msg = _error(*_data("coco_2017_train", "coco_2017_val"), validate=True)
    assert msg.startswith("DATASETS.TRAIN 'coco_2017_train' (datasets/coco/annotations/"
                          "instances_train2017.json) has 25 categories that are not the 80")
    assert "label 0 is id 1 'aeroplane' in the file, id 1 'person' in the registered classes" \
        in msg and "coco:JSON_FILE:IMAGE_FOLDER" in msg
    validate_det_cfg(load_det_cfg(*_data(_coco(tmp_path, "train"), _coco(tmp_path, "val"))))
    assert "is not coco:JSON_FILE:IMAGE_FOLDER" in \
        _error(*_data(f"coco:{ann}/instances_train2017.json", "coco_2017_val"), validate=True)
