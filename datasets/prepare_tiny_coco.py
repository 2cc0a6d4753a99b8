#!/usr/bin/env python
"""Build the tiny COCO set (tiny_coco_train / tiny_coco_val) once, for the tests and the CPU demo.

    python datasets/prepare_tiny_coco.py [--root DIR] [--force] [--no-fallback]

``scripts/setup_env.sh`` runs it when the set is missing. It writes
``$DETECTRON2_DATASETS/tiny_coco`` (default ``datasets/tiny_coco`` relative to the directory you
run from: where ``slimdet.d2`` registers the set, ``slimdet/d2/datasets.py``); an existing set is
left alone unless ``--force``.

Source: the ``labelme==6.3.1`` sdist on PyPI (GPL-3; PASCAL VOC photos), fetched with pip and
cached under ``~/.cache/slimdet`` (or ``$SLIMDET_CACHE``), checked against its sha256, never
committed. It carries a COCO file for 3 VOC photos
(``examples/instance_segmentation/data_dataset_coco``) and 6 more photos annotated in labelme
JSON (a tutorial shelf photo and 5 video frames) that are converted to COCO polygons. Category 0
``_background_`` of the COCO file is dropped; labels of the converted photos reuse the VOC
categories where the names agree and get new ids after them otherwise.

Splits: ``train`` = all 9 photos; ``val`` = the 3 VOC photos (a subset of train).

Offline (the sdist is neither cached nor downloadable) the script writes generated shapes
instead, says so loudly and in ``SOURCE.txt`` (and ``slimdet.d2`` warns whenever it loads them),
and exits 0 so that a set-up on an offline machine still completes; ``--no-fallback`` fails
instead. Once online, ``--force`` replaces them with the real set. A rebuild writes a new folder
and swaps it in at the end, so a failed rebuild leaves the previous set.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from slimdet.d2.datasets import GENERATED, tiny_coco_root

LABELME_VERSION = "6.3.1"
LABELME_SDIST = f"labelme-{LABELME_VERSION}.tar.gz"
LABELME_SHA256 = "2947e0d8341a92faa7b3ee50cf4b672f838051c6bf24892526e95b64fd3a707e"
COCO_FILE = "examples/instance_segmentation/data_dataset_coco/annotations.json"
LABELME_FILES = (  # the 6 photos annotated only in labelme JSON
    "examples/tutorial/apc2016_obj3.json",
    *(f"examples/video_annotation/data_annotated/{i:08d}.json" for i in range(100, 105)),
)
IGNORE_LABELS = {"__ignore__", "_background_"}


def cache_dir() -> Path:
    return Path(os.environ.get("SLIMDET_CACHE", Path.home() / ".cache" / "slimdet"))


def log(message: str) -> None:
    print(f"[tiny_coco] {message}", file=sys.stderr, flush=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_labelme_sdist(cache: Optional[Path] = None) -> Path:
    """The labelme sdist from the cache, or downloaded with pip (by name, from PyPI)."""
    cache = Path(cache or cache_dir())
    path = cache / LABELME_SDIST
    if path.exists() and _sha256(path) == LABELME_SHA256:
        return path
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           f"labelme=={LABELME_VERSION}", "-d", str(cache)]
    log(f"downloading {LABELME_SDIST}: {' '.join(cmd)}")
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0 or not path.exists():
        last = (run.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"pip download of labelme=={LABELME_VERSION} failed "
                           f"(exit {run.returncode}): {last[-300:]}")
    digest = _sha256(path)
    if digest != LABELME_SHA256:
        path.unlink()
        raise RuntimeError(f"{LABELME_SDIST}: sha256 {digest} is not the pinned {LABELME_SHA256}")
    return path


def _polygon_geometry(polygons: List[List[float]], height: int, width: int) -> Tuple[float, List[float]]:
    """Area and ``[x, y, w, h]`` box of the union of polygons (pycocotools, as COCO computes)."""
    from pycocotools import mask as mask_util

    rle = mask_util.merge(mask_util.frPyObjects(polygons, height, width))
    return float(mask_util.area(rle)), [float(x) for x in mask_util.toBbox(rle)]


def labelme_to_instances(doc: Dict) -> List[Tuple[str, List[List[float]]]]:
    """Instances of one labelme file: shapes with the same (label, group_id) form one instance.

    Only polygons (and rectangles, as 4-point polygons) carry masks; ``__ignore__`` is skipped.
    """
    instances: Dict[Tuple[str, object], List[List[float]]] = {}
    for n, shape in enumerate(doc["shapes"]):
        label, kind = shape["label"], shape.get("shape_type") or "polygon"
        if label in IGNORE_LABELS:
            continue
        points = shape["points"]
        if kind == "rectangle":
            (x0, y0), (x1, y1) = points
            points = [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]
        elif kind != "polygon" or len(points) < 3:
            continue
        group = shape.get("group_id")
        key = (label, group if group is not None else f"shape{n}")
        instances.setdefault(key, []).append([float(c) for p in points for c in p])
    return [(label, polys) for (label, _), polys in instances.items()]


def _read_labelme_image(tar: tarfile.TarFile, member: str, doc: Dict) -> bytes:
    if doc.get("imageData"):
        return base64.b64decode(doc["imageData"])
    folder = member.rsplit("/", 1)[0]
    return tar.extractfile(f"{folder}/{doc['imagePath']}").read()


def build_from_sdist(sdist: Path, root: Path) -> Dict[str, int]:
    """Write ``root/images/*.jpg`` and ``root/annotations/instances_{train,val}.json``."""
    from PIL import Image

    top = f"labelme-{LABELME_VERSION}/"
    images_dir = root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(sdist) as tar:
        coco = json.load(tar.extractfile(top + COCO_FILE))
        categories = [c for c in coco["categories"] if c["name"] not in IGNORE_LABELS]
        kept_ids = {c["id"] for c in categories}
        cat_by_name = {c["name"]: c["id"] for c in categories}
        images, annotations = [], []
        coco_dir = (top + COCO_FILE).rsplit("/", 1)[0]
        for img in sorted(coco["images"], key=lambda i: i["id"]):
            name = os.path.basename(img["file_name"])
            (images_dir / name).write_bytes(tar.extractfile(f"{coco_dir}/{img['file_name']}").read())
            images.append({"id": len(images) + 1, "file_name": name, "height": img["height"],
                           "width": img["width"], "_old_id": img["id"]})
        new_id = {i["_old_id"]: i["id"] for i in images}
        for ann in coco["annotations"]:
            if ann["category_id"] not in kept_ids:
                continue
            annotations.append(dict(ann, id=len(annotations) + 1, image_id=new_id[ann["image_id"]]))
        val_image_ids = [i["id"] for i in images]

        for member in LABELME_FILES:
            doc = json.load(tar.extractfile(top + member))
            data = _read_labelme_image(tar, top + member, doc)
            name = Path(member).stem + ".jpg"
            Image.open(io.BytesIO(data)).convert("RGB").save(images_dir / name, quality=95)
            h, w = doc["imageHeight"], doc["imageWidth"]
            image_id = len(images) + 1
            images.append({"id": image_id, "file_name": name, "height": h, "width": w})
            for label, polys in labelme_to_instances(doc):
                if label not in cat_by_name:
                    cat_by_name[label] = max(cat_by_name.values()) + 1
                    categories.append({"id": cat_by_name[label], "name": label,
                                       "supercategory": None})
                area, bbox = _polygon_geometry(polys, h, w)
                annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                    "category_id": cat_by_name[label], "segmentation": polys,
                                    "area": area, "bbox": bbox, "iscrowd": 0})
    for img in images:
        img.pop("_old_id", None)
    source = f"labelme=={LABELME_VERSION} sdist from PyPI (sha256 {LABELME_SHA256}), GPL-3"
    _write_splits(root, images, annotations, categories, val_image_ids, source)
    return {"images": len(images), "annotations": len(annotations), "categories": len(categories)}


def _write_splits(root: Path, images, annotations, categories, val_image_ids, source: str) -> None:
    ann_dir = root / "annotations"
    ann_dir.mkdir(parents=True, exist_ok=True)
    info = {"description": f"slimdet tiny COCO set; source: {source}"}
    for split, ids in (("train", [i["id"] for i in images]), ("val", val_image_ids)):
        doc = {"info": info, "licenses": [], "categories": categories,
               "images": [i for i in images if i["id"] in ids],
               "annotations": [a for a in annotations if a["image_id"] in ids]}
        (ann_dir / f"instances_{split}.json").write_text(json.dumps(doc))
    (root / "SOURCE.txt").write_text(source + "\n")


def build_generated_shapes(root: Path, n_images: int = 9, seed: int = 0) -> Dict[str, int]:
    """Fallback when the sdist cannot be fetched: coloured polygons on noise (NOT real photos)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    images_dir = root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    categories = [{"id": 1, "name": "square", "supercategory": None},
                  {"id": 2, "name": "triangle", "supercategory": None}]
    images, annotations = [], []
    for i in range(n_images):
        h, w = 240, 320
        img = Image.fromarray(rng.integers(0, 80, (h, w, 3), dtype=np.uint8))
        draw = ImageDraw.Draw(img)
        image_id = i + 1
        for _ in range(int(rng.integers(1, 4))):
            cat = int(rng.integers(1, 3))
            s = float(rng.integers(30, 80))
            x, y = float(rng.integers(0, w - 80)), float(rng.integers(0, h - 80))
            pts = [(x, y), (x + s, y), (x + s, y + s), (x, y + s)] if cat == 1 else \
                [(x + s / 2, y), (x + s, y + s), (x, y + s)]
            draw.polygon(pts, fill=tuple(int(c) for c in rng.integers(120, 255, 3)))
            poly = [c for p in pts for c in p]
            area, bbox = _polygon_geometry([poly], h, w)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": cat, "segmentation": [poly], "area": area,
                                "bbox": bbox, "iscrowd": 0})
        name = f"shapes_{i:02d}.jpg"
        img.save(images_dir / name, quality=95)
        images.append({"id": image_id, "file_name": name, "height": h, "width": w})
    _write_splits(root, images, annotations, categories, [1, 2, 3],
                  f"{GENERATED} (fallback: the labelme sdist could not be downloaded)")
    return {"images": len(images), "annotations": len(annotations), "categories": len(categories)}


def is_prepared(root: Path) -> bool:
    return all((root / "annotations" / f"instances_{s}.json").exists() for s in ("train", "val")) \
        and (root / "SOURCE.txt").exists()


def build(root: Path, allow_fallback: bool = True) -> str:
    """Build the set into a new folder beside ``root``, then swap it in; returns its source."""
    root = root.resolve()
    staging = root.parent / f".{root.name}.building.{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    try:
        try:
            counts = build_from_sdist(fetch_labelme_sdist(), staging)
        except Exception as e:  # no network / pip failure / damaged download
            if not allow_fallback:
                raise
            log(f"WARNING: could not fetch labelme=={LABELME_VERSION} ({e})")
            log(f"WARNING: WRITING {GENERATED} (NOT real photos) to {root}; once online, "
                "rerun with --force for the real set")
            if staging.exists():
                shutil.rmtree(staging)
            counts = build_generated_shapes(staging)
        if root.exists():
            old = root.parent / f".{root.name}.old.{os.getpid()}"
            root.rename(old)
            staging.rename(root)
            shutil.rmtree(old)
        else:
            staging.rename(root)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    log(f"wrote {root}: {counts}")
    return (root / "SOURCE.txt").read_text().strip()


def describe(root: Path) -> List[str]:
    """One line per split: images, instances, categories with instances."""
    lines = []
    for split in ("train", "val"):
        doc = json.loads((root / "annotations" / f"instances_{split}.json").read_text())
        used = sorted({a["category_id"] for a in doc["annotations"]})
        names = [c["name"] for c in doc["categories"] if c["id"] in used]
        lines.append(f"{split}: {len(doc['images'])} images, {len(doc['annotations'])} instances, "
                     f"{len(doc['categories'])} categories ({len(used)} with instances: "
                     f"{', '.join(names)})")
    return lines


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=None,
                        help="output folder (default: $DETECTRON2_DATASETS/tiny_coco, else "
                             "datasets/tiny_coco)")
    parser.add_argument("--force", action="store_true", help="rebuild even if it exists")
    parser.add_argument("--no-fallback", action="store_true",
                        help="fail instead of writing generated shapes when the download fails")
    args = parser.parse_args(argv)
    root = args.root or Path(tiny_coco_root())
    existing = (root / "SOURCE.txt").read_text().strip() if is_prepared(root) else None
    if existing and not args.force:
        print(f"tiny COCO set at {root} is prepared (source: {existing})")
        if existing.startswith(GENERATED):
            log(f"NOTE: it is {GENERATED}, not real photos; python datasets/prepare_tiny_coco.py "
                "--force fetches the real set")
        return 0
    # Generated shapes never replace a real set (a --force rebuild offline fails instead).
    real_set_exists = existing is not None and not existing.startswith(GENERATED)
    try:
        source = build(root, allow_fallback=not (args.no_fallback or real_set_exists))
    except (OSError, RuntimeError, tarfile.TarError, KeyError, ValueError) as e:
        print(f"error: tiny COCO set not built: {e}", file=sys.stderr)
        return 1
    for line in describe(root):
        print(line)
    print(f"wrote {root} (source: {source})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
