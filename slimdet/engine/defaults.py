"""The plumbing every tool shares: argument parser, config set-up, start-up checks, logging,
seeding, and the one-line report of a user's mistake."""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import random
import sys
from typing import Any, Callable, Iterator, List, Optional

import numpy as np
import torch
from detectron2.engine import default_argument_parser as _d2_parser
from detectron2.utils import comm

from ..checkpoint import CheckpointError
from ..config import CfgNode, ConfigError, get_cfg, validate_cfg
from ..data.datasets import DatasetError
from ..layers import UncalibratedWidthError
from ..utils.file_io import OutputError
from .run_folder import OutputDirError, RunLog, check_output_dir, console_logging

logger = logging.getLogger("slimdet")

EXIT_USER_ERROR = 2
EXIT_STATUS_HELP = (
    "Exit status: 0 on success; 2 for a mistake in the command, the config, the data or the "
    "output folder (one line on stderr, starting with 'error:', naming the file, key or value); "
    "1 for anything else (a bug: a traceback).")


def default_argument_parser(epilog: Optional[str] = None) -> argparse.ArgumentParser:
    """Detectron2's flags: --config-file --resume --eval-only --num-gpus --num-machines
    --machine-rank --dist-url and trailing ``KEY VALUE`` overrides. ``--dist-url`` defaults to
    ``auto``, a port free at the start of a one-machine job: Detectron2's default is one fixed
    port per user, so a second job started beside the first failed to bind it."""
    parser = _d2_parser(epilog)
    parser.set_defaults(dist_url="auto")
    for action in parser._actions:
        if action.dest == "dist_url":
            action.help = ("rendezvous of the processes: auto (default) for a one-machine job, "
                           "tcp://HOST0:PORT (machine rank 0's address) for several machines")
        elif action.dest == "opts":  # Detectron2's text also offers LazyConfig's key=value
            action.help = ("config overrides at the end of the command: space-separated KEY "
                           "VALUE pairs, e.g. SOLVER.MAX_ITER 1000 MODEL.WIDTHS \"[1.0, 0.5]\" "
                           "(keys: slimdet/config/defaults.py; detection: Detectron2's "
                           "defaults and slimdet/d2/config.py)")
    return parser


class WidthsAction(argparse.Action):
    """``--widths 1.0 0.6 KEY VALUE``: the list ends at its first value that is not a number, and
    what follows goes to the trailing ``KEY VALUE`` overrides (argparse alone would try to read
    ``KEY`` as a width). Parse with :func:`parse_tool_args` so that those values reach ``opts``."""

    def __init__(self, option_strings, dest, **kwargs):
        kwargs.setdefault("nargs", "+")
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        numbers = []
        for i, value in enumerate(values):
            try:
                numbers.append(float(value))
            except ValueError:
                if not numbers:
                    parser.error(f"{option_string}: {value!r} is not a number")
                namespace.overrides_after_list = list(values[i:])
                break
        setattr(namespace, self.dest, numbers)


def parse_tool_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """``parser.parse_args`` for the tools, whose trailing ``opts`` (``KEY VALUE`` overrides,
    argparse's ``REMAINDER``) take every word after the first ``KEY``. Two things it adds:

    - the words after a :class:`WidthsAction` list that are not numbers go to ``opts``;
    - a flag typed after overrides (``... MODEL.WEIGHTS w.pth --eval-only``), where a ``KEY``
      would stand, is parsed as the flag it is (with its value, if it takes one) instead of
      failing as an unknown config key; an unknown flag there fails as argparse fails on one.
      A word starting with ``-`` in a value's place (``SOLVER.WARMUP_FACTOR -1``) stays a value.

    Required flags may stand before or after the overrides: the command line is read in
    pieces, so argparse's own check (which would run on each piece) is replaced by one check
    of the whole command line, with argparse's message.
    """
    with _required_checked_once(parser) as check_required:
        args = parser.parse_args(argv)
        rest, overrides = _take_overrides(args), []
        while (flag_at := _first_flag(rest)) is not None:
            overrides += rest[:flag_at]
            # Attributes already in ``args`` keep their values: argparse sets defaults only for
            # those missing from the namespace it is given.
            tail = rest[flag_at:]
            parser.parse_args(tail, namespace=args)
            rest = _take_overrides(args)
            if rest == tail:  # argparse read the word as a value ("-1"): an override it stays
                break
        check_required(args)
    args.opts = overrides + rest
    return args


