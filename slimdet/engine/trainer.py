"""The training engine: Detectron2's ``SimpleTrainer`` whose step is the SlimCLR width loop.

One class serves pre-training, supervised slimmable training and the linear probe (they differ
only in the method of ``cfg.MODEL.METHOD``). Mixed precision is fp16 + GradScaler on CUDA and
bf16 autocast on the CPU; DDP wraps the method when several processes run.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
import weakref
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from detectron2.engine import SimpleTrainer, TrainerBase, hooks
from detectron2.utils import comm
from detectron2.utils.events import (CommonMetricPrinter, JSONWriter, TensorboardXWriter,
                                     get_event_storage)
from iopath.common.file_io import g_pathmgr

from ..analysis.hooks import GradientDiagnosticsHook, TrajectoryHook
from ..checkpoint import (CLASSES_FIELD, CheckpointError, PeriodicCheckpointer, SlimCheckpointer,
                          count_parts, read_file, restore_optimizer)
from ..config import ConfigError, evaluation_widths
from ..data import build_train_loader, get_dataset
from ..data.datasets import EncodedImageDataset
from ..data.build import check_classes
from ..data.catalog import dataset_key
from ..evaluation import build_evaluators
from ..modeling import build_model
from ..modeling.methods import ClassificationMethod, classifier_keys
from ..modeling.slim import WidthLoop, compile_method
from ..solver import EpochClock, build_lr_scheduler, build_optimizer
from ..utils.d2compat import data_iterator
from ..utils.results import per_width_table
from .hooks import (CalibrationHook, DeferredPeriodicWriter, EpochCounterHook, EvaluationHook,
                    StaleStatisticsHook,
                    WidthScheduleHook, drop_untrained_widths)
from .defaults import one_line
from .run_folder import (EVAL_HISTORY, check_iterations_left, retire_stale_eval_results,
                         trim_metrics_for_resume)

logger = logging.getLogger("slimdet")


def resolve_device(cfg) -> torch.device:
    name = cfg.MODEL.DEVICE or ("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("MODEL.DEVICE cuda: torch finds no CUDA device on this machine; set "
                          "MODEL.DEVICE cpu, or '' to use a GPU when there is one")
    if name == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(name)


def wrap_ddp(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DDP when several processes run (CPU/gloo or one GPU per process), else the model.

    Each width uses its own BNs, so every step leaves some parameters unused; buffers are not
    broadcast (per-process BN statistics, as MoCo's per-GPU BN)."""
    if comm.get_world_size() == 1:
        return model
    kwargs = dict(broadcast_buffers=False, find_unused_parameters=True)
    if device.type == "cuda":
        kwargs["device_ids"] = [device.index]
    return torch.nn.parallel.DistributedDataParallel(model, **kwargs)


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN has bf16 kernels for this CPU (AVX512-BF16 or AMX). Without them bf16
    autocast runs on reference kernels: on this project's AVX2 CPU a ResNet-18 step took 10x
    its fp32 time (0.4-0.6 s fp32, 5.2-5.5 s bf16, batch 128 at 28 px)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch without the query: trust the config
        return True


