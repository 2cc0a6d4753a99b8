"""Checkpoints out (atomic files, bounded folders) and the trainer's checkpointer.

Files are written to a temporary file beside the target, then renamed over it: a run killed
while saving leaves the previous checkpoint and ``last_checkpoint`` intact, and the temporary
file it leaves is removed by the next start (:func:`remove_stale_temp_files`). Reading goes
through :mod:`slimdet.checkpoint.format` (safe, any layout, checked against the model).
"""
from __future__ import annotations

import logging
import os
import re
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from detectron2.engine import hooks
from fvcore.common.checkpoint import Checkpointer

from ..utils.file_io import atomic_write, remove_stale_temp_files
from .format import (ALL_PARTS, CheckpointError, LoadReport, load_state, load_weights,
                     read_checkpoint)

logger = logging.getLogger("slimdet")

def restore_optimizer(optimizer: torch.optim.Optimizer, state: Dict[str, Any]) -> None:
    """The optimizer state of a resumed run (the trainer's state in a checkpoint: momentum
    buffers and the current ``lr``) into ``optimizer``, which keeps this run's other settings
    (weight decay, momentum ...: a resume with a changed config key logs it and runs with it;
    torch's ``load_state_dict`` alone would bring back the file's). An optimizer of another kind
    or other parameter groups (``SOLVER.OPTIMIZER`` or the trained parameters changed since the
    run started) is a :class:`CheckpointError` instead of a traceback at the first step."""
    new_run = ("--resume continues a run with the optimizer it was started with: to change "
               "it, start a new run (another OUTPUT_DIR) with MODEL.WEIGHTS set to the file")
    ours = [{k: v for k, v in group.items() if k not in ("params", "lr")}
            for group in optimizer.param_groups]
    try:
        optimizer.load_state_dict(state)
    except (ValueError, KeyError) as e:  # torch's check of the groups' number and sizes
        raise CheckpointError(f"its optimizer state does not fit this run's ({e}): "
                              f"{new_run}") from None
    # torch fills in the settings its own optimizers have gained since a file was saved; a
    # setting still missing is one the file's optimizer never had (SGD's state into LARS).
    lacking = sorted({k for settings, group in zip(ours, optimizer.param_groups)
                      for k in set(settings) - set(group)})
    if lacking:
        raise CheckpointError(f"its optimizer state is of another optimizer than this run's "
                              f"{type(optimizer).__name__} (no {', '.join(lacking)}): {new_run}")
    for settings, group in zip(ours, optimizer.param_groups):
        group.update(settings)


