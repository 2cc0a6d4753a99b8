"""MoCo v3 for ResNets (docs/method.md §3): projector 2048-4096(BN,ReLU)-256(BN, no affine),
predictor 256-4096(BN,ReLU)-256, no bias in either; symmetric contrastive loss against
all-gathered momentum keys, T=1.0, each direction scaled by 2T; the momentum follows a
half-cosine from MOMENTUM to 1 (``MomentumScheduleHook``).

Slimmable: keys from the momentum encoder at full width; distillation on logits / T.
"""
from __future__ import annotations

from typing import Any, Dict, List

import torch
import torch.nn.functional as F
from detectron2.engine.train_loop import HookBase
from detectron2.utils import comm

from ..backbone import build_backbone
from ..heads import slim_mlp
from ..slim import TaskOutput
from .base import concat_all_gather
from .build import METHOD_REGISTRY
from .momentum import MomentumEncoderMethod, MomentumScheduleHook


def moco_v3_contrastive(q: torch.Tensor, k_all: torch.Tensor, temperature: float):
    """(loss, logits): CE of normalised ``q`` against all gathered keys, positives on this
    rank's diagonal block, times 2T."""
    q = F.normalize(q.float(), dim=1)
    logits = q @ F.normalize(k_all.float(), dim=1).T / temperature
    n = q.shape[0]
    labels = torch.arange(n, device=q.device) + n * comm.get_rank()
    return F.cross_entropy(logits, labels) * (2 * temperature), logits


@METHOD_REGISTRY.register()
class MoCoV3(MomentumEncoderMethod):
    def __init__(self, cfg):
        super().__init__()
        m, widths = cfg.MODEL.MOCOV3, cfg.MODEL.WIDTHS
        self.backbone = build_backbone(cfg)
        # No bias in any linear layer of projector and predictor, as in the reference (its
        # checkpoints hold base_encoder.fc.{0,3}.weight and predictor.{0,3}.weight only).
        self.projector = slim_mlp(self.backbone.num_features, m.HIDDEN_DIM, m.DIM, widths,
                                  num_layers=2, hidden_bn=True, last_bn=True, last_bn_affine=False,
                                  bias=False)
        self.predictor = slim_mlp(m.DIM, m.HIDDEN_DIM, m.DIM, widths, num_layers=2, hidden_bn=True,
                                  last_bn=False, slim_input=False, bias=False)
        self.init_key_encoder(m.MOMENTUM)  # then set every step by MomentumScheduleHook
        self.base_momentum = m.MOMENTUM
        self.temperature = m.TEMPERATURE

    def keys_of(self, data: Dict[str, Any]) -> Dict[str, Any]:
        return {"keys": [concat_all_gather(self.key_features(v)) for v in data["views"][:2]]}

    def training_hooks(self, cfg, clock, data_loader) -> List[HookBase]:
        return [MomentumScheduleHook(self, self.base_momentum, clock)]

    def forward(self, data: Dict[str, Any]) -> List[torch.Tensor]:
        return [self.predictor(self.projector(self.backbone(v))) for v in data["views"][:2]]

    def task_loss(self, qs: List[torch.Tensor], ctx: Dict[str, Any], is_full: bool) -> TaskOutput:
        k1, k2 = ctx["keys"]
        loss1, logits1 = moco_v3_contrastive(qs[0], k2, self.temperature)
        loss2, logits2 = moco_v3_contrastive(qs[1], k1, self.temperature)
        return TaskOutput(loss1 + loss2, [logits1, logits2])
