#!/usr/bin/env python
"""Fetch the labelme 6.3.1 sdist from PyPI and write the tiny COCO set to datasets/tiny_coco/.

    python datasets/prepare_tiny_coco.py [--root DIR] [--force] [--no-fallback]

The sdist is cached under ~/.cache/slimdet (or $SLIMDET_CACHE). The photos are GPL-3 / PASCAL
VOC: they are written to a git-ignored folder and never committed. See slimdet/d2/tiny_coco.py.
"""
import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from slimdet.d2.tiny_coco import default_root, prepare_tiny_coco  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=None,
                        help="output folder (default: $DETECTRON2_DATASETS/tiny_coco or datasets/tiny_coco)")
    parser.add_argument("--force", action="store_true", help="rebuild even if it exists")
    parser.add_argument("--no-fallback", action="store_true",
                        help="fail instead of writing generated shapes when the download fails")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = args.root or default_root()
    source = prepare_tiny_coco(root, force=args.force, allow_fallback=not args.no_fallback)
    for split in ("train", "val"):
        doc = json.loads((root / "annotations" / f"instances_{split}.json").read_text())
        used = sorted({a["category_id"] for a in doc["annotations"]})
        names = [c["name"] for c in doc["categories"] if c["id"] in used]
        print(f"{split}: {len(doc['images'])} images, {len(doc['annotations'])} instances, "
              f"{len(doc['categories'])} categories ({len(used)} with instances: {', '.join(names)})")
    print(f"wrote {root} (source: {source})")


if __name__ == "__main__":
    main()
