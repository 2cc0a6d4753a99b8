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
from typing import Dict, Optional

import torch
from detectron2.engine import DefaultTrainer, TrainerBase, hooks
from detectron2.evaluation import COCOEvaluator, verify_results
from detectron2.utils import comm
from torch import nn

from ..config import ConfigError
from ..engine.trainer import WidthLoopTrainer, wrap_ddp
from ..modeling.slim import WidthLoop
from ..utils.d2compat import default_step_trainer, init_default_trainer
from .checkpoint import SafeDetectionCheckpointer, SlimDetectionCheckpointer
from .config import eval_widths, validate_slim_det_cfg
from .evaluation import build_coco_evaluator, evaluate_widths, format_width_table


class DetectionTrainer(DefaultTrainer):
    """``DefaultTrainer`` (stock Detectron2 models) with:

    - :class:`~slimdet.d2.checkpoint.SafeDetectionCheckpointer`: no file runs code; ``--resume``
      needs every weight; training from MODEL.WEIGHTS keeps new heads new, in one log line;
    - ``train()`` returning the results of the EvalHook's last evaluation (Detectron2 0.6 returns
      them only when ``TEST.EXPECTED_RESULTS`` is set, which is still checked);
    - :meth:`load_for_evaluation` for ``--eval-only``: every weight of the model, or an error;
    - COCO evaluation with Detectron2's pure-Python ``COCOEvaluator`` (no C++ extension here).
    """

    checkpointer_class = SafeDetectionCheckpointer

    def __init__(self, cfg):
        self.last_results: Dict = {}
        init_default_trainer(self, cfg, self.build_step_trainer, self.build_checkpointer)

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
        """Detectron2's hooks, its EvalHook replaced by one that keeps the results."""
        return [hooks.EvalHook(self.cfg.TEST.EVAL_PERIOD, self._evaluate)
                if isinstance(h, hooks.EvalHook) else h for h in super().build_hooks()]

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return COCOEvaluator(dataset_name, output_dir=output_folder or cfg.OUTPUT_DIR,
                             use_fast_impl=False)

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
        if len(self.cfg.TEST.EXPECTED_RESULTS) and comm.is_main_process():
            verify_results(self.cfg, self.last_results)
        return self.last_results

    @classmethod
    def load_for_evaluation(cls, cfg, resume: bool = False) -> nn.Module:
        """``--eval-only``: the model with every weight from the run's last checkpoint
        (``resume`` in a run's OUTPUT_DIR) or from MODEL.WEIGHTS. A file without some weight
        of the model (e.g. a converted backbone without heads) or no file at all is an error."""
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
        return model


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
