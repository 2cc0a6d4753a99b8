"""Multi-width detection training on Detectron2's trainer and hooks.

:class:`SlimDetTrainer` is Detectron2's ``DefaultTrainer`` whose inner trainer is the
pre-training engine's :class:`slimdet.engine.trainer.WidthLoopTrainer` (forward + backward at
every width, DDP ``no_sync`` on all but the last, one optimizer step), with a checkpointer that
refuses a backbone of the wrong architecture and evaluation of every width. Losses of width ``w``
are logged as ``<loss name>/w<w>``.
"""
from __future__ import annotations

import logging
import weakref
from typing import Dict

import torch
from detectron2.engine import DefaultTrainer, TrainerBase
from detectron2.evaluation import COCOEvaluator
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..engine.trainer import WidthLoopTrainer, wrap_ddp
from ..modeling.slim import WidthLoop
from .checkpoint import SlimDetectionCheckpointer
from .config import eval_widths, validate_slim_det_cfg
from .evaluation import build_coco_evaluator, evaluate_widths, format_width_table


class SlimDetTrainer(DefaultTrainer):
    """``DefaultTrainer`` for the slimmable detector (``META_ARCHITECTURE: SlimGeneralizedRCNN``).

    Everything but the step, the checkpointer and evaluation is Detectron2's: hooks (LR
    schedule, periodic checkpoints, EvalHook, writers with ETA), data loaders, optimizer.
    """

    def __init__(self, cfg):
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        validate_slim_det_cfg(cfg)
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        # The pre-training engine's DDP wrapper: CPU/gloo or one GPU per process, and
        # find_unused_parameters because each width leaves the other widths' BNs without gradient.
        model = wrap_ddp(model, model.device)
        # The pre-training engine's step: every width forward + backward, one optimizer step.
        width_loop = WidthLoop(cfg.MODEL.SLIM.WIDTHS, weighting=cfg.MODEL.SLIM.LOSS_WEIGHTING,
                               distill=False)
        self._trainer = WidthLoopTrainer(model, data_loader, optimizer, width_loop,
                                         torch.device(cfg.MODEL.DEVICE), cfg.SOLVER.AMP.ENABLED)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = SlimDetectionCheckpointer(model, cfg.OUTPUT_DIR,
                                                      trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def train(self) -> Dict:
        """Train, then return the per-width results of the EvalHook's final evaluation
        (Detectron2 0.6 returns them only when ``TEST.EXPECTED_RESULTS`` is set)."""
        super().train()
        return getattr(self, "_last_eval_results", {})

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None) -> COCOEvaluator:
        return build_coco_evaluator(cfg, dataset_name, 1.0)

    @classmethod
    def test(cls, cfg, model, evaluators=None) -> Dict:
        """Evaluate every width of ``TEST.SLIM_WIDTHS`` (default: all) on ``DATASETS.TEST``.

        Returns ``{dataset: {"width_<w>": {"bbox": ..., "segm": ...}}}`` (a single dataset's
        dict directly, like ``DefaultTrainer.test``) and logs one table of all widths.
        """
        if evaluators is not None:
            raise ValueError("SlimDetTrainer.test builds one COCOEvaluator per width itself")
        results = evaluate_widths(cfg, model, eval_widths(cfg))
        if comm.is_main_process():
            logging.getLogger(__name__).info("AP of every width:\n%s", format_width_table(results))
        return list(results.values())[0] if len(results) == 1 else results
