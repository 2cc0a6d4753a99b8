"""What a run may write into ``OUTPUT_DIR``, and when.

A start checks everything first (config, every data split it needs, the weights it loads, the
state of the folder) and writes nothing until all of it passed, so a failed start leaves a
previous run's files as they were:

* :func:`check_output_dir`: a start without ``--resume`` into a folder that holds a previous
  run (its config, metrics, events or checkpoints) is refused, naming the folder, unless the
  user asked for ``--overwrite``.
* :class:`RunLog`: log records are kept in memory until :meth:`RunLog.start_file`, then
  written to ``OUTPUT_DIR/log.txt`` (``log.txt.rank<N>`` for the other processes) in order.
* :func:`start_run_files`: after the checks, ``--overwrite`` removes the previous run's files,
  and ``config.yaml`` is written (atomically).
"""
from __future__ import annotations

import datetime
import fnmatch
import json
import logging
import logging.handlers
import os
from typing import Dict, List, Optional

from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from iopath.common.file_io import g_pathmgr

from ..analysis.hooks import TRAJECTORY_DIR, TRAJECTORY_PATTERN
from ..utils.file_io import atomic_write, file_sha256, same_file

# Files a training run writes into OUTPUT_DIR (log.txt is appended to, so it is not one).
RUN_FILE_PATTERNS = ("config.yaml", "config.before_resume*.yaml", "metrics.json",
                     "last_checkpoint", "model_*.pth", "events.out.tfevents.*")
EVAL_RESULTS = "eval_results.json"
EVAL_HISTORY = "eval_history.jsonl"  # every --eval-only, one JSON record per line
LOGGER_NAMES = ("slimdet", "detectron2", "fvcore")
_PLAIN_FORMAT = logging.Formatter("[%(asctime)s] %(name)s %(levelname)s: %(message)s",
                                  datefmt="%m/%d %H:%M:%S")


class OutputDirError(ValueError):
    """OUTPUT_DIR cannot be used as asked; the message names it and the ways out."""


def previous_run_files(output_dir: str) -> List[str]:
    """Names of the files of a previous run in ``output_dir`` (sorted)."""
    if not output_dir or not g_pathmgr.isdir(output_dir):
        return []
    return sorted(f for f in g_pathmgr.ls(output_dir)
                  if any(fnmatch.fnmatch(f, p) for p in RUN_FILE_PATTERNS))


def check_output_dir(output_dir: str, resume: bool, overwrite: bool, weights: str = "") -> None:
    """Refuse a fresh start into a previous run's folder (``OutputDirError``, one line), and an
    ``--overwrite`` that would remove the file ``weights`` (MODEL.WEIGHTS) the job starts from."""
    if resume and overwrite:
        raise OutputDirError("--resume continues the run in OUTPUT_DIR and --overwrite replaces "
                             "it: give one of them")
    if output_dir and g_pathmgr.exists(output_dir) and not g_pathmgr.isdir(output_dir):
        raise OutputDirError(f"OUTPUT_DIR {output_dir} is a file, not a folder")
    found = previous_run_files(output_dir)
    # A folder with only a config (a start that failed after writing it, an evaluation's)
    # holds no results to lose: a new start replaces that config.
    results = [f for f in found if not fnmatch.fnmatch(f, "config*.yaml")]
    if overwrite and weights and _is_run_file_of(weights, output_dir):
        raise OutputDirError(
            f"MODEL.WEIGHTS {weights} is a file of the previous run in OUTPUT_DIR {output_dir}, "
            "which --overwrite removes: copy it out of that folder first, or set another "
            "OUTPUT_DIR")
    if results and not resume and not overwrite:
        shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
        raise OutputDirError(
            f"OUTPUT_DIR {output_dir} holds a previous run ({shown}): pass --resume to continue "
            "it, --overwrite to replace it, or set another OUTPUT_DIR")
    checkpoints = [f for f in found if fnmatch.fnmatch(f, "model_*.pth")]
    if resume and checkpoints and "last_checkpoint" not in found:
        # A kill between writing a checkpoint and tagging it: a new run from iteration 0 would
        # replace these checkpoints with another run's.
        raise OutputDirError(
            f"--resume: OUTPUT_DIR {output_dir} holds checkpoints ({', '.join(checkpoints[-3:])}) "
            "but no last_checkpoint naming the one to continue: write the name of one of them "
            f"into {os.path.join(output_dir, 'last_checkpoint')}, or start a new run elsewhere")
    if resume and weights and "last_checkpoint" in found:
        _check_resumed_weights(output_dir, weights)


