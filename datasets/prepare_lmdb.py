#!/usr/bin/env python
"""Convert an ImageNet-style image folder into an LMDB for slimdet (``DATASETS.FORMAT: lmdb``).

    python datasets/prepare_lmdb.py datasets/imagenet/train datasets/imagenet/train.lmdb
    python datasets/prepare_lmdb.py datasets/imagenet/val   datasets/imagenet/val.lmdb

Each image is stored as its original encoded bytes plus label (decodes pixel-equal to the
folder). The conversion is resumable: progress is committed every ``--commit-every`` images, and
rerunning the same command after an interruption continues where it stopped. ``--max-new`` caps
the images converted by one run (for time-limited jobs); ``--overwrite`` starts over.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from iopath.common.file_io import g_pathmgr


def main(argv: Optional[List[str]] = None) -> int:
    from slimdet.data.datasets import FolderDataset, LMDBDataset, write_lmdb

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", help="image folder: FOLDER/<class>/<image>")
    p.add_argument("output", help="LMDB directory to write (e.g. datasets/imagenet/train.lmdb)")
    p.add_argument("--commit-every", type=int, default=1000,
                   help="images per transaction (the unit of resumption)")
    p.add_argument("--max-new", type=int, default=None,
                   help="convert at most this many new images in this run")
    p.add_argument("--overwrite", action="store_true", help="delete OUTPUT first")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    if args.overwrite and g_pathmgr.exists(args.output):
        for f in g_pathmgr.ls(args.output):
            g_pathmgr.rm(f"{args.output}/{f}")
    source = FolderDataset(args.folder)
    done = write_lmdb(source, args.output, commit_every=args.commit_every,
                      max_new=args.max_new, progress=not args.no_progress)
    if done < len(source):
        print(f"{done}/{len(source)} images in {args.output}; rerun to continue")
        return 0
    ds = LMDBDataset(args.output)
    print(f"{args.output}: {len(ds)} images, {len(ds.classes)} classes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