_NOT_GIVEN = object()  # the default of a required flag while a command line is read in pieces


@contextlib.contextmanager
def _required_checked_once(parser: argparse.ArgumentParser) -> Iterator[Callable[[argparse.Namespace], None]]:
    """Within: ``parser``'s required flags and required mutually exclusive groups are optional,
    defaulting to a marker; the yielded ``check(args)`` fails as argparse does on those still
    unset and puts the real defaults back for the rest. ``parser`` is restored on leaving."""
    flags = [a for a in parser._actions if a.option_strings]
    groups = [g for g in parser._mutually_exclusive_groups if g.required]
    grouped = {id(a) for g in groups for a in g._group_actions}
    saved = [(a, a.required, a.default) for a in flags]
    required = [a for a in flags if a.required]
    # --help and errors print the usage as it is, required flags without brackets.
    usage = parser.usage
    parser.usage = parser.format_usage().strip()[len("usage: "):].replace("%", "%%")
    for a in flags:
        if a.required or id(a) in grouped:
            a.required, a.default = False, _NOT_GIVEN
    for g in groups:
        g.required = False

    def check(args: argparse.Namespace) -> None:
        missing = [a for a in required if getattr(args, a.dest) is _NOT_GIVEN]
        if missing:
            parser.error("the following arguments are required: " +
                         ", ".join("/".join(a.option_strings) for a in missing))
        for g in groups:
            if all(getattr(args, a.dest) is _NOT_GIVEN for a in g._group_actions):
                parser.error("one of the arguments " +
                             " ".join("/".join(a.option_strings) for a in g._group_actions) +
                             " is required")
        for a, _, default in saved:
            if getattr(args, a.dest, None) is _NOT_GIVEN:
                setattr(args, a.dest, default)

    try:
        yield check
    finally:
        for a, was_required, default in saved:
            a.required, a.default = was_required, default
        for g in groups:
            g.required = True
        parser.usage = usage


def _first_flag(words: List[str]) -> Optional[int]:
    """Index of the first word where a KEY stands (even positions) that starts with ``-``."""
    return next((i for i in range(0, len(words), 2) if words[i].startswith("-")), None)


def _take_overrides(args: argparse.Namespace) -> List[str]:
    return list(vars(args).pop("overrides_after_list", [])) + list(args.opts or [])


def train_argument_parser() -> argparse.ArgumentParser:
    """:func:`default_argument_parser` plus ``--overwrite``, with the exit statuses in --help."""
    p = default_argument_parser(EXIT_STATUS_HELP)
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in an OUTPUT_DIR that holds a previous run, removing its "
                        "config.yaml, metrics.json, events, checkpoints and --eval-only results "
                        "(without this flag such a start is refused; --resume continues the "
                        "run instead)")
    return p


def load_cfg(config_file: str = "", opts=()) -> CfgNode:
    """Defaults <- config file (with its _BASE_ chain) <- KEY VALUE overrides, validated."""
    cfg = get_cfg()
    if config_file:
        cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts or []))
    validate_cfg(cfg)
    return cfg


def draw_seed(cfg: CfgNode) -> str:
    """``SEED`` negative: one seed drawn by the main process and shared by all, written into
    ``cfg`` (so config.yaml records it, and the data order and augmentation, which are
    functions of SEED, follow it on every rank alike). Returns the line to log, or ""."""
    if cfg.SEED >= 0:
        return ""
    drawn = comm.all_gather(int.from_bytes(os.urandom(2), "little"))[0]
    note = f"SEED {cfg.SEED}: drew seed {drawn} (set SEED {drawn} to run this again)"
    cfg.SEED = drawn
    return note


