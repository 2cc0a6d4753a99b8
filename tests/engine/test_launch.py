"""The CPU (gloo) launcher: N worker processes meet on a rendezvous store that the launching
process serves, so no other job can take its port in between."""
import importlib
import os
import socket
from datetime import timedelta
from pathlib import Path

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from slimdet.config import ConfigError
from slimdet.engine.launch import WorkerUserError, launch
from slimdet.utils import d2compat

# The modules, not the functions named like them that their packages export.
launch_module = importlib.import_module("slimdet.engine.launch")
d2_launch_module = importlib.import_module("detectron2.engine.launch")


def _report_rank(out_dir: str) -> None:
    # Runs in each worker (spawned: a module-level function).
    dist.barrier()
    Path(out_dir, f"rank{dist.get_rank()}").write_text(str(dist.get_world_size()))


def _draw_seed(out_dir: str) -> None:
    from slimdet.engine.defaults import draw_seed, load_cfg

    cfg = load_cfg("", ["SEED", -1])
    note = draw_seed(cfg)
    Path(out_dir, f"rank{dist.get_rank()}").write_text(f"{cfg.SEED}\n{note}")


def _gather_then_record_groups_at_exit(out_dir: str) -> None:
    import atexit

    from detectron2.utils import comm

    comm.all_gather(dist.get_rank())  # caches Detectron2's gloo group

    def record() -> None:  # at interpreter exit: after launch's worker has torn down
        held = comm._get_global_gloo_group.cache_info().currsize
        Path(out_dir, f"rank{dist.get_rank() if dist.is_initialized() else 'x'}-{os.getpid()}"
             ).write_text(f"{held} {comm._LOCAL_PROCESS_GROUP is not None}")

    atexit.register(record)


def _slow_main_process(out_dir: str, seconds: float, wait) -> None:
    import time

    if dist.get_rank() == 0:
        time.sleep(seconds)  # work on the main process alone (the profiler, the writers)
    wait()
    Path(out_dir, f"rank{dist.get_rank()}").write_text("waited")


def _slow_main_process_broadcast(out_dir: str, seconds: float) -> None:
    import time

    import torch

    from slimdet.utils.ddp import broadcast_from_main

    values = [torch.full((3,), float(dist.get_rank())), torch.tensor([dist.get_rank()])]
    if dist.get_rank() == 0:
        time.sleep(seconds)  # the main process calibrates an evaluation's copy alone
        values[0].add_(0.5)
    broadcast_from_main(values)
    Path(out_dir, f"rank{dist.get_rank()}").write_text(
        " ".join(str(v) for t in values for v in t.tolist()))


def _user_mistake() -> None:
    raise ConfigError("SOLVER.BASE_LR: -1 is not a learning rate")


def test_two_workers_meet_while_a_port_found_free_is_taken(tmp_path, monkeypatch):
    # The race the launcher must not lose: a port that was free when it was found is bound by
    # another job before the rendezvous binds it. Detectron2's port finder (which slimdet's
    # launcher used to call, through slimdet.utils.d2compat) is made to return a port that this
    # test holds open.
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    monkeypatch.setattr(d2_launch_module, "_find_free_port", lambda: port)
    monkeypatch.setattr(d2compat, "_find_free_port", lambda: port, raising=False)
    try:
        launch(_report_rank, 2, args=(str(tmp_path),))
    finally:
        taken.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank0", "rank1"]
    assert all(p.read_text() == "2" for p in tmp_path.iterdir())


def test_a_user_error_in_a_worker_comes_back_as_one_line():
    with pytest.raises(WorkerUserError, match=r"^SOLVER.BASE_LR: -1 is not a learning rate$"):
        launch(_user_mistake, 2)


def test_a_multi_machine_job_needs_an_address():
    with pytest.raises(ConfigError, match="--num-machines > 1 needs --dist-url tcp://HOST0:PORT"):
        launch(_report_rank, 2, num_machines=2, dist_url="auto")


