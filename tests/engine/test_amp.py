"""SOLVER.AMP on the CPU: bf16 autocast only where the CPU runs bf16 natively."""
import logging

import pytest
import torch

import slimdet.engine.trainer as trainer_module
from slimdet.engine.trainer import WidthLoopTrainer, cpu_has_native_bf16
from slimdet.modeling import build_model
from slimdet.modeling.slim import WidthLoop
from tests.helpers import random_batch, tiny_cfg


def _trainer(amp: bool) -> WidthLoopTrainer:
    cfg = tiny_cfg("MoCoV2")
    model = build_model(cfg).train()
    return WidthLoopTrainer(model, [random_batch(8)], torch.optim.SGD(model.parameters(), lr=0.1),
                            WidthLoop.from_config(cfg), torch.device("cpu"), amp=amp)


@pytest.mark.parametrize("native", [True, False])
def test_cpu_amp_follows_native_bf16(monkeypatch, caplog, native):
    monkeypatch.setattr(trainer_module, "cpu_has_native_bf16", lambda: native)
    with caplog.at_level(logging.WARNING, logger="slimdet"):
        trainer = _trainer(amp=True)
    assert trainer.amp is native
    with trainer._autocast():
        assert torch.is_autocast_enabled("cpu") is native
    warned = [r for r in caplog.records if "no native bf16" in r.getMessage()]
    assert bool(warned) is not native


def test_fp32_is_left_alone(monkeypatch, caplog):
    monkeypatch.setattr(trainer_module, "cpu_has_native_bf16", lambda: False)
    with caplog.at_level(logging.WARNING, logger="slimdet"):
        trainer = _trainer(amp=False)
    assert trainer.amp is False
    assert not [r for r in caplog.records if "bf16" in r.getMessage()]


def test_the_query_answers_for_this_machine():
    assert isinstance(cpu_has_native_bf16(), bool)
