"""The plumbing of ``tools/train_det.py``: the config from the command line, every check that
can fail before a model is built, Detectron2's job set-up, and the trainer for the config."""
from __future__ import annotations

import argparse
import logging
import os
from typing import Type

import torch
from detectron2.config import CfgNode
from detectron2.engine import default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..checkpoint import read_file
from ..config import ConfigError
from ..engine.run_folder import check_output_dir, clear_previous_run, previous_run_files
from .checkpoint import detectron2_checkpoint
from .config import is_slimmable, load_det_cfg, validate_det_cfg
from .trainer import DetectionTrainer, SlimDetTrainer


def setup_detection(args: argparse.Namespace) -> CfgNode:
    """The frozen config of a detection job (``--config-file`` + ``KEY VALUE``; MODEL.DEVICE
    falls back to the CPU without CUDA), checked (:func:`validate_det_cfg`: a wrong key, value
    or missing data file is one :class:`~slimdet.config.ConfigError` before anything is
    built or written), then Detectron2's ``default_setup`` (output folder, loggers, environment,
    ``config.yaml``, seeds) and the ``slimdet`` logger."""
    cfg = load_det_cfg(args.config_file, args.opts)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logging.getLogger("slimdet").warning("CUDA is not available: MODEL.DEVICE cpu")
        cfg.MODEL.DEVICE = "cpu"
    validate_det_cfg(cfg, eval_only=args.eval_only)
    cfg.freeze()
    overwrite = getattr(args, "overwrite", False)
    weights = cfg.MODEL.WEIGHTS
    # A local file (not a detectron2:// or URL name) that is not there is known now, before
    # --overwrite removes a previous run or anything is written.
    if weights and "://" not in weights and not os.path.isfile(weights):
        raise ConfigError(f"MODEL.WEIGHTS {weights} does not exist"
                          + (" (it is a folder)" if os.path.isdir(weights) else ""))
    if comm.is_main_process() and not args.eval_only:
        # The run-folder rule of tools/train_net.py: a previous run is continued (--resume) or
        # replaced (--overwrite), never mixed with a new one in its metrics and checkpoints.
        check_output_dir(cfg.OUTPUT_DIR, args.resume, overwrite, weights)
        if overwrite and weights and "://" not in weights and previous_run_files(cfg.OUTPUT_DIR):
            # Read once before the previous run goes: a corrupt or foreign file is an error
            # now, not after --overwrite has removed the run it was to replace.
            detectron2_checkpoint(read_file(weights, cfg.MODEL.WEIGHTS_TRUSTED), weights)
        if overwrite:
            removed = clear_previous_run(cfg.OUTPUT_DIR)
            if removed:
                logging.getLogger("slimdet").warning(
                    "--overwrite: removed the previous run's %s from %s", ", ".join(removed),
                    cfg.OUTPUT_DIR)
    if not torch.cuda.is_available():
        # default_setup's environment report imports torch.utils.cpp_extension, which warns on
        # stderr when it finds a CUDA toolkit but no CUDA runtime: noise on a CPU run.
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    if args.eval_only:
        # Detectron2's default_setup writes OUTPUT_DIR/config.yaml, which in a training run's
        # folder is that run's config: an evaluation logs there but leaves it alone.
        default_setup(_without_output_dir(cfg), args)
        for name in ("detectron2", "fvcore"):
            setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name=name)
    else:
        default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="slimdet")
    return cfg


def _without_output_dir(cfg: CfgNode) -> CfgNode:
    quiet = cfg.clone()
    quiet.defrost()
    quiet.OUTPUT_DIR = None  # default_setup then logs to the console only
    quiet.freeze()
    return quiet


def detection_trainer_class(cfg: CfgNode) -> Type[DetectionTrainer]:
    """:class:`SlimDetTrainer` for the slimmable detector, else :class:`DetectionTrainer`."""
    return SlimDetTrainer if is_slimmable(cfg) else DetectionTrainer
