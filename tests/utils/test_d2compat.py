"""slimdet.utils.d2compat's data-iterator adapter, through the hook that uses it: the gradient
diagnostics look at the coming batch without taking it from the step."""
from pathlib import Path

import pytest

from slimdet.analysis.hooks import GradientDiagnosticsHook
from slimdet.engine import load_cfg, seed_all
from slimdet.engine.trainer import SlimTrainer
from slimdet.utils.d2compat import data_iterator

ROOT = Path(__file__).resolve().parents[2]


def _train(tmp_path: Path, grad_period: int):
    cfg = load_cfg(str(ROOT / "configs/demo/slimclr_mocov2_demo.yaml"), [
        "DATASETS.TRAIN_SUBSET", "64", "SOLVER.IMS_PER_BATCH", "16", "SOLVER.MAX_ITER", "2",
        "DATALOADER.NUM_WORKERS", "0", "MODEL.BACKBONE.BASE_CHANNELS", "8",
        "MODEL.WIDTHS", "[1.0, 0.5]",
        "TEST.EVALUATORS", "[]", "MODEL.MOCOV2.PREFILL_QUEUE", "False", "SOLVER.AMP.ENABLED", "False",
        "MODEL.MOCOV2.HIDDEN_DIM", "32", "MODEL.MOCOV2.DIM", "16", "MODEL.MOCOV2.QUEUE_SIZE", "64",
        "ANALYSIS.GRAD_PERIOD", str(grad_period), "OUTPUT_DIR", str(tmp_path / str(grad_period))])
    (tmp_path / str(grad_period)).mkdir()
    seed_all(cfg.SEED)
    trainer = SlimTrainer(cfg)
    trainer.train()
    return trainer


def test_gradient_hook_peeks_at_the_steps_batch(tmp_path):
    plain, peeked = _train(tmp_path, 0), _train(tmp_path, 1)
    assert any(isinstance(h, GradientDiagnosticsHook) for h in peeked._hooks)
    assert type(data_iterator(peeked)).__name__ == "_PeekableIterator"
    losses = {name: [v for v, _ in t.storage.histories()["total_loss"].values()]
              for name, t in (("plain", plain), ("peeked", peeked))}
    assert len(losses["plain"]) == 2
    # A consumed batch would make the step see other data: far more than rounding apart.
    assert losses["peeked"] == pytest.approx(losses["plain"], rel=1e-5)
    for w in (1.0, 0.5):
        assert len(peeked.storage.histories()[f"grad_norm/w{w:g}"].values()) == 2
