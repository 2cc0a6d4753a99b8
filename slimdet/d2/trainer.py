"""Detection training and evaluation on Detectron2's ``DefaultTrainer`` and hooks.

:class:`DetectionTrainer` is ``DefaultTrainer`` for stock Detectron2 models with what slimdet
asks of every job: weights read without running code (and completely where evaluation needs
them), the pure-Python COCO evaluation this install has, and ``train()`` returning the final
evaluation. :class:`SlimDetTrainer` is the slimmable detector's: its inner trainer is the
pre-training engine's :class:`slimdet.engine.trainer.WidthLoopTrainer` (forward + backward at
every width, DDP ``no_sync`` on all but the last, one optimizer step), its checkpointer refuses
a backbone of the wrong architecture, and it evaluates every width. Losses of width ``w`` are
logged as ``<loss name>/w<w>``.
"""
from __future__ import annotations

import logging
import os
from typing import Dict, Optional, Tuple

import torch
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, TrainerBase, hooks
from detectron2.evaluation import COCOEvaluator, verify_results
from detectron2.utils import comm
from torch import nn

from ..config import ConfigError
from ..engine.hooks import DeferredPeriodicWriter
from ..engine.run_folder import (EVAL_HISTORY, check_iterations_left,
                                 retire_stale_eval_results, trim_metrics_for_resume)
from ..engine.trainer import WidthLoopTrainer, wrap_ddp
from ..modeling.slim import WidthLoop
from ..utils.d2compat import default_step_trainer, init_default_trainer
from .checkpoint import (SafeDetectionCheckpointer, SlimDetectionCheckpointer,
                         check_cfg_fits_file)
from .config import check_test_categories, eval_widths, label_categories, validate_slim_det_cfg
from .datasets import ImageCheckingMapper, output_folder_name
from .evaluation import build_coco_evaluator, evaluate_widths, format_width_table


