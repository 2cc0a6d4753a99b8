"""MoCo v2 (docs/method.md §3): query encoder + EMA key encoder, 2-layer MLP head, a queue of keys,
InfoNCE at temperature 0.2, shuffle-BN for keys across processes.

Slimmable: keys always come from the key encoder at full width and only they enter the queue;
every width's query contrasts against the same positive and queue. Distillation compares raw
cosine logits (before dividing by T).
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List

import torch
import torch.distributed as dist
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
        self.register_buffer("queue", F.normalize(torch.randn(m.DIM, m.QUEUE_SIZE), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
        # Number of real keys written so far (QueuePrefillHook); part of the checkpoint.
        self.register_buffer("queue_filled", torch.zeros(1, dtype=torch.long))

    def _keys(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        world = comm.get_world_size()
        if not (self.shuffle_bn and world > 1):
            return F.normalize(self.key_features(images), dim=1)
        # Shuffle-BN: BN statistics of the key encoder come from another rank's samples, so a
        # query cannot find its key through batch statistics.
        all_images = concat_all_gather(images)
        n = images.shape[0]
        perm = torch.randperm(all_images.shape[0], generator=generator).to(images.device)
        dist.broadcast(perm, src=0)
        mine = perm.view(world, n)[comm.get_rank()]
        k = F.normalize(self.key_features(all_images[mine]), dim=1)
        all_k = concat_all_gather(k)
        unshuffle = torch.argsort(perm)
        return all_k[unshuffle].view(world, n, -1)[comm.get_rank()]

    def keys_of(self, data: Dict[str, Any]) -> Dict[str, Any]:
        return {"k": self._keys(data["views"][1])}

    def training_hooks(self, cfg, clock, data_loader) -> List[HookBase]:
        return [QueuePrefillHook(self, data_loader)] if cfg.MODEL.MOCOV2.PREFILL_QUEUE else []

    def queue_is_full(self) -> bool:
        """Whether every queue slot holds a real key (not the random initial ones)."""
        return int(self.queue_filled) >= self.queue.shape[1]

    @torch.no_grad()
    def prefill_queue(self, data: Dict[str, Any]) -> None:
        """Write real keys of ``data`` into the queue."""
        with use_width(self, 1.0):
            self._enqueue(concat_all_gather(self._keys(data["views"][1])))

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


class QueuePrefillHook(HookBase):
    """Fills the queue with real keys before the first step (a random queue made small
    slimmable models collapse). Skipped when the queue already holds real keys (a resume)."""

    def __init__(self, method: MoCoV2, data_loader):
        self.method, self.data_loader = method, data_loader

    def before_train(self) -> None:
        if self.method.queue_is_full():
            return
        batches = iter(self.data_loader)  # a separate pass over the first batches
        was_training = self.method.training
        self.method.train()
        n = 0
        while not self.method.queue_is_full():
            self.method.prefill_queue(next(batches))
            n += 1
        self.method.train(was_training)
        logger.info("Queue of %d keys filled from %d batches", self.method.queue.shape[1], n)