@pytest.mark.parametrize("url,match", [
    # .invalid never resolves (RFC 2606); torch retried it for its 30-minute timeout.
    ("tcp://node0.invalid:29500", r"^--dist-url tcp://node0.invalid:29500: host 'node0.invalid' "
                                  r"does not resolve \(.*\); give machine rank 0's name or IP"),
    ("tcp://127.0.0.1", r"^--dist-url tcp://127.0.0.1 is not tcp://HOST:PORT"),
    ("tcp://127.0.0.1:70000", r"is not tcp://HOST:PORT \(a port 1-65535\)"),
])
def test_a_dist_url_that_cannot_be_reached_is_one_line_at_once(url, match):
    with pytest.raises(ConfigError, match=match):
        launch(_report_rank, 2, num_machines=2, machine_rank=1, dist_url=url)


def test_a_second_job_started_from_the_command_line_does_not_need_the_first_ones_port(tmp_path):
    """Detectron2's --dist-url default is one fixed port per user: a job started beside another
    failed to bind it (EADDRINUSE, a traceback). slimdet's default is ``auto``: a free port."""
    from detectron2.engine import default_argument_parser as d2_parser

    from slimdet.engine.defaults import parse_tool_args, train_argument_parser

    args = parse_tool_args(train_argument_parser(), ["--num-gpus", "2"])
    assert args.dist_url == "auto"
    d2_port = int(d2_parser().parse_args([]).dist_url.rsplit(":", 1)[1])
    first_job = socket.socket()  # holds Detectron2's port, as a first job's rendezvous does
    try:
        first_job.bind(("127.0.0.1", d2_port))
        first_job.listen()
    except OSError:
        pass  # something else holds it already: the same situation
    try:
        launch(_report_rank, 2, dist_url=args.dist_url, args=(str(tmp_path),))
    finally:
        first_job.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank0", "rank1"]


def test_a_negative_seed_is_one_seed_drawn_for_every_process(tmp_path):
    """SEED -1: the data order and augmentation are functions of SEED, so every rank must draw
    the same one; it is written into the config (config.yaml records it) and logged."""
    launch(_draw_seed, 2, args=(str(tmp_path),))
    seeds = [p.read_text().splitlines() for p in sorted(tmp_path.iterdir())]
    assert len(seeds) == 2 and seeds[0] == seeds[1]
    seed, note = seeds[0]
    assert int(seed) >= 0 and note == f"SEED -1: drew seed {seed} (set SEED {seed} to run this again)"


def test_a_worker_leaves_no_process_group_for_interpreter_exit_to_destroy(tmp_path):
    """A gloo group Detectron2 still referenced (``comm.all_gather``'s cached group, the local
    group) was destroyed at interpreter exit, after ``destroy_process_group``, and now and then
    aborted the worker with SIGABRT ("terminate called without an active exception"): about one
    two-process job in six that had called ``comm.all_gather``
    (``scripts/check_gloo_teardown.py``). Every worker drops them first."""
    launch(_gather_then_record_groups_at_exit, 2, args=(str(tmp_path),))
    records = sorted(p.read_text() for p in tmp_path.iterdir())
    assert records == ["0 False", "0 False"]


def test_the_others_wait_for_the_main_process_longer_than_a_collective_may(tmp_path):
    """Work on the main process alone (BN calibration for an evaluation, main-process-only
    evaluators, writers) can outlast the timeout of the job's collectives (30 minutes; 2 s
    here): the other processes wait for it in a group of its own, also for the statistics a
    calibration broadcasts."""
    from detectron2.utils import comm

    from slimdet.utils.ddp import wait_for_main_process

    (tmp_path / "sync").mkdir()
    with pytest.raises(mp.ProcessRaisedException, match="Timed out waiting 2000ms"):
        # The job's own barrier gives up.
        launch(_slow_main_process, 2, args=(str(tmp_path / "sync"), 6.0, comm.synchronize),
               timeout=timedelta(seconds=2))
    assert not (tmp_path / "sync" / "rank1").exists()
    (tmp_path / "wait").mkdir()
    launch(_slow_main_process, 2, args=(str(tmp_path / "wait"), 6.0, wait_for_main_process),
           timeout=timedelta(seconds=2))
    assert sorted(p.name for p in (tmp_path / "wait").iterdir()) == ["rank0", "rank1"]
    (tmp_path / "broadcast").mkdir()
    launch(_slow_main_process_broadcast, 2, args=(str(tmp_path / "broadcast"), 6.0),
           timeout=timedelta(seconds=2))
    for rank in (0, 1):  # the main process's values, one flat tensor per dtype
        assert (tmp_path / "broadcast" / f"rank{rank}").read_text() == "0.5 0.5 0.5 0"
