"""The evaluation and plotting tools never replace a file unasked, never write over their input,
check every output path and flag before the work, and say which metric they report."""
import hashlib
import json
import tempfile
from pathlib import Path

import pytest
import torch

from slimdet.checkpoint.export import read_export_metadata
from slimdet.engine import load_cfg
from slimdet.modeling import build_model
from tests.helpers import run_tool

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "configs/demo/slimclr_mocov2_demo.yaml"
PROBE = ROOT / "configs/demo/lincls_demo.yaml"
SUPERVISED = ROOT / "configs/demo/supervised_demo.yaml"
SMALL = ["MODEL.BACKBONE.BASE_CHANNELS", "8", "MODEL.MOCOV2.HIDDEN_DIM", "32", "MODEL.MOCOV2.DIM",
         "16", "MODEL.MOCOV2.QUEUE_SIZE", "64", "MODEL.DEVICE", "cpu", "DATASETS.TRAIN_SUBSET", "200",
         "DATASETS.TEST_SUBSET", "100", "SOLVER.IMS_PER_BATCH", "50", "TEST.IMS_PER_BATCH", "100"]


def _unwritable_folder() -> str:
    """A folder where no file can be made, even by root ('' if this machine has none)."""
    for folder in ("/sys", "/proc"):
        try:
            with tempfile.NamedTemporaryFile(dir=folder):
                pass
        except OSError:
            return folder
    return ""


