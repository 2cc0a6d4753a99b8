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

Any other COCO-format set is named by its files, ``coco:JSON_FILE:IMAGE_FOLDER``
(:func:`register_coco_path`, no Python needed). :func:`coco_summary` reads an annotation file
once per process and refuses, in one :class:`~slimdet.data.datasets.DatasetError` naming the
file, what Detectron2 would load wrongly or fail on with a traceback.
"""
from __future__ import annotations

import difflib
import functools
import json
import logging
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.data.detection_utils import SizeMismatchError
from PIL import UnidentifiedImageError

from ..data.datasets import DatasetError

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


# ------------------------------------------------------------------------ a set named by its files
COCO_PATH_PREFIX = "coco:"
COCO_PATH_FORM = "coco:JSON_FILE:IMAGE_FOLDER"


def is_coco_path(name: str) -> bool:
    return name.startswith(COCO_PATH_PREFIX)


def coco_path_files(name: str) -> Dict[str, str]:
    """``coco:JSON_FILE:IMAGE_FOLDER`` -> its ``json_file`` and ``image_root``; ``ValueError``
    for a name of another form."""
    parts = name[len(COCO_PATH_PREFIX):].split(":")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"{name!r} is not {COCO_PATH_FORM} (two paths without ':')")
    return {"json_file": parts[0], "image_root": parts[1]}


def register_coco_path(name: str) -> None:
    """Register the COCO-format set ``coco:JSON_FILE:IMAGE_FOLDER`` under that name (a config
    value then names your own data without a registration in Python); already registered: left
    as it is. Relative paths are relative to the folder the job runs from."""
    if name in DatasetCatalog.list():
        return
    files = coco_path_files(name)
    DatasetCatalog.register(name, functools.partial(load_coco_json, files["json_file"],
                                                    files["image_root"], name))
    MetadataCatalog.get(name).set(evaluator_type="coco", **files)


def output_folder_name(name: str) -> str:
    """A data set's name as one folder name for its evaluation files: ``coco:JSON:IMAGES`` as
    ``coco_<JSON's stem>`` (its paths would make nested folders), other names as they are."""
    if is_coco_path(name):
        try:
            stem = os.path.splitext(os.path.basename(coco_path_files(name)["json_file"]))[0]
        except ValueError:
            stem = ""
        return f"coco_{stem or 'data'}"
    return name


# ----------------------------------------------------------------- reading an annotation file
@dataclass(frozen=True)
class CocoSummary:
    """What the start-up checks need of one COCO annotation file."""

    json_file: str
    categories: Tuple[Tuple[int, str], ...]  # (id, name) by id: label i is categories[i]
    images: int
    annotated_images: int  # images with at least one non-crowd annotation (Detectron2 trains on)
    has_annotations: bool  # False: an image-info file (COCO test-dev), only predictions


_SUMMARIES: Dict[Tuple[str, int, int], CocoSummary] = {}


def coco_summary(json_file: str) -> CocoSummary:
    """:func:`summarize_coco` of ``json_file``, read once per process while the file is
    unchanged (a COCO train2017 file is 450 MB: several checks of one split must not reread it)."""
    st = os.stat(json_file)
    key = (os.path.abspath(json_file), st.st_mtime_ns, st.st_size)
    if key not in _SUMMARIES:
        _SUMMARIES[key] = summarize_coco(read_json(json_file), json_file)
    return _SUMMARIES[key]


def read_json(path: str):
    """The parsed file; one :class:`DatasetError` naming it when it is not JSON."""
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path} is not valid JSON ({e.msg}: line {e.lineno} column "
                           f"{e.colno}): a truncated or corrupt annotation file?") from None
    except UnicodeDecodeError:
        raise DatasetError(f"{path} is not a JSON text file (not UTF-8)") from None
    except OSError as e:
        raise DatasetError(f"cannot read {path} ({e.strerror})") from None


