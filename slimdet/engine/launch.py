"""Launching one or many processes, the way Detectron2 does.

With CUDA this is ``detectron2.engine.launch`` (NCCL, one process per GPU). Detectron2 0.6's
launcher asserts CUDA in every worker, so without CUDA ``--num-gpus N`` starts N CPU processes
over gloo instead (tests, CPU-only clusters), with the same local process group set-up.

Either way a user's mistake met in a worker (a config value, a data path ...) is not a worker
traceback: the worker hands the one-line message to the launching process, which raises
:class:`WorkerUserError` with it (and ``run_cli`` prints it and exits with status 2).
"""
from __future__ import annotations

import logging
import multiprocessing
import socket
from datetime import timedelta
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine import launch as d2_launch
from detectron2.utils import comm

from ..config import ConfigError
from ..utils.d2compat import release_process_groups, set_local_process_group
from ..utils.ddp import start_wait_group

DEFAULT_TIMEOUT = timedelta(minutes=30)
# Exit status of a worker that stopped on a user error (its message is in the error queue).
_WORKER_USER_ERROR = 2


class WorkerUserError(RuntimeError):
    """A user error met by a launched worker process; the message is the worker's one line."""


class _ReportUserErrors:
    """``main_func`` run in a worker: a user error goes to ``errors`` as one line and the worker
    exits with status 2 instead of printing a traceback (picklable, for spawn)."""

    def __init__(self, main_func: Callable, errors):
        self.main_func, self.errors = main_func, errors

    def __call__(self, *args):
        from .defaults import one_line, user_errors

        start_wait_group()  # collective: every worker, before any of them can diverge
        try:
            return self.main_func(*args)
        except user_errors() as e:
            self.errors.put(f"{one_line(e)}")
            raise SystemExit(_WORKER_USER_ERROR)


def launch(main_func: Callable, num_gpus_per_machine: int, num_machines: int = 1,
           machine_rank: int = 0, dist_url: str | None = None, args: Sequence[Any] = (),
           timeout: timedelta = DEFAULT_TIMEOUT) -> None:
    """Run ``main_func(*args)`` in ``num_gpus_per_machine`` processes on each machine."""
    world_size = num_machines * num_gpus_per_machine
    if world_size <= 1:
        return main_func(*args)
    if num_machines > 1 and dist_url in (None, "auto"):
        raise ConfigError("--num-machines > 1 needs --dist-url tcp://HOST0:PORT, the address of "
                          "machine rank 0 (the same on every machine)")
    if dist_url not in (None, "auto"):
        check_dist_url(dist_url)
    errors = multiprocessing.get_context("spawn").SimpleQueue()
    worker = _ReportUserErrors(main_func, errors)
    # When one worker stops, torch terminates the others and says so on stderr; the stopped
    # worker's own error is what the user needs to read.
    logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)
    try:
        if torch.cuda.is_available():
            return d2_launch(worker, num_gpus_per_machine, num_machines, machine_rank, dist_url,
                             args=tuple(args), timeout=timeout)
        _launch_cpu(worker, num_gpus_per_machine, num_machines, machine_rank, dist_url,
                    tuple(args), timeout)
    except mp.ProcessExitedException as e:
        if e.exit_code == _WORKER_USER_ERROR and not errors.empty():
            raise WorkerUserError(errors.get()) from None
        raise


def check_dist_url(dist_url: str) -> None:
    """A ``tcp://HOST:PORT`` whose port is not a number or whose host does not resolve is a
    :class:`ConfigError` now: torch's rendezvous would retry it until its timeout (30 minutes)
    before saying anything. Other schemes (``file://``, ``env://``) are torch's to check."""
    if not dist_url.startswith("tcp://"):
        return
    host, sep, port = dist_url[len("tcp://"):].rstrip("/").rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--dist-url {dist_url} is not tcp://HOST:PORT (a port 1-65535), the "
                          "address of machine rank 0")
    try:
        socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise ConfigError(f"--dist-url {dist_url}: host {host!r} does not resolve ({e}); give "
                          "machine rank 0's name or IP address") from None


def _launch_cpu(worker: Callable, per_machine: int, num_machines: int, machine_rank: int,
                dist_url: str | None, args: tuple, timeout: timedelta) -> None:
    logging.getLogger("slimdet").warning(
        "CUDA is not available: starting %d CPU processes per machine over gloo", per_machine)
    store = None
    if dist_url in (None, "auto"):
        # This process serves the rendezvous store, on a port the OS assigns as it binds it
        # (port 0), until the workers end. A port found free, released and then bound by rank 0
        # can be taken in between by another job starting at the same moment.
        store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False,
                              timeout=timeout)
        dist_url = f"tcp://127.0.0.1:{store.port}"
    mp.spawn(_cpu_worker, nprocs=per_machine, daemon=False,
             args=(worker, num_machines * per_machine, per_machine, machine_rank, dist_url,
                   store is not None, args, timeout))


def _cpu_worker(local_rank: int, main_func: Callable, world_size: int, per_machine: int,
                machine_rank: int, dist_url: str, store_served_by_launcher: bool, args: tuple,
                timeout: timedelta) -> None:
    rank = machine_rank * per_machine + local_rank
    if store_served_by_launcher:
        address = dist_url[len("tcp://"):]
        host, port = address.rsplit(":", 1)
        store = dist.TCPStore(host, int(port), is_master=False, timeout=timeout)
        dist.init_process_group(backend="gloo", store=store, world_size=world_size, rank=rank,
                                timeout=timeout)
    else:
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
        # Every process is done with every group before any tears them down: a worker that
        # destroyed its gloo groups while the other still finished its last collective
        # sometimes aborted at exit ("terminate called without an active exception", SIGABRT).
        # Only on success: after an error the launcher ends the others.
        comm.synchronize()
    finally:
        release_process_groups()
        dist.destroy_process_group()
