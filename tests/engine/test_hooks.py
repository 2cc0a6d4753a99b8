"""slimdet/engine/hooks.py and the method hooks (MoCo v2's queue prefill), each run by a real
Detectron2 training loop (``TrainerBase.train``) around a step that only logs."""
import math

import pytest
import torch
from detectron2.engine.train_loop import TrainerBase

from slimdet.data import build_train_loader
from slimdet.engine import load_cfg
from slimdet.engine.hooks import EpochCounterHook, EvaluationHook, drop_untrained_widths
from slimdet.layers import use_width
from slimdet.modeling import build_model
from slimdet.modeling.methods.moco_v2 import QueuePrefillHook


class LoggingTrainer(TrainerBase):
    """Runs the hooks around steps that do nothing but put one scalar."""

    def run_step(self) -> None:
        self.storage.put_scalar("loss", 1.0)


def _train(hooks, max_iter: int, start_iter: int = 0) -> LoggingTrainer:
    trainer = LoggingTrainer()
    trainer.register_hooks(hooks)
    trainer.train(start_iter, max_iter)
    return trainer


class ScriptedEvaluation:
    """An evaluation function returning the next scripted results, recording the iteration
    of the step after which it ran."""

    def __init__(self, full_width_top1):
        self.values = list(full_width_top1)
        self.calls = []
        self.trainer = None

    def __call__(self):
        self.calls.append(self.trainer.iter)
        top1 = self.values[len(self.calls) - 1]
        return {"top1/w1": top1, "top1/w0.5": top1 - 10.0, "loss_scale": 1.0}


# trainer.iter when the evaluation runs: the 0-based step just done, and max_iter (10) in
# after_train, where the evaluation after the last step runs.
@pytest.mark.parametrize("period, expected_iters", [
    (3, [2, 5, 8, 10]),             # after every 3rd step, and after the last
    (2.5, [2, 4, 7, 10]),           # fractional (epochs through a clock): the step crossing k*2.5
    (0, [10]),                      # only after the last step
])
def test_evaluation_hook_runs_at_its_period_and_after_the_last_step(period, expected_iters):
    evaluation = ScriptedEvaluation([50.0] * len(expected_iters))
    hook = EvaluationHook(period, evaluation)
    trainer = LoggingTrainer()
    evaluation.trainer = trainer
    trainer.register_hooks([hook])
    trainer.train(0, 10)
    assert evaluation.calls == expected_iters
    assert hook.results["top1/w1"] == 50.0


def test_evaluation_hook_keeps_the_best_evaluation_across_a_resume():
    evaluation = ScriptedEvaluation([50.0, 70.0, 60.0, 70.0, 65.0])
    hook = EvaluationHook(2, evaluation, full_width=1.0, best_metric="top1")
    trainer = LoggingTrainer()
    evaluation.trainer = trainer
    trainer.register_hooks([hook])
    trainer.train(0, 6)  # evaluations after steps 2, 4 and 6: 50, 70, 60
    assert hook.results["top1/w1"] == 60.0
    assert hook.results["top1_best/w1"] == 70.0 and hook.results["top1_best/w0.5"] == 60.0
    best_iter = hook.results["best_iter"]
    assert best_iter == 3.0  # the storage iteration of the evaluation after step 4
    assert "loss_scale_best" not in " ".join(hook.results)  # only per-width keys get a best
    state = hook.state_dict()

    resumed = EvaluationHook(2, evaluation, full_width=1.0, best_metric="top1")
    resumed.load_state_dict(state)
    trainer = LoggingTrainer()
    evaluation.trainer = trainer
    trainer.register_hooks([resumed])
    trainer.train(6, 10)  # evaluations after steps 8 and 10: 70 (a tie: the later wins), 65
    assert resumed.results["top1/w1"] == 65.0
    assert resumed.results["top1_best/w1"] == 70.0
    assert resumed.results["best_iter"] == 7.0 != best_iter


def test_evaluation_hook_without_the_best_metric_keeps_no_best(caplog):
    evaluation = ScriptedEvaluation([50.0])
    hook = EvaluationHook(0, evaluation, best_metric="knn_top1")
    trainer = LoggingTrainer()
    evaluation.trainer = trainer
    trainer.register_hooks([hook])
    with caplog.at_level("WARNING", logger="slimdet"):
        trainer.train(0, 2)
    assert not any(k.endswith("_best/w1") for k in hook.results)
    assert "TEST.BEST_METRIC 'knn_top1'" in caplog.text
    assert hook.state_dict() == {}


def test_epoch_counter_logs_passes_over_the_data():
    trainer = _train([EpochCounterHook(iters_per_epoch=4)], max_iter=6)
    history = trainer.storage.history("epoch").values()
    assert [v for v, _ in history] == [i / 4 for i in range(6)]


