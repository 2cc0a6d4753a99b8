"""The plumbing of ``tools/train_det.py``: the config from the command line, every check that
can fail before a model is built, and the two jobs (training, ``--eval-only``) in the order of
``tools/train_net.py``: build, load the weights, and only then write into OUTPUT_DIR."""
from __future__ import annotations

import argparse
import json
import logging
import os
import warnings
from typing import Dict, Type

import torch
from detectron2.config import CfgNode
from detectron2.evaluation.testing import flatten_results_dict
from detectron2.utils import comm
from detectron2.utils.collect_env import collect_env_info

from ..config import ConfigError
from ..engine.defaults import default_setup, draw_seed
from ..engine.run_folder import (EVAL_RESULTS, RunLog, check_output_dir, start_run_files,
                                 write_eval_results)
from .config import is_slimmable, load_det_cfg, validate_det_cfg
from .trainer import DetectionTrainer, SlimDetTrainer

logger = logging.getLogger("slimdet")


def setup_detection(args: argparse.Namespace) -> CfgNode:
    """The frozen config of a detection job (``--config-file`` + ``KEY VALUE``; MODEL.DEVICE
    falls back to the CPU without CUDA), checked (:func:`validate_det_cfg`: a wrong key, value
    or missing data file is one :class:`~slimdet.config.ConfigError`), the run-folder rule of
    ``tools/train_net.py``, console logging, the environment in the log and seeds. Writes
    nothing: :func:`train_detection` / :func:`evaluate_detection` do, once the model is built
    and its weights are loaded."""
    cfg = load_det_cfg(args.config_file, args.opts)
    # Detectron2 0.6's anchor generator calls torch.meshgrid without ``indexing`` (the default
    # it relies on is kept): a warning on stderr at every first step that no user can act on.
    warnings.filterwarnings("ignore", message=r"torch\.meshgrid: in an upcoming release",
                            category=UserWarning)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("CUDA is not available: MODEL.DEVICE cpu")
        cfg.MODEL.DEVICE = "cpu"
    validate_det_cfg(cfg, eval_only=args.eval_only)
    drawn = draw_seed(cfg)  # SEED < 0: one seed for every process, recorded in config.yaml
    cfg.freeze()
    weights = cfg.MODEL.WEIGHTS
    # --resume reads the run's last checkpoint when there is one (as fvcore's has_checkpoint
    # finds it), MODEL.WEIGHTS only otherwise.
    resumes = args.resume and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"))
    # A local file (not a detectron2:// or URL name) that is not there is known now.
    if weights and not resumes and "://" not in weights and not os.path.isfile(weights):
        raise ConfigError(f"MODEL.WEIGHTS {weights} does not exist"
                          + (" (it is a folder)" if os.path.isdir(weights) else ""))
    if comm.is_main_process() and not args.eval_only:
        # A previous run is continued (--resume) or replaced (--overwrite), never mixed with a
        # new one; --overwrite removes it only in train_detection, after the weights loaded.
        check_output_dir(cfg.OUTPUT_DIR, args.resume, getattr(args, "overwrite", False), weights)
    if not torch.cuda.is_available():
        # collect_env_info imports torch.utils.cpp_extension, which warns on stderr when it
        # finds a CUDA toolkit but no CUDA runtime: noise on a CPU run.
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    # slimdet's set-up, not Detectron2's default_setup: that one writes config.yaml and
    # log.txt into OUTPUT_DIR at once and adds a second console handler to loggers the
    # launcher has set up already (every line twice).
    default_setup(cfg, args)
    if drawn:
        logger.info("%s", drawn)
    if comm.is_main_process():
        logger.info("Environment info:\n%s", collect_env_info())
    torch.backends.cudnn.benchmark = cfg.CUDNN_BENCHMARK  # Detectron2's key, as its set-up
    return cfg


def detection_trainer_class(cfg: CfgNode) -> Type[DetectionTrainer]:
    """:class:`SlimDetTrainer` for the slimmable detector, else :class:`DetectionTrainer`."""
    return SlimDetTrainer if is_slimmable(cfg) else DetectionTrainer


def train_detection(cfg: CfgNode, resume: bool = False, overwrite: bool = False) -> Dict:
    """Build the trainer, load MODEL.WEIGHTS (or the run's last checkpoint, ``resume``), then
    write: ``--overwrite`` removes the previous run only now, when the weights are known to fit
    the model (a file of other widths or depth is refused with the old run intact), and
    ``config.yaml`` is written (a ``--resume`` with changed keys keeps the old one as
    ``config.before_resume<N>.yaml`` and logs the changes). Returns the last evaluation."""
    trainer = detection_trainer_class(cfg)(cfg)  # its metrics/event writers start in train()
    trainer.resume_or_load(resume=resume)
    start_run_files(cfg, overwrite=overwrite)
    return trainer.train()  # the EvalHook evaluates (every width) after the last iteration


def evaluate_detection(cfg: CfgNode, resume: bool = False) -> Dict:
    """``--eval-only``: the detector of the run's last checkpoint (``resume``) or MODEL.WEIGHTS,
    evaluated into a folder of its own, ``OUTPUT_DIR/eval_<weights file name>``
    (:func:`eval_output_dir`): its inference files and ``eval_results.json`` (AP of every
    task, and width) never replace a training run's ``inference/`` files or another model's
    results. The log is appended to OUTPUT_DIR's ``log.txt``; nothing else there is touched."""
    trainer_cls = detection_trainer_class(cfg)
    model, weights = trainer_cls.load_for_evaluation(cfg, resume)
    folder = eval_output_dir(cfg.OUTPUT_DIR, weights) if cfg.OUTPUT_DIR else ""
    comm.synchronize()
    if comm.is_main_process() and cfg.OUTPUT_DIR and RunLog.current is not None:
        RunLog.current.start_file(cfg.OUTPUT_DIR)
    if folder:
        logger.info("--eval-only of %s: its inference files and %s go to %s", weights,
                    EVAL_RESULTS, folder)
    eval_cfg = cfg.clone()
    eval_cfg.defrost()
    eval_cfg.OUTPUT_DIR = folder  # where Detectron2's COCOEvaluator writes its files
    eval_cfg.freeze()
    results = trainer_cls.test(eval_cfg, model)
    if comm.is_main_process() and folder:
        path = write_eval_results(folder, flatten_results_dict(results), weights)
        logger.info("Evaluation results saved to %s", path)
    return results


def eval_output_dir(output_dir: str, weights: str) -> str:
    """``output_dir/eval_<name of weights without extension>``; when that folder holds the
    results of another file of the same name (two runs' model_final.pth), ``..._2``, ``_3``
    ...: an evaluation replaces only its own file's earlier results."""
    stem = os.path.splitext(os.path.basename(weights.rstrip("/")))[0] or "weights"
    n = 1
    while True:
        folder = os.path.join(output_dir, f"eval_{stem}" + (f"_{n}" if n > 1 else ""))
        record = os.path.join(folder, EVAL_RESULTS)
        if not os.path.isfile(record) or _evaluated_weights(record) == weights:
            return folder
        n += 1


def _evaluated_weights(record: str) -> str:
    try:
        with open(record) as f:
            return str(json.load(f).get("weights", ""))
    except (OSError, ValueError, AttributeError):
        return ""  # unreadable: not this file's results, so not replaced
