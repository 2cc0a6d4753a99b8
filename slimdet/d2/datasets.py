"""Data sets ``import slimdet.d2`` registers with Detectron2: the tiny COCO set.

Registration only points at files that data preparation wrote: nothing is downloaded or built
here. ``datasets/prepare_tiny_coco.py`` builds the set (``scripts/setup_env.sh`` runs it once)
under ``$DETECTRON2_DATASETS/tiny_coco``, default ``datasets/tiny_coco`` relative to the
directory you run from (Detectron2's convention for its own COCO registration); using a split
whose files are missing is one error naming the file and the command that prepares it.

- ``tiny_coco_train``: 9 real photos (3 PASCAL VOC photos of labelme's COCO example, 6 photos
  annotated in labelme JSON), background category dropped;
- ``tiny_coco_val``: the 3 VOC photos (a subset of train: the set shows that the pipeline runs
  and can fit, not generalisation).

When it had to be built offline, the set is generated shapes instead; ``SOURCE.txt`` says so and
loading it logs a warning.
"""
from __future__ import annotations

import functools
import logging
import os
from typing import Dict, List, Optional

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

logger = logging.getLogger(__name__)

TINY_COCO_TRAIN, TINY_COCO_VAL = "tiny_coco_train", "tiny_coco_val"
TINY_COCO_SPLITS = {TINY_COCO_TRAIN: "train", TINY_COCO_VAL: "val"}
PREPARE_COMMAND = "bash scripts/setup_env.sh (or python datasets/prepare_tiny_coco.py)"
GENERATED = "GENERATED SHAPES"  # how SOURCE.txt of the offline fallback starts


def datasets_root() -> str:
    """``$DETECTRON2_DATASETS``, default ``datasets`` (as Detectron2's builtin data sets)."""
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


def tiny_coco_root() -> str:
    return os.path.join(datasets_root(), "tiny_coco")


def tiny_coco_files(root: str, split: str) -> Dict[str, str]:
    """The annotation file and image folder of ``split`` (``train`` / ``val``) under ``root``."""
    return {"json_file": os.path.join(root, "annotations", f"instances_{split}.json"),
            "image_root": os.path.join(root, "images")}


def tiny_coco_source(root: Optional[str] = None) -> str:
    """The prepared set's one-line source (``SOURCE.txt``); ``FileNotFoundError`` naming the
    missing file and :data:`PREPARE_COMMAND` when the set is not (completely) prepared."""
    root = root or tiny_coco_root()
    needed = [tiny_coco_files(root, s)["json_file"] for s in TINY_COCO_SPLITS.values()]
    needed.append(os.path.join(root, "SOURCE.txt"))
    for path in needed:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"the tiny COCO set is not prepared: {path} is missing; "
                                    f"prepare it with {PREPARE_COMMAND}")
    with open(needed[-1]) as f:
        return f.read().strip()


def _load_tiny_coco(name: str, root: str) -> List[Dict]:
    source = tiny_coco_source(root)
    files = tiny_coco_files(root, TINY_COCO_SPLITS[name])
    records = load_coco_json(files["json_file"], files["image_root"], name)
    if source.startswith(GENERATED):
        logger.warning("%s at %s is %s, not real photos (built offline); rebuild it with "
                       "python datasets/prepare_tiny_coco.py --force", name, root, GENERATED)
    else:
        logger.info("%s: %d images from %s (%s)", name, len(records), root, source)
    return records


def register_tiny_coco(root: Optional[str] = None) -> None:
    """Register ``tiny_coco_train`` / ``tiny_coco_val`` at ``root`` (default
    :func:`tiny_coco_root`); a name that is already registered is left as it is."""
    root = root or tiny_coco_root()
    for name, split in TINY_COCO_SPLITS.items():
        if name in DatasetCatalog.list():
            continue
        DatasetCatalog.register(name, functools.partial(_load_tiny_coco, name, root))
        MetadataCatalog.get(name).set(evaluator_type="coco", **tiny_coco_files(root, split))
