"""Per-width top-1 / top-5 of a method with a classifier, and per-width params / FLOPs.

Both are registered evaluators (``TEST.EVALUATORS``), so they run at the end of training, every
``TEST.EVAL_PERIOD`` iterations through the engine's EvalHook (event storage, metrics.json,
TensorBoard) and under ``tools/train_net.py --eval-only``. In a job of several processes each
process classifies its share of the test set (``Shard``) and the correct counts are summed.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Sequence

import torch
from detectron2.utils import comm

from ..config import evaluation_widths, untrained_widths
from ..data import Shard, build_test_loader
from ..layers import use_width
from ..modeling import backbone_of
from ..modeling.methods import ClassificationMethod
from ..utils.results import width_key
from .build import EVALUATOR_REGISTRY, Evaluator
from .calibration import evaluation_model
from .profiler import profile_widths

logger = logging.getLogger("slimdet")


def _classify(method, images: torch.Tensor) -> torch.Tensor:
    """Class logits at the active width: ``method.classify`` (probe, supervised) or the model."""
    return method.classify(images) if isinstance(method, ClassificationMethod) else method(images)


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, ks: Sequence[int]) -> List[int]:
    """How many rows of ``scores`` have their label among their ``k`` highest, for each k."""
    hit = scores.topk(max(ks), dim=1).indices == labels.view(-1, 1)
    return [int(hit[:, :k].any(1).sum()) for k in ks]


def percent(correct: int, total: int, device: torch.device) -> float:
    """``100 * correct / total`` computed as one process computes a top-k accuracy, the fp32
    mean of the 0/1 hits on the device (a CUDA mean multiplies by 1/total, the CPU divides: the
    last bits differ), so summed counts of shares give exactly the one-process number."""
    hits = torch.zeros(total, device=device)
    hits[:correct] = 1
    return 100.0 * hits.mean().item()


@torch.no_grad()
def evaluate_classification(method, cfg, dataset_name: str) -> Dict[str, float]:
    """``top1/w{w}`` and ``top5/w{w}`` (percent; top-5 only for a classifier of more than 5
    classes, where it is not 100 by construction) of every width of ``TEST.WIDTHS`` (default:
    the trained widths) on ``dataset_name``; widths without BN statistics are calibrated first, on
    a copy. Collective in a job of several processes: each classifies its share of the images
    (with the main process's BN statistics), the per-share counts of correct images are
    gathered, the results are on the main process (``{}`` on the others)."""
    device = next(method.parameters()).device
    results: Dict[str, float] = {}
    widths = evaluation_widths(cfg)
    method = evaluation_model(cfg, method, widths, device).eval()
    for i, w in enumerate(widths):
        images, top1, top5, outputs = 0, 0, 0, 0
        shard = Shard.of_this_process()
        batches = build_test_loader(cfg, dataset_name, device, shard=shard)
        if i == 0 and shard.world_size > 1:  # in each process's log: what it evaluates
            logger.info("Classification: process %d of %d reads images [%d, %d) of %r",
                        shard.rank, shard.world_size, batches.start, batches.end, dataset_name)
        with use_width(method, w):
            for batch in batches:
                scores = _classify(method, batch["image"]).float()
                outputs = scores.shape[1]
                c1, c5 = topk_correct(scores, batch["label"], (1, min(5, outputs)))
                images, top1, top5 = images + len(scores), top1 + c1, top5 + c5
        # A few integers of every share (a pickled all-gather: small enough).
        shares = comm.all_gather((images, top1, top5, outputs))
        if not comm.is_main_process():
            continue
        images, top1, top5, _ = (sum(counts) for counts in zip(*shares))
        outputs = max(share[3] for share in shares)
        if i == 0:  # every width reads the same images: their number is logged once
            logger.info("Classification: %d test images of %r", images, dataset_name)
        results[width_key("top1", w)] = percent(top1, images, device)
        if outputs > 5:  # top-5 of at most 5 classes is always 100: not reported
            results[width_key("top5", w)] = percent(top5, images, device)
    return results


@EVALUATOR_REGISTRY.register()
class ClassificationEvaluator(Evaluator):
    """Top-1 / top-5 of every width on ``DATASETS.TEST``: every process classifies its share of
    the images, the main process returns the results (the others ``{}``)."""

    def required_datasets(self) -> List[str]:
        # Widths without BN statistics are calibrated on training batches first.
        calibration = [self.cfg.DATASETS.TRAIN] if untrained_widths(self.cfg) else []
        return calibration + [self.cfg.DATASETS.TEST]

    def metrics(self) -> List[str]:
        # No top-5 of at most 5 classes (evaluate_classification).
        return ["top1", "top5"] if self.cfg.MODEL.NUM_CLASSES > 5 else ["top1"]

    def evaluate(self, method) -> Dict[str, float]:
        mismatch = (method.calibration_mismatch(self.cfg)
                    if isinstance(method, ClassificationMethod) else "")
        if mismatch and comm.is_main_process():
            logger.warning("%s", mismatch)
        was_training = method.training
        method.eval()
        # No wait for the main process after it: nothing of it runs there alone (the caller
        # waits after all evaluations: EvaluationHook).
        try:
            return evaluate_classification(method, self.cfg, self.cfg.DATASETS.TEST)
        finally:
            method.train(was_training)


@EVALUATOR_REGISTRY.register()
class ProfilerEvaluator(Evaluator):
    """``params_M/w{w}`` and ``macs_M/w{w}`` (millions) of the backbone cut out at each width,
    counted by fvcore on the plain sub-network (millions keep demo-sized nets readable)."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.image_size = cfg.INPUT.CROP_SIZE
        self.in_channels = cfg.MODEL.BACKBONE.IN_CHANNELS

    def metrics(self) -> List[str]:
        return ["params_M", "macs_M"]

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
