"""Multi-width detection training on Detectron2's trainer and hooks.

:class:`MultiWidthTrainer` is Detectron2's ``SimpleTrainer`` whose step runs every width through
:class:`slimdet.modeling.slim.WidthLoop` — the same per-width forward + backward (DDP
``no_sync`` on all but the last width) that pre-training uses — then takes one optimizer step.
:class:`SlimDetTrainer` is ``DefaultTrainer`` with that step, a checkpointer that refuses a
backbone of the wrong architecture, and evaluation of every width.
"""
from __future__ import annotations

import logging
import time
import weakref
from typing import Dict, Sequence

import torch
from detectron2.engine import DefaultTrainer, SimpleTrainer, TrainerBase
from detectron2.evaluation import COCOEvaluator
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..engine.trainer import SlimTrainer, wrap_ddp
from ..modeling.slim import WidthLoop
from .checkpoint import SlimDetectionCheckpointer
from .config import eval_widths, validate_slim_det_cfg
from .evaluation import build_coco_evaluator, evaluate_widths, format_width_table


class MultiWidthTrainer(SimpleTrainer):
    """One iteration = forward + backward at every width on the same batch, one optimizer step.

    The step is the pre-training engine's (``slimdet.engine.trainer.SlimTrainer.run_step``): the
    shared :class:`WidthLoop` and metric writer; that class itself is built from a slimdet
    config, so this one keeps Detectron2's ``SimpleTrainer`` around the same loop.

    Losses of width ``w`` are logged as ``<loss name>/w<w>``; ``total_loss`` is the weighted sum.
    With ``amp`` the losses are scaled by a ``GradScaler`` (CUDA only), as in ``AMPTrainer``.
    """

    def __init__(self, model, data_loader, optimizer, widths: Sequence[float],
                 weighting: str = "uniform", amp: bool = False):
        super().__init__(model, data_loader, optimizer)
        self.width_loop = WidthLoop(widths, weighting=weighting, distill=False)
        self.amp = amp
        self.grad_scaler = torch.amp.GradScaler("cuda") if amp else None

    def run_step(self) -> None:
        assert self.model.training, "[MultiWidthTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        self.optimizer.zero_grad()
        if self.amp:
            logs = self.width_loop.run(
                self.model, data, backward=lambda loss: self.grad_scaler.scale(loss).backward(),
                autocast=lambda: torch.autocast("cuda"), iteration=self.iter)
        else:
            logs = self.width_loop.run(self.model, data, backward=lambda loss: loss.backward(),
                                       iteration=self.iter)
        # The pre-training engine's metric writer: gathered over workers, one key per width.
        SlimTrainer._write_step_metrics(logs, data_time)
        if self.amp:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()

    def state_dict(self):
        ret = super().state_dict()
        if self.grad_scaler is not None:
            ret["grad_scaler"] = self.grad_scaler.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if self.grad_scaler is not None and "grad_scaler" in state_dict:
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])


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
        self._trainer = MultiWidthTrainer(model, data_loader, optimizer, cfg.MODEL.SLIM.WIDTHS,
                                          cfg.MODEL.SLIM.LOSS_WEIGHTING, cfg.SOLVER.AMP.ENABLED)
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
