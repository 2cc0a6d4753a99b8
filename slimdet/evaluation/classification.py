"""Per-width top-1 / top-5 of a method with a classifier, and per-width params / FLOPs.

Both are registered evaluators (``TEST.EVALUATORS``), so they run at the end of training, every
``TEST.EVAL_PERIOD`` iterations through the engine's EvalHook (event storage, metrics.json,
TensorBoard) and under ``tools/train_net.py --eval-only``.
"""
from __future__ import annotations

import logging
from typing import Dict, List

import torch
from detectron2.utils import comm

from ..config import evaluation_widths, untrained_widths
from ..data import build_test_loader
from ..layers import use_width
from ..modeling import backbone_of
from ..modeling.methods import ClassificationMethod
from ..utils.ddp import wait_for_main_process
from ..utils.results import width_key
from .build import EVALUATOR_REGISTRY, Evaluator
from .calibration import with_calibrated_widths
from .knn import topk_accuracy
from .profiler import profile_widths

logger = logging.getLogger("slimdet")


def _classify(method, images: torch.Tensor) -> torch.Tensor:
    """Class logits at the active width: ``method.classify`` (probe, supervised) or the model."""
    return method.classify(images) if isinstance(method, ClassificationMethod) else method(images)


@torch.no_grad()
def evaluate_classification(method, cfg, dataset_name: str) -> Dict[str, float]:
    """``top1/w{w}`` and ``top5/w{w}`` (percent) of every width of ``TEST.WIDTHS`` (default: the
    trained widths) on ``dataset_name``; widths without BN statistics are calibrated first, on
    a copy."""
    device = next(method.parameters()).device
    results: Dict[str, float] = {}
    widths = evaluation_widths(cfg)
    method = with_calibrated_widths(cfg, method, widths, device).eval()
    for w in widths:
        correct_logits, labels = [], []
        with use_width(method, w):
            for batch in build_test_loader(cfg, dataset_name, device):
                correct_logits.append(_classify(method, batch["image"]).float())
                labels.append(batch["label"])
        scores, y = torch.cat(correct_logits), torch.cat(labels)
        if not results:  # every width reads the same images: their number is logged once
            logger.info("Classification: %d test images of %r", len(y), dataset_name)
        ks = (1, min(5, scores.shape[1]))
        acc = topk_accuracy(scores, y, ks=ks)
        results[width_key("top1", w)] = acc[1]
        results[width_key("top5", w)] = acc[ks[1]]
    return results


@EVALUATOR_REGISTRY.register()
class ClassificationEvaluator(Evaluator):
    """Top-1 / top-5 of every width on ``DATASETS.TEST`` (main process computes, others wait)."""

    def required_datasets(self) -> List[str]:
        # Widths without BN statistics are calibrated on training batches first.
        calibration = [self.cfg.DATASETS.TRAIN] if untrained_widths(self.cfg) else []
        return calibration + [self.cfg.DATASETS.TEST]

    def evaluate(self, method) -> Dict[str, float]:
        mismatch = (method.calibration_mismatch(self.cfg)
                    if isinstance(method, ClassificationMethod) else "")
        if mismatch and comm.is_main_process():
            logger.warning("%s", mismatch)
        was_training = method.training
        method.eval()
        try:
            results = evaluate_classification(method, self.cfg, self.cfg.DATASETS.TEST) \
                if comm.is_main_process() else {}
        finally:
            method.train(was_training)
        wait_for_main_process()
        return results


@EVALUATOR_REGISTRY.register()
class ProfilerEvaluator(Evaluator):
    """``params_M/w{w}`` and ``macs_M/w{w}`` (millions) of the backbone cut out at each width,
    counted by fvcore on the plain sub-network (millions keep demo-sized nets readable)."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.image_size = cfg.INPUT.CROP_SIZE
        self.in_channels = cfg.MODEL.BACKBONE.IN_CHANNELS

    def evaluate(self, method) -> Dict[str, float]:
        if not comm.is_main_process():
            return {}
        backbone = backbone_of(method)
        was_training = backbone.training
        try:
            rows = profile_widths(backbone, self.image_size, self.in_channels)
        finally:
            backbone.train(was_training)
        out: Dict[str, float] = {}
        for row in rows:
            out[width_key("params_M", row["width"])] = row["params"] / 1e6
            out[width_key("macs_M", row["width"])] = row["macs"] / 1e6
        return out
