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


def test_a_widths_landscape_does_not_depend_on_the_other_widths_asked_for(tmp_path):
    """SimCLR scores its narrower widths against the full width's outputs: the full width runs
    first whatever --widths says, so width 0.5's landscape is the same alone, with 1.0 or
    with 0.25 (and 0.25 with 1.0 given last is no KeyError)."""
    from slimdet.checkpoint import CheckpointError
    from slimdet.config import ConfigError
    from slimdet.utils.file_io import OutputError

    run = _tool("plot_landscape").run
    cfg = tiny_cfg("SimCLR")
    traj = tmp_path / "run" / "trajectory"
    traj.mkdir(parents=True)
    for it, state in _train_trajectory(cfg, steps=3):
        torch.save({"model": state, "iteration": it}, traj / f"iter_{it:07d}.pth")
    batches = [random_batch(8, seed=99)]
    losses = {}
    for widths in ([0.5], [1.0, 0.5, 0.25], [0.25, 1.0], [0.25, 0.5]):
        out = tmp_path / "_".join(map(str, widths))
        res = run(cfg, str(tmp_path / "run"), grid=3, widths=widths, batch_list=batches, out=str(out))
        grid = np.load(res["npz"])
        assert list(grid["widths"]) == sorted(widths, reverse=True)  # widest first, as asked
        for w, loss in zip(grid["widths"], grid["loss"]):
            losses.setdefault(float(w), []).append(loss)
    for w, found in losses.items():
        assert len(found) > 1
        for loss in found[1:]:
            np.testing.assert_allclose(loss, found[0], rtol=1e-6)

    # Its own files are replaced by a new call; a file of their name it did not write is not.
    out = tmp_path / "0.5"
    run(cfg, str(tmp_path / "run"), grid=3, widths=[0.5], batch_list=batches, out=str(out))
    (out / "landscape.npz").write_bytes(b"someone's grid")
    with pytest.raises(ConfigError, match=r"landscape\.npz exists and was not written by plot_landscape"):
        run(cfg, str(tmp_path / "run"), grid=3, widths=[0.5], batch_list=batches, out=str(out))
    assert (out / "landscape.npz").read_bytes() == b"someone's grid"
    run(cfg, str(tmp_path / "run"), grid=3, widths=[0.5], batch_list=batches, out=str(out),
        overwrite=True)
    assert "written_by" in np.load(out / "landscape.npz").files

    # Flags checked before the weights are read; another method's run is one CheckpointError.
    for kwargs, message in (({"span": 0.0}, r"--span 0: .* > 0"), ({"span": -1.0}, "--span -1"),
                            ({"widths": [1.5]}, r"--widths 1\.5 is outside the network's widths"),
                            ({"widths": [0.1]}, r"--widths 0\.1 is outside"),
                            ({"widths": [0.5, 0.5]}, "width 0.5 is given twice")):
        with pytest.raises(ConfigError, match=message):
            run(cfg, str(tmp_path / "run"), grid=3, batch_list=batches, out=str(tmp_path / "x"),
                **kwargs)
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        run(cfg, str(tmp_path / "run"), grid=3, batch_list=batches, out=str(tmp_path / "file"))
    with pytest.raises(CheckpointError, match=r"iter_0000003\.pth.*does not fit|iter_0000003\.pth.*no weights"):
        run(tiny_cfg("MoCoV2"), str(tmp_path / "run"), grid=3, batch_list=batches,
            out=str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()


def test_plot_metrics_names_skipped_lines_and_removes_its_stale_figures(tmp_path, capsys):
    from slimdet.engine.defaults import user_errors

    main = _tool("plot_metrics").main
    run = tmp_path / "run"
    run.mkdir()
    _synthetic_metrics(run / "metrics.json")  # its last line is partial
    assert len(main([str(run)])) == 4
    assert "skipped 1 line(s)" in capsys.readouterr().out
    # The run again without kNN results: accuracy.png of the earlier call is stale and removed;
    # a file of a figure's name the tool did not draw stays (and is refused without --overwrite).
    lines = (run / "metrics.json").read_text().splitlines()
    (run / "metrics.json").write_text("\n".join(lines[:3]) + "\n" + lines[3][:20] + "\n" +
                                      "\n".join(lines[4:10]) + "\n")
    written = main([str(run)])
    out = capsys.readouterr().out
    assert "warning: skipped 1 line(s)" in out and "(line 4;" in out
    assert sorted(os.path.basename(p) for p in written) == ["gradients.png", "losses.png", "lr.png"]
    assert not (run / "plots" / "accuracy.png").exists() and "removed" in out
    (run / "plots" / "accuracy.png").write_bytes(b"my figure")
    (run / "plots" / "lr.png").write_bytes(b"my other figure")
    with pytest.raises(user_errors(), match=r"lr\.png exists and was not written by plot_metrics"):
        main([str(run)])
    main([str(run), "--overwrite"])
    assert (run / "plots" / "accuracy.png").read_bytes() == b"my figure"  # never removed
    assert (run / "plots" / "lr.png").read_bytes() != b"my other figure"
    # A checkpoint instead of a run, a file as --out: one line each.
    torch.save({"model": {}}, tmp_path / "model.pth")
    with pytest.raises(user_errors(), match=r"model\.pth: not a text file"):
        main([str(tmp_path / "model.pth")])
    with pytest.raises(user_errors(), match="is a file, not a folder"):
        main([str(run), "--out", str(run / "metrics.json")])


def test_plot_metrics_of_a_file_that_is_not_a_metrics_json_is_one_line(tmp_path, capsys):
    """An eval_results.json (or eval_history.jsonl) given instead of a run's metrics.json drew
    nothing with exit 0, after a warning that its lines were cut off by a killed run, and left
    an empty plots/ folder; a metrics.json with only a first line cut off still plots nothing."""
    from slimdet.engine.run_folder import write_eval_results
    from tests.helpers import run_tool

    write_eval_results(str(tmp_path), {"knn_top1/w1": 30.0}, str(tmp_path / "model_final.pth"))
    write_eval_results(str(tmp_path), {"knn_top1/w1": 31.0}, str(tmp_path / "model_final.pth"))
    for name in ("eval_results.json", "eval_history.jsonl"):
        lines = len([line for line in (tmp_path / name).read_text().splitlines() if line.strip()])
        res = run_tool(capsys, "plot_metrics", [tmp_path / name])
        assert res.returncode == 2 and res.stderr.strip().splitlines() == [
            f"error: metrics file {tmp_path / name}: not a run's metrics.json (none of its "
            f"{lines} line(s) is a JSON record with an 'iteration'); give a run's OUTPUT_DIR or "
            "its metrics.json"], res.stderr
    assert not (tmp_path / "plots").exists()
    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / "metrics.json").write_text('{"data_time": 0.1, "ite')
    res = run_tool(capsys, "plot_metrics", [killed])
    assert res.returncode == 0 and "nothing to plot" in res.stderr and "skipped 1 line" in res.stdout