class WidthLoopTrainer(SimpleTrainer):
    """Detectron2's ``SimpleTrainer`` whose step is the :class:`WidthLoop`: forward + backward at
    every active width on one batch (DDP ``no_sync`` for all but the last), then one optimizer
    step. Mixed precision: fp16 + GradScaler on CUDA, bf16 autocast on a CPU with native
    bf16 (fp32, with a warning, on one without: :func:`cpu_has_native_bf16`).

    Pre-training, the linear probe, supervised training (:class:`SlimTrainer`) and multi-width
    detection (``slimdet.d2.trainer``) all run this step.
    """

    def __init__(self, model, data_loader, optimizer, width_loop: WidthLoop, device: torch.device,
                 amp: bool = False, clip_grad_norm: float = 0.0):
        super().__init__(model, data_loader, optimizer)
        self.width_loop = width_loop
        self.device = device
        if amp and device.type == "cpu" and not cpu_has_native_bf16():
            logger.warning(
                "SOLVER.AMP.ENABLED: this CPU has no native bf16 (oneDNN supports none here), so "
                "bf16 autocast would run about 10x slower than fp32: training in fp32 instead")
            amp = False
        self.amp = amp
        self.clip_grad_norm = clip_grad_norm
        self.grad_scaler = torch.amp.GradScaler("cuda") if amp and device.type == "cuda" else None

    def _autocast(self):
        if not self.amp:
            return contextlib.nullcontext()
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return torch.autocast("cpu", dtype=torch.bfloat16)

    def _backward(self, loss: torch.Tensor) -> None:
        (self.grad_scaler.scale(loss) if self.grad_scaler else loss).backward()

    def run_step(self) -> None:
        assert self.model.training, "[WidthLoopTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(data_iterator(self))
        data_time = time.perf_counter() - start
        self.optimizer.zero_grad(set_to_none=True)
        logs = self.width_loop.run(self.model, data, self._backward, self._autocast, self.iter)
        self._write_step_metrics(logs, data_time)
        if self.grad_scaler is not None:
            if self.clip_grad_norm > 0:
                self.grad_scaler.unscale_(self.optimizer)
            self._clip()
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self._clip()
            self.optimizer.step()

    def _clip(self) -> None:
        if self.clip_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad_norm)

    @staticmethod
    def _write_step_metrics(logs: Dict[str, float], data_time: float) -> None:
        logs = dict(logs, data_time=data_time)
        all_logs = comm.gather(logs)
        if comm.is_main_process():
            storage = get_event_storage()
            storage.put_scalar("data_time", max(x.pop("data_time") for x in all_logs))
            # Raw per-step values in metrics.json / TensorBoard (the console printer smooths on
            # its own): curves and resumed runs compare step by step.
            storage.put_scalars(smoothing_hint=False,
                                **{k: float(np.mean([x[k] for x in all_logs])) for k in all_logs[0]})

    def state_dict(self):
        ret = super().state_dict()
        if self.grad_scaler is not None:
            ret["grad_scaler"] = self.grad_scaler.state_dict()
        ret["world_size"] = comm.get_world_size()
        return ret

    def load_state_dict(self, state_dict):
        # SimpleTrainer's, with the optimizer restored through a check of its kind and groups.
        TrainerBase.load_state_dict(self, state_dict)
        restore_optimizer(self.optimizer, state_dict["optimizer"])
        saved, now = state_dict.get("world_size"), comm.get_world_size()
        if saved is not None and saved != now:
            # The same total batch, samples and augmentation, but BN (per process, shuffle-BN)
            # sees other shares of each batch: not the loss sequence the run would have had.
            logger.warning("Resuming a run of %d process(es) with %d: SOLVER.IMS_PER_BATCH is "
                           "split anew, so BN statistics (per process) differ from the "
                           "uninterrupted run's from here on", saved, now)
        if self.grad_scaler is not None and "grad_scaler" in state_dict:
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])


