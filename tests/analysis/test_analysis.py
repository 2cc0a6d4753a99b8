"""Analysis: gradient diagnostics, loss landscape, metric plots."""
import copy
import json
import math
import os

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch
from torch import nn

from slimdet.analysis import per_width_gradients, shared_parameters, width_loop_gradients
from slimdet.layers import set_width
from slimdet.layers.slimmable import SlimConv2d, SlimLinear, SwitchableBatchNorm1d, \
    SwitchableBatchNorm2d
from slimdet.modeling import build_model
from slimdet.modeling.slim import WidthLoop
from tests.helpers import random_batch, tiny_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tool(name):
    """Import tools/<name>.py (tools/ is a folder of scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_tool_{name}", os.path.join(ROOT, "tools", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _slice(module, param_name, w):
    """Width w's slice of a slimmable layer's parameter, written out from docs/method.md §1."""
    if isinstance(module, SlimConv2d):
        cin = int(module.in_channels * w) if module.slim_in else module.in_channels
        cout = int(module.out_channels * w) if module.slim_out else module.out_channels
    else:
        cin = int(module.in_features * w) if module.slim_in else module.in_features
        cout = int(module.out_features * w) if module.slim_out else module.out_features
    return (slice(0, cout),) if param_name == "bias" else (slice(0, cout), slice(0, cin))


def test_gradient_norms_and_cosines_equal_a_direct_computation():
    cfg = tiny_cfg("MoCoV2")
    method = build_model(cfg).train()
    loop = WidthLoop.from_config(cfg)
    data = random_batch(8, seed=5)
    before = copy.deepcopy(method.state_dict())

    diag = width_loop_gradients(method, data, loop)

    # Nothing changed: buffers (BN stats, queue, key encoder) and .grad are untouched.
    after = method.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in method.parameters())

    # Direct: the real training loop, recording the gradient each width's backward adds.
    twin = copy.deepcopy(method)
    params = dict(twin.named_parameters())
    per_width = []

    def backward(loss):
        old = {n: p.grad.clone() if p.grad is not None else torch.zeros_like(p) for n, p in params.items()}
        loss.backward()
        per_width.append({n: (p.grad if p.grad is not None else torch.zeros_like(p)) - old[n]
                          for n, p in params.items()})

    loop.run(twin, data, backward)
    slim = {}
    for mod_name, m in twin.named_modules():
        if isinstance(m, (SlimConv2d, SlimLinear)):
            for pn, _ in m.named_parameters(recurse=False):
                slim[f"{mod_name}.{pn}"] = (m, pn)
    switchable = {f"{mn}.{pn}" for mn, m in twin.named_modules()
                  if isinstance(m, (SwitchableBatchNorm1d, SwitchableBatchNorm2d))
                  for pn, _ in m.named_parameters()}
    shared = [n for n, p in params.items() if p.requires_grad and n not in switchable]
    assert set(shared) == {sp.name for sp in shared_parameters(twin)}
    full = per_width[0]
    for i, w in enumerate(loop.widths):
        g = per_width[i]
        norm_sq, dot, full_sq = 0.0, 0.0, 0.0
        for n in shared:
            s = _slice(*slim[n], w) if n in slim else tuple(slice(None) for _ in g[n].shape)
            # A width's gradient lies on its slice only.
            outside = g[n].clone()
            outside[s] = 0
            assert outside.abs().max() == 0
            norm_sq += float(g[n][s].double().pow(2).sum())
            dot += float((g[n][s].double() * full[n][s].double()).sum())
            full_sq += float(full[n][s].double().pow(2).sum())
        assert norm_sq > 0
        assert diag[f"grad_norm/w{w:g}"] == pytest.approx(math.sqrt(norm_sq), rel=1e-4)
        if i > 0:
            expected = dot / math.sqrt(norm_sq * full_sq)
            assert diag[f"grad_cos/w{w:g}"] == pytest.approx(expected, abs=1e-4)
            assert -1.0 <= diag[f"grad_cos/w{w:g}"] < 0.9999
    assert "grad_cos/w1" not in diag


class _Toy(nn.Module):
    """One slimmable linear layer; widths [1.0, 0.5]."""

    widths = [1.0, 0.5]

    def __init__(self):
        super().__init__()
        self.fc = SlimLinear(8, 6)


def test_cosine_is_one_for_identical_functions_of_the_shared_slice():
    model = _Toy()
    x = torch.randn(5, 4)
    target = torch.randn(5, 3)

    def on_slice():  # a loss that only reads the 0.5 slice, identical at both widths
        return ((x @ model.fc.weight[:3, :4].T + model.fc.bias[:3] - target) ** 2).mean()

    def losses(scale_sub):
        def gen():
            for w, scale in ((1.0, 1.0), (0.5, scale_sub)):
                set_width(model, w)
                yield w, scale * on_slice()
        return gen

    params = shared_parameters(model)
    same = per_width_gradients(params, losses(1.0))
    assert same["grad_cos/w0.5"] == pytest.approx(1.0, abs=1e-6)
    assert same["grad_norm/w1"] == pytest.approx(same["grad_norm/w0.5"], rel=1e-6)
    # Scaling changes the norm, not the direction; a sign flip gives -1.
    scaled = per_width_gradients(params, losses(3.0))
    assert scaled["grad_cos/w0.5"] == pytest.approx(1.0, abs=1e-6)
    assert scaled["grad_norm/w0.5"] == pytest.approx(3 * same["grad_norm/w1"], rel=1e-6)
    flipped = per_width_gradients(params, losses(-1.0))
    assert flipped["grad_cos/w0.5"] == pytest.approx(-1.0, abs=1e-6)


def _train_trajectory(cfg, steps: int = 5):
    """A real (tiny) training trajectory: the width loop + SGD, weights saved after each step."""
    method = build_model(cfg).train()
    loop = WidthLoop.from_config(cfg)
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.5, momentum=0.9)
    states = [(0, copy.deepcopy(method.state_dict()))]
    for it in range(steps):
        opt.zero_grad()
        loop.run(method, random_batch(8, seed=10 + it), lambda loss: loss.backward())
        opt.step()
        states.append((it + 1, copy.deepcopy(method.state_dict())))
    return states


def test_landscape_tool_writes_png_and_grid_centred_on_final_loss(tmp_path):
    run = _tool("plot_landscape").run

    cfg = tiny_cfg("MoCoV2")
    traj_dir = tmp_path / "run" / "trajectory"
    traj_dir.mkdir(parents=True)
    states = _train_trajectory(cfg, steps=3)
    for it, state in states:
        torch.save({"model": state, "iteration": it}, traj_dir / f"iter_{it:07d}.pth")
    batches = [random_batch(8, seed=99)]

    res = run(cfg, str(tmp_path / "run"), grid=3, batch_list=batches)

    for w in cfg.MODEL.WIDTHS:
        img = mpimg.imread(res["png"][float(w)])
        assert img.shape[:2] == (500, 600)  # figsize (6, 5) at dpi 100
        assert img[..., :3].std() > 0.05  # not blank
    grid = np.load(res["npz"])
    assert grid["loss"].shape == (3, 3, 3)
    assert grid["xs"][1] == 0.0 and grid["ys"][1] == 0.0
    # Independent: load the final weights into a fresh model and compute each width's task loss.
    fresh = build_model(cfg).train()
    fresh.load_state_dict(states[-1][1])
    b = batches[0]
    with torch.no_grad():
        ctx = fresh.prepare(b)
        for k, w in enumerate(grid["widths"]):
            set_width(fresh, float(w))
            expected = float(fresh.task_loss(fresh(b), ctx, is_full=(k == 0)).loss)
            assert grid["loss"][k, 1, 1] == pytest.approx(expected, rel=1e-5)
            assert grid["final_loss"][k] == pytest.approx(expected, rel=1e-5)
            # The plane is not flat and the final weights sit at the projected origin.
            assert grid["loss"][k].max() - grid["loss"][k].min() > 1e-3
    assert np.allclose(grid["trajectory"][-1], 0.0, atol=1e-6)
    assert list(grid["iterations"]) == [it for it, _ in states]


def _synthetic_metrics(path):
    rows = []
    for it in range(0, 100, 10):
        row = {"iteration": it, "lr": 0.03 * (1 - it / 100), "total_loss": 20 - it / 10}
        for w in (1.0, 0.5, 0.25):
            row[f"loss_task/w{w:g}"] = 7 - it / 50 + (1 - w)
            if w < 1:
                row[f"loss_distill/w{w:g}"] = 0.01 * w
                row[f"grad_cos/w{w:g}"] = 0.3 * w
            row[f"grad_norm/w{w:g}"] = 2 * w
        rows.append(row)
    rows.append({"iteration": 99, "knn_top1/w1": 70.0, "knn_top1/w0.5": 68.0, "knn_top1/w0.25": 65.0})
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
        f.write('{"iteration": 100, "lr": 0.0')  # a run killed mid-write


def test_plot_metrics_writes_pngs(tmp_path):
    main = _tool("plot_metrics").main

    _synthetic_metrics(tmp_path / "metrics.json")
    written = main([str(tmp_path)])
    names = sorted(os.path.basename(p) for p in written)
    assert names == ["accuracy.png", "gradients.png", "losses.png", "lr.png"]
    for p in written:
        img = mpimg.imread(p)
        assert img.shape[0] >= 300 and img.shape[1] >= 400 and img[..., :3].std() > 0.05


def test_load_metrics_and_accuracy_vs_cost_chart(tmp_path):
    from slimdet.analysis.plots import load_metrics, load_results, plot_accuracy_vs_cost, per_width

    _synthetic_metrics(tmp_path / "metrics.json")
    series = load_metrics(str(tmp_path))
    assert list(per_width(series, "loss_task")) == [1.0, 0.5, 0.25]
    assert series["lr"][-1][0] == 90  # the truncated last line is skipped
    results = load_results(str(tmp_path / "metrics.json"))
    assert results["knn_top1/w0.5"] == 68.0
    rows = [{"width": w, "params": 1e6 * w * w, "macs": 1e8 * w * w} for w in (1.0, 0.5, 0.25)]
    out = plot_accuracy_vs_cost(rows, results, str(tmp_path / "acc.png"), reference=True)
    assert mpimg.imread(out).shape[:2] == (450, 1200)
    with pytest.raises(ValueError, match="not in the results"):
        plot_accuracy_vs_cost(rows, results, str(tmp_path / "x.png"), metric="probe_top1")
