"""The tiny real COCO-format set: fetched from the labelme sdist, background dropped, registered."""
from __future__ import annotations

import json
import os

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from slimdet.d2.tiny_coco import (TRAIN, VAL, default_root, labelme_to_instances,
                                  prepare_tiny_coco)


@pytest.fixture(scope="module")
def source():
    return prepare_tiny_coco()


def test_tiny_coco_is_real_and_registered(source):
    root = default_root()
    if source.startswith("GENERATED"):
        pytest.skip(f"labelme sdist unavailable here: {source}")
    assert "labelme==6.3.1" in source
    train = json.loads((root / "annotations" / "instances_train.json").read_text())
    names = {c["name"] for c in train["categories"]}
    assert "_background_" not in names and "__ignore__" not in names
    assert {"person", "bus", "car", "sofa"} <= names
    assert len(train["images"]) == 9

    records = DatasetCatalog.get(TRAIN)
    assert len(records) == 9
    classes = MetadataCatalog.get(TRAIN).thing_classes
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
    val = DatasetCatalog.get(VAL)
    assert sorted(os.path.basename(r["file_name"]) for r in val) == \
        ["2011_000003.jpg", "2011_000006.jpg", "2011_000025.jpg"]
    assert sum(len(r["annotations"]) for r in val) == 12


def test_labelme_groups_polygons_into_instances():
    doc = {"shapes": [
        {"label": "sofa", "points": [[0, 0], [4, 0], [4, 4]], "shape_type": "polygon", "group_id": 0},
        {"label": "sofa", "points": [[5, 5], [9, 5], [9, 9]], "shape_type": "polygon", "group_id": 0},
        {"label": "person", "points": [[0, 0], [2, 0], [2, 2]], "shape_type": "polygon", "group_id": None},
        {"label": "person", "points": [[3, 3], [5, 3], [5, 5]], "shape_type": "polygon", "group_id": None},
        {"label": "__ignore__", "points": [[0, 0], [1, 0], [1, 1]], "shape_type": "polygon"},
        {"label": "box", "points": [[1, 2], [3, 4]], "shape_type": "rectangle"},
    ]}
    instances = labelme_to_instances(doc)
    assert [(label, len(polys)) for label, polys in instances] == \
        [("sofa", 2), ("person", 1), ("person", 1), ("box", 1)]
    assert instances[-1][1][0] == [1.0, 2.0, 3.0, 2.0, 3.0, 4.0, 1.0, 4.0]