class SlimTrainer(WidthLoopTrainer):
    """Build everything from ``cfg``; ``resume_or_load()`` then ``train()``."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.device = resolve_device(cfg)
        method = build_model(cfg).to(self.device)
        if comm.get_world_size() > 1 and cfg.MODEL.SYNC_BN:
            if self.device.type != "cuda":
                raise ConfigError(
                    f"MODEL.SYNC_BN True: torch's SyncBatchNorm runs on CUDA devices only, and "
                    f"these {comm.get_world_size()} processes run on the {self.device.type}: set "
                    "MODEL.SYNC_BN False (each process then normalises over its own share of "
                    "the batch)")
            method = torch.nn.SyncBatchNorm.convert_sync_batchnorm(method)
            if cfg.MODEL.SLIM.MODE == "sandwich":
                logger.warning("MODEL.SYNC_BN with MODEL.SLIM.MODE sandwich: the widths drawn "
                               "each step have no BN module of their own and normalise over "
                               "each process's share of the batch; the fixed widths synchronise")
        if cfg.MODEL.COMPILE:
            compile_method(method, cfg.MODEL.COMPILE)
        optimizer = build_optimizer(cfg, method)
        data_loader = build_train_loader(cfg, self.device)
        # Each width uses its own BNs, so every step leaves some parameters unused.
        model = wrap_ddp(method, self.device)
        super().__init__(model, data_loader, optimizer, WidthLoop.from_config(cfg, method.loop_widths()), self.device,
                         cfg.SOLVER.AMP.ENABLED, cfg.SOLVER.CLIP_GRAD_NORM)
        self.method = method
        self.iters_per_epoch = data_loader.iters_per_epoch
        # Every epoch key becomes an iteration through the clock (scaled under SOLVER.MAX_ITER).
        self.clock = EpochClock.from_config(cfg, self.iters_per_epoch)
        self.max_iter = self.clock.max_iter
        self.scheduler = build_lr_scheduler(cfg, optimizer, self.clock)
        self.checkpointer = SlimCheckpointer(method, cfg.OUTPUT_DIR,
                                             trusted_weights=cfg.MODEL.WEIGHTS_TRUSTED,
                                             fields=classifier_fields(cfg, method),
                                             trainer=weakref.proxy(self))
        self.start_iter = 0
        self._weights_loaded = False
        self._resumed_final_model = False  # resume_or_load: continuing a finished run
        self.register_hooks(self.build_hooks())

    # ----------------------------------------------------------------------------- set-up
    def build_hooks(self) -> List:
        cfg = self.cfg
        period = cfg.SOLVER.CHECKPOINT_PERIOD or self.iters_per_epoch
        self.width_schedule = WidthScheduleHook(self.width_loop, cfg.MODEL.SLIM.SLOW_START_EPOCH,
                                                self.clock)
        ret = [
            hooks.IterationTimer(),
            EpochCounterHook(self.iters_per_epoch),
            hooks.LRScheduler(self.optimizer, self.scheduler),
            self.width_schedule,
        ]
        ret += self.method.training_hooks(cfg, self.clock, self.data_loader)
        if cfg.MODEL.SLIM.MODE == "sandwich":
            ret.append(StaleStatisticsHook(self.method))
        if "backbone" in self.method.frozen_parts():
            ret.append(CalibrationHook(cfg, self.method, self.device))
        ret += self.extra_hooks()
        self.eval_hook = None
        if cfg.TEST.EVALUATORS:
            check_best_metric(cfg)
            eval_period = cfg.TEST.EVAL_PERIOD or self.clock.iteration(cfg.TEST.EVAL_PERIOD_EPOCHS)
            # The best evaluation is that of the widest width evaluated (TEST.WIDTHS may
            # leave out the full width).
            self.eval_hook = EvaluationHook(eval_period, self._evaluate,
                                            max(evaluation_widths(cfg)), cfg.TEST.BEST_METRIC)
            # Before the checkpointer: a checkpoint of the same step then holds that
            # evaluation's best-so-far, which a resumed run does not evaluate again.
            ret.append(self.eval_hook)
        if comm.is_main_process():
            ret.append(PeriodicCheckpointer(self.checkpointer, period,
                                            max_to_keep=cfg.SOLVER.MAX_TO_KEEP or None))
        if comm.is_main_process():
            ret.append(DeferredPeriodicWriter(self.build_writers, period=cfg.LOG_PERIOD,
                                              evaluations=self.eval_hook))
        return ret

    def extra_hooks(self) -> List:
        """Hooks added by other subsystems (gradient diagnostics, trajectories ...)."""
        ret: List = []
        if self.cfg.ANALYSIS.GRAD_PERIOD > 0:
            ret.append(GradientDiagnosticsHook(self.cfg.ANALYSIS.GRAD_PERIOD))
        if self.cfg.ANALYSIS.TRAJECTORY_PERIOD > 0:
            ret.append(TrajectoryHook(self.cfg.ANALYSIS.TRAJECTORY_PERIOD, self.cfg.OUTPUT_DIR))
        return ret

    def build_writers(self) -> List:
        """Made when training starts (``DeferredPeriodicWriter``): only then is OUTPUT_DIR written."""
        out = self.cfg.OUTPUT_DIR
        if out:
            g_pathmgr.mkdirs(out)
        if self.start_iter:
            dropped = trim_metrics_for_resume(os.path.join(out, "metrics.json"), self.start_iter,
                                              run_finished=self._resumed_final_model)
            if dropped:
                logger.info("Resuming at iteration %d: dropped %d row(s) of metrics.json that "
                            "the run records again", self.start_iter, dropped)
        return [CommonMetricPrinter(self.max_iter), JSONWriter(os.path.join(out, "metrics.json")),
                TensorboardXWriter(out)]

    def _evaluate(self) -> Dict[str, float]:
        # The last step run: self.iter in after_step, max_iter - 1 in after_train.
        trained = self.width_schedule.trained_widths(min(self.iter, self.max_iter - 1))
        cfg = self.cfg
        if not all(w in trained for w in cfg.MODEL.WIDTHS):
            # Before the slow start only the trained widths are evaluated: the others' numbers
            # would mean nothing, and calibrating and evaluating them costs what theirs does.
            widths = [w for w in evaluation_widths(cfg) if w in trained]
            untrained = [w for w in evaluation_widths(cfg) if w not in trained]
            if untrained:
                logger.warning("Widths %s have not trained yet (slow start): not evaluated",
                               ", ".join(f"{w:g}" for w in untrained))
            if not widths:
                return {}
            cfg = cfg.clone()
            cfg.defrost()
            cfg.TEST.WIDTHS = widths
            cfg.freeze()
        return self.test(cfg, self.method, trained_widths=trained)

    def resume_or_load(self, resume: bool = True) -> None:
        """``resume``: continue from OUTPUT_DIR/last_checkpoint if there is one (it must be a
        checkpoint of this very model); otherwise load MODEL.WEIGHTS (if set): all of the parts
        training never updates (``frozen_parts``), the rest where the file has it, and start at
        iteration 0."""
        if resume and self.checkpointer.has_checkpoint():
            self._resumed_final_model = self._last_checkpoint_is_final()
            self.checkpointer.resume()
            self.start_iter = self.iter + 1
            check_iterations_left(self.start_iter, self.max_iter, self.cfg.OUTPUT_DIR,
                                  self._iteration_limit())
            self._apply_schedule()
        else:
            if resume:
                logger.warning("--resume: OUTPUT_DIR %s holds no checkpoint to continue "
                               "(last_checkpoint), so this is a new run from iteration 0",
                               self.cfg.OUTPUT_DIR)
            self._load_initial_weights()
        self.data_loader.start_iter = self.start_iter
        self._weights_loaded = True

    def _load_initial_weights(self) -> None:
        """A new run's start: MODEL.WEIGHTS, or a warning when a frozen part stays random."""
        if self.cfg.MODEL.WEIGHTS:
            report = self.checkpointer.load_weights(
                self.cfg.MODEL.WEIGHTS, self.method.frozen_parts(),
                f"training {self.cfg.MODEL.METHOD} from MODEL.WEIGHTS")
            self.method.after_weights_loaded(report.left_out)
            self._warn_of_trained_classifier(report.loaded)
        elif self.method.frozen_parts():
            # Legitimate for a random-init baseline, a mistake otherwise: say which it is.
            logger.warning("MODEL.WEIGHTS is empty: the frozen %s keeps its random "
                           "initialisation (a random-init baseline; set MODEL.WEIGHTS to a "
                           "pre-training checkpoint to probe that)",
                           ", ".join(self.method.frozen_parts()))

    def _warn_of_trained_classifier(self, loaded: Sequence[str]) -> None:
        """A new classifier run whose MODEL.WEIGHTS already holds a trained classifier (a
        probe's or supervised model's file where the pre-training checkpoint was meant; both
        are called model_final.pth) starts from it instead of its initialisation: the accuracy
        it then reports is that of a continued run, not the linear evaluation of the backbone,
        and nothing else in its output tells the two apart."""
        if not isinstance(self.method, ClassificationMethod):
            return
        started = classifier_keys(loaded)
        if started:
            logger.warning(
                "MODEL.WEIGHTS %s holds a trained classifier (%s): this new run continues from "
                "it, not from a fresh initialisation, so its accuracy is not that of a new %s "
                "on the backbone; to evaluate a pre-training checkpoint, give that checkpoint "
                "(to continue this run's own training, --resume in its OUTPUT_DIR)",
                self.cfg.MODEL.WEIGHTS, count_parts(started), self.cfg.MODEL.METHOD)

    def _iteration_limit(self) -> str:
        """The config keys that set ``max_iter``, for messages."""
        if self.cfg.SOLVER.MAX_ITER:
            return f"SOLVER.MAX_ITER {self.max_iter}"
        return f"SOLVER.EPOCHS {self.cfg.SOLVER.EPOCHS:g} ({self.max_iter} iterations)"

    def _apply_schedule(self) -> None:
        """After a resume, the LR of the first step is this config's schedule at that step: the
        file's LR and base LRs belong to the schedule the run was started with, which a resume
        with another SOLVER.MAX_ITER / BASE_LR / schedule key has replaced (the scheduler would
        otherwise apply the new schedule from the second step on, at the old base LR)."""
        self.scheduler.base_lrs = [group["initial_lr"] for group in self.optimizer.param_groups]
        for group, lr in zip(self.optimizer.param_groups, self.scheduler.get_lr()):
            group["lr"] = lr

    def run_finished(self) -> bool:
        """Whether OUTPUT_DIR's last checkpoint is the run's final model, trained to this config's
        ``max_iter``: a resume then has nothing to train (``resume_or_load`` refuses it), and the
        demo and :func:`~slimdet.engine.linear_probe_run.run_linear_probe` only evaluate it."""
        return self.final_model_iterations() >= self.max_iter

    def final_model_iterations(self) -> int:
        """Iterations the run in OUTPUT_DIR trained to its model_final.pth (the last checkpoint),
        0 when its last checkpoint is not a final model. A final model of fewer iterations than
        this config's ``max_iter`` (a resume with a raised SOLVER.MAX_ITER) is a run to continue."""
        if not self._last_checkpoint_is_final():
            return 0
        iteration = read_file(self.checkpointer.last_checkpoint()).get("iteration",
                                                                        self.max_iter - 1)
        return int(iteration) + 1

    def _last_checkpoint_is_final(self) -> bool:
        """Whether OUTPUT_DIR's last checkpoint is a model_final.pth (by name; no file read)."""
        return (self.checkpointer.has_checkpoint() and
                os.path.basename(self.checkpointer.get_checkpoint_file()) == "model_final.pth")

    def state_dict(self):
        ret = super().state_dict()
        # Iteration t reads batch t % P of epoch t // P (P iterations per epoch) and every key
        # counted in epochs is an iteration through P: a resume checks both (load_state_dict).
        ret["ims_per_batch"] = self.cfg.SOLVER.IMS_PER_BATCH
        ret["iters_per_epoch"] = self.iters_per_epoch
        return ret

    def load_state_dict(self, state_dict):
        self._check_same_epochs(state_dict)
        super().load_state_dict(state_dict)

    def _check_same_epochs(self, state: Dict) -> None:
        """A resume continues the run's passes over the data: under another SOLVER.IMS_PER_BATCH
        or another number of iterations per epoch (another training set size), its next
        iteration would read another epoch's batch than the run's next one (whole epochs
        skipped or seen twice), metrics.json's ``epoch`` would jump, and every key counted in
        epochs (SOLVER.EPOCHS, the warm-up, the slow start, EVAL_PERIOD_EPOCHS) would fall at
        other iterations. That is refused (:class:`CheckpointError`); files without the record
        (older ones) are not checked."""
        if "iters_per_epoch" not in state:
            return
        batch, per_epoch = state.get("ims_per_batch"), state["iters_per_epoch"]
        now_batch = self.cfg.SOLVER.IMS_PER_BATCH
        if batch == now_batch and per_epoch == self.iters_per_epoch:
            return
        raise CheckpointError(
            f"the run was trained at SOLVER.IMS_PER_BATCH {batch} with {per_epoch} iterations "
            f"per epoch, and this config has SOLVER.IMS_PER_BATCH {now_batch} with "
            f"{self.iters_per_epoch} (DATASETS.TRAIN {self.cfg.DATASETS.TRAIN!r}, "
            f"DATASETS.TRAIN_SUBSET {self.cfg.DATASETS.TRAIN_SUBSET}): its iteration "
            f"{int(state.get('iteration', -1)) + 1} would be another point of the data and of "
            "every schedule counted in epochs; resume with the run's SOLVER.IMS_PER_BATCH and "
            "training set, or start a new run (another OUTPUT_DIR) with MODEL.WEIGHTS set to "
            "the file")

    def load_for_evaluation(self, resume: bool = False) -> None:
        """``--eval-only``'s weights (:func:`load_for_evaluation`)."""
        load_for_evaluation(self.checkpointer, self.cfg, resume)
        self._weights_loaded = True

    def train(self) -> Dict[str, float]:
        """Train; returns the last evaluation's results (with the best one's, TEST.BEST_METRIC)."""
        if not self._weights_loaded:  # a frozen probe must never train on random features
            self.resume_or_load(resume=False)
        super().train(self.start_iter, self.max_iter)
        if comm.is_main_process():
            stale = retire_stale_eval_results(self.cfg.OUTPUT_DIR)
            if stale:
                logger.info("Removed %s: it held an --eval-only's numbers of a checkpoint this "
                            "run has written anew (the record stays in %s)", stale,
                            os.path.basename(EVAL_HISTORY))
        results = self.eval_hook.results if self.eval_hook is not None else {}
        if comm.is_main_process() and "best_iter" in results:
            # best_iter is the iteration metrics.json records the evaluation under: that of
            # the step it followed (counted from 0), or max_iter for the one after training.
            best = int(results["best_iter"])
            logger.info("Last evaluation and the best one (iteration %d, i.e. after %d of %d "
                        "steps; highest %s at width %g):\n%s", best,
                        min(best + 1, self.max_iter), self.max_iter, self.cfg.TEST.BEST_METRIC,
                        self.eval_hook.full_width, per_width_table(results))
        return results

    # ----------------------------------------------------------------------------- evaluation
    @classmethod
    def test(cls, cfg, method, evaluators: Optional[List] = None,
             trained_widths: Optional[Sequence[float]] = None) -> Dict[str, float]:
        """Run the evaluators of ``cfg.TEST.EVALUATORS`` on ``method``; flat metric dict.
        ``trained_widths``: report only these widths (the others have not trained yet)."""
        results: Dict[str, float] = {}
        for evaluator in evaluators if evaluators is not None else build_evaluators(cfg):
            results.update(evaluator.evaluate(method))
        if trained_widths is not None:
            results = drop_untrained_widths(results, trained_widths, cfg.MODEL.WIDTHS)
        if comm.is_main_process() and results:
            logger.info("Evaluation results:\n%s", per_width_table(results))
        return results


