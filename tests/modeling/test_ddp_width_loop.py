"""Under DDP (2 CPU processes over gloo), backward per width with ``no_sync()`` for all but the
last width gives every rank the average of the ranks' local gradients — including parameters
that the last width does not use (the other widths' BNs)."""
import copy
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    from slimdet.modeling import build_model
    from slimdet.modeling.slim import WidthLoop
    from tests.helpers import random_batch, tiny_cfg

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    cfg = tiny_cfg("MoCoV2")
    cfg.MODEL.MOCOV2.SHUFFLE_BN = False
    torch.manual_seed(0)
    method = build_model(cfg).train()
    local = copy.deepcopy(method)
    ddp = torch.nn.parallel.DistributedDataParallel(method, find_unused_parameters=True,
                                                    broadcast_buffers=False)
    data = random_batch(8, seed=rank)
    WidthLoop.from_config(cfg).run(ddp, data, lambda loss: loss.backward())
    WidthLoop.from_config(cfg).run(local, data, lambda loss: loss.backward())
    worst = 0.0
    checked = 0
    for (name, p_ddp), (_, p_loc) in zip(method.named_parameters(), local.named_parameters()):
        g = p_loc.grad if p_loc.grad is not None else torch.zeros_like(p_loc)
        g = g.clone()
        dist.all_reduce(g)
        g /= world
        if p_ddp.grad is None:
            assert g.abs().max() == 0, name
            continue
        worst = max(worst, (p_ddp.grad - g).abs().max().item())
        checked += 1
    torch.save({"worst": worst, "checked": checked}, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_ddp_per_width_backward_averages_local_gradients(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        r = torch.load(tmp_path / f"rank{rank}.pt")
        assert r["checked"] > 50
        assert r["worst"] < 1e-5, r