class AtomicSaving:
    """fvcore ``Checkpointer.save`` / ``tag_last_checkpoint`` with atomic files (a run killed
    while saving keeps the previous file and ``last_checkpoint``), for any fvcore checkpointer
    (:class:`SlimCheckpointer`, the detection checkpointers). ``fields``: constant top-level
    fields every saved file holds."""

    fields: Dict[str, Any] = {}  # replaced per instance, never mutated

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict(), **self.fields}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        path = os.path.join(self.save_dir, f"{name}.pth")
        self.logger.info("Saving checkpoint to %s", path)
        atomic_write(path, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(os.path.basename(path))

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        path = os.path.join(self.save_dir, "last_checkpoint")
        atomic_write(path, lambda f: f.write(last_filename_basename.encode()))


class SlimCheckpointer(AtomicSaving, Checkpointer):
    """fvcore's Checkpointer (model + extra checkpointables such as the trainer's optimizer,
    scheduler, scaler and hook states) whose files are replaced atomically, and which loads
    through :mod:`slimdet.checkpoint.format`:

    - :meth:`load` / :meth:`resume`: a checkpoint of this very model (``--resume``): every key
      must match and the checkpointables are restored.
    - :meth:`load_weights`: ``MODEL.WEIGHTS`` in any layout, strict for the parts the job
      needs, a one-line summary for the rest.

    ``trusted_weights`` (``MODEL.WEIGHTS_TRUSTED``) allows full unpickling of MODEL.WEIGHTS.
    ``fields``: constant top-level fields every saved file holds (a classifier's
    ``CLASSES_FIELD``, the class names its outputs mean).
    """

    def __init__(self, model, save_dir: str = "", *, save_to_disk: bool = True,
                 trusted_weights: bool = False, fields: Optional[Dict[str, Any]] = None,
                 **checkpointables):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.trusted_weights = trusted_weights
        self.fields = dict(fields or {})
        if save_dir and save_to_disk:
            remove_stale_temp_files(save_dir)

    # ---------------------------------------------------------------------------------- in
    def load(self, path: str, checkpointables: Optional[List[str]] = None) -> Dict[str, Any]:
        """Load ``path``, a checkpoint of this model, strictly; then the checkpointables
        (all by default). Returns the file's remaining fields (``iteration`` ...)."""
        if not path:
            return {}
        ckpt = read_checkpoint(path)
        load_state(self.model, ckpt, ALL_PARTS, "resuming from it")
        for key in self.checkpointables if checkpointables is None else checkpointables:
            if key not in ckpt.extra:
                raise CheckpointError(f"{path!r} has no {key!r} state to resume from (it is not "
                                      "a checkpoint saved during a slimdet run)")
            try:
                self.checkpointables[key].load_state_dict(ckpt.extra.pop(key))
            except CheckpointError as e:  # a checkpointable's own check (restore_optimizer)
                raise CheckpointError(f"{path!r}: {e}") from None
        logger.info("Loaded every part of the model%s from %s",
                    "" if checkpointables == [] else " and the trainer state", path)
        return ckpt.extra

    def last_checkpoint(self) -> str:
        """The file ``save_dir/last_checkpoint`` names; :class:`CheckpointError` if it is gone."""
        path = self.get_checkpoint_file()
        if not path or not os.path.isfile(path):
            tag = os.path.join(self.save_dir, "last_checkpoint")
            raise CheckpointError(
                f"{tag!r} names {os.path.basename(path) or 'nothing'!r}, which is not in "
                f"{self.save_dir!r}: point it at one of the model_*.pth files there, or start "
                "without --resume")
        return path

    def resume(self) -> Dict[str, Any]:
        """Continue from ``last_checkpoint`` (model and checkpointables)."""
        return self.load(self.last_checkpoint())

    def resume_or_load(self, path: str, *, resume: bool = True) -> Dict[str, Any]:
        """fvcore's entry point, strict both ways: the last checkpoint when resuming, else
        every part of the model from ``path`` (jobs with new heads use :meth:`load_weights`)."""
        if resume and self.has_checkpoint():
            return self.resume()
        if path:
            self.load_weights(path, ALL_PARTS, "loading every part of the model")
        return {}

    def load_weights(self, path: str, required: Union[str, Sequence[str]] = ALL_PARTS,
                     purpose: str = "this job") -> LoadReport:
        """Initialise the model from ``path`` (any layout): parts in ``required`` completely,
        other parts when the file has them; one summary line."""
        return load_weights(self.model, path, required, purpose, trusted=self.trusted_weights)


class PeriodicCheckpointer(hooks.PeriodicCheckpointer):
    """Detectron2's periodic checkpoint hook whose ``max_to_keep`` (``SOLVER.MAX_TO_KEEP``)
    also counts the periodic checkpoints already in the folder: after a resume, the files the
    earlier process saved are deleted in turn, not kept forever."""

    def before_train(self):
        super().before_train()
        if self.max_to_keep is not None:
            self.recent_checkpoints = self._periodic_files_on_disk()

    def step(self, iteration: int, **kwargs: Any) -> None:
        super().step(iteration, **kwargs)
        if self.max_to_keep is None:
            return
        self.recent_checkpoints = list(dict.fromkeys(self.recent_checkpoints))
        while len(self.recent_checkpoints) > self.max_to_keep:
            old = self.recent_checkpoints.pop(0)
            if os.path.exists(old) and not old.endswith(f"{self.file_prefix}_final.pth"):
                os.remove(old)

    def _periodic_files_on_disk(self) -> List[str]:
        folder = self.checkpointer.save_dir
        pattern = re.compile(rf"^{re.escape(self.file_prefix)}_(\d+)\.pth$")
        found = [(int(m.group(1)), name) for name in (os.listdir(folder) if os.path.isdir(folder) else [])
                 if (m := pattern.match(name))]
        return [os.path.join(folder, name) for _, name in sorted(found)]
