"""Restoring a resumed run's optimizer: another optimizer or other parameter groups are one
CheckpointError naming what differs, not a traceback at the first step."""
import pytest
import torch
from torch import nn

from slimdet.checkpoint import CheckpointError, restore_optimizer
from slimdet.config import get_cfg
from slimdet.solver import build_optimizer


def _optimizer(name: str, model: nn.Module) -> torch.optim.Optimizer:
    cfg = get_cfg()
    cfg.SOLVER.OPTIMIZER = name
    return build_optimizer(cfg, model)


def _stepped(optimizer: torch.optim.Optimizer, model: nn.Module) -> dict:
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    return optimizer.state_dict()


def test_a_resume_restores_the_same_optimizer_and_refuses_another():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    sgd_state = _stepped(_optimizer("SGD", model), model)

    again = _optimizer("SGD", model)
    restore_optimizer(again, sgd_state)
    for p in model.parameters():  # SGD's momentum buffers came back
        torch.testing.assert_close(again.state[p]["momentum_buffer"],
                                   sgd_state["state"][_index(again, p)]["momentum_buffer"])

    with pytest.raises(CheckpointError, match=r"another optimizer than this run's LARS \(no "
                       r"lars_exclude, trust_coefficient\): --resume continues a run with the "
                       r"optimizer it was started with"):
        restore_optimizer(_optimizer("LARS", model), sgd_state)

    # Other trained parameters (a layer frozen since): torch's own size check, as one error.
    model[0].requires_grad_(False)
    with pytest.raises(CheckpointError, match="optimizer state does not fit this run's"):
        restore_optimizer(_optimizer("SGD", model), sgd_state)


def _index(optimizer: torch.optim.Optimizer, param: torch.Tensor) -> int:
    params = [p for group in optimizer.param_groups for p in group["params"]]
    return next(i for i, p in enumerate(params) if p is param)