def seed_all(seed: int) -> int:
    if seed < 0:
        seed = int.from_bytes(os.urandom(2), "little")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return seed


def verify_run(cfg: CfgNode, training: bool = True) -> None:
    """Every data split the run will read exists and fits the config (channels, classes, the
    batch size), checked before anything starts: the training set when ``training``, and the sets of every
    evaluator of ``TEST.EVALUATORS`` (a missing test split is not found after training)."""
    from ..data import verify_dataset
    from ..data.build import check_batch_size, check_same_classes
    from ..data.catalog import dataset_key
    from ..evaluation import build_evaluators
    from ..modeling.methods import METHOD_REGISTRY
    from ..modeling.methods.base import ClassificationMethod
    from ..utils.registry import lookup

    method = lookup(METHOD_REGISTRY, cfg.MODEL.METHOD, "MODEL.METHOD")
    num_classes = cfg.MODEL.NUM_CLASSES if issubclass(method, ClassificationMethod) else 0
    names: List[str] = [cfg.DATASETS.TRAIN] if training else []
    for evaluator in build_evaluators(cfg):
        names += evaluator.required_datasets()
    opened = {}
    for name in dict.fromkeys(names):  # each once, in order
        opened[name] = verify_dataset(cfg, name, num_classes=num_classes)
        logger.info("%s %s: %d images", dataset_key(name, cfg), name, len(opened[name]))
        if training and name == cfg.DATASETS.TRAIN:
            check_batch_size(cfg, name, len(opened[name]))
    # An evaluation without training compares a classifier's test set with the classes its
    # checkpoint was trained on once it is loaded (trainer.check_classifier_classes).
    check_same_classes(cfg, opened)


