"""Checkpoints that survive a crash: written to a temporary file, then renamed into place."""
from __future__ import annotations

import os
from typing import Any, Dict

import torch
from fvcore.common.checkpoint import Checkpointer


class SlimCheckpointer(Checkpointer):
    """fvcore's Checkpointer (model + extra checkpointables such as the trainer's optimizer,
    scheduler, scaler and hook states) whose files are replaced atomically: a run killed while
    saving leaves the previous checkpoint and ``last_checkpoint`` intact. It also reads the
    reference implementation's files (SPEC §8), renamed to slimdet's keys."""

    def _load_file(self, f: str) -> Dict[str, Any]:
        from .reference import (CheckpointFormatError, is_reference_layout, read_checkpoint_file,
                                reference_to_slimdet)

        data = read_checkpoint_file(f)
        if "model" in data:
            return data
        if not is_reference_layout(data):
            raise CheckpointFormatError(
                f"{f!r} is neither a slimdet checkpoint (no 'model' field) nor a reference one")
        backbone = getattr(self.model, "backbone", self.model)
        depth = getattr(backbone, "depth", None)
        if depth is None:
            raise CheckpointFormatError(f"{f!r}: reference layout, but the model has no ResNet depth")
        return {"model": reference_to_slimdet(data.get("state_dict", data), depth, f)}

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
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


def atomic_write(path: str, write) -> None:
    """``write(f)`` to a temporary file beside ``path``, then rename it over ``path``: a crash
    mid-write leaves the old file (or none), never a truncated one."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