def _check_resumed_weights(output_dir: str, weights: str) -> None:
    """A resume continues from the run's checkpoint and never reads MODEL.WEIGHTS: a value other
    than the one the run started from would be recorded in config.yaml as the run's origin
    though its weights did not come from it, so it is refused (``OutputDirError``)."""
    import yaml

    path = os.path.join(output_dir, "config.yaml")
    if not g_pathmgr.isfile(path):
        return
    try:
        with g_pathmgr.open(path) as f:
            started_from = ((yaml.safe_load(f) or {}).get("MODEL") or {}).get("WEIGHTS")
    except (yaml.YAMLError, AttributeError):
        return  # not a config this check can read; the resume's own checks follow
    if not started_from or _same_path(started_from, weights):
        return  # not recorded, or the same file however it is written
    raise OutputDirError(
        f"--resume continues the run in OUTPUT_DIR {output_dir} from its last checkpoint and "
        f"does not read MODEL.WEIGHTS: {weights} is not the file the run started from "
        f"({started_from}, its config.yaml); give MODEL.WEIGHTS {started_from} as the run did "
        f"to resume it, or start a new run from {weights} (another OUTPUT_DIR, or --overwrite)")


def _same_path(a: str, b: str) -> bool:
    """Whether two MODEL.WEIGHTS values name one file (:func:`same_file`: another spelling, a
    symlink); URLs only when equal."""
    return a == b if "://" in a or "://" in b else same_file(a, b)


def _is_run_file_of(path: str, output_dir: str) -> bool:
    """Whether the local file ``path`` is one :func:`clear_previous_run` removes from ``output_dir``."""
    if "://" in path or not os.path.isfile(path) or not os.path.isdir(output_dir):
        return False
    folder, name = os.path.split(os.path.realpath(path))
    return os.path.samefile(folder, output_dir) and name in previous_run_files(output_dir)


def clear_previous_run(output_dir: str) -> List[str]:
    """Remove the previous run's files (``--overwrite``), and the results of ``--eval-only``
    there (``EVAL_RESULTS``, ``EVAL_HISTORY``: they may name the run's model_final.pth, which
    the new run replaces); returns their names."""
    found = previous_run_files(output_dir) + [
        name for name in (EVAL_RESULTS, EVAL_HISTORY)
        if g_pathmgr.isfile(os.path.join(output_dir, name))]
    # The weights ANALYSIS.TRAJECTORY_PERIOD saved: left beside a new run's, a loss landscape
    # would mix both runs' trajectories.
    trajectory = os.path.join(output_dir, TRAJECTORY_DIR)
    if g_pathmgr.isdir(trajectory):
        found += [os.path.join(TRAJECTORY_DIR, f) for f in sorted(g_pathmgr.ls(trajectory))
                  if fnmatch.fnmatch(f, TRAJECTORY_PATTERN)]
    for name in found:
        g_pathmgr.rm(os.path.join(output_dir, name))
    return found


def console_logging(rank: int = 0) -> None:
    """Detectron2's console loggers (stdout, main process only) for slimdet, detectron2, fvcore;
    calling it again adds nothing."""
    for name in LOGGER_NAMES:
        setup_logger(None, distributed_rank=rank, name=name,
                     abbrev_name="d2" if name == "detectron2" else None)


