"""The plumbing every tool shares: argument parser, config set-up, logging, seeding."""
from __future__ import annotations

import argparse
import os
import random
import sys
from typing import Any, Callable, Optional

import numpy as np
import torch
from detectron2.engine import default_argument_parser as _d2_parser
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from iopath.common.file_io import g_pathmgr

from ..checkpoint import CheckpointError
from ..config import CfgNode, ConfigError, get_cfg, validate_cfg
from ..layers import UncalibratedWidthError
from ..utils.file_io import OutputError


def default_argument_parser(epilog: Optional[str] = None) -> argparse.ArgumentParser:
    """Detectron2's flags: --config-file --resume --eval-only --num-gpus --num-machines
    --machine-rank --dist-url and trailing ``KEY VALUE`` overrides."""
    return _d2_parser(epilog)


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
    """``parser.parse_args`` for tools whose ``opts`` (KEY VALUE overrides) may follow a
    :class:`WidthsAction` list."""
    args = parser.parse_args(argv)
    args.opts = list(vars(args).pop("overrides_after_list", [])) + list(args.opts or [])
    return args


def load_cfg(config_file: str = "", opts=()) -> CfgNode:
    """Defaults <- config file (with its _BASE_ chain) <- KEY VALUE overrides, validated."""
    cfg = get_cfg()
    if config_file:
        cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts or []))
    validate_cfg(cfg)
    return cfg


def seed_all(seed: int) -> int:
    if seed < 0:
        seed = int.from_bytes(os.urandom(2), "little")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return seed


def default_setup(cfg: CfgNode, args: Optional[argparse.Namespace] = None) -> None:
    """Output folder, loggers, the config saved beside the outputs, seeds."""
    out = cfg.OUTPUT_DIR
    if comm.is_main_process() and out:
        g_pathmgr.mkdirs(out)
    rank = comm.get_rank()
    setup_logger(out, distributed_rank=rank, name="fvcore")
    setup_logger(out, distributed_rank=rank, name="detectron2", abbrev_name="d2")
    logger = setup_logger(out, distributed_rank=rank, name="slimdet")
    logger.info("Rank %d of %d, torch %s", rank, comm.get_world_size(), torch.__version__)
    if args is not None:
        logger.info("Command line: %s", " ".join(sys.argv))
    if comm.is_main_process() and out:
        path = os.path.join(out, "config.yaml")
        with g_pathmgr.open(path, "w") as f:
            f.write(cfg.dump())
        logger.info("Full config saved to %s", path)
    # Different seeds per rank would give different augmentations to the same sample index; the
    # sampler shards indices, so one seed for all ranks is right.
    seed_all(cfg.SEED)
    torch.backends.cudnn.benchmark = True


def user_errors() -> tuple:
    """Errors a user fixes by changing a path, a file or a config value: one line, no traceback."""
    return (ConfigError, CheckpointError, UncalibratedWidthError, OutputError, FileNotFoundError,
            NotADirectoryError)


def run_cli(main: Callable[[], Any]) -> Any:
    """``main()``; a user error (:func:`user_errors`) exits with status 2 and one line."""
    try:
        return main()
    except user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)


def launch_cli(main, args: argparse.Namespace) -> None:
    """``launch(main, ...)`` from Detectron2-style ``args``; user errors exit with one line."""
    from .launch import launch

    run_cli(lambda: launch(main, args.num_gpus, num_machines=args.num_machines,
                           machine_rank=args.machine_rank, dist_url=args.dist_url, args=(args,)))


def setup(args: argparse.Namespace) -> CfgNode:
    """Build the config from ``args`` (exits with one clear line on a config error)."""
    try:
        cfg = load_cfg(args.config_file, args.opts)
    except ConfigError as e:
        raise SystemExit(f"config error: {e}")
    cfg.freeze()
    default_setup(cfg, args)
    return cfg
