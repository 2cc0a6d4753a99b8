"""The model inside a ``DistributedDataParallel`` wrapper; waiting for the main process."""
from __future__ import annotations

from datetime import timedelta
from typing import Optional

import torch.distributed as dist
from detectron2.utils import comm
from torch import nn
from torch.nn.parallel import DistributedDataParallel

# How long the other processes wait for the main process's evaluation. Evaluations run on the
# main process alone (kNN over the whole training set at every width: an hour or more on
# ImageNet), longer than the 30 minutes any other collective may wait before it fails.
MAIN_PROCESS_WAIT = timedelta(hours=24)
_wait_group: Optional[dist.ProcessGroup] = None


def unwrap(model: nn.Module) -> nn.Module:
    """``model.module`` for a DDP-wrapped model, else ``model`` (parameters, state dict and
    width state live on the wrapped module)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def start_wait_group() -> None:
    """Create the process group :func:`wait_for_main_process` waits in (gloo, with a timeout of
    :data:`MAIN_PROCESS_WAIT`). Collective: every process calls it once, at start-up (created
    later, its own set-up would wait under the short timeout of the main group)."""
    global _wait_group
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        _wait_group = dist.new_group(backend="gloo", timeout=MAIN_PROCESS_WAIT)


def wait_for_main_process() -> None:
    """Every process waits here until all arrive, however long the main process's work before
    it (an evaluation); a process that dies ends the wait of the others at once. Without the
    group (a single process, or a job not started by ``slimdet.engine.launch``) it is
    ``comm.synchronize()``."""
    if _wait_group is None:
        comm.synchronize()
    else:
        dist.barrier(group=_wait_group)