def load_for_evaluation(checkpointer: SlimCheckpointer, cfg, resume: bool = False) -> str:
    """``--eval-only``: the run's last checkpoint (``resume``) or MODEL.WEIGHTS, with every
    weight evaluation reads (``eval_parts``) into ``checkpointer.model``; no weights at all is
    an error. A classifier's test set must have the classes it was trained on
    (:func:`check_classifier_classes`). Returns the file loaded."""
    # --resume in a folder without last_checkpoint (another OUTPUT_DIR than the run's, a run
    # killed before its first checkpoint): Detectron2 evaluates MODEL.WEIGHTS instead, which
    # is said, and an error about that file says why it was read.
    run_checkpoint = resume and checkpointer.has_checkpoint()
    no_run = ""
    if resume and not run_checkpoint:
        no_run = (f"--eval-only --resume: OUTPUT_DIR {cfg.OUTPUT_DIR} holds no run checkpoint "
                  "to evaluate (no last_checkpoint)")
    if run_checkpoint:
        path = checkpointer.last_checkpoint()
        classes = checkpointer.load(path, checkpointables=[]).get(CLASSES_FIELD)
    elif cfg.MODEL.WEIGHTS:
        path = cfg.MODEL.WEIGHTS
        if no_run:
            logger.warning("%s, so MODEL.WEIGHTS %s is evaluated instead", no_run, path)
        try:
            classes = checkpointer.load_weights(
                path, checkpointer.model.eval_parts(),
                f"evaluating {cfg.MODEL.METHOD} (--eval-only)").classes
        except CheckpointError as e:
            if not no_run:
                raise
            raise CheckpointError(f"{no_run}, so MODEL.WEIGHTS was read instead: {e}") from None
    elif no_run:
        raise ConfigError(f"{no_run}: set OUTPUT_DIR to the run's folder, or MODEL.WEIGHTS to "
                          "the checkpoint to evaluate")
    else:
        raise ConfigError("--eval-only needs the checkpoint to evaluate: set MODEL.WEIGHTS "
                          "(or --resume in a run's OUTPUT_DIR)")
    if isinstance(checkpointer.model, ClassificationMethod):
        check_classifier_classes(cfg, classes, path)
    return path


