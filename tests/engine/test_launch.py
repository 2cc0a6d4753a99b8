"""The CPU (gloo) launcher: N worker processes meet on a rendezvous store that the launching
process serves, so no other job can take its port in between."""
import importlib
import socket
from pathlib import Path

import pytest
import torch.distributed as dist

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
    with pytest.raises(ConfigError, match="--dist-url"):
        launch_module._launch_cpu(_report_rank, 2, 2, 0, "auto", (), launch_module.DEFAULT_TIMEOUT)
