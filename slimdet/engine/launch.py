"""Launching one or many processes, the way Detectron2 does.

With CUDA this is ``detectron2.engine.launch`` (NCCL, one process per GPU). Detectron2 0.6's
launcher asserts CUDA in every worker, so without CUDA ``--num-gpus N`` starts N CPU processes
over gloo instead (tests, CPU-only clusters), with the same local process group set-up.
"""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine import launch as d2_launch
from detectron2.utils import comm

from ..utils.d2compat import free_port, set_local_process_group

DEFAULT_TIMEOUT = timedelta(minutes=30)


def launch(main_func: Callable, num_gpus_per_machine: int, num_machines: int = 1,
           machine_rank: int = 0, dist_url: str | None = None, args: Sequence[Any] = (),
           timeout: timedelta = DEFAULT_TIMEOUT) -> None:
    """Run ``main_func(*args)`` in ``num_gpus_per_machine`` processes on each machine."""
    world_size = num_machines * num_gpus_per_machine
    if world_size <= 1 or torch.cuda.is_available():
        return d2_launch(main_func, num_gpus_per_machine, num_machines, machine_rank, dist_url,
                         args=tuple(args), timeout=timeout)
    logging.getLogger(__name__).warning(
        "CUDA is not available: starting %d CPU processes per machine over gloo",
        num_gpus_per_machine)
    if dist_url in (None, "auto"):
        if num_machines > 1:
            raise ValueError("--dist-url must be given (tcp://HOST:PORT) for multi-machine jobs")
        dist_url = f"tcp://127.0.0.1:{free_port()}"
    mp.spawn(_cpu_worker, nprocs=num_gpus_per_machine, daemon=False,
             args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url,
                   tuple(args), timeout))


def _cpu_worker(local_rank: int, main_func: Callable, world_size: int, per_machine: int,
                machine_rank: int, dist_url: str, args: tuple, timeout: timedelta) -> None:
    rank = machine_rank * per_machine + local_rank
    dist.init_process_group(backend="gloo", init_method=dist_url, world_size=world_size,
                            rank=rank, timeout=timeout)
    for i in range(world_size // per_machine):
        group = dist.new_group(list(range(i * per_machine, (i + 1) * per_machine)))
        if i == machine_rank:
            set_local_process_group(group)
    # The 2 cores of a small machine are shared by all workers.
    torch.set_num_threads(max(1, torch.get_num_threads() // per_machine))
    comm.synchronize()
    try:
        main_func(*args)
    finally:
        dist.destroy_process_group()