def _list(doc: dict, key: str, path: str) -> Optional[list]:
    """``doc[key]``, a list; None when absent and no other key looks like a misspelling of it."""
    value = doc.get(key)
    if value is None:
        close = difflib.get_close_matches(key, [k for k in doc if isinstance(k, str)], n=1,
                                          cutoff=0.75)
        if close:
            raise DatasetError(f"{path} has no {key!r} list but {close[0]!r}: a misspelt key? "
                               f"(COCO's is {key!r})")
        return None
    if not isinstance(value, list):
        raise DatasetError(f"{path}: {key!r} is a {type(value).__name__}, not a list")
    return value


def summarize_coco(doc, path: str) -> CocoSummary:
    """The categories and annotated images of the parsed COCO instances file ``doc``; a
    :class:`DatasetError` naming ``path`` when it is not one (no ``images`` or ``categories``,
    a misspelt key, malformed categories or annotations, an annotation of an unknown category).
    A file without ``annotations`` (and no key like it) is an image-info file."""
    if not isinstance(doc, dict):
        raise DatasetError(f"{path} is not a COCO annotation file: it holds a "
                           f"{type(doc).__name__}, not an object with images, annotations and "
                           "categories")
    lists = {key: _list(doc, key, path) for key in ("images", "annotations", "categories")}
    for key in ("images", "categories"):
        if lists[key] is None:
            keys = ", ".join(map(repr, list(doc)[:8])) or "none"
            raise DatasetError(f"{path} is not a COCO instances file: it has no {key!r} list "
                               f"(its keys: {keys})")
    categories = {}
    for c in lists["categories"]:
        if not (isinstance(c, dict) and isinstance(c.get("id"), int)
                and isinstance(c.get("name"), str)):
            raise DatasetError(f"{path}: category {c!r} is not an object with an integer 'id' "
                               "and a 'name'")
        if c["id"] in categories:
            raise DatasetError(f"{path}: category id {c['id']} is used twice "
                               f"({categories[c['id']]!r} and {c['name']!r})")
        categories[c["id"]] = c["name"]
    if not categories:
        raise DatasetError(f"{path} has no categories")
    image_ids = set()
    for im in lists["images"]:
        if not (isinstance(im, dict) and "id" in im and "file_name" in im):
            raise DatasetError(f"{path}: image {im!r:.80} is not an object with 'id' and "
                               "'file_name'")
        image_ids.add(im["id"])
    annotated = set()
    for a in lists["annotations"] or ():
        try:
            category, image = a["category_id"], a["image_id"]
        except (KeyError, TypeError):
            raise DatasetError(f"{path}: annotation {a!r:.80} is not an object with "
                               "'image_id' and 'category_id'") from None
        if category not in categories:
            ids = sorted(categories)
            raise DatasetError(f"{path}: annotation {a.get('id')} (image {image}) has "
                               f"category_id {category!r}, which is not one of its categories "
                               f"(ids {ids[0]}..{ids[-1]}, {len(ids)} categories)")
        if not a.get("iscrowd", 0):
            annotated.add(image)
    return CocoSummary(json_file=path, categories=tuple(sorted(categories.items())),
                       images=len(image_ids), annotated_images=len(annotated & image_ids),
                       has_annotations=lists["annotations"] is not None)


# ------------------------------------------------------------------------ reading images
class ImageCheckingMapper(DatasetMapper):
    """Detectron2's ``DatasetMapper`` (same arguments, ``ImageCheckingMapper(cfg, is_train)``)
    where an image that cannot be read or decoded (a truncated JPEG, a file that is not an
    image, one missing since start-up) or whose size is not the one of its annotation file is
    one :class:`DatasetError` naming the file, instead of PIL's traceback deep in a loader."""

    def __call__(self, dataset_dict):
        try:
            return super().__call__(dataset_dict)
        except OSError as e:  # PIL's UnidentifiedImageError and truncated-file error are OSErrors
            why = ("not an image file PIL can read" if isinstance(e, UnidentifiedImageError)
                   else e.strerror or str(e))
            raise DatasetError(f"cannot read image {dataset_dict['file_name']} ({why}): replace "
                               "it or drop it from the annotation file") from None
        except SizeMismatchError as e:
            raise DatasetError(f"image {dataset_dict['file_name']}: {e}") from None
