"""Weighted k-nearest-neighbour accuracy of every width (Wu et al. 2018's protocol).

The training set (no augmentation) is the memory bank; each test image votes with its k most
cosine-similar bank images, weighted by exp(similarity / T). Cheap, no training, and a good
proxy for linear-probe accuracy, so it also runs periodically during pre-training.
"""
from __future__ import annotations

import logging
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F
from detectron2.utils import comm

from ..config import evaluation_widths
from ..data import build_test_loader
from ..layers import use_width
from ..modeling import backbone_of
from ..utils.ddp import wait_for_main_process
from ..utils.results import width_key
from .build import EVALUATOR_REGISTRY, Evaluator
from .calibration import with_calibrated_widths

logger = logging.getLogger("slimdet")


@torch.no_grad()
def extract_features(backbone: Callable[[torch.Tensor], torch.Tensor], batches, device) -> tuple:
    feats: List[torch.Tensor] = []
    labels: List[torch.Tensor] = []
    for b in batches:
        feats.append(F.normalize(backbone(b["image"].to(device)).float().flatten(1), dim=1))
        labels.append(b["label"].to(device))
    return torch.cat(feats), torch.cat(labels)


@torch.no_grad()
def knn_predict(test_feats: torch.Tensor, bank_feats: torch.Tensor, bank_labels: torch.Tensor,
                num_classes: int, k: int = 200, temperature: float = 0.1,
                chunk: int = 1024) -> torch.Tensor:
    """Class scores [N_test, num_classes] of weighted kNN on normalised features."""
    k = min(k, bank_feats.shape[0])
    out = []
    for s in range(0, test_feats.shape[0], chunk):
        sim = test_feats[s:s + chunk] @ bank_feats.T
        top_sim, top_idx = sim.topk(k, dim=1)
        weights = (top_sim / temperature).exp()
        votes = torch.zeros(sim.shape[0], num_classes, device=sim.device)
        votes.scatter_add_(1, bank_labels[top_idx], weights)
        out.append(votes)
    return torch.cat(out)


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> Dict[int, float]:
    top = scores.topk(max(ks), dim=1).indices
    hit = top == labels.view(-1, 1)
    return {k: 100.0 * hit[:, :k].any(1).float().mean().item() for k in ks}


@torch.no_grad()
def knn_top1(cfg, features: Callable[[torch.Tensor], torch.Tensor],
             device: torch.device, log_sizes: bool = False) -> float:
    """Weighted kNN top-1 (%) on ``DATASETS.TEST`` with ``DATASETS.TRAIN`` as the memory bank,
    for any feature function of the evaluation view (a backbone at one width, or
    ``lambda x: x`` for raw pixels, the reference a representation has to beat). With
    ``log_sizes`` it logs how many images the bank and the queries hold."""
    bank, bank_y = extract_features(features, build_test_loader(cfg, cfg.DATASETS.TRAIN, device),
                                    device)
    test, test_y = extract_features(features, build_test_loader(cfg, cfg.DATASETS.TEST, device),
                                    device)
    if log_sizes:
        # The counts read (DATASETS.*_SUBSET, images left out as bad), not the config's.
        logger.info("kNN: %d test images of DATASETS.TEST %r against a memory bank of %d "
                    "images of DATASETS.TRAIN %r", len(test_y), cfg.DATASETS.TEST, len(bank_y),
                    cfg.DATASETS.TRAIN)
    num_classes = int(max(bank_y.max(), test_y.max())) + 1
    scores = knn_predict(test, bank, bank_y, num_classes, cfg.TEST.KNN.K, cfg.TEST.KNN.TEMPERATURE)
    return topk_accuracy(scores, test_y, ks=(1,))[1]


@EVALUATOR_REGISTRY.register()
class KNNEvaluator(Evaluator):
    """``knn_top1/w<width>`` for every width of ``TEST.WIDTHS`` (default: the trained widths)
    of the method's backbone, widths without BN statistics calibrated first on a copy (main
    process result)."""

    def required_datasets(self) -> List[str]:
        return [self.cfg.DATASETS.TRAIN, self.cfg.DATASETS.TEST]

    def evaluate(self, method) -> Dict[str, float]:
        backbone = backbone_of(method)
        device = next(backbone.parameters()).device
        was_training = backbone.training
        backbone.eval()
        results = {}
        try:
            if comm.is_main_process():
                widths = evaluation_widths(self.cfg)
                net = with_calibrated_widths(self.cfg, backbone, widths, device).eval()
                for i, w in enumerate(widths):
                    with use_width(net, w):
                        # Every width reads the same images: their number is logged once.
                        results[width_key("knn_top1", w)] = knn_top1(self.cfg, net, device,
                                                                     log_sizes=i == 0)
        finally:
            backbone.train(was_training)
        wait_for_main_process()
        return results
