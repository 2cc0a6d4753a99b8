"""SimCLR (docs/method.md §3): head 2048-2048(BN,ReLU)-128(BN); NT-Xent over the 2N x 2N similarity matrix
of all-gathered embeddings with the self-similarity removed, T=0.1.

Slimmable: the full width is plain SimCLR (gradients through both sides of every pair). Each
sub-width's embeddings are contrasted against the full width's detached, all-gathered embeddings
with the same positives and the same (self-removed) negatives, so its logits line up with the
full width's for distillation (raw cosine logits).
"""
from __future__ import annotations

from typing import Any, Dict

import torch
import torch.nn.functional as F
from detectron2.utils import comm

from ..backbone import build_backbone
from ..heads import slim_mlp
from ..slim import TaskOutput
from .base import TrainingMethod, all_gather_with_grad
from .build import METHOD_REGISTRY


def nt_xent_logits(z: torch.Tensor, keys: torch.Tensor, rank: int = 0):
    """Cosine logits of local embeddings ``z`` [2n, d] (view 1 then view 2) against all
    gathered ``keys`` [2N, d] (each rank's 2n in rank order), self-similarity column removed.

    Returns (cosine [2n, 2N - 1], positive index [2n]).
    """
    two_n = z.shape[0]
    n = two_n // 2
    cos = F.normalize(z.float(), dim=1) @ F.normalize(keys.float(), dim=1).T
    rows = torch.arange(two_n, device=z.device)
    self_col = rows + rank * two_n
    pos_col = (rows + n) % two_n + rank * two_n
    keep = torch.ones_like(cos, dtype=torch.bool)
    keep[rows, self_col] = False
    cos = cos[keep].view(two_n, keys.shape[0] - 1)
    pos = pos_col - (pos_col > self_col).long()
    return cos, pos


@METHOD_REGISTRY.register()
class SimCLR(TrainingMethod):
    def __init__(self, cfg):
        super().__init__()
        m = cfg.MODEL.SIMCLR
        self.backbone = build_backbone(cfg)
        self.projector = slim_mlp(self.backbone.num_features, m.HIDDEN_DIM, m.DIM, cfg.MODEL.WIDTHS,
                                  num_layers=2, hidden_bn=True, last_bn=True)
        self.temperature = m.TEMPERATURE

    def forward(self, data: Dict[str, Any]) -> torch.Tensor:
        v1, v2 = data["views"][:2]
        # One forward over both views: BN statistics over 2n samples, as in SimCLR.
        return self.projector(self.backbone(torch.cat([v1, v2])))

    def task_loss(self, z: torch.Tensor, ctx: Dict[str, Any], is_full: bool) -> TaskOutput:
        if is_full:
            keys = all_gather_with_grad(F.normalize(z.float(), dim=1))
            ctx["keys"] = keys.detach()
        else:
            keys = ctx["keys"]
        cos, pos = nt_xent_logits(z, keys, comm.get_rank())
        loss = F.cross_entropy(cos / self.temperature, pos)
        return TaskOutput(loss, [cos])