class DetectionTrainer(DefaultTrainer):
    """``DefaultTrainer`` (stock Detectron2 models) with:

    - :class:`~slimdet.d2.checkpoint.SafeDetectionCheckpointer`: no file runs code; ``--resume``
      needs every weight; training from MODEL.WEIGHTS keeps new heads new, in one log line;
    - ``train()`` returning the results of the EvalHook's last evaluation (Detectron2 0.6 returns
      them only when ``TEST.EXPECTED_RESULTS`` is set, which is still checked);
    - :meth:`load_for_evaluation` for ``--eval-only``: every weight of the model, or an error;
    - COCO evaluation with Detectron2's pure-Python ``COCOEvaluator`` (no C++ extension here),
      its files in ``OUTPUT_DIR/inference/<dataset>``;
    - nothing written into OUTPUT_DIR by the constructor: metrics.json and TensorBoard's events
      file are opened when training starts, so ``tools/train_det.py`` can refuse weights that
      do not fit (and ``--overwrite`` can remove a previous run) after building the trainer;
    - a ``--resume`` with no iteration left refused (``run_folder.check_iterations_left``);
    - checkpoints that record the categories the labels are (``label_categories``), which
      ``--eval-only`` compares with the test sets'.
    """

    checkpointer_class = SafeDetectionCheckpointer

    def __init__(self, cfg):
        self.last_results: Dict = {}
        init_default_trainer(self, cfg, self.build_step_trainer, self.build_checkpointer)
        categories = label_categories(cfg)
        if categories is not None:  # what the labels mean, for --eval-only's check
            self.checkpointer.fields = {"slimdet": {"categories": categories}}

    # ----------------------------------------------------------------------------- set-up
    @classmethod
    def build_step_trainer(cls, cfg, model, data_loader, optimizer):
        """The inner trainer that runs one iteration (Detectron2's: Simple- or AMPTrainer)."""
        return default_step_trainer(cfg, model, data_loader, optimizer)

    @classmethod
    def build_checkpointer(cls, cfg, model, **checkpointables) -> SafeDetectionCheckpointer:
        """Saves to OUTPUT_DIR; MODEL.WEIGHTS is unpickled fully only with MODEL.WEIGHTS_TRUSTED."""
        trusted = cfg.MODEL.WEIGHTS if cfg.MODEL.WEIGHTS_TRUSTED else ""
        return cls.checkpointer_class(model, cfg.OUTPUT_DIR, trusted_path=trusted,
                                      **checkpointables)

    def build_hooks(self):
        """Detectron2's hooks, its EvalHook replaced by one that keeps the results and its
        PeriodicWriter by one whose writers are made when training starts."""
        # Detectron2's build_hooks calls build_writers, whose JSONWriter and TensorBoard writer
        # open files in OUTPUT_DIR at once: while it runs, build_writers makes none.
        self.build_writers = list
        try:
            built = super().build_hooks()
        finally:
            del self.build_writers
        return [hooks.EvalHook(self.cfg.TEST.EVAL_PERIOD, self._evaluate)
                if isinstance(h, hooks.EvalHook)
                else DeferredPeriodicWriter(self.build_writers, period=20)  # Detectron2's period
                if isinstance(h, hooks.PeriodicWriter) else h for h in built]

    def build_writers(self):
        """Detectron2's writers; a resumed run first drops the rows of metrics.json of the
        iterations it runs again (a run killed after its last checkpoint)."""
        if self.start_iter and self.cfg.OUTPUT_DIR:
            trim_metrics_for_resume(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json"),
                                    self.start_iter)
        return super().build_writers()

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        folder = output_folder or (os.path.join(cfg.OUTPUT_DIR, "inference",
                                                output_folder_name(dataset_name))
                                   if cfg.OUTPUT_DIR else None)
        return COCOEvaluator(dataset_name, output_dir=folder, use_fast_impl=False)

    @classmethod
    def build_train_loader(cls, cfg):
        """Detectron2's, an unreadable image one error naming it (:class:`ImageCheckingMapper`)."""
        return build_detection_train_loader(cfg, mapper=ImageCheckingMapper(cfg, True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        """Detectron2's, an unreadable image one error naming it (:class:`ImageCheckingMapper`)."""
        return build_detection_test_loader(cfg, dataset_name, mapper=ImageCheckingMapper(cfg, False))

    def resume_or_load(self, resume: bool = True) -> None:
        """Detectron2's: the last checkpoint of OUTPUT_DIR (``resume``) or MODEL.WEIGHTS; a
        resume whose SOLVER.MAX_ITER leaves no iteration to run is refused, and so is a config
        that reads a converted MODEL.WEIGHTS unlike its pre-training (``check_cfg_fits_file``)."""
        super().resume_or_load(resume=resume)
        if resume and self.checkpointer.has_checkpoint():
            check_iterations_left(self.start_iter, self.max_iter, self.cfg.OUTPUT_DIR)
        elif self.cfg.MODEL.WEIGHTS:
            check_cfg_fits_file(self.cfg, self.checkpointer.file_meta, self.cfg.MODEL.WEIGHTS)

    # ----------------------------------------------------------------------------- running
    def _evaluate(self) -> Dict:
        self.last_results = self.test(self.cfg, self.model)
        return self.last_results

    def train(self) -> Dict:
        """Train from ``start_iter`` to ``max_iter``; returns the results of the last evaluation
        (the EvalHook evaluates after the last iteration; ``{}`` when ``DATASETS.TEST`` is empty
        or on processes other than the main one)."""
        self.last_results = {}
        TrainerBase.train(self, self.start_iter, self.max_iter)
        if comm.is_main_process() and self.cfg.OUTPUT_DIR:
            self._retire_stale_evaluations()
        if len(self.cfg.TEST.EXPECTED_RESULTS) and comm.is_main_process():
            verify_results(self.cfg, self.last_results)
        return self.last_results

    def _retire_stale_evaluations(self) -> None:
        """An ``--eval-only`` of model_final.pth went to ``OUTPUT_DIR/eval_model_final``; a
        resumed run that has written a new model_final.pth removes that eval_results.json,
        whose numbers would read as the new file's (its eval_history.jsonl keeps them)."""
        out = self.cfg.OUTPUT_DIR
        for name in sorted(os.listdir(out)) if os.path.isdir(out) else []:
            if not name.startswith("eval_"):
                continue
            stale = retire_stale_eval_results(os.path.join(out, name))
            if stale:
                logging.getLogger(__name__).info(
                    "Removed %s: it held an --eval-only's numbers of a checkpoint this run has "
                    "written anew (the record stays in %s)", stale, EVAL_HISTORY)

    @classmethod
    def load_for_evaluation(cls, cfg, resume: bool = False) -> Tuple[nn.Module, str]:
        """``--eval-only``: the model with every weight from the run's last checkpoint
        (``resume`` in a run's OUTPUT_DIR) or from MODEL.WEIGHTS, and that file's name. A file
        without some weight of the model (e.g. a converted backbone without heads) or no file
        at all is an error."""
        model = cls.build_model(cfg)
        checkpointer = cls.build_checkpointer(cfg, model)
        if resume and checkpointer.has_checkpoint():
            path = checkpointer.get_checkpoint_file()
        elif cfg.MODEL.WEIGHTS:
            path = cfg.MODEL.WEIGHTS
        else:
            raise ConfigError("--eval-only needs the detector to evaluate: set MODEL.WEIGHTS "
                              "(or --resume in a run's OUTPUT_DIR)")
        checkpointer.load(path, checkpointables=[], complete=True,
                          purpose="evaluating the detector (--eval-only)")
        check_cfg_fits_file(cfg, checkpointer.file_meta, path)
        check_test_categories(cfg, checkpointer.file_meta, path)
        return model, path


class SlimDetTrainer(DetectionTrainer):
    """The slimmable detector's trainer (``META_ARCHITECTURE: SlimGeneralizedRCNN``).

    Everything but the step, the checkpointer and evaluation is Detectron2's: hooks (LR
    schedule, periodic checkpoints, EvalHook, writers with ETA), data loaders, optimizer.
    """

    checkpointer_class = SlimDetectionCheckpointer

    def __init__(self, cfg):
        validate_slim_det_cfg(cfg)
        super().__init__(cfg)

    @classmethod
    def build_step_trainer(cls, cfg, model, data_loader, optimizer) -> WidthLoopTrainer:
        """The pre-training engine's step: every width forward + backward, one optimizer step.

        Its DDP wrapper (CPU/gloo or one GPU per process) finds unused parameters, because
        each width leaves the other widths' BNs without gradient."""
        width_loop = WidthLoop(cfg.MODEL.WIDTHS, weighting=cfg.MODEL.SLIM.LOSS_WEIGHTING,
                               distill=False)
        return WidthLoopTrainer(wrap_ddp(model, model.device), data_loader, optimizer,
                                width_loop, torch.device(cfg.MODEL.DEVICE), cfg.SOLVER.AMP.ENABLED)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None) -> COCOEvaluator:
        return build_coco_evaluator(cfg, dataset_name, 1.0)

    @classmethod
    def test(cls, cfg, model, evaluators: Optional[list] = None) -> Dict:
        """Evaluate every width of ``TEST.SLIM_WIDTHS`` (default: all) on ``DATASETS.TEST``.

        Returns ``{dataset: {"bbox": {"AP/w<w>": ...}, "segm": ...}}`` (a single dataset's
        dict directly, like ``DefaultTrainer.test``) and logs one table of all widths.
        """
        if evaluators is not None:
            raise ValueError("SlimDetTrainer.test builds one COCOEvaluator per width itself")
        results = evaluate_widths(cfg, model, eval_widths(cfg))
        if comm.is_main_process():
            logging.getLogger(__name__).info("AP of every width:\n%s", format_width_table(results))
        return list(results.values())[0] if len(results) == 1 else results
