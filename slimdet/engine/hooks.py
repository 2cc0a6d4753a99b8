"""slimdet's training hooks. Everything that happens around a step is a hook (Detectron2 style);
Detectron2's own hooks (timer, LR scheduler, checkpointer, writers, evaluation) are reused."""
from __future__ import annotations

import logging
import math
from typing import Callable, Dict, List, Optional, Sequence

from detectron2.engine import hooks as d2_hooks
from detectron2.engine.hooks import EvalHook
from detectron2.engine.train_loop import HookBase

from ..evaluation.calibration import calibrate
from ..layers import CalibrationAware
from ..solver import EpochClock
from ..utils.ddp import wait_for_main_process
from ..utils.results import split_width_key, width_key

logger = logging.getLogger("slimdet")


class WidthScheduleHook(HookBase):
    """Slow start (docs/method.md §3): before epoch ``slow_start_epoch`` only the full width
    trains (loss weight 1); from then on every width trains with the re-weighted losses. The
    epoch becomes an iteration through ``clock`` (so it scales with SOLVER.MAX_ITER)."""

    def __init__(self, width_loop, slow_start_epoch: float, clock: EpochClock):
        self.loop = width_loop
        self.start_iter = clock.iteration(slow_start_epoch)
        self._phase = None

    def trained_widths(self, iteration: int) -> List[float]:
        """The widths that have trained once the step of ``iteration`` has run."""
        return self.loop.all_widths if iteration >= self.start_iter else self.loop.all_widths[:1]

    def before_train(self) -> None:
        if len(self.loop.all_widths) > 1 and self.start_iter > self.trainer.max_iter - 1:
            logger.warning("The slow start (iteration %.1f) comes after the last iteration (%d): "
                           "only width %g trains in this run, and the other widths %s will not "
                           "be evaluated", self.start_iter, self.trainer.max_iter - 1,
                           self.loop.all_widths[0], self.loop.all_widths[1:])

    def before_step(self) -> None:
        slow = self.trainer.iter < self.start_iter
        if slow != self._phase:
            widths = self.loop.all_widths[:1] if slow else self.loop.all_widths
            self.loop.set_active(widths)
            self._phase = slow
            logger.info("Iteration %d: training %s", self.trainer.iter, self.loop.describe())
        self.trainer.storage.put_scalar("num_widths", len(self.loop.widths), smoothing_hint=False)


class EpochCounterHook(HookBase):
    """Puts the (fractional) epoch, in passes over the training data, into the event storage."""

    def __init__(self, iters_per_epoch: int):
        self.iters_per_epoch = iters_per_epoch

    def before_step(self) -> None:
        self.trainer.storage.put_scalar("epoch", self.trainer.iter / self.iters_per_epoch, smoothing_hint=False)


def drop_untrained_widths(results: Dict[str, float], trained: Sequence[float],
                          all_widths: Sequence[float]) -> Dict[str, float]:
    """``results`` without the per-width keys of widths that have not trained yet (before the
    slow start, or a run that ended before it): their numbers would read as a trained width's.
    Until every width of ``all_widths`` has trained, that is every evaluated width but the
    ``trained`` ones (a width of TEST.WIDTHS outside MODEL.WIDTHS shares the untrained
    narrower weights or classifiers too). Says which widths it left out."""
    if all(w in trained for w in all_widths):
        return results
    evaluated = {split_width_key(k)[1] for k in results} - {None}
    untrained = sorted((w for w in evaluated if w not in trained), reverse=True)
    if not untrained:
        return results
    kept = {k: v for k, v in results.items() if split_width_key(k)[1] not in untrained}
    if len(kept) < len(results):
        logger.warning("Widths %s have not trained yet (slow start): their results are not "
                       "reported", ", ".join(f"{w:g}" for w in untrained))
    return kept


