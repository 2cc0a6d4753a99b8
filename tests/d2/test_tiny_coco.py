"""The tiny real COCO-format set: built at set-up from the labelme sdist, background dropped,
registered on import without downloading anything; missing files are one line."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from slimdet.d2 import TINY_COCO_TRAIN, TINY_COCO_VAL
from slimdet.d2.datasets import tiny_coco_root

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "datasets"))
import prepare_tiny_coco  # noqa: E402

# pip cannot reach any index: a "download" fails at once, without the network.
OFFLINE = {"PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_RETRIES": "0",
           "PIP_NO_CACHE_DIR": "1"}


def test_tiny_coco_is_real_and_registered(tiny_coco):
    if tiny_coco.startswith("GENERATED"):
        pytest.skip(f"the tiny set was built offline: {tiny_coco}")
    assert "labelme==6.3.1" in tiny_coco
    root = Path(tiny_coco_root())
    train = json.loads((root / "annotations" / "instances_train.json").read_text())
    names = {c["name"] for c in train["categories"]}
    assert "_background_" not in names and "__ignore__" not in names
    assert {"person", "bus", "car", "sofa"} <= names
    assert len(train["images"]) == 9

    records = DatasetCatalog.get(TINY_COCO_TRAIN)
    assert len(records) == 9
    classes = MetadataCatalog.get(TINY_COCO_TRAIN).thing_classes
    assert len(classes) == len(train["categories"])
    for r in records:
        with Image.open(r["file_name"]) as im:
            assert im.size == (r["width"], r["height"])
        assert r["annotations"], r["file_name"]
        for a in r["annotations"]:
            assert all(len(p) >= 6 and len(p) % 2 == 0 for p in a["segmentation"])
            x, y, w, h = a["bbox"]
            assert w > 0 and h > 0 and x + w <= r["width"] + 1 and y + h <= r["height"] + 1
    # The VOC photos' COCO file has 12 instances (its background category dropped).
    val = DatasetCatalog.get(TINY_COCO_VAL)
    assert sorted(os.path.basename(r["file_name"]) for r in val) == \
        ["2011_000003.jpg", "2011_000006.jpg", "2011_000025.jpg"]
    assert sum(len(r["annotations"]) for r in val) == 12
    assert MetadataCatalog.get(TINY_COCO_VAL).json_file == \
        os.path.join(tiny_coco_root(), "annotations", "instances_val.json")


def test_labelme_groups_polygons_into_instances():
    doc = {"shapes": [
        {"label": "sofa", "points": [[0, 0], [4, 0], [4, 4]], "shape_type": "polygon", "group_id": 0},
        {"label": "sofa", "points": [[5, 5], [9, 5], [9, 9]], "shape_type": "polygon", "group_id": 0},
        {"label": "person", "points": [[0, 0], [2, 0], [2, 2]], "shape_type": "polygon", "group_id": None},
        {"label": "person", "points": [[3, 3], [5, 3], [5, 5]], "shape_type": "polygon", "group_id": None},
        {"label": "__ignore__", "points": [[0, 0], [1, 0], [1, 1]], "shape_type": "polygon"},
        {"label": "box", "points": [[1, 2], [3, 4]], "shape_type": "rectangle"},
    ]}
    instances = prepare_tiny_coco.labelme_to_instances(doc)
    assert [(label, len(polys)) for label, polys in instances] == \
        [("sofa", 2), ("person", 1), ("person", 1), ("box", 1)]
    assert instances[-1][1][0] == [1.0, 2.0, 3.0, 2.0, 3.0, 4.0, 1.0, 4.0]


def test_missing_set_is_one_line_naming_the_set_up_command(tmp_path):
    """Importing slimdet.d2 builds and downloads nothing; a job on a missing split fails in
    one line naming the file and the command that prepares it."""
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path / "data"),
               SLIMDET_CACHE=str(tmp_path / "cache"), **OFFLINE)
    res = subprocess.run(
        [sys.executable, str(ROOT / "tools/train_det.py"), "--config-file",
         str(ROOT / "configs/detection/mask_rcnn_slim_R_50_FPN_tiny_demo.yaml"),
         "MODEL.WEIGHTS", "", "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
         "OUTPUT_DIR", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, cwd=tmp_path)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "Traceback" not in res.stderr + res.stdout, res.stderr[-3000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert str(tmp_path / "data" / "tiny_coco" / "annotations" / "instances_train.json") in lines[0]
    assert "bash scripts/setup_env.sh" in lines[0] and "prepare_tiny_coco.py" in lines[0]
    assert not (tmp_path / "data").exists() and not (tmp_path / "cache").exists()


def test_offline_preparation_writes_labelled_shapes_and_never_replaces_a_real_set(
        tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SLIMDET_CACHE", str(tmp_path / "cache"))
    for key, value in OFFLINE.items():  # inherited by the pip subprocess
        monkeypatch.setenv(key, value)
    main = prepare_tiny_coco.main

    assert main(["--root", str(tmp_path / "offline")]) == 0
    assert "WRITING GENERATED SHAPES (NOT real photos)" in capsys.readouterr().err
    assert (tmp_path / "offline" / "SOURCE.txt").read_text().startswith("GENERATED SHAPES")
    train = json.loads((tmp_path / "offline/annotations/instances_train.json").read_text())
    assert len(train["images"]) == 9 and train["annotations"]
    assert main(["--root", str(tmp_path / "offline"), "--no-fallback", "--force"]) == 1
    assert (tmp_path / "offline" / "SOURCE.txt").read_text().startswith("GENERATED SHAPES")

    real = tmp_path / "real"  # stands for a real set: only its files' presence matters here
    (real / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        (real / "annotations" / f"instances_{split}.json").write_text("{}")
    (real / "SOURCE.txt").write_text("labelme==6.3.1 sdist\n")
    capsys.readouterr()
    assert main(["--root", str(real), "--force"]) == 1
    assert "error: tiny COCO set not built" in capsys.readouterr().err
    assert (real / "SOURCE.txt").read_text() == "labelme==6.3.1 sdist\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "offline", "real"]
