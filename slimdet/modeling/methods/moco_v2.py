"""MoCo v2 (docs/method.md §3): query encoder + EMA key encoder, 2-layer MLP head, a queue of keys,
InfoNCE at temperature 0.2, shuffle-BN for keys across processes.

Shuffle-BN's permutation and the queue prefill's batches are functions of (SEED, iteration), so
a resumed run computes the keys the uninterrupted one computed.

Slimmable: keys always come from the key encoder at full width and only they enter the queue;
every width's query contrasts against the same positive and queue. Distillation compares raw
cosine logits (before dividing by T).
"""
from __future__ import annotations

import logging
import math
from typing import Any, Dict, List

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.engine.train_loop import HookBase
from detectron2.utils import comm

from ...layers import use_width
from ..backbone import build_backbone
from ..heads import slim_mlp
from ..slim import TaskOutput
from .base import concat_all_gather
from .build import METHOD_REGISTRY
from .momentum import MomentumEncoderMethod

logger = logging.getLogger("slimdet")


@METHOD_REGISTRY.register()
class MoCoV2(MomentumEncoderMethod):
    def __init__(self, cfg):
        super().__init__()
        m = cfg.MODEL.MOCOV2
        self.backbone = build_backbone(cfg)
        self.projector = slim_mlp(self.backbone.num_features, m.HIDDEN_DIM, m.DIM, cfg.MODEL.WIDTHS,
                                  num_layers=2, hidden_bn=False)
        self.init_key_encoder(m.MOMENTUM)
        self.temperature = m.TEMPERATURE
        self.shuffle_bn = m.SHUFFLE_BN
        # Shuffle-BN's permutation is drawn from (seed, iteration): the same on every rank
        # (cfg.SEED is; the global generators may not be, SEED < 0) and replayed by a resume.
        # ``iteration`` is the step whose keys ``keys_of`` computes (ShuffleIterationHook).
        self.seed = max(cfg.SEED, 0)
        self.iteration = 0
        self.register_buffer("queue", F.normalize(torch.randn(m.DIM, m.QUEUE_SIZE), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
        # Number of real keys written so far (QueuePrefillHook); part of the checkpoint.
        self.register_buffer("queue_filled", torch.zeros(1, dtype=torch.long))

    def _keys(self, images: torch.Tensor, iteration: int) -> torch.Tensor:
        world = comm.get_world_size()
        if not (self.shuffle_bn and world > 1):
            return F.normalize(self.key_features(images), dim=1)
        # Shuffle-BN: BN statistics of the key encoder come from another rank's samples, so a
        # query cannot find its key through batch statistics. Every rank draws the same
        # permutation itself, so none has to be broadcast.
        all_images = concat_all_gather(images)
        n = images.shape[0]
        perm = shuffle_permutation(self.seed, iteration, all_images.shape[0]).to(images.device)
        mine = perm.view(world, n)[comm.get_rank()]
        k = F.normalize(self.key_features(all_images[mine]), dim=1)
        all_k = concat_all_gather(k)
        unshuffle = torch.argsort(perm)
        return all_k[unshuffle].view(world, n, -1)[comm.get_rank()]

    def keys_of(self, data: Dict[str, Any]) -> Dict[str, Any]:
        return {"k": self._keys(data["views"][1], self.iteration)}

    def training_hooks(self, cfg, clock, data_loader) -> List[HookBase]:
        ret: List[HookBase] = [ShuffleIterationHook(self)]
        if cfg.MODEL.MOCOV2.PREFILL_QUEUE:
            ret.append(QueuePrefillHook(self, data_loader, cfg.SOLVER.IMS_PER_BATCH))
        return ret

    def queue_is_full(self) -> bool:
        """Whether every queue slot holds a real key (not the random initial ones)."""
        return int(self.queue_filled) >= self.queue.shape[1]

    @torch.no_grad()
    def prefill_queue(self, data: Dict[str, Any], iteration: int) -> None:
        """Write real keys of ``data``, the batch of ``iteration``, into the queue."""
        with use_width(self, 1.0):
            self._enqueue(concat_all_gather(self._keys(data["views"][1], iteration)))

    def forward(self, data: Dict[str, Any]) -> torch.Tensor:
        return F.normalize(self.projector(self.backbone(data["views"][0])), dim=1)

    def task_loss(self, q: torch.Tensor, ctx: Dict[str, Any], is_full: bool) -> TaskOutput:
        k = ctx["k"]
        l_pos = (q * k.to(q.dtype)).sum(1, keepdim=True)
        l_neg = q @ self.queue.clone().detach().to(q.dtype)
        cosine = torch.cat([l_pos, l_neg], dim=1).float()
        labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        loss = F.cross_entropy(cosine / self.temperature, labels)
        return TaskOutput(loss, [cosine])

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor) -> None:
        size = self.queue.shape[1]
        ptr = int(self.queue_ptr)
        n = keys.shape[0]
        idx = (torch.arange(n, device=keys.device) + ptr) % size
        self.queue[:, idx] = keys.T.to(self.queue.dtype)
        self.queue_ptr[0] = (ptr + n) % size
        self.queue_filled[0] = min(size, int(self.queue_filled) + n)

    def on_step_end(self, ctx: Dict[str, Any]) -> None:
        self._enqueue(concat_all_gather(ctx["k"]))


def shuffle_permutation(seed: int, iteration: int, size: int) -> torch.Tensor:
    """Shuffle-BN's permutation of the ``size`` gathered keys at ``iteration``: a function of
    (seed, iteration) only, from a stream of its own (not the global generator, which is
    reseeded at start-up and not checkpointed, nor the data's). ``iteration`` may be negative
    (the queue prefill's batches)."""
    rng = np.random.default_rng([0x5B, seed & 0xFFFFFFFF, iteration % 2 ** 64])
    return torch.from_numpy(rng.permutation(size))


class ShuffleIterationHook(HookBase):
    """Tells the method the iteration of the step about to run, which seeds its shuffle-BN
    permutation (as MoCo v3's momentum schedule hook reads ``trainer.iter``)."""

    def __init__(self, method: MoCoV2):
        self.method = method

    def before_step(self) -> None:
        self.method.iteration = self.trainer.iter


class QueuePrefillHook(HookBase):
    """Fills the queue with real keys before the first step (a random queue made small
    slimmable models collapse). Skipped when the queue already holds real keys (a resume: the
    queue is in the checkpoint, so the resumed run continues with the uninterrupted run's).

    The keys come from the ``n`` iterations just before the loader's first, ``start_iter - n``
    to ``start_iter - 1``: other batches and augmentations than the steps that follow (the
    loaders seed both by iteration), so no query meets its own positive key in the queue as a
    negative. A steady-state queue holds the keys of the previous steps the same way."""

    def __init__(self, method: MoCoV2, data_loader, total_batch: int):
        self.method, self.data_loader, self.total_batch = method, data_loader, total_batch

    def before_train(self) -> None:
        if self.method.queue_is_full():
            return
        missing = self.method.queue.shape[1] - int(self.method.queue_filled)
        n = math.ceil(missing / self.total_batch)
        first = self.data_loader.start_iter
        was_training = self.method.training
        self.method.train()
        # Every loader reads start_iter when its iteration begins (the first next()), so the
        # training iterator, made before this hook runs, still starts at ``first``.
        self.data_loader.start_iter = first - n
        batches = iter(self.data_loader)
        try:
            for j in range(n):
                self.method.prefill_queue(next(batches), first - n + j)
        finally:
            batches.close()
            self.data_loader.start_iter = first
        self.method.train(was_training)
        logger.info("Queue of %d keys filled from %d batches (iterations %d to %d)",
                    self.method.queue.shape[1], n, first - n, first - 1)