def test_load_results_reads_every_results_file_slimdet_writes(tmp_path):
    from slimdet.analysis.plots import load_results
    from slimdet.config import ConfigError

    record = {"weights": "m.pth", "results": {"top1/w1": 70.0, "top1/w0.5": 60.0}}
    (tmp_path / "eval_results.json").write_text(json.dumps(record, indent=2))
    (tmp_path / "eval_history.jsonl").write_text(
        json.dumps({**record, "results": {"top1/w1": 1.0}}) + "\n" + json.dumps(record) + "\n")
    (tmp_path / "widths.json").write_text(json.dumps(
        {"label": "a", "metric": "knn_top1", "trained_widths": [1.0],
         "rows": [{"width": 1.0, "macs": 1.0, "params": 1.0, "knn_top1": 50.0}]}))
    _synthetic_metrics(tmp_path / "metrics.json")
    assert load_results(str(tmp_path / "eval_results.json")) == record["results"]
    assert load_results(str(tmp_path / "eval_history.jsonl")) == record["results"]  # the latest
    assert load_results(str(tmp_path / "widths.json")) == {"knn_top1/w1": 50.0}
    assert load_results(str(tmp_path))["knn_top1/w0.5"] == 68.0  # a folder: its metrics.json
    (tmp_path / "cut.json").write_text(json.dumps(record, indent=2)[:40])
    with pytest.raises(ConfigError, match=r"cut\.json: not valid JSON"):
        load_results(str(tmp_path / "cut.json"))


def test_an_empty_trajectory_folder_leaves_the_runs_periodic_checkpoints_to_use(tmp_path):
    """A run stopped before TrajectoryHook's first save has an empty trajectory/ beside its
    model_*.pth files: the trajectory is those checkpoints (it was an error naming the empty
    folder); with iter_*.pth in trajectory/, those are used; with neither, one error naming
    both kinds."""
    from slimdet.analysis.landscape import load_trajectory

    cfg = tiny_cfg("MoCoV2")
    states = _train_trajectory(cfg, steps=2)
    run = tmp_path / "run"
    (run / "trajectory").mkdir(parents=True)
    for it, state in states:
        torch.save({"model": state, "iteration": it}, run / f"model_{it:07d}.pth")
    got = load_trajectory(str(run), build_model(cfg))
    assert [it for it, _ in got] == [0, 1, 2]
    for (_, want), (_, have) in zip(states, got):
        assert all(torch.equal(want[k], have[k]) for k in want)
    torch.save({"model": states[-1][1], "iteration": 2}, run / "trajectory" / "iter_0000002.pth")
    assert [it for it, _ in load_trajectory(str(run))] == [2]
    with pytest.raises(FileNotFoundError, match=r"no weight files in .*empty: neither "
                                                r"trajectory/iter_\*\.pth .* nor model_\*\.pth"):
        (tmp_path / "empty" / "trajectory").mkdir(parents=True)
        load_trajectory(str(tmp_path / "empty"))
