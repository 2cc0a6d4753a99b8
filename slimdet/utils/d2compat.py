"""The parts of Detectron2 (0.6) slimdet uses that Detectron2 does not offer publicly, each
behind one function, so that a Detectron2 upgrade is checked and fixed here:

- ``SimpleTrainer._data_loader_iter`` (a private attribute: the iterator ``SimpleTrainer``
  sets to ``iter(data_loader)`` in its constructor and takes each step's batch from with
  ``next()``). :func:`data_iterator` / :func:`set_data_iterator` read and replace it, so that a
  hook can look at the batch the next step will use without taking it
  (``slimdet.analysis.hooks.GradientDiagnosticsHook``). Detectron2 has no public way to see the
  coming batch.
- The body of ``DefaultTrainer.__init__``, which builds a ``SimpleTrainer`` / ``AMPTrainer``
  and a ``DetectionCheckpointer`` itself with no method to override either, and stores the
  inner trainer in the private ``DefaultTrainer._trainer`` (which ``run_step``, ``model``,
  ``data_loader`` and ``optimizer`` delegate to). :func:`init_default_trainer` is that body
  with those two made arguments (the slimmable detector's width-loop step; checkpointers that
  read files without running code: ``slimdet.d2.trainer``). Everything else (``build_model``,
  ``build_hooks``, ``test`` ...) stays Detectron2's overridable classmethods.

- ``detectron2.utils.comm._LOCAL_PROCESS_GROUP`` (the group of this machine's processes, which
  ``comm.get_local_rank`` / ``get_local_size`` read; Detectron2's own ``launch`` sets it for
  NCCL workers only). :func:`set_local_process_group` sets it for slimdet's CPU (gloo) workers;
  :func:`release_process_groups` drops it and ``comm._get_global_gloo_group``'s cached group
  when a worker ends.

``tests/d2/test_trainers.py`` builds a stock ``DefaultTrainer`` beside one made here and
compares their attributes and hooks, so an upgrade that changes the constructor fails a test.
"""
from __future__ import annotations

import logging
import weakref
from typing import Any, Callable, Iterator

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import (AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase,
                               create_ddp_model)
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger


def data_iterator(trainer: SimpleTrainer) -> Iterator[Any]:
    """The iterator ``trainer.run_step`` takes its next batch from."""
    return trainer._data_loader_iter


def set_data_iterator(trainer: SimpleTrainer, iterator: Iterator[Any]) -> None:
    """Make ``trainer.run_step`` take its batches from ``iterator`` from now on."""
    trainer._data_loader_iter = iterator


def set_local_process_group(group) -> None:
    """Make ``comm.get_local_rank()`` / ``get_local_size()`` answer for ``group`` (this
    machine's processes), as Detectron2's launcher does for its GPU workers."""
    comm._LOCAL_PROCESS_GROUP = group


def release_process_groups() -> None:
    """Drop Detectron2's references to process groups before ``destroy_process_group``: the
    group ``comm.all_gather`` / ``gather`` cache (``comm._get_global_gloo_group``, an
    ``lru_cache``) and ``comm._LOCAL_PROCESS_GROUP``. A gloo group still referenced there was
    destroyed only at interpreter exit, which now and then aborted the process ("terminate
    called without an active exception", SIGABRT: 4 of 25 two-process runs of one
    ``comm.all_gather``, none of 25 with the cache cleared)."""
    comm._get_global_gloo_group.cache_clear()
    comm._LOCAL_PROCESS_GROUP = None


def default_step_trainer(cfg, model, data_loader, optimizer) -> SimpleTrainer:
    """What ``DefaultTrainer.__init__`` builds: DDP (when several processes run), then
    ``AMPTrainer`` or ``SimpleTrainer``."""
    model = create_ddp_model(model, broadcast_buffers=False)
    return (AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer)(model, data_loader, optimizer)


def default_checkpointer(cfg, model, **checkpointables) -> DetectionCheckpointer:
    """What ``DefaultTrainer.__init__`` builds: a ``DetectionCheckpointer`` saving to OUTPUT_DIR."""
    return DetectionCheckpointer(model, cfg.OUTPUT_DIR, **checkpointables)


def init_default_trainer(trainer: DefaultTrainer, cfg,
                         build_step_trainer: Callable[..., SimpleTrainer] = default_step_trainer,
                         build_checkpointer: Callable[..., Any] = default_checkpointer) -> None:
    """``DefaultTrainer.__init__(trainer, cfg)`` (Detectron2 0.6), except that the inner trainer
    is ``build_step_trainer(cfg, model, data_loader, optimizer)`` (it wraps the model in DDP
    itself) and the checkpointer ``build_checkpointer(cfg, model, trainer=...)``; the defaults
    are what Detectron2 builds. Same order of construction as Detectron2's."""
    TrainerBase.__init__(trainer)
    if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
        setup_logger()
    cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
    model = trainer.build_model(cfg)
    optimizer = trainer.build_optimizer(cfg, model)
    data_loader = trainer.build_train_loader(cfg)
    trainer._trainer = build_step_trainer(cfg, model, data_loader, optimizer)
    trainer.scheduler = trainer.build_lr_scheduler(cfg, optimizer)
    # Saved with the trainer's state (iteration, optimizer, scheduler, hooks), as Detectron2's.
    trainer.checkpointer = build_checkpointer(cfg, trainer._trainer.model,
                                              trainer=weakref.proxy(trainer))
    trainer.start_iter = 0
    trainer.max_iter = cfg.SOLVER.MAX_ITER
    trainer.cfg = cfg
    trainer.register_hooks(trainer.build_hooks())