class RunLog:
    """Console logging from the start; the log file only once the run is allowed to write.

    Records emitted before :meth:`start_file` are buffered and written to the file first, so the
    file tells the whole story of the run while a refused start writes nothing. The latest
    instance of the process is :attr:`RunLog.current`.
    """

    current: Optional["RunLog"] = None

    def __init__(self, rank: int = 0):
        RunLog.current = self
        self.rank = rank
        console_logging(rank)
        self._buffer = logging.handlers.MemoryHandler(capacity=1 << 20,
                                                      flushLevel=logging.CRITICAL + 1)
        self._file = None
        for name in LOGGER_NAMES:
            logging.getLogger(name).addHandler(self._buffer)

    def start_file(self, output_dir: str) -> None:
        if self._file is not None or not output_dir:
            return
        path = os.path.join(output_dir, "log.txt" + (f".rank{self.rank}" if self.rank else ""))
        g_pathmgr.mkdirs(output_dir)
        self._file = logging.FileHandler(path, mode="a")
        self._file.setFormatter(_PLAIN_FORMAT)
        self._buffer.setTarget(self._file)
        self._buffer.flush()
        for name in LOGGER_NAMES:
            logger = logging.getLogger(name)
            logger.removeHandler(self._buffer)
            logger.addHandler(self._file)
        self._buffer.close()


def start_run_files(cfg, overwrite: bool = False) -> None:
    """Called once every check passed: the folder, ``--overwrite``'s clean-up, ``config.yaml``
    (main process) and this process's log file (:attr:`RunLog.current`). All processes first
    wait for each other, so no process writes while another may still refuse the start."""
    comm.synchronize()
    out = cfg.OUTPUT_DIR
    logger = logging.getLogger("slimdet")
    if comm.is_main_process() and out:
        g_pathmgr.mkdirs(out)
        if overwrite:
            removed = clear_previous_run(out)
            if removed:
                logger.warning("--overwrite: removed the previous run's %s from %s",
                               ", ".join(removed), out)
        path = os.path.join(out, "config.yaml")
        if not overwrite and g_pathmgr.isfile(path):
            keep_config_of_resumed_run(path, cfg.dump())
        atomic_write(path, lambda f: f.write(cfg.dump().encode()))
        logger.info("Full config saved to %s", path)
    comm.synchronize()
    if RunLog.current is not None:
        RunLog.current.start_file(out)


def changed_keys(before: dict, after: dict, prefix: str = "") -> List[str]:
    """``KEY: old -> new`` for every key whose value differs between two config dicts."""
    changes = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changes += changed_keys(old, new, f"{prefix}{key}.")
        elif old != new:
            changes.append(f"{prefix}{key}: {old!r} -> {new!r}")
    return changes


def keep_config_of_resumed_run(path: str, new_dump: str) -> None:
    """A ``--resume`` with other config values continues the run under the new ones (more
    iterations, another evaluation period ...; what a checkpoint cannot take, such as other
    widths, is refused when it loads). The config the run had so far is kept beside it as
    ``config.before_resume<N>.yaml`` and every changed key is logged, so the folder still says
    how each part of the run was made."""
    import yaml

    with g_pathmgr.open(path) as f:
        old_dump = f.read()
    changes = changed_keys(yaml.safe_load(old_dump) or {}, yaml.safe_load(new_dump) or {})
    if not changes:
        return
    folder = os.path.dirname(path)
    n = 1
    while g_pathmgr.exists(os.path.join(folder, f"config.before_resume{n}.yaml")):
        n += 1
    kept = os.path.join(folder, f"config.before_resume{n}.yaml")
    atomic_write(kept, lambda f: f.write(old_dump.encode()))
    logging.getLogger("slimdet").warning(
        "--resume with %d changed config key(s), the run continues under the new values (its "
        "config so far is kept as %s): %s", len(changes), kept, "; ".join(changes))


def check_iterations_left(start_iter: int, max_iter: int, output_dir: str,
                          limit: str = "") -> None:
    """Refuse a ``--resume`` that has no iteration left to run (``OutputDirError``, one line):
    the run in ``output_dir`` continues at ``start_iter`` and the config ends at ``max_iter``
    (``limit`` says which keys set it; default ``SOLVER.MAX_ITER <max_iter>``). Without this
    the loop runs no step and the job ends with exit 0 and no model_final.pth (a lowered
    SOLVER.MAX_ITER) or starts a finished run again for nothing. Called before anything is
    written, so config.yaml and metrics.json stay as they are."""
    if start_iter < max_iter:
        return
    limit = limit or f"SOLVER.MAX_ITER {max_iter}"
    problem = (f"it already ran the {max_iter} iterations of {limit}" if start_iter == max_iter
               else f"{limit} ends before the {start_iter} iterations it already ran")
    raise OutputDirError(
        f"--resume of the run in OUTPUT_DIR {output_dir}: {problem}, so nothing is left to "
        f"train: raise SOLVER.MAX_ITER above {start_iter} to train on, or evaluate the run "
        "with --eval-only --resume")


