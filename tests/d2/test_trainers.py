"""The detection trainers: Detectron2's DefaultTrainer as slimdet.utils.d2compat builds it, with
safe checkpointers, and train() returning the final evaluation."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import DefaultTrainer, SimpleTrainer
from detectron2.engine.hooks import PeriodicWriter

from slimdet.d2 import (DetectionTrainer, SafeDetectionCheckpointer, SlimDetectionCheckpointer,
                        SlimDetTrainer, detection_trainer_class, load_det_cfg)
from slimdet.engine.hooks import DeferredPeriodicWriter
from slimdet.engine.trainer import WidthLoopTrainer

from d2_helpers import SLIM_DEMO, SMALL, STOCK_CONVERTED, STOCK_SMALL


@pytest.fixture
def stock_cfg(tiny_coco, tmp_path):
    cfg = load_det_cfg(STOCK_CONVERTED, STOCK_SMALL + ["OUTPUT_DIR", str(tmp_path)])
    cfg.freeze()
    return cfg


def test_adapter_builds_what_default_trainer_builds(stock_cfg):
    """A Detectron2 upgrade that changes DefaultTrainer.__init__ fails here: same attributes,
    same hooks, the same kind of inner trainer; only the checkpointer is the safe one."""
    out = Path(stock_cfg.OUTPUT_DIR)
    ours = DetectionTrainer(stock_cfg)
    # Building ours writes nothing (its writers start with training), so a start can still be
    # refused, and --overwrite clear the folder, after the weights loaded.
    assert list(out.iterdir()) == []
    theirs = DefaultTrainer(stock_cfg)
    assert {p.name for p in out.iterdir()} >= {"metrics.json"}  # Detectron2's opens it at once
    assert set(vars(ours)) - {"last_results"} == set(vars(theirs))
    # The same hooks, the writer one made when training starts.
    assert [type(h) for h in ours._hooks] == [
        DeferredPeriodicWriter if t is PeriodicWriter else t for t in map(type, theirs._hooks)]
    assert type(ours._trainer) is type(theirs._trainer) is SimpleTrainer
    assert type(theirs.checkpointer) is DetectionCheckpointer
    assert type(ours.checkpointer) is SafeDetectionCheckpointer
    for h in ours._hooks:  # every hook that saves uses our checkpointer
        assert getattr(h, "checkpointer", ours.checkpointer) is ours.checkpointer
    assert ours.max_iter == theirs.max_iter == 1 and ours.model is ours._trainer.model


def test_slim_trainer_steps_with_the_width_loop(tiny_coco, tmp_path):
    cfg = load_det_cfg(SLIM_DEMO, SMALL + ["MODEL.WIDTHS", "[1.0, 0.5]", "MODEL.WEIGHTS", "",
                                           "OUTPUT_DIR", str(tmp_path)])
    assert detection_trainer_class(cfg) is SlimDetTrainer
    trainer = SlimDetTrainer(cfg)
    assert isinstance(trainer._trainer, WidthLoopTrainer)
    assert trainer._trainer.width_loop.widths == [1.0, 0.5]
    assert type(trainer.checkpointer) is SlimDetectionCheckpointer


def test_stock_train_returns_the_final_evaluation(stock_cfg):
    assert detection_trainer_class(stock_cfg) is DetectionTrainer
    trainer = DetectionTrainer(stock_cfg)
    trainer.resume_or_load(resume=False)
    results = trainer.train()  # one iteration, then the EvalHook evaluates tiny_coco_val
    assert trainer.iter == 1 and results is trainer.last_results
    for task in ("bbox", "segm"):
        ap = results[task]["AP"]
        assert math.isfinite(ap) and 0.0 <= ap <= 100.0, (task, ap)
