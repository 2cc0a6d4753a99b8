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


def _converted_r18(tmp_path, pixel_std=None) -> str:
    """What tools/convert_to_d2.py --width 1.0 writes for an R-18 (its metadata included)."""
    import pickle

    from slimdet.d2.checkpoint import input_meta, to_stock_d2_state

    from d2_helpers import randomized_resnet

    state, _ = to_stock_d2_state(randomized_resnet(18, widths=(1.0, 0.5)), 1.0)
    seen = input_meta() if pixel_std is None else input_meta(pixel_std=pixel_std)
    path = tmp_path / "r18_w1.0.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": state, "__author__": "slimdet convert_to_d2 --width 1",
                     "matching_heuristics": True,
                     "slimdet": {"width": 1.0, "widths": [1.0, 0.5], "depth": 18,
                                 "input": seen}}, f)
    return str(path)


def test_a_config_that_reads_a_converted_width_unlike_its_pretraining_is_refused(tiny_coco,
                                                                                 tmp_path):
    """Detectron2's stock configs read BGR with Caffe2's statistics and the stride on the 1x1
    convolution: a converted width trains there without an error and with every AP low."""
    from slimdet.config import ConfigError

    weights = _converted_r18(tmp_path)
    stock_reading = ["MODEL.RESNETS.STRIDE_IN_1X1", "True", "INPUT.FORMAT", "BGR",
                     "MODEL.PIXEL_MEAN", "[103.53, 116.28, 123.675]",
                     "MODEL.PIXEL_STD", "[1.0, 1.0, 1.0]"]
    cfg = load_det_cfg(STOCK_CONVERTED, STOCK_SMALL + stock_reading + [
        "OUTPUT_DIR", str(tmp_path / "run"), "MODEL.WEIGHTS", weights])
    with pytest.raises(ConfigError) as err:
        DetectionTrainer(cfg).resume_or_load(resume=False)
    assert str(err.value) == (
        f"{weights!r} is width 1 of a slimmable ResNet converted by tools/convert_to_d2.py, which "
        "this config reads differently from its pre-training (MODEL.RESNETS.STRIDE_IN_1X1 is "
        "True here, INPUT.FORMAT is BGR here, MODEL.PIXEL_MEAN is [103.53,116.28,123.675] here, "
        "MODEL.PIXEL_STD is [1,1,1] here), so its features would be wrong from the first layer "
        "on: pass MODEL.RESNETS.STRIDE_IN_1X1 False INPUT.FORMAT RGB MODEL.PIXEL_MEAN "
        "[123.675,116.280,103.530] MODEL.PIXEL_STD [58.395,57.120,57.375]")
    # The converted config reads it as pre-trained; statistics of the file's own are followed.
    fits = load_det_cfg(STOCK_CONVERTED, STOCK_SMALL + [
        "OUTPUT_DIR", str(tmp_path / "run"), "MODEL.WEIGHTS", weights])
    DetectionTrainer(fits).resume_or_load(resume=False)
    own_std = _converted_r18(tmp_path, pixel_std=[50.0, 50.0, 50.0])
    fits.defrost()
    fits.MODEL.WEIGHTS = own_std
    with pytest.raises(ConfigError, match=r"MODEL.PIXEL_STD is \[58.395,57.12,57.375\] here\), "
                       r".*: pass MODEL.PIXEL_STD \[50.000,50.000,50.000\]$"):
        DetectionTrainer(fits).resume_or_load(resume=False)