def check_best_metric(cfg) -> None:
    """``TEST.BEST_METRIC`` must be a metric the evaluators of ``TEST.EVALUATORS`` report
    (those that declare theirs, ``Evaluator.metrics``): another name (a typo, kNN's
    ``knn_top1`` written ``top1``) kept no best evaluation, with a warning at every evaluation
    of a run that ended with exit 0 and without the reference's best numbers."""
    if not cfg.TEST.BEST_METRIC:
        return
    declared = [evaluator.metrics() for evaluator in build_evaluators(cfg)]
    if any(names is None for names in declared):
        return  # an evaluator that does not say what it reports: checked when it has run
    reported = list(dict.fromkeys(name for names in declared for name in names))
    if cfg.TEST.BEST_METRIC not in reported:
        raise ConfigError(
            f"TEST.BEST_METRIC {cfg.TEST.BEST_METRIC!r} is not a metric of TEST.EVALUATORS "
            f"{list(cfg.TEST.EVALUATORS)} (they report {', '.join(reported) or 'none'}): no "
            "best evaluation would be kept; set one of those, or '' for none")


def classifier_fields(cfg, method) -> Dict[str, List[str]]:
    """What a classifier's checkpoints record beside the weights: the class names of
    DATASETS.TRAIN (``CLASSES_FIELD``), which its outputs mean; nothing for other methods or a
    set without class names."""
    if not isinstance(method, ClassificationMethod):
        return {}
    classes = get_dataset(cfg.DATASETS.TRAIN, cfg).classes
    return {CLASSES_FIELD: list(classes)} if classes is not None else {}