class EvaluationHook(EvalHook):
    """Detectron2's EvalHook (evaluates periodically and after the last iteration; results go to
    the event storage: metrics.json, TensorBoard), with

    - a period in (fractional) iterations: an evaluation follows every step that reaches a
      multiple of ``period`` (``TEST.EVAL_PERIOD`` iterations or ``TEST.EVAL_PERIOD_EPOCHS``
      through the run's EpochClock); 0 = only after the last iteration;
    - ``best_metric`` (``TEST.BEST_METRIC``, e.g. ``"top1"``): the evaluation whose full-width
      ``best_metric`` is highest (a later one wins a tie) is kept and reported beside every later
      one, each of its per-width values under ``<metric>_best/w<width>`` and its iteration under
      ``best_iter`` — the reference probe's "best top-1 over evaluations every 2 epochs".

    ``results`` is what the last evaluation reported (with the best keys). The best evaluation is
    part of the hook's state, so it survives a resume.
    """

    def __init__(self, period: float, eval_function: Callable[[], Dict[str, float]],
                 full_width: float = 1.0, best_metric: str = ""):
        super().__init__(0, eval_function)
        self.period = max(1.0, period) if period > 0 else 0.0
        self.full_width, self.best_metric = full_width, best_metric
        self.results: Dict[str, float] = {}
        self._best: Dict[str, float] = {}
        self.evaluated_iteration: Optional[int] = None  # the step the last evaluation followed

    def after_step(self) -> None:
        done = self.trainer.iter + 1  # steps done
        # The last evaluation runs in after_train.
        if self.period and done != self.trainer.max_iter and \
                math.floor(done / self.period) > math.floor((done - 1) / self.period):
            self._do_eval()

    def _do_eval(self) -> None:
        results = dict(self._func() or {})
        if self.best_metric:
            results.update(self._update_best(results))
        self.results = results
        if results:
            self.trainer.storage.put_scalars(**results, smoothing_hint=False)
        self.evaluated_iteration = self.trainer.iter
        wait_for_main_process()

    def _update_best(self, results: Dict[str, float]) -> Dict[str, float]:
        key = width_key(self.best_metric, self.full_width)
        best_key = width_key(f"{self.best_metric}_best", self.full_width)
        if key not in results:
            if results:
                logger.warning("TEST.BEST_METRIC %r: no %r among the results (%s), no best "
                               "evaluation kept", self.best_metric, key, ", ".join(sorted(results)))
            return self._best
        if results[key] >= self._best.get(best_key, -math.inf):
            # storage.iter: the iteration metrics.json records these results under (the last
            # evaluation's is max_iter, as Detectron2 sets it in after_train).
            self._best = {"best_iter": float(self.trainer.storage.iter)}
            for k, v in results.items():
                metric, width = split_width_key(k)
                if width is not None:
                    self._best[width_key(f"{metric}_best", width)] = v
        return self._best

    def state_dict(self) -> Dict:
        return {"best": dict(self._best)} if self._best else {}

    def load_state_dict(self, state: Dict) -> None:
        self._best = dict(state.get("best", {}))


class StaleStatisticsHook(HookBase):
    """Sandwich-rule training (``MODEL.SLIM.MODE: sandwich``): the BN running averages mix the
    statistics of the widths drawn each step, so the network is marked as needing calibration
    before any width evaluates — in memory and in every checkpoint it writes
    (``bn_statistics_stale``), also when it started from weights with valid statistics."""

    def __init__(self, method):
        self.method = method

    def before_train(self) -> None:
        for m in self.method.modules():
            if isinstance(m, CalibrationAware):
                m.mark_statistics_stale()


class CalibrationHook(HookBase):
    """Training on frozen features (the linear probe): the widths the method trains at that have
    no BN statistics (untrained ``TEST.WIDTHS``; every width of a sandwich-trained checkpoint)
    get them before the first step, in place, from the calibration batches evaluation uses
    (``slimdet.evaluation.calibration``), so training and a later ``--eval-only`` see the same
    statistics. Every process calibrates on those same whole batches, so under DDP every rank's
    classifiers train on the statistics rank 0 saves, whatever the number of processes. After a
    resume they are estimated again from the same batches."""

    def __init__(self, cfg, method, device):
        self.cfg, self.method, self.device = cfg, method, device

    def before_train(self) -> None:
        calibrate(self.cfg, self.method, self.method.loop_widths(), self.device)


class DeferredPeriodicWriter(d2_hooks.PeriodicWriter):
    """Detectron2's PeriodicWriter whose writers (metrics.json, TensorBoard events) are made
    when training starts: building a trainer writes nothing into OUTPUT_DIR, so a start that
    fails its checks leaves a previous run's files alone.

    It also writes after every step an evaluation followed (``evaluations``, registered before
    it): the writers record only the latest value of each key, so an evaluation between two
    writes (TEST.EVAL_PERIOD below LOG_PERIOD) would otherwise be lost from metrics.json."""

    def __init__(self, make_writers, period: int = 20,
                 evaluations: Optional["EvaluationHook"] = None):
        super().__init__([], period)
        self._make_writers = make_writers
        self._evaluations = evaluations

    def before_train(self) -> None:
        self._writers = self._make_writers()

    def after_step(self) -> None:
        it = self.trainer.iter
        if (it + 1) % self._period == 0 or it == self.trainer.max_iter - 1:
            super().after_step()
        elif self._evaluations is not None and self._evaluations.evaluated_iteration == it:
            for writer in self._writers:
                writer.write()