def assert_one_line_error(res, *fragments):
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, (res.args, res.stderr[-3000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr[-3000:]
    assert "Traceback" not in res.stdout + res.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def sha(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A MoCo v2 demo checkpoint and a linear probe on it (untrained: evaluation only)."""
    root = tmp_path_factory.mktemp("ckpts")
    moco, probe = root / "moco.pth", root / "probe.pth"
    torch.save({"model": build_model(load_cfg(str(DEMO), SMALL)).state_dict()}, moco)
    torch.save({"model": build_model(load_cfg(str(PROBE), SMALL)).state_dict()}, probe)
    return moco, probe


def test_eval_widths_checks_outputs_first_and_reports_the_metric_the_results_hold(tmp_path, capsys,
                                                                                  checkpoints):
    moco, probe = checkpoints
    before = {p: sha(p) for p in checkpoints}
    existing = tmp_path / "existing.json"
    existing.write_text("my notes")
    # A JSON another tool wrote (eval_results.json), and two real curves of other metrics.
    other = tmp_path / "eval_results.json"
    other.write_text(json.dumps({"weights": "x.pth", "results": {"top1/w1": 50.0}}))
    curve = {"label": "a", "metric": "knn_top1", "trained_widths": [1.0],
             "rows": [{"width": 1.0, "macs": 3e7, "params": 7e5, "knn_top1": 60.0}]}
    knn = tmp_path / "knn.json"
    knn.write_text(json.dumps(curve))
    top1 = tmp_path / "top1.json"
    top1.write_text(json.dumps({**curve, "metric": "top1", "rows": [{**curve["rows"][0],
                                                                    "top1": 50.0}]}))
    ev = ["--config-file", DEMO, "--weights", moco, "--widths", "1.0"]
    out = tmp_path / "res.json"
    cases = [
        (ev + ["--output", moco], ["--output", "is the --weights file itself"]),
        (ev + ["--output", knn, "--compare", knn], ["is the --compare file itself"]),
        (ev + ["--output", existing], ["existing.json exists: pass --overwrite"]),
        (ev + ["--output", tmp_path], ["is a folder, not a file"]),
        (ev + ["--output", out, "--plot", tmp_path / "p.json"], ["--plot", ".json is not a format"]),
        (ev + ["--output", out, "--plot", tmp_path / "p"], ["--plot", "no extension"]),
        (["--config-file", DEMO, "--weights", moco, "--widths", "1", "1.0", "0.5", "--output", out],
         ["--widths: width 1 is given twice"]),
        (["--plot", tmp_path / "p.png", "--compare", other],
         ["eval_results.json: not an output of tools/eval_widths.py", "'label'"]),
        (["--plot", tmp_path / "p.png", "--compare", knn, top1],
         ["different metrics", "knn.json (knn_top1)", "top1.json (top1)"]),
        # Found after the evaluation, before anything is written.
        (ev + ["--output", out, "--metric", "top1", *SMALL], ["--metric top1: not in the results",
                                                              "knn_top1"]),
    ]
    if _unwritable_folder():
        cases.append((ev + ["--output", out, "--plot", f"{_unwritable_folder()}/a.png"],
                      ["--plot", "cannot write in"]))
    # A probe's results hold top1 (not the kNN default of a pre-training config).
    probe_out = tmp_path / "probe.json"
    good = ["--config-file", PROBE, "--weights", probe, "--widths", "1.0", "0.5",
            "--output", probe_out, *SMALL]
    results = [run_tool(capsys, "eval_widths", args) for args, _ in cases + [(good, [])]]
    for (args, fragments), res in zip(cases, results):
        assert_one_line_error(res, *fragments)
    assert not out.exists() and existing.read_text() == "my notes"
    assert {p: sha(p) for p in checkpoints} == before
    res = results[-1]
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads(probe_out.read_text())
    assert data["metric"] == "top1" and all(0 <= r["top1"] <= 100 for r in data["rows"])
    assert "top1 per width" in res.stdout and "nan" not in res.stdout
    # The probe's network has its classifier, counted as analyze_model counts it: at base
    # width 8 the backbone alone has 8.72 / 2.20 M MACs, the 10-way head adds 0.01 M at width 1.
    assert [round(r["macs"] / 1e6, 2) for r in data["rows"]] == [8.73, 2.2]
    # Its curve and a kNN curve are not drawn on one axis; its own is, and a second call
    # replaces the figure only with --overwrite.
    plot = tmp_path / "probe.png"
    mixed, alone, again, replaced = [run_tool(capsys, "eval_widths", args) for args in (
        ["--plot", plot, "--compare", probe_out, knn], ["--plot", plot, "--compare", probe_out],
        good, good + ["--overwrite"])]
    assert_one_line_error(mixed, "different metrics")
    assert alone.returncode == 0 and plot.stat().st_size > 10_000, alone.stderr[-3000:]
    assert_one_line_error(again, "probe.json exists: pass --overwrite")
    assert replaced.returncode == 0, replaced.stderr[-3000:]
    res = run_tool(capsys, "eval_widths", ["--plot", plot, "--compare", probe_out])
    assert_one_line_error(res, "probe.png exists: pass --overwrite")


def test_recalibrate_and_export_refuse_a_probe_or_an_existing_output(tmp_path, capsys,
                                                                     checkpoints):
    moco, probe = checkpoints
    earlier = tmp_path / "earlier.pth"
    earlier.write_bytes(b"an earlier file")
    recal = ["--num-batches", "1", *SMALL]
    results = [run_tool(capsys, tool, args) for tool, args in [
        ("recalibrate_bn", ["--config-file", PROBE, "--weights", probe, "--output",
                            tmp_path / "r.pth", *recal]),
        ("recalibrate_bn", ["--config-file", DEMO, "--weights", moco, "--output", earlier,
                            *recal]),
        ("export_width", ["--config-file", DEMO, "--weights", moco, "--width", "1.0",
                          "--output", earlier, *SMALL]),
        ("recalibrate_bn", ["--config-file", DEMO, "--weights", moco, "--output", earlier,
                            "--overwrite", *recal]),
    ]]
    assert_one_line_error(results[0], "is a linear probe", "train the probe on the result")
    assert not (tmp_path / "r.pth").exists()
    assert_one_line_error(results[1], "earlier.pth exists: pass --overwrite")
    assert_one_line_error(results[2], "earlier.pth exists: pass --overwrite")
    assert results[3].returncode == 0, results[3].stderr[-3000:]
    assert "backbone.conv1.weight" in torch.load(earlier, weights_only=True)["model"]

    # A file of the config's _BASE_ chain is an input too, even with --overwrite.
    import shutil
    for name in ("slimclr_mocov2_demo.yaml", "Base-FashionMNIST.yaml"):
        shutil.copy(Path(DEMO).parent / name, tmp_path / name)
    base = tmp_path / "Base-FashionMNIST.yaml"
    before = base.read_bytes()
    res = run_tool(capsys, "export_width", ["--config-file", tmp_path / "slimclr_mocov2_demo.yaml",
                                            "--weights", moco, "--width", "1.0", "--output",
                                            base, "--overwrite", *SMALL])
    assert_one_line_error(res, "--output", "_BASE_", "would replace the input")
    assert base.read_bytes() == before

    # The class names a classifier's file records go to the recalibrated file (an evaluation
    # of it checks the test set's classes as it would the input's); a file without a
    # classifier has no classes its outputs mean, whatever field it carries.
    supervised = build_model(load_cfg(str(SUPERVISED), SMALL)).state_dict()
    classes = [f"class{i}" for i in range(supervised["fc.weight"].shape[0])]
    for name, state, kept in (("named.pth", supervised, classes),
                              ("unnamed.pth", torch.load(moco, weights_only=True)["model"], None)):
        torch.save({"model": state, "classes": classes}, tmp_path / name)
        config = SUPERVISED if kept else DEMO
        res = run_tool(capsys, "recalibrate_bn", ["--config-file", config, "--weights",
                                                  tmp_path / name, "--output",
                                                  tmp_path / f"recal_{name}", *recal])
        assert res.returncode == 0, res.stderr[-3000:]
        assert torch.load(tmp_path / f"recal_{name}", weights_only=True).get("classes") == kept


def test_a_classifiers_file_with_a_pre_training_config_is_not_cut_to_its_backbone_unsaid(
        tmp_path, capsys, checkpoints):
    """A probe's file with the pre-training config: recalibrate_bn wrote its backbone alone,
    labelled with the probe's classes, and export_width --init-fc-classes a fresh fc in place
    of the trained classifier, both exit 0; a plain export said nothing of the classifier."""
    _, probe = checkpoints
    named = tmp_path / "probe.pth"
    torch.save({**torch.load(probe, weights_only=True),
                "classes": [f"class{i}" for i in range(10)]}, named)
    export = ["--config-file", DEMO, "--weights", named, "--width", "0.5", *SMALL]
    fresh_fc, recalibrated, features = tmp_path / "fc.pth", tmp_path / "r.pth", tmp_path / "w.pt"
    results = [run_tool(capsys, tool, args) for tool, args in [
        ("export_width", export + ["--init-fc-classes", "10", "--output", fresh_fc]),
        ("recalibrate_bn", ["--config-file", DEMO, "--weights", named, "--num-batches", "1",
                            "--output", recalibrated, *SMALL]),
        ("export_width", export + ["--format", "torchscript", "--output", features]),
    ]]
    assert_one_line_error(results[0], "--init-fc-classes 10", "holds a trained classifier",
                          "classifier (6)", "MODEL.METHOD MoCoV2")
    assert_one_line_error(results[1], "probe.pth holds a classifier (classifier (6)",
                          "the output would lose it", "recalibrate its pre-training checkpoint")
    assert not fresh_fc.exists() and not recalibrated.exists()
    res = results[2]
    assert res.returncode == 0, res.stderr[-3000:]
    assert "backbone only (pooled features): the classifier in" in res.stdout
    features_at_half = build_model(load_cfg(str(DEMO), SMALL)).backbone.feature_dim(0.5)
    assert torch.jit.load(str(features)).eval()(torch.randn(2, 1, 32, 32)).shape == (
        2, features_at_half)
    # Its record says features, without the probe's class names: they name nothing it returns.
    assert read_export_metadata(str(features), "torchscript")["output"] == {
        "kind": "features", "dim": features_at_half}
    # With the probe's own config the classifier is exported, and nothing is said.
    res = run_tool(capsys, "export_width", ["--config-file", PROBE, "--weights", named,
                                            "--width", "0.5", "--output", tmp_path / "p.pth",
                                            *SMALL])
    assert res.returncode == 0 and "backbone only" not in res.stdout, res.stderr[-3000:]
    assert torch.load(tmp_path / "p.pth", weights_only=True)["fc.weight"].shape[0] == 10
    # As TorchScript it carries the names of the classes its logits score, in label order.
    logits = tmp_path / "p.pt"
    res = run_tool(capsys, "export_width", ["--config-file", PROBE, "--weights", named, "--width",
                                            "0.5", "--format", "torchscript", "--output", logits,
                                            *SMALL])
    assert res.returncode == 0, res.stderr[-3000:]
    record = read_export_metadata(str(logits), "torchscript")
    probe_cfg = load_cfg(str(PROBE), SMALL)
    assert record["output"] == {"kind": "logits", "num_classes": 10, "classifier": "trained",
                                "classes": [f"class{i}" for i in range(10)]}
    assert record["network"]["method"] == probe_cfg.MODEL.METHOD and record["width"] == 0.5
    assert (record["input"]["mean"], record["input"]["std"], record["input"]["crop_size"]) == (
        list(probe_cfg.INPUT.PIXEL_MEAN), list(probe_cfg.INPUT.PIXEL_STD),
        probe_cfg.INPUT.CROP_SIZE)
    assert "output logits of 10 classes (trained, named)" in res.stdout


def test_analyze_model_reads_any_results_file_and_profiles_every_result_width(tmp_path, capsys,
                                                                             checkpoints):
    moco, _ = checkpoints
    run = tmp_path / "run"
    run.mkdir()
    record = {"weights": "m.pth", "results": {"knn_top1/w1": 60.0, "knn_top1/w0.75": 55.0,
                                              "knn_top1/w0.5": 50.0, "knn_top1/w2": 1.0}}
    (run / "eval_results.json").write_text(json.dumps(record, indent=2))
    (run / "eval_history.jsonl").write_text(json.dumps({**record, "results": {"knn_top1/w1": 1.0}})
                                            + "\n" + json.dumps(record) + "\n")
    (run / "metrics.json").write_text('{"iteration": 3, "knn_top1/w1": 61.0}\n{"iteration": 4')
    (tmp_path / "trunc.json").write_text(json.dumps(record, indent=2)[:60])
    taken = tmp_path / "taken.png"
    taken.write_bytes(b"someone's figure")

    def widths_output(name, macs):  # a tools/eval_widths.py output with these MACs per width
        rows = [{"width": w, "macs": m, "params": 1, "knn_top1": 50.0 + 10 * w}
                for w, m in zip((1.0, 0.5), macs)]
        path = tmp_path / name
        path.write_text(json.dumps({"label": name, "metric": "knn_top1", "rows": rows,
                                    "trained_widths": [1.0, 0.25], "config": "r18.yaml"}))
        return path

    # The demo network has 34.75 / 8.72 M MACs (to two decimals: inside the 1 % allowed).
    same = widths_output("same.json", (34.75e6, 8.72e6))
    other = widths_output("r50.json", (4.1e9, 1.1e9))
    base = ["--config-file", DEMO, "--latency-batch", "0"]
    plot = ["--widths", "1.0", "0.5", "--plot"]
    cases = [
        (base + ["--results", moco, "--plot", tmp_path / "a.png"], ["moco.pth", "not a text file"]),
        (base + ["--results", tmp_path / "trunc.json", "--plot", tmp_path / "a.png"],
         ["trunc.json: not valid JSON"]),
        (base + ["--results", run / "eval_results.json", "--plot", tmp_path / "a.json"],
         ["--plot", ".json is not a format"]),
        (base + ["--results", run / "eval_results.json", "--plot", taken],
         ["taken.png exists: pass --overwrite"]),
        (base + ["--device", "bogus"], ["--device 'bogus'"]),
        (base + ["--widths", "1", "1.0"], ["--widths: width 1 is given twice"]),
        (base + ["--results", other, "--plot", tmp_path / "o.png"],
         ["r50.json (made with r18.yaml) holds another network's accuracies",
          "width 1 had 4100.00 M MACs there, 34.75 M in --config-file"]),
    ]
    if not torch.cuda.is_available():
        cases.append((base + ["--device", "cuda"], ["--device cuda", "no CUDA device"]))
    if _unwritable_folder():
        cases.append((base + ["--results", run / "eval_results.json", "--plot",
                              f"{_unwritable_folder()}/a.png"], ["--plot", "cannot write in"]))
    good = [base + ["--results", run / "eval_results.json"] + plot + [tmp_path / "e.png"],
            base + ["--results", run / "eval_history.jsonl"] + plot + [tmp_path / "h.png"],
            base + ["--results", run] + plot + [tmp_path / "m.png"],
            base + ["--results", same] + plot + [tmp_path / "s.png"]]
    results = [run_tool(capsys, "analyze_model", a) for a in [a for a, _ in cases] + good]
    for (args, fragments), res in zip(cases, results):
        assert_one_line_error(res, *fragments)
    assert taken.read_bytes() == b"someone's figure"
    assert not (tmp_path / "o.png").exists()
    for res, name in zip(results[len(cases):], ("e.png", "h.png", "m.png", "s.png")):
        assert res.returncode == 0, res.stderr[-3000:]
        assert (tmp_path / name).stat().st_size > 10_000
        assert "no classifier head" in res.stdout  # a pre-training config: no fictitious head
        rows = {r.split("|")[1].strip(): r.split("|")[3].strip()
                for r in res.stdout.splitlines() if r.startswith("|") and "---" not in r}
        assert rows["1"] == "34.75" and rows["0.5"] == "8.72"  # the MACs eval_widths reports
    # The results' width 0.75 is profiled and drawn though --widths left it out; 2 is named.
    e, h, m, _ = results[len(cases):]
    assert "0.75" in e.stdout.split("FLOPs")[1] and "0.75" in h.stdout.split("FLOPs")[1]
    assert "holds knn_top1 of widths 2, outside the network's widths" in e.stdout
    assert "0.75" not in m.stdout.split("FLOPs")[1]  # metrics.json (from the folder) has w1 only
