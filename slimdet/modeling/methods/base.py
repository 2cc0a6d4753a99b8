"""What every training method provides to the width loop and the engine."""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from detectron2.utils import comm
from torch import nn

from ..slim import TaskOutput


class TrainingMethod(nn.Module):
    """A method turns a batch into one width's outputs and loss.

    - ``prepare(data)``: once per step, under ``no_grad`` at full width (targets, momentum keys).
    - ``forward(data)``: the student at the active width (called through DDP).
    - ``task_loss(outputs, ctx, is_full)``: :class:`TaskOutput` of that width.
    - ``on_step_end(ctx)``: after all widths (enqueue keys ...).
    - ``backbone``: the slimmable encoder that evaluation, export and transfer use.
    - ``momentum_encoders()``: the frozen EMA copies ``prepare`` runs (MoCo's key encoder).
    - ``training_hooks(cfg, clock, data_loader)``: the hooks the method needs around its steps
      (MoCo v3's momentum schedule, MoCo v2's queue prefill); the trainer adds them.
    - ``eval_parts()`` / ``frozen_parts()``: which sub-modules must come, complete, from the
      checkpoint a job loads (``slimdet.checkpoint`` refuses a file that lacks any of them).
    - ``after_weights_loaded(left_out)``: after ``MODEL.WEIGHTS`` initialised a training run,
      with the model keys the file did not have (MoCo's key encoder then copies the student).
    - ``state_from_file(state)``: a checkpoint's state as this model holds it, before the
      checkpoint code checks and loads it (a probe evaluated at some of its widths picks their
      classifiers).
    """

    backbone: nn.Module

    @property
    def widths(self):
        return self.backbone.widths

    def training_hooks(self, cfg, clock, data_loader) -> List:
        """Detectron2 hooks this method needs (``clock``: the run's EpochClock)."""
        return []

    def eval_parts(self) -> Tuple[str, ...]:
        """Sub-modules evaluation (``--eval-only``, export) reads: all must be loaded."""
        return ("backbone",)

    def loop_widths(self) -> List[float]:
        """The widths the width loop trains (``MODEL.WIDTHS``; a probe: its classifiers')."""
        return list(self.backbone.widths)

    def frozen_parts(self) -> Tuple[str, ...]:
        """Sub-modules training never updates: MODEL.WEIGHTS must provide all their weights."""
        return ()

    def momentum_encoders(self) -> List[nn.Module]:
        """The EMA copies of the student that ``prepare`` runs (none here; MoCo's key encoder)."""
        return []

    def after_weights_loaded(self, left_out: Sequence[str]) -> None:
        """``MODEL.WEIGHTS`` initialised this model for training; ``left_out``: the model keys
        the file did not have (they kept their initialisation). Nothing to do here."""

    def state_from_file(self, state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """``state`` (a checkpoint's tensors under slimdet's names) as this model holds it; the
        checkpoint code then checks it key by key and shape by shape. Unchanged here. Raises
        ValueError when the file cannot serve this model for a reason the model can name."""
        return state

    def prepare(self, data: Dict[str, Any]) -> Dict[str, Any]:
        return {}

    def task_loss(self, outputs, ctx: Dict[str, Any], is_full: bool) -> TaskOutput:
        raise NotImplementedError

    def on_step_end(self, ctx: Dict[str, Any]) -> None:
        pass


def backbone_of(model: nn.Module) -> nn.Module:
    """The slimmable encoder of a training method, or ``model`` itself when it is one (the
    evaluators, calibration and export take either)."""
    return model.backbone if isinstance(model, TrainingMethod) else model


def images_of(data: Dict[str, Any]) -> torch.Tensor:
    """The image batch of a training (``views[0]``) or test (``image``) batch."""
    return data["views"][0] if "views" in data else data["image"]


def classification_output(logits: torch.Tensor, labels: torch.Tensor) -> TaskOutput:
    """CE loss, the logits to distil, and the batch's top-1 accuracy (%) to log."""
    loss = F.cross_entropy(logits.float(), labels)
    with torch.no_grad():  # a tensor: the width loop reads all logged values in one sync
        acc = 100.0 * (logits.argmax(1) == labels).float().mean()
    return TaskOutput(loss, [logits.float()], {"train_top1": acc})


class ClassificationMethod(TrainingMethod):
    """A method whose task is classification of ``views[0]`` (linear probe, supervised): its
    subclass provides ``classify(images)`` (class logits at the active width)."""

    # The top-level parts of this method's checkpoints that hold its classifier, beside the
    # backbone (``slimdet.modeling.methods.classifier_keys``: a tool given such a file with the
    # config of a method without them would silently leave its classifier out).
    classifier_parts: Tuple[str, ...] = ()

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def classifier_for(self, width: float) -> nn.Linear:
        """The classifier of ``width`` as a plain ``Linear(features at width, classes)`` (a
        copy), so that the width exports as a torchvision ResNet's ``fc``."""
        raise NotImplementedError

    def calibration_mismatch(self, cfg) -> str:
        """Why evaluating with ``cfg`` estimates BN statistics of untrained widths unlike those
        the classifiers were trained on (their numbers then differ from the training run's),
        or ``""``. Only a probe trains classifiers on calibrated widths."""
        return ""

    def classifier_widths(self) -> Optional[List[float]]:
        """The widths ``classifier_for`` has a classifier for; None: any width (a slimmable
        classifier)."""
        return None

    def prepare(self, data: Dict[str, Any]) -> Dict[str, Any]:
        return {"label": data["label"]}

    def forward(self, data: Dict[str, Any]) -> torch.Tensor:
        return self.classify(images_of(data))

    def task_loss(self, logits: torch.Tensor, ctx: Dict[str, Any], is_full: bool) -> TaskOutput:
        return classification_output(logits, ctx["label"])


def momentum_copy(module: nn.Module) -> nn.Module:
    """A frozen copy that follows ``module`` by EMA (MoCo's key encoder)."""
    twin = copy.deepcopy(module)
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


@torch.no_grad()
def ema_update(target: nn.Module, source: nn.Module, momentum: float) -> None:
    """target = m * target + (1 - m) * source, over parameters (buffers are the target's own)."""
    t_params = [p for p in target.parameters()]
    s_params = [p.detach() for p in source.parameters()]
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, s_params, alpha=1 - momentum)


@torch.no_grad()
def concat_all_gather(x: torch.Tensor) -> torch.Tensor:
    """All ranks' ``x`` concatenated in rank order (no gradient)."""
    if comm.get_world_size() == 1:
        return x
    out = [torch.empty_like(x) for _ in range(comm.get_world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out)


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All ranks' ``x`` concatenated; gradients flow back to every rank's share (SimCLR)."""
    if comm.get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()))