def test_untrained_widths_are_left_out_of_the_results(caplog):
    results = {"knn_top1/w1": 80.0, "knn_top1/w0.5": 10.0, "knn_top1/w0.25": 10.0, "lr": 0.1}
    with caplog.at_level("WARNING", logger="slimdet"):
        kept = drop_untrained_widths(results, [1.0], [1.0, 0.5, 0.25])
    assert kept == {"knn_top1/w1": 80.0, "lr": 0.1}
    assert "0.5, 0.25" in caplog.text
    assert drop_untrained_widths(results, [1.0, 0.5, 0.25], [1.0, 0.5, 0.25]) == results
    # A width of TEST.WIDTHS outside MODEL.WIDTHS (0.75) has not trained either before the slow
    # start; after it, it is a calibrated width of the trained network and stays.
    results["top1/w0.75"] = 66.7
    kept = drop_untrained_widths(results, [1.0], [1.0, 0.5, 0.25])
    assert kept == {"knn_top1/w1": 80.0, "lr": 0.1}
    assert drop_untrained_widths(results, [1.0, 0.5, 0.25], [1.0, 0.5, 0.25]) == results


def _small_moco(queue_size=64):
    cfg = load_cfg("configs/demo/slimclr_mocov2_demo.yaml",
                   ["MODEL.BACKBONE.BASE_CHANNELS", "8", "MODEL.MOCOV2.HIDDEN_DIM", "32",
                    "MODEL.MOCOV2.DIM", "16", "MODEL.MOCOV2.QUEUE_SIZE", str(queue_size),
                    "MODEL.DEVICE", "cpu"])
    return build_model(cfg)


class Batches:
    """A loader of random two-view batches that counts what it gave; like the real loaders it
    starts at ``start_iter``, read when iteration begins, and records the iterations it gave."""

    def __init__(self, batch: int, size: int = 32):
        self.batch, self.size, self.given, self.start_iter = batch, size, 0, 0
        self.iterations = []

    def __iter__(self):
        it = self.start_iter
        g = torch.Generator().manual_seed(1)
        while True:
            self.given += 1
            self.iterations.append(it)
            views = [torch.randn(self.batch, 1, self.size, self.size, generator=g)
                     for _ in range(2)]
            yield {"views": views}
            it += 1


def test_queue_prefill_writes_real_keys_into_every_slot_before_the_first_step():
    method = _small_moco(queue_size=64)
    random_queue = method.queue.clone()
    loader = Batches(batch=24)
    _train([QueuePrefillHook(method, loader, total_batch=24)], max_iter=1)
    assert loader.given == math.ceil(64 / 24)
    # The iterations just before the first step, and the loader left to start at the first.
    assert loader.iterations == [-3, -2, -1] and loader.start_iter == 0
    assert method.queue_is_full() and int(method.queue_filled) == 64
    assert not torch.isclose(method.queue, random_queue).all(0).any()  # every column replaced
    # Keys are unit vectors, written in order; the pointer wrapped around once.
    torch.testing.assert_close(method.queue.norm(dim=0), torch.ones(64))
    assert int(method.queue_ptr) == (3 * 24) % 64
    assert method.training  # the mode it was in


def test_queue_prefill_holds_no_key_of_the_first_training_steps(tmp_path):
    """On the demo data: a prefill that read the first steps' batches put each of their
    queries' positive keys into the queue as a negative (cosine 1)."""
    cfg = load_cfg("configs/demo/slimclr_mocov2_demo.yaml",
                   ["MODEL.BACKBONE.BASE_CHANNELS", "8", "MODEL.MOCOV2.HIDDEN_DIM", "32",
                    "MODEL.MOCOV2.DIM", "16", "MODEL.MOCOV2.QUEUE_SIZE", "96",
                    "SOLVER.IMS_PER_BATCH", "32", "DATASETS.TRAIN_SUBSET", "256",
                    "MODEL.DEVICE", "cpu"])
    method = build_model(cfg)
    loader = build_train_loader(cfg)
    _train([QueuePrefillHook(method, loader, cfg.SOLVER.IMS_PER_BATCH)], max_iter=1)
    assert method.queue_is_full()
    batches = iter(loader)  # what training reads: iterations 0, 1, 2
    with torch.no_grad(), use_width(method, 1.0):
        keys = torch.cat([method._keys(next(batches)["views"][1], it) for it in range(3)])
    cosine = keys @ method.queue
    assert cosine.max() < 0.999, cosine.max()
    # The same keys are found where they are: the prefill's batches computed again.
    loader.start_iter = -3
    batches = iter(loader)
    with torch.no_grad(), use_width(method, 1.0):
        prefill_keys = torch.cat([method._keys(next(batches)["views"][1], it)
                                  for it in range(-3, 0)])
    assert (prefill_keys @ method.queue).diagonal().min() > 0.999


def test_queue_prefill_leaves_a_full_queue_alone():
    method = _small_moco(queue_size=64)
    method.queue_filled.fill_(64)  # as restored from a checkpoint
    before = method.queue.clone()
    loader = Batches(batch=24)
    _train([QueuePrefillHook(method, loader, total_batch=24)], max_iter=1)
    assert loader.given == 0 and torch.equal(method.queue, before)
