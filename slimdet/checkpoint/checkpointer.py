"""Checkpoints that survive a crash: written to a temporary file, then renamed into place."""
from __future__ import annotations

import os
from typing import Any

import torch
from fvcore.common.checkpoint import Checkpointer


class SlimCheckpointer(Checkpointer):
    """fvcore's Checkpointer (model + extra checkpointables such as the trainer's optimizer,
    scheduler, scaler and hook states) whose files are replaced atomically: a run killed while
    saving leaves the previous checkpoint and ``last_checkpoint`` intact."""

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        path = os.path.join(self.save_dir, f"{name}.pth")
        self.logger.info("Saving checkpoint to %s", path)
        _atomic_write(path, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(os.path.basename(path))

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        path = os.path.join(self.save_dir, "last_checkpoint")
        _atomic_write(path, lambda f: f.write(last_filename_basename.encode()))


def _atomic_write(path: str, write) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