def check_classifier_classes(cfg, classes: Optional[Sequence[str]], weights: str) -> None:
    """An evaluation of a classifier on DATASETS.TEST scores right only if the test set has the
    classes it was trained on, in order: those its file ``weights`` records, or, for a file
    without them (older or reference files), those of the config's DATASETS.TRAIN. A
    difference is one :class:`ConfigError`; a comparison that cannot be made is a warning."""
    test = get_dataset(cfg.DATASETS.TEST, cfg).classes
    if test is None:
        return  # a format without class names: its labels are the file's own
    test_label = f"{dataset_key(cfg.DATASETS.TEST, cfg)} {cfg.DATASETS.TEST!r}"
    if classes is not None:
        check_classes(f"the classifier of {weights} (trained on these classes)", classes,
                      test_label, test)
        return
    try:
        train_set = get_dataset(cfg.DATASETS.TRAIN, cfg)
    except (FileNotFoundError, ConfigError) as e:
        train, reason = None, one_line(e)
    else:
        # An in-memory set (the config's default, often not the set the file was trained on
        # when only DATASETS.TEST is given) is no evidence: only a set on disk is compared.
        train = train_set.classes if isinstance(train_set, EncodedImageDataset) else None
        reason = (f"{weights} records no class names, and DATASETS.TRAIN "
                  f"{cfg.DATASETS.TRAIN!r} is not an image set on disk with class names: set it "
                  "to the set the classifier was trained on to compare them")
    if train is None:
        logger.warning("Cannot compare the classes of DATASETS.TEST with those the classifier "
                       "was trained on (%s): the test set must have the class folders of its "
                       "training set", reason)
        return
    check_classes(f"{dataset_key(cfg.DATASETS.TRAIN, cfg)} {cfg.DATASETS.TRAIN!r} (the "
                  f"config's training set; {weights} records no class names)", train,
                  test_label, test)

