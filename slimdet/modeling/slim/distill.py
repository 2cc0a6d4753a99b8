"""Online distillation from the full width's logits to a sub-width's (docs/method.md §3).

Logged values (``loss_distill/w<width>``) are the KL divergence times tau^2. The reference
implementation logs the soft cross-entropy instead, which is this KL plus the teacher's entropy
times tau^2: the same gradient for the student, a higher number (it does not reach 0 when the
widths agree). Compare logged distillation losses with the reference's only after adding the
teacher's entropy.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, tau: float) -> torch.Tensor:
    """KL(softmax(teacher / tau) || softmax(student / tau)), batch mean, times tau^2.

    The gradient w.r.t. the student equals that of the soft cross-entropy the reference logs;
    the value is the KL (zero when the logits agree), lower than the reference's logged value by
    the teacher's entropy times tau^2. ``teacher`` must be detached.
    """
    log_p_student = F.log_softmax(student.float() / tau, dim=1)
    log_p_teacher = F.log_softmax(teacher.float() / tau, dim=1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * tau ** 2


def multi_distillation_loss(students: Sequence[torch.Tensor], teachers: Sequence[torch.Tensor],
                            tau: float) -> torch.Tensor:
    """Sum over logit pairs (MoCo v3's symmetric loss has one pair per direction)."""
    if len(students) != len(teachers):
        raise ValueError(f"{len(students)} student logits but {len(teachers)} teacher logits")
    return sum(distillation_loss(s, t, tau) for s, t in zip(students, teachers))