class _UserErrorsInOneLine(logging.Filter):
    """Detectron2's trainer logs any exception that stops training with its traceback before
    re-raising it; for a user error (a corrupt image under ON_BAD_IMAGE error ...) the log gets
    the one line that ``run_cli`` prints instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, user_errors()):
            record.msg, record.args = f"{record.getMessage()} {one_line(error)}", ()
            record.exc_info, record.exc_text = None, None
        return True


def default_setup(cfg: CfgNode, args: Optional[argparse.Namespace] = None) -> RunLog:
    """Console logging (the log file starts with ``run_folder.start_run_files``, once every
    check passed), versions and command line in the log, seeds. Writes nothing."""
    rank = comm.get_rank()
    run_log = RunLog(rank)
    train_loop_logger = logging.getLogger("detectron2.engine.train_loop")
    if not any(isinstance(f, _UserErrorsInOneLine) for f in train_loop_logger.filters):
        train_loop_logger.addFilter(_UserErrorsInOneLine())
    logger.info("Rank %d of %d, torch %s", rank, comm.get_world_size(), torch.__version__)
    if args is not None:
        logger.info("Command line: %s", " ".join(sys.argv))
    # Different seeds per rank would give different augmentations to the same sample index; the
    # sampler shards indices, so one seed for all ranks is right.
    seed_all(cfg.SEED)
    torch.backends.cudnn.benchmark = True
    return run_log


def setup(args: argparse.Namespace) -> CfgNode:
    """The config of ``args``, checked with the output folder and every data split the run
    needs; console logging and seeds. Writes nothing: ``run_folder.start_run_files`` does,
    once the trainer is built and its weights are loaded."""
    cfg = load_cfg(args.config_file, args.opts)
    drawn = draw_seed(cfg)
    cfg.freeze()
    if comm.is_main_process() and not args.eval_only:
        check_output_dir(cfg.OUTPUT_DIR, args.resume, getattr(args, "overwrite", False),
                         cfg.MODEL.WEIGHTS)
    default_setup(cfg, args)
    if drawn:
        logger.info("%s", drawn)
    verify_run(cfg, training=not args.eval_only)
    return cfg


def evaluate_only(cfg: CfgNode, resume: bool = False) -> dict:
    """``--eval-only``: the evaluators of ``TEST.EVALUATORS`` on the weights of
    ``OUTPUT_DIR/last_checkpoint`` (``resume``) or ``MODEL.WEIGHTS``; results go to the log and
    to ``OUTPUT_DIR/eval_results.json`` (and a line of ``eval_history.jsonl``, which keeps every
    earlier evaluation's). Nothing else in OUTPUT_DIR is touched (no training
    data is read, no checkpoint or metrics.json written)."""
    from ..checkpoint import SlimCheckpointer
    from ..evaluation.build import EVALUATOR_REGISTRY
    from ..modeling import build_model
    from .run_folder import RunLog, write_eval_results
    from .trainer import SlimTrainer, load_for_evaluation, resolve_device

    if not cfg.TEST.EVALUATORS:
        # An evaluation without evaluators measures nothing: it would end with exit 0 and an
        # eval_results.json of no numbers, which replaced the previous evaluation's.
        raise ConfigError("--eval-only with TEST.EVALUATORS [] has nothing to evaluate: name "
                          "the evaluators, e.g. TEST.EVALUATORS \"['KNNEvaluator']\" "
                          f"(registered: {', '.join(sorted(k for k, _ in EVALUATOR_REGISTRY))})")
    method = build_model(cfg).to(resolve_device(cfg))
    checkpointer = SlimCheckpointer(method, cfg.OUTPUT_DIR, save_to_disk=False,
                                    trusted_weights=cfg.MODEL.WEIGHTS_TRUSTED)
    weights = load_for_evaluation(checkpointer, cfg, resume)
    logger.info("Evaluating %s", weights)
    comm.synchronize()
    if comm.is_main_process() and cfg.OUTPUT_DIR and RunLog.current is not None:
        RunLog.current.start_file(cfg.OUTPUT_DIR)  # appends to a training run's log.txt
    results = SlimTrainer.test(cfg, method)
    if comm.is_main_process() and cfg.OUTPUT_DIR:
        path = write_eval_results(cfg.OUTPUT_DIR, results, weights)
        logger.info("Evaluation results saved to %s", path)
    return results


def user_errors() -> tuple:
    """Errors a user fixes by changing a path, a file, a flag or a config value: one line, no
    traceback."""
    from .launch import WorkerUserError  # launch reads this module's user_errors in workers

    return (ConfigError, CheckpointError, DatasetError, UncalibratedWidthError, OutputDirError,
            OutputError, WorkerUserError, FileNotFoundError, NotADirectoryError)


def one_line(error: BaseException) -> str:
    """``error``'s message on one line (an error re-raised from a DataLoader worker carries the
    worker's traceback: its last line is the original message)."""
    message = str(error).strip()
    if "Traceback (most recent call last)" in message:
        last = message.splitlines()[-1]
        message = last.split(": ", 1)[1] if ": " in last else last
    return " ".join(message.split("\n"))


def run_cli(main: Callable[[], Any]) -> Any:
    """``main()``; a user error (:func:`user_errors`) exits with status 2 and one line."""
    try:
        return main()
    except user_errors() as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR)


def launch_cli(main, args: argparse.Namespace) -> None:
    """``launch(main, ...)`` from Detectron2-style ``args``; user errors exit with one line (from
    any process: the launcher reports a worker's user error in the parent)."""
    from .launch import launch

    console_logging()  # the launcher's own messages go to stdout, not Python's stderr fallback
    run_cli(lambda: launch(main, args.num_gpus, num_machines=args.num_machines,
                           machine_rank=args.machine_rank, dist_url=args.dist_url, args=(args,)))
