"""The model inside a ``DistributedDataParallel`` wrapper; waiting for the main process; the
tensor collectives of a distributed evaluation (rows of unequal numbers gathered, tensors set
to the main process's)."""
from __future__ import annotations

from datetime import timedelta
from typing import List, Optional

import torch
import torch.distributed as dist
from detectron2.utils import comm
from torch import nn
from torch.nn.parallel import DistributedDataParallel

# How long the other processes wait for work the main process does alone, longer than the 30
# minutes any other collective may wait before it fails: the BN calibration of an evaluation's
# copy (every process then evaluates its share of the images with the statistics it
# broadcasts, broadcast_from_main), the evaluators that run on the main process only (the
# profiler) and the writers after an evaluation. The evaluations themselves are split between
# the processes and meet in the job's own collectives.
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


def _collective_device(device: torch.device, group: Optional[dist.ProcessGroup] = None
                       ) -> torch.device:
    """Where the tensors of a collective of ``group`` (default: the job's) must be: on the GPU
    for NCCL, on the CPU for gloo (CPU jobs, the wait group), which takes CPU tensors for every
    collective."""
    return device if dist.get_backend(group) == dist.Backend.NCCL else torch.device("cpu")


def all_gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Every process's ``tensor`` concatenated along dim 0 in rank order, on ``tensor``'s
    device, in every process. The numbers of rows may differ (each is padded to the largest
    for the collective, the padding dropped after); so may the other sizes of a process with no
    rows (a shard without images), every other process's being the same. One process:
    ``tensor`` itself."""
    if comm.get_world_size() == 1:
        return tensor
    device = _collective_device(tensor.device)
    local = tensor.to(device)
    shape = torch.tensor(local.shape, dtype=torch.long, device=device)
    shapes = [torch.empty_like(shape) for _ in range(comm.get_world_size())]
    dist.all_gather(shapes, shape)
    largest = torch.stack(shapes).max(0).values.tolist()
    padded = local.new_zeros(largest)
    padded[tuple(slice(0, n) for n in local.shape)] = local
    everyone = [torch.empty_like(padded) for _ in shapes]
    dist.all_gather(everyone, padded)
    rows = [int(s[0]) for s in shapes]
    return torch.cat([t[:n] for t, n in zip(everyone, rows)]).to(tensor.device)


def gather_to_main(tensor: torch.Tensor) -> Optional[List[torch.Tensor]]:
    """Every process's ``tensor`` (the same shape and dtype in all), in rank order, on the main
    process (on ``tensor``'s device); ``None`` on the others. One process: ``[tensor]``."""
    if comm.get_world_size() == 1:
        return [tensor]
    local = tensor.to(_collective_device(tensor.device))
    everyone = ([torch.empty_like(local) for _ in range(comm.get_world_size())]
                if comm.is_main_process() else None)
    dist.gather(local, everyone, dst=0)
    return [t.to(tensor.device) for t in everyone] if everyone is not None else None


def broadcast_from_main(tensors: List[torch.Tensor]) -> None:
    """Set each of ``tensors`` to the main process's, in place (the same shapes and dtypes, in
    the same order, in every process). The others wait in the :data:`MAIN_PROCESS_WAIT` group,
    so the main process may compute the values first however long it takes (a calibration);
    one flat tensor per dtype travels. One process: nothing to do."""
    if comm.get_world_size() == 1 or not tensors:
        return
    device = _collective_device(tensors[0].device, _wait_group)
    for dtype in dict.fromkeys(t.dtype for t in tensors):  # first-seen order, as in every process
        same = [t for t in tensors if t.dtype == dtype]
        flat = torch.cat([t.detach().reshape(-1) for t in same]).to(device)
        dist.broadcast(flat, src=0, group=_wait_group)
        if not comm.is_main_process():
            with torch.no_grad():
                for t, values in zip(same, flat.split([t.numel() for t in same])):
                    t.copy_(values.view_as(t))
