#!/usr/bin/env python
"""Do two-process CPU (gloo) jobs that call Detectron2's ``comm.all_gather`` end cleanly?

    python scripts/check_gloo_teardown.py [--runs 25]

Why it exists: with torch 2.14.1 and Detectron2 0.6 on the project's 2-core CPU machines, a
gloo worker that still referenced a process group after ``destroy_process_group`` (Detectron2
caches the group of ``comm.all_gather`` in an ``lru_cache``) destroyed it at interpreter exit,
and about one job in six aborted there ("terminate called without an active exception",
SIGABRT; 4 of 25 runs, 2026-12-06). slimdet's CPU workers drop those references first
(``slimdet.utils.d2compat.release_process_groups``); this script starts ``--runs`` jobs through
``slimdet.engine.launch`` and counts the ones that did not end cleanly (exit status 1 if any).
``--keep-groups`` skips the release, to see whether a torch or Detectron2 upgrade still needs it.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
from pathlib import Path

import torch.distributed as dist
from detectron2.utils import comm

from slimdet.engine.launch import launch

# The module itself: ``slimdet.engine.launch`` as an attribute of the package is the function.
launch_module = importlib.import_module("slimdet.engine.launch")


def _gather(out_dir: str, keep_groups: bool) -> None:
    if keep_groups:  # in the worker: its launch module then leaves the groups referenced
        launch_module.release_process_groups = lambda: None
    comm.all_gather(dist.get_rank())
    Path(out_dir, f"rank{dist.get_rank()}").write_text("done")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=25)
    parser.add_argument("--keep-groups", action="store_true",
                        help="do not release Detectron2's process groups (the old behaviour)")
    args = parser.parse_args()
    failed = 0
    for run in range(args.runs):
        try:
            launch(_gather, 2, args=(tempfile.mkdtemp(), args.keep_groups))
        except Exception as e:  # a worker that aborted: torch's ProcessExitedException
            failed += 1
            print(f"run {run}: {type(e).__name__}: {e}", flush=True)
    print(f"{failed} of {args.runs} two-process jobs did not end cleanly")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
