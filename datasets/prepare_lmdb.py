#!/usr/bin/env python
"""Convert an ImageNet-style image folder into an LMDB for slimdet (``DATASETS.FORMAT: lmdb``).

    python datasets/prepare_lmdb.py datasets/imagenet/train datasets/imagenet/train.lmdb
    python datasets/prepare_lmdb.py datasets/imagenet/val   datasets/imagenet/val.lmdb

Each image is stored as its original encoded bytes plus label (decodes pixel-equal to the
folder). The conversion is resumable: progress is committed every ``--commit-every`` images, and
rerunning the same command after an interruption continues where it stopped. ``--max-new`` caps
the images converted by one run (for time-limited jobs); ``--overwrite`` starts over.
A user mistake (missing folder, an output that is a file or another folder, a changed folder on
a resume) ends in one ``error:`` line and exit status 2.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional

from iopath.common.file_io import g_pathmgr

# This checkout's slimdet, also when another one is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LMDB_FILES = {"data.mdb", "lock.mdb"}


def remove_lmdb(path: str) -> None:
    """Delete the LMDB folder ``path`` (``--overwrite``); anything else there is refused, so a
    mistyped OUTPUT (the image folder, a home directory) loses nothing."""
    from slimdet.data.datasets import DatasetError

    if not g_pathmgr.isdir(path):
        raise DatasetError(f"--overwrite deletes an LMDB folder, but {path} is a file; give a "
                           "folder's path as OUTPUT")
    names = g_pathmgr.ls(path)
    others = sorted(set(names) - LMDB_FILES)
    if others:
        raise DatasetError(f"--overwrite deletes an LMDB folder, but {path} holds other files too "
                           f"({', '.join(others[:3])}{' ...' if len(others) > 3 else ''}); "
                           "nothing was deleted")
    for name in names:
        g_pathmgr.rm(f"{path}/{name}")


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
    if args.commit_every < 1:
        p.error(f"--commit-every must be at least 1, got {args.commit_every}")
    if args.max_new is not None and args.max_new < 0:
        p.error(f"--max-new must not be negative, got {args.max_new}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    source = FolderDataset(args.folder)  # a missing or empty folder fails before any deletion
    if args.overwrite and g_pathmgr.exists(args.output):
        remove_lmdb(args.output)
    done = write_lmdb(source, args.output, commit_every=args.commit_every,
                      max_new=args.max_new, progress=not args.no_progress)
    if done < len(source):
        print(f"{done}/{len(source)} images in {args.output}; rerun to continue")
        return 0
    ds = LMDBDataset(args.output)
    print(f"{args.output}: {len(ds)} images, {len(ds.classes)} classes")
    return 0


if __name__ == "__main__":
    from slimdet.engine.defaults import run_cli

    sys.exit(run_cli(main))