def trim_metrics_for_resume(path: str, start_iter: int, run_finished: bool = False) -> int:
    """Before a resumed run appends to ``metrics.json``: drop the rows of iterations it runs
    again (a killed run went on past its last checkpoint) and a last line cut off by the kill,
    so every iteration is recorded once. Returns the number of rows dropped.

    ``run_finished``: the run resumes from its final model (more iterations asked for). Its
    last evaluation is recorded at iteration ``start_iter`` (Detectron2 records the one after
    training at max_iter) in a row of its own, without training scalars: that row measured
    the final model, which no later step recomputes, so it is kept."""
    if not g_pathmgr.isfile(path):
        return 0
    with g_pathmgr.open(path) as f:
        lines = f.read().splitlines()
    kept = []
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(row, dict):
            continue
        iteration = row.get("iteration", -1)
        if iteration < start_iter or (run_finished and iteration == start_iter and
                                      "total_loss" not in row):
            kept.append(line)
    dropped = len(lines) - len(kept)
    if dropped:
        atomic_write(path, lambda f: f.write("".join(f"{line}\n" for line in kept).encode()))
    return dropped


def write_eval_results(output_dir: str, results: Dict[str, float], weights: str) -> str:
    """``OUTPUT_DIR/eval_results.json`` (atomically): what the latest ``--eval-only`` measured
    and on which weights. Every evaluation is also added as one line to
    ``OUTPUT_DIR/eval_history.jsonl``, so an evaluation of other weights, widths or evaluators
    never loses an earlier one's numbers; a training run's ``metrics.json`` is left alone."""
    g_pathmgr.mkdirs(output_dir)
    path = os.path.join(output_dir, EVAL_RESULTS)
    history_path = os.path.join(output_dir, EVAL_HISTORY)
    record = {"weights": weights, "results": results,
              "time": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    if weights and "://" not in weights:
        record["weights"] = os.path.abspath(weights)  # the record outlives the folder it was typed in
        if os.path.isfile(weights):
            # Which file it was: a later run may write another model_final.pth under that name.
            record["weights_sha256"] = file_sha256(weights)
    history = _read_lines(history_path)
    if not history and g_pathmgr.isfile(path):  # written before there was a history
        with g_pathmgr.open(path) as f:
            earlier = f.read().strip()
        try:
            history.append(json.dumps(json.loads(earlier)))
        except json.JSONDecodeError:
            pass  # an unreadable earlier record has no numbers to keep
    history.append(json.dumps(record))
    atomic_write(history_path, lambda f: f.write("".join(f"{line}\n" for line in history).encode()))
    atomic_write(path, lambda f: f.write(json.dumps(record, indent=2).encode()))
    return path


def retire_stale_eval_results(output_dir: str) -> Optional[str]:
    """Remove ``OUTPUT_DIR/eval_results.json`` when the weights file it names has been rewritten
    since that evaluation (a resumed run writes a new model_final.pth under the same name): its
    numbers would otherwise read as those of the new file. The record stays in
    ``eval_history.jsonl``, with the old file's SHA-256. Returns the removed file's path."""
    path = os.path.join(output_dir, EVAL_RESULTS)
    if not output_dir or not g_pathmgr.isfile(path):
        return None
    try:
        with g_pathmgr.open(path) as f:
            record = json.load(f)
        weights, digest = record["weights"], record["weights_sha256"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return None  # not a record this can check (hand-written, or older than the hash)
    if not isinstance(weights, str) or not os.path.isfile(weights) or \
            file_sha256(weights) == digest:
        return None
    g_pathmgr.rm(path)
    return path


def _read_lines(path: str) -> List[str]:
    """The non-empty lines of ``path`` ([] when it does not exist)."""
    if not g_pathmgr.isfile(path):
        return []
    with g_pathmgr.open(path) as f:
        return [line for line in f.read().splitlines() if line.strip()]
