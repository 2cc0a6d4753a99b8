"""Weighted k-nearest-neighbour accuracy of every width (Wu et al. 2018's protocol).

The training set (no augmentation) is the memory bank; each test image votes with its k most
cosine-similar bank images, weighted by exp(similarity / T). Cheap, no training, and a good
proxy for linear-probe accuracy, so it also runs periodically during pre-training.

In a job of several processes each process extracts the features of its share of the bank and
of the test set (``Shard``); the test features are all-gathered, each process finds every test
image's k nearest among its bank share (:func:`knn_candidates`), and the main process merges
the candidates (:func:`merge_knn_candidates`: the k best of all shares' k best are the k best of
the whole bank) and votes. Each process holds its share of the bank, not all of it.
"""
from __future__ import annotations

import logging
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.utils import comm

from ..config import evaluation_widths
from ..data import EvalBatches, Shard, build_test_loader
from ..layers import use_width
from ..modeling import backbone_of
from ..utils.ddp import all_gather_rows, gather_to_main
from ..utils.results import width_key
from .build import EVALUATOR_REGISTRY, Evaluator
from .calibration import evaluation_model

logger = logging.getLogger("slimdet")


@torch.no_grad()
def extract_features(backbone: Callable[[torch.Tensor], torch.Tensor], batches: EvalBatches,
                     device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised fp32 features ``[N, D]`` and labels ``[N]`` of ``batches``, written into
    tensors allocated once for ``batches.max_images`` images (a list of per-batch features
    concatenated at the end would hold the bank twice at its peak). A share without images
    gives features ``[0, 0]``."""
    feats: Optional[torch.Tensor] = None
    labels = torch.empty(batches.max_images, dtype=torch.long, device=device)
    n = 0
    for b in batches:
        f = F.normalize(backbone(b["image"].to(device)).float().flatten(1), dim=1)
        if feats is None:
            feats = torch.empty(batches.max_images, f.shape[1], device=device)
        feats[n:n + len(f)] = f
        labels[n:n + len(f)] = b["label"]
        n += len(f)
    if feats is None:
        feats = torch.empty(0, 0, device=device)
    return feats[:n], labels[:n]


def knn_vote(top_sim: torch.Tensor, top_labels: torch.Tensor, num_classes: int,
             temperature: float) -> torch.Tensor:
    """Class scores ``[N, num_classes]``: each neighbour adds exp(similarity / T) to its class."""
    votes = torch.zeros(top_sim.shape[0], num_classes, device=top_sim.device)
    votes.scatter_add_(1, top_labels, (top_sim / temperature).exp())
    return votes


@torch.no_grad()
def knn_predict(test_feats: torch.Tensor, bank_feats: torch.Tensor, bank_labels: torch.Tensor,
                num_classes: int, k: int = 200, temperature: float = 0.1,
                chunk: int = 1024) -> torch.Tensor:
    """Class scores [N_test, num_classes] of weighted kNN on normalised features (the whole
    bank in this process)."""
    k = min(k, bank_feats.shape[0])
    out = []
    for s in range(0, test_feats.shape[0], chunk):
        sim = test_feats[s:s + chunk] @ bank_feats.T
        top_sim, top_idx = sim.topk(k, dim=1)
        out.append(knn_vote(top_sim, bank_labels[top_idx], num_classes, temperature))
    return torch.cat(out)


@torch.no_grad()
def knn_candidates(test_feats: torch.Tensor, bank_feats: torch.Tensor,
                   bank_labels: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Each test image's ``k`` most similar images of one bank share: similarities and labels
    ``[N_test, k]``, best first. A share of fewer than ``k`` images (none, even) is padded with
    similarity -inf (label 0): the merge takes at most as many as all shares hold, and every
    real similarity is above -inf, so padding is never among its k."""
    n = min(k, bank_feats.shape[0])
    top_sim = torch.full((test_feats.shape[0], k), float("-inf"), device=test_feats.device)
    top_labels = torch.zeros(test_feats.shape[0], k, dtype=torch.long, device=test_feats.device)
    if n:
        sim, idx = (test_feats @ bank_feats.T).topk(n, dim=1)
        top_sim[:, :n], top_labels[:, :n] = sim, bank_labels[idx]
    return top_sim, top_labels


def merge_knn_candidates(sims: Sequence[torch.Tensor], labels: Sequence[torch.Tensor],
                         k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best of the candidates of every bank share (:func:`knn_candidates`), best
    first: the k nearest of the whole bank (up to the order of equal similarities)."""
    top_sim, pos = torch.cat(list(sims), dim=1).topk(k, dim=1)
    return top_sim, torch.cat(list(labels), dim=1).gather(1, pos)


@torch.no_grad()
def sharded_knn_predict(test_feats: torch.Tensor, bank_feats: torch.Tensor,
                        bank_labels: torch.Tensor, num_classes: int, bank_size: int,
                        k: int = 200, temperature: float = 0.1,
                        chunk: int = 1024) -> Optional[torch.Tensor]:
    """:func:`knn_predict` of every process's ``test_feats`` (the same in all: the gathered
    test set) against the bank whose share ``bank_feats`` this process holds (``bank_size``
    images in all shares): the scores on the main process, ``None`` on the others. Collective.
    A chunk of test images at a time, so the main process holds ``world_size x chunk x k``
    candidates, not those of the whole test set."""
    k = min(k, bank_size)
    out: List[torch.Tensor] = []
    for s in range(0, test_feats.shape[0], chunk):
        sim, labels = knn_candidates(test_feats[s:s + chunk], bank_feats, bank_labels, k)
        every_sim, every_labels = gather_to_main(sim), gather_to_main(labels)
        if every_sim is not None:
            top_sim, top_labels = merge_knn_candidates(every_sim, every_labels, k)
            out.append(knn_vote(top_sim, top_labels, num_classes, temperature))
    return torch.cat(out) if comm.is_main_process() else None


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> Dict[int, float]:
    top = scores.topk(max(ks), dim=1).indices
    hit = top == labels.view(-1, 1)
    return {k: 100.0 * hit[:, :k].any(1).float().mean().item() for k in ks}


@torch.no_grad()
def knn_top1(cfg, features: Callable[[torch.Tensor], torch.Tensor],
             device: torch.device, log_sizes: bool = False) -> Optional[float]:
    """Weighted kNN top-1 (%) on ``DATASETS.TEST`` with ``DATASETS.TRAIN`` as the memory bank,
    for any feature function of the evaluation view (a backbone at one width, or
    ``lambda x: x`` for raw pixels, the reference a representation has to beat). With
    ``log_sizes`` it logs how many images the bank and the queries hold.

    Collective in a job of several processes: each reads its share of both sets, the result
    is on the main process (``None`` on the others). The same number as one process up to the
    last bits of the features (each process's batches hold other images) and the order of
    equal similarities."""
    shard = Shard.of_this_process()
    bank_batches = build_test_loader(cfg, cfg.DATASETS.TRAIN, device, shard=shard)
    test_batches = build_test_loader(cfg, cfg.DATASETS.TEST, device, shard=shard)
    if log_sizes and shard.world_size > 1:  # in each process's log: what it evaluates
        logger.info("kNN: process %d of %d reads images [%d, %d) of the memory bank and [%d, %d) "
                    "of the test set", shard.rank, shard.world_size, bank_batches.start,
                    bank_batches.end, test_batches.start, test_batches.end)
    bank, bank_y = extract_features(features, bank_batches, device)
    test, test_y = extract_features(features, test_batches, device)
    if shard.world_size > 1:
        test, test_y = all_gather_rows(test), all_gather_rows(test_y)
        # The labels of the whole bank, for its size and its classes (8 bytes an image).
        every_bank_y = all_gather_rows(bank_y)
        bank_size, num_classes = len(every_bank_y), int(max(every_bank_y.max(), test_y.max())) + 1
    else:
        bank_size, num_classes = len(bank_y), int(max(bank_y.max(), test_y.max())) + 1
    if log_sizes:
        # The counts read (DATASETS.*_SUBSET, images left out as bad), not the config's; of
        # all shares.
        logger.info("kNN: %d test images of DATASETS.TEST %r against a memory bank of %d "
                    "images of DATASETS.TRAIN %r", len(test_y), cfg.DATASETS.TEST, bank_size,
                    cfg.DATASETS.TRAIN)
    if shard.world_size == 1:  # exactly the whole-bank computation
        scores = knn_predict(test, bank, bank_y, num_classes, cfg.TEST.KNN.K,
                             cfg.TEST.KNN.TEMPERATURE)
    else:
        scores = sharded_knn_predict(test, bank, bank_y, num_classes, bank_size, cfg.TEST.KNN.K,
                                     cfg.TEST.KNN.TEMPERATURE)
    return topk_accuracy(scores, test_y, ks=(1,))[1] if scores is not None else None


@EVALUATOR_REGISTRY.register()
class KNNEvaluator(Evaluator):
    """``knn_top1/w<width>`` for every width of ``TEST.WIDTHS`` (default: the trained widths)
    of the method's backbone, widths without BN statistics calibrated first on a copy. Every
    process evaluates its share of the images (with the main process's BN statistics:
    ``evaluation_model``); the results are on the main process, ``{}`` on the others."""

    def required_datasets(self) -> List[str]:
        return [self.cfg.DATASETS.TRAIN, self.cfg.DATASETS.TEST]

    def metrics(self) -> List[str]:
        return ["knn_top1"]

    def evaluate(self, method) -> Dict[str, float]:
        backbone = backbone_of(method)
        device = next(backbone.parameters()).device
        was_training = backbone.training
        backbone.eval()
        results = {}
        try:
            widths = evaluation_widths(self.cfg)
            net = evaluation_model(self.cfg, backbone, widths, device).eval()
            for i, w in enumerate(widths):
                with use_width(net, w):
                    # Every width reads the same images: their number is logged once.
                    top1 = knn_top1(self.cfg, net, device, log_sizes=i == 0)
                if top1 is not None:
                    results[width_key("knn_top1", w)] = top1
        finally:
            backbone.train(was_training)
        # No wait for the main process: its only work alone, the vote of each chunk, happens
        # between the collectives of the others' next chunk (the caller waits after the
        # evaluations: EvaluationHook).
        return results
