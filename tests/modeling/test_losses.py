"""Every loss against a hand computation on tiny tensors (docs/method.md §3)."""
import math

import torch
import torch.nn.functional as F

from slimdet.modeling import build_model
from slimdet.modeling.slim import distillation_loss, loss_weights
from slimdet.modeling.methods.moco_v3 import moco_v3_contrastive
from slimdet.modeling.methods.simclr import nt_xent_logits
from tests.helpers import tiny_cfg


def test_moco_v2_infonce_matches_hand_computation():
    method = build_model(tiny_cfg("MoCoV2"))
    q = F.normalize(torch.randn(4, 16), dim=1)
    k = F.normalize(torch.randn(4, 16), dim=1)
    out = method.task_loss(q, {"k": k}, is_full=True)
    T, queue = method.temperature, method.queue
    expected = 0.0
    for i in range(4):
        logits = [q[i] @ k[i]] + [q[i] @ queue[:, j] for j in range(queue.shape[1])]
        logits = torch.stack(logits) / T
        expected += -(logits[0] - torch.logsumexp(logits, 0))
    assert torch.allclose(out.loss, expected / 4, atol=1e-5)
    # Distillation sees the raw cosine logits (before / T).
    assert torch.allclose(out.distill_logits[0][:, 0], (q * k).sum(1), atol=1e-6)


def test_nt_xent_removes_self_similarity():
    z = torch.randn(6, 5)  # 2n = 6: rows 0-2 are view 1, rows 3-5 view 2
    cos, pos = nt_xent_logits(z, z)
    zn = F.normalize(z, dim=1)
    assert cos.shape == (6, 5)
    for i in range(6):
        others = [j for j in range(6) if j != i]
        assert torch.allclose(cos[i], torch.stack([zn[i] @ zn[j] for j in others]), atol=1e-6)
        partner = (i + 3) % 6
        assert others[pos[i]] == partner
    # Rank 1 of 2: its rows sit at columns 6..11 of the gathered keys.
    keys = torch.randn(12, 5)
    local = keys[6:]
    cos1, pos1 = nt_xent_logits(local, keys, rank=1)
    kn = F.normalize(keys, dim=1)
    others = [j for j in range(12) if j != 6]
    assert torch.allclose(cos1[0], F.normalize(local, dim=1)[0] @ kn[others].T, atol=1e-6)
    assert others[pos1[0]] == 9


def test_moco_v3_symmetric_loss_scaled_by_2t():
    method = build_model(tiny_cfg("MoCoV3"))
    T = 0.5
    method.temperature = T
    q1, q2, k1, k2 = (torch.randn(3, 16) for _ in range(4))
    out = method.task_loss([q1, q2], {"keys": [k1, k2]}, is_full=True)

    def ctr(q, k):
        logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / T
        return 2 * T * sum(-(logits[i, i] - torch.logsumexp(logits[i], 0)) for i in range(3)) / 3
    assert torch.allclose(out.loss, ctr(q1, k2) + ctr(q2, k1), atol=1e-5)
    loss, _ = moco_v3_contrastive(q1, k2, T)
    assert torch.allclose(loss, ctr(q1, k2), atol=1e-5)


def test_distillation_is_soft_cross_entropy_times_tau_squared():
    tau = 5.0
    s = torch.randn(4, 7, requires_grad=True)
    t = torch.randn(4, 7)
    p_t = F.softmax(t / tau, 1)
    kl = (p_t * (p_t.log() - F.log_softmax(s / tau, 1))).sum(1).mean() * tau ** 2
    value = distillation_loss(s, t, tau)
    assert torch.allclose(value, kl, atol=1e-6)
    # Same gradient as the soft cross-entropy (the KL differs by the teacher's entropy only).
    soft_ce = -(p_t * F.log_softmax(s / tau, 1)).sum(1).mean() * tau ** 2
    g1, = torch.autograd.grad(value, s)
    g2, = torch.autograd.grad(soft_ce, s)
    assert torch.allclose(g1, g2, atol=1e-6)


def test_distillation_is_zero_for_equal_logits():
    z = torch.randn(5, 9)
    assert distillation_loss(z.clone(), z, 5.0).abs().item() < 1e-6
    assert distillation_loss(z + 1.0, z, 1.0).abs().item() < 1e-6  # softmax is shift invariant


def test_loss_weights():
    assert loss_weights([1.0, 0.75, 0.5, 0.25], "size") == [2.5, 1.0, 1.0, 1.0]
    assert loss_weights([1.0, 0.5, 0.25], "uniform") == [1.0, 1.0, 1.0]
    w = loss_weights([1.0, 0.5], "proportional")
    assert math.isclose(w[0], 2 / 3) and math.isclose(w[1], 1 / 3)
