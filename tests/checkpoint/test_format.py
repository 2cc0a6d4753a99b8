"""Checkpoints in and out: every reference layout loads exactly, jobs that need every weight are
strict, files are read without running code, broken files fail in one line, export of a width."""
import argparse
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from slimdet.checkpoint import (ALL_PARTS, CheckpointError, load_weights, read_checkpoint,
                                read_file)
from slimdet.checkpoint.export import export_width_state_dict
from slimdet.checkpoint.format import REF_MOCOV2, infer_architecture, rename_to_slimdet
from slimdet.engine import load_cfg
from slimdet.engine.trainer import SlimTrainer
from slimdet.layers import use_width
from slimdet.modeling import build_model
from slimdet.modeling.backbone import STAGE_BLOCKS, SlimResNet

ROOT = Path(__file__).resolve().parents[2]
DEMO = str(ROOT / "configs/demo/slimclr_mocov2_demo.yaml")
ENV = dict(os.environ, OMP_NUM_THREADS="1")
# A bottleneck ResNet-50 (the reference's network, features.0..15) at base width 8 on the demo's
# 1-channel 32 px images, small heads: real layouts, quick to build.
SMALL_R50 = ["MODEL.BACKBONE.DEPTH", "50", "MODEL.BACKBONE.BASE_CHANNELS", "8",
             "MODEL.WIDTHS", "[1.0, 0.5, 0.25]", "MODEL.MOCOV2.HIDDEN_DIM", "64",
             "MODEL.MOCOV2.DIM", "16", "MODEL.MOCOV2.QUEUE_SIZE", "32", "MODEL.MOCOV3.HIDDEN_DIM", "64",
             "MODEL.MOCOV3.DIM", "16", "MODEL.DEVICE", "cpu", "SOLVER.AMP.ENABLED", "False",
             "DATASETS.TRAIN_SUBSET", "512", "DATASETS.TEST_SUBSET", "100",
             "SOLVER.IMS_PER_BATCH", "64", "TEST.EVALUATORS", "[]"]
METHODS = {"mocov2": "MoCoV2", "mocov3": "MoCoV3", "probe": "LinearProbe",
           "supervised": "Supervised"}


def _cfg(kind, *extra):
    return load_cfg(DEMO, ["MODEL.METHOD", METHODS.get(kind, kind)] + SMALL_R50 + list(extra))


# ----------------------------------------------------------------- reference layouts, by hand
# Written from docs/method.md §8, independently of slimdet's renamer: our part -> the reference
# prefix (after DDP's "module."); backbone parts use the reference's flat block names.
REFERENCE_PREFIX = {
    "mocov2": {"backbone": "encoder_q.", "backbone_k": "encoder_k.", "projector": "encoder_q.fc.",
               "projector_k": "encoder_k.fc.", "queue": "queue", "queue_ptr": "queue_ptr"},
    "mocov3": {"backbone": "base_encoder.", "backbone_k": "momentum_encoder.",
               "projector": "base_encoder.fc.", "projector_k": "momentum_encoder.fc.",
               "predictor": "predictor."},
    "probe": {"backbone": "", "classifier": "fc."},
    "supervised": {"backbone": "", "fc": "fc."},
}
# Parts of our models the reference files do not have (slimdet's own bookkeeping).
# slimdet's own state the reference files cannot have (each keeps its initialisation).
NOT_IN_REFERENCE = {"mocov2": ["queue_filled"], "mocov3": [], "probe": ["trained_calibration"],
                    "supervised": []}


def _reference_backbone_key(key: str, depth: int = 50) -> str:
    m = re.match(r"layer(\d)\.(\d+)\.(.*)$", key)
    if not m:
        return key  # conv1.*, bn1.bn.{i}.*
    k = sum(STAGE_BLOCKS[depth][:int(m.group(1)) - 1]) + int(m.group(2))
    return f"features.{k}." + m.group(3).replace("downsample.", "shortcut.")


def reference_state(kind, model, depth: int = 50) -> dict:
    out = {}
    for key, value in model.state_dict().items():
        part, _, rest = key.partition(".")
        if part not in REFERENCE_PREFIX[kind] or rest == "bn_statistics_stale":
            continue  # (the stale-statistics flag is slimdet's own: reference files lack it)
        prefix = REFERENCE_PREFIX[kind][part]
        name = _reference_backbone_key(rest, depth) if part.startswith("backbone") else rest
        out["module." + prefix + name] = value.clone()
    return out


def save_reference(path, state):
    """Fields of the reference's saved dicts (docs/method.md §8), with the numpy scalars and
    argparse namespace such files carry."""
    torch.save({"epoch": 200, "global_step": 1, "arch": "s_resnet50", "state_dict": state,
                "best_acc1": np.float64(71.1), "args": argparse.Namespace(width_mult_list=[1.0]),
                "optimizer": {"state": {}, "param_groups": [{"lr": np.float32(0.1)}]},
                "scaler": {"scale": 65536.0}}, path)


def randomise(model):
    """Non-trivial weights and BN statistics everywhere, so a wrong index or a lost tensor
    changes the outputs."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                if name.endswith("running_var"):
                    t.copy_(0.5 + torch.rand(t.shape, generator=g))
                else:
                    t.copy_(0.1 * torch.randn(t.shape, generator=g))
    return model.eval()


def _max_diff(a, b) -> float:
    return (a.float() - b.float()).abs().max().item()


def outputs_per_width(kind, model, x):
    """What each kind computes at every width: features, head outputs, logits."""
    out = {}
    with torch.no_grad():
        for w in model.widths:
            with use_width(model, w):
                if kind in ("probe", "supervised"):
                    out[w] = {"logits": model.classify(x)}
                    continue
                feats = model.backbone(x)
                out[w] = {"features": feats, "projector": model.projector(feats)}
                if kind == "mocov3":
                    out[w]["predictor"] = model.predictor(out[w]["projector"])
        with use_width(model, 1.0):  # the momentum encoder runs at full width only
            if kind in ("mocov2", "mocov3"):
                out["momentum"] = {"keys": model.projector_k(model.backbone_k(x))}
    return out


def assert_same_outputs(kind, source, target, record):
    x = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    ref, got = outputs_per_width(kind, source, x), outputs_per_width(kind, target, x)
    for w in ref:
        for name in ref[w]:
            diff = _max_diff(ref[w][name], got[w][name])
            record.setdefault(w, {})[name] = diff
            assert diff == 0.0, (kind, w, name, diff)


@pytest.fixture(scope="module")
def reference_files(tmp_path_factory):
    """One reference-layout file per kind, made from a randomised model of ours."""
    folder = tmp_path_factory.mktemp("reference")
    files = {}
    for kind in METHODS:
        torch.manual_seed(0)
        source = randomise(build_model(_cfg(kind)))
        state = reference_state(kind, source)
        path = folder / f"{kind}.pth.tar"
        save_reference(path, state)
        files[kind] = (source, state, str(path))
    return files


def test_reference_files_have_the_reference_key_names(reference_files):
    """The hand-written map gives the names of docs/method.md §8 (and our heads match the
    reference's: no bias in MoCo v3's projector / predictor)."""
    _, mocov2, _ = reference_files["mocov2"]
    assert {"module.encoder_q.features.13.shortcut.1.bn.2.running_var", "module.encoder_q.fc.0.weight",
            "module.encoder_q.fc.2.bias", "module.encoder_k.fc.2.weight", "module.queue",
            "module.queue_ptr", "module.encoder_q.bn1.bn.2.weight"} <= set(mocov2)
    assert mocov2["module.queue"].shape == (16, 32)
    _, mocov3, _ = reference_files["mocov3"]
    heads = sorted({re.sub(r"\.bn\.\d+\.", ".bn.<i>.", k) for k in mocov3
                    if k.startswith(("module.base_encoder.fc.", "module.predictor."))})
    assert heads == sorted(
        [f"module.base_encoder.fc.1.bn.<i>.{f}" for f in
         ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]
        + [f"module.base_encoder.fc.4.bn.<i>.{f}" for f in  # last BN: no affine
           ("running_mean", "running_var", "num_batches_tracked")]
        + [f"module.predictor.1.bn.<i>.{f}" for f in
           ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]
        + ["module.base_encoder.fc.0.weight", "module.base_encoder.fc.3.weight",
           "module.predictor.0.weight", "module.predictor.3.weight"])
    _, probe, _ = reference_files["probe"]
    assert {"module.fc.linears.0.weight", "module.fc.linears.2.bias", "module.features.0.conv3.weight",
            "module.conv1.weight"} <= set(probe)
    _, supervised, _ = reference_files["supervised"]
    assert supervised["module.fc.weight"].shape == (10, 256) and "module.fc.bias" in supervised


REPORTED_DIFFS = {}


@pytest.mark.parametrize("kind", list(METHODS))
def test_reference_file_loads_exactly_through_the_api(kind, reference_files):
    source, state, path = reference_files[kind]
    target = build_model(_cfg(kind))
    report = load_weights(target, path, ALL_PARTS if kind != "mocov2" else
                          [p for p in REFERENCE_PREFIX[kind]], "the test")
    assert report.unused == []  # every key of the file was used ...
    assert sorted(report.left_out) == NOT_IN_REFERENCE[kind]  # ... and every key we expect came
    assert len(report.loaded) == len(state)
    target.eval()
    record = REPORTED_DIFFS.setdefault(kind, {})
    assert_same_outputs(kind, source, target, record)
    if kind == "mocov2":
        assert torch.equal(target.queue, source.queue)
    print(f"\n{kind}: max abs diff per width {record}")


@pytest.mark.parametrize("kind", list(METHODS))
def test_reference_file_loads_exactly_through_model_weights(kind, reference_files, tmp_path):
    """The engine's path: SlimTrainer + MODEL.WEIGHTS, as train_net.py runs it (--eval-only for
    the classifiers, training start for the pre-training methods)."""
    source, _, path = reference_files[kind]
    trainer = SlimTrainer(_cfg(kind, "MODEL.WEIGHTS", path, "OUTPUT_DIR", str(tmp_path)))
    if kind in ("probe", "supervised"):
        trainer.load_for_evaluation()
    else:
        trainer.resume_or_load(resume=False)
    trainer.method.eval()
    assert_same_outputs(kind, source, trainer.method, {})


@pytest.mark.parametrize("kind", list(METHODS))
def test_reference_file_exports_every_width(kind, reference_files, tmp_path):
    """export_width (API at every width, the tool at the narrowest) gives a plain network with
    the source's outputs at that width."""
    source, _, path = reference_files[kind]
    target = build_model(_cfg(kind))
    load_weights(target, path, target.eval_parts(), "export")
    x = torch.randn(3, 1, 32, 32)
    out = tmp_path / "sub" / "w0.25.pth"  # a folder that does not exist yet: created
    res = subprocess.run([sys.executable, str(ROOT / "tools/export_width.py"), "--config-file", DEMO,
                          "--weights", path, "--width", "0.25", "--output", str(out),
                          "MODEL.METHOD", METHODS[kind]] + SMALL_R50,
                         capture_output=True, text=True, env=ENV)
    assert res.returncode == 0, res.stderr[-2000:]
    for w in source.widths:
        state = export_width_state_dict(target, w)
        if w == 0.25:
            from_tool = torch.load(out, weights_only=True)
            assert from_tool.keys() == state.keys()
            assert all(torch.equal(from_tool[k], state[k]) for k in state)
        plain = SlimResNet(50, [1.0], base_channels=8, in_channels=1, cifar_stem=True,
                           num_classes=10 if "fc.weight" in state else 0, channel_multiplier=w)
        plain.load_state_dict({_bn0(k): v for k, v in state.items()}, strict=True)
        plain.eval()
        with torch.no_grad(), use_width(source, w):
            expected = source.classify(x) if kind in ("probe", "supervised") else source.backbone(x)
            assert _max_diff(plain(x), expected) < 1e-5, (kind, w)


def _bn0(key: str) -> str:
    """torchvision BN name -> a single-width SlimResNet's ``.bn.0`` (the inverse of export)."""
    return re.sub(r"((?:^|\.)(?:bn\d|downsample\.1))\.", r"\1.bn.0.", key)


@pytest.mark.parametrize("depth, base, widths", [
    (50, 64, [1.0, 0.35]),  # one ratio would say 716 / 2048 = 0.349609
    (50, 64, [1.0, 0.9, 0.7, 0.6, 0.3, 0.1]),
    (18, 8, [1.0, 0.75, 0.5, 0.25]),
])
def test_widths_are_the_simplest_that_give_every_bn_its_size(depth, base, widths):
    net = SlimResNet(depth, widths, base_channels=base)
    arch = infer_architecture(net.state_dict())
    assert arch.widths == tuple(widths)
    assert f"widths {widths}" in str(arch)
    # The inferred widths rebuild exactly the stored shapes.
    rebuilt = arch.build().state_dict()
    assert {k: v.shape for k, v in rebuilt.items()} == {k: v.shape for k, v in net.state_dict().items()}


def test_widths_that_size_every_layer_alike_are_read_as_the_simplest():
    # At base 8 (ResNet-18), 0.333333 and 0.33 give every layer the same channels: one network.
    arch = infer_architecture(SlimResNet(18, [1.0, 0.333333], base_channels=8).state_dict())
    assert arch.widths == (1.0, 0.33)
    # Sizes no width of up to 6 decimals gives: the widest layer's ratio, for the shape check.
    state = SlimResNet(18, [1.0, 0.5], base_channels=8).state_dict()
    state["bn1.bn.1.running_mean"] = torch.zeros(7)  # 7 of 8 in the stem, 32 of 64 at the end
    assert infer_architecture(state).widths == (1.0, 0.5)


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_reference_depth_is_read_off_the_blocks(depth):
    state = {"module.encoder_q." + _reference_backbone_key(k, depth): v
             for k, v in SlimResNet(depth, [1.0, 0.5], base_channels=8).state_dict().items()
             if k != "bn_statistics_stale"}  # slimdet's own flag: no reference file has it
    renamed, unused = rename_to_slimdet({"state_dict": state}, REF_MOCOV2)
    assert unused == []
    arch = infer_architecture({k[len("backbone."):]: v for k, v in renamed.items()})
    assert (arch.depth, arch.widths, arch.base_channels) == (depth, (1.0, 0.5), 8)
    state.pop(next(k for k in state if ".features.0." in k and k.endswith("conv1.weight")))
    renamed, _ = rename_to_slimdet({"state_dict": state}, REF_MOCOV2)
    assert infer_architecture({k[len("backbone."):]: v for k, v in renamed.items()}).depth == depth
    with pytest.raises(CheckpointError, match="match no ResNet depth"):
        rename_to_slimdet({"state_dict": {k: v for k, v in state.items()
                                          if ".features.1." not in k}}, REF_MOCOV2)


# --------------------------------------------------------------------------- strict / summary
def test_fine_tuning_summarises_what_it_did_not_load(reference_files, caplog):
    """A pre-training file into a probe: the classifier is new, the momentum side unused."""
    _, _, path = reference_files["mocov2"]
    probe = build_model(_cfg("probe"))
    with caplog.at_level("WARNING", logger="slimdet"):
        report = load_weights(probe, path, probe.frozen_parts(), "the probe")
    assert set(report.left_out) == {k for k in probe.state_dict()
                                    if k.startswith("classifier.")} | {"trained_calibration"}
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "left at initialisation: classifier (6)" in lines[0]
    assert "not used: queue, queue_ptr, projector (4), backbone_k (848), projector_k (4)" in lines[0]


def test_partial_part_and_missing_part_are_refused(reference_files, tmp_path):
    source, state, _ = reference_files["mocov2"]
    broken = dict(state)
    del broken["module.encoder_q.features.7.shortcut.1.bn.2.running_var"]
    path = tmp_path / "broken.pth"
    save_reference(path, broken)
    with pytest.raises(CheckpointError) as err:  # a frozen probe backbone: every weight
        load_weights(build_model(_cfg("probe")), str(path), ("backbone",), "the probe")
    msg = str(err.value)
    assert "broken.pth" in msg and "1 key(s) of the model missing" in msg
    assert "backbone.layer3.0.downsample.1.bn.2.running_var" in msg
    # Missing a part entirely: the classifier for --eval-only of a probe.
    _, _, pretrain = reference_files["mocov2"]
    probe = build_model(_cfg("probe"))
    with pytest.raises(CheckpointError, match=r"has no weights for 'classifier' \(6 tensors"):
        load_weights(probe, pretrain, probe.eval_parts(), "--eval-only")


def test_unknown_and_empty_files_are_named(reference_files, tmp_path):
    torch.save({"weights": torch.zeros(1)}, tmp_path / "odd.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    for name, needle in (("odd.pth", "neither a slimdet checkpoint"), ("empty.pth", "is empty"),
                         ("list.pth", "holds a list, not a dict"), ("", "is a folder")):
        with pytest.raises(CheckpointError, match=needle) as err:
            read_checkpoint(str(tmp_path / name))
        assert str(tmp_path / name) in str(err.value)
    # A supervised model evaluated from a pre-training file: its classifier would be random.
    _, _, pretrain = reference_files["mocov2"]
    supervised = build_model(_cfg("supervised"))
    with pytest.raises(CheckpointError, match=r"mocov2.pth.tar.*no weights for 'fc' \(2 tensors"):
        load_weights(supervised, pretrain, supervised.eval_parts(), "--eval-only")


def test_another_architecture_is_named(reference_files):
    _, _, path = reference_files["mocov2"]
    with pytest.raises(CheckpointError, match=r"holds a slimmable ResNet-50 with widths "
                       r"\[1.0, 0.5, 0.25\].*uses a slimmable ResNet-18"):
        load_weights(build_model(_cfg("mocov2", "MODEL.BACKBONE.DEPTH", "18")), path)
    with pytest.raises(CheckpointError, match=r"widths \[1.0, 0.5\]"):
        load_weights(build_model(_cfg("mocov2", "MODEL.WIDTHS", "[1.0, 0.5]")), path)


def test_probe_trainer_loads_its_frozen_backbone_before_the_first_step(reference_files, tmp_path):
    """MODEL.WEIGHTS is read once, by the trainer, before training (even when the caller does
    not call resume_or_load): the probe trains on the file's features."""
    source, _, path = reference_files["mocov2"]
    cfg = _cfg("probe", "MODEL.WEIGHTS", path, "OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_ITER", "1",
               "SOLVER.CHECKPOINT_PERIOD", "100")
    trainer = SlimTrainer(cfg)
    before = {k: v.clone() for k, v in trainer.method.backbone.state_dict().items()}
    assert not all(torch.equal(before[k], v) for k, v in source.backbone.state_dict().items())
    trainer.train()
    for k, v in source.backbone.state_dict().items():
        assert torch.equal(trainer.method.backbone.state_dict()[k], v), k


# -------------------------------------------------------------------------------------- safety
MARKER_CMD = "touch {}"


class Payload:
    """A pickle that runs a shell command when unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (MARKER_CMD.format(self.marker),)


def _run(tool, *args):
    return subprocess.run([sys.executable, str(ROOT / "tools" / tool), *map(str, args)],
                          capture_output=True, text=True, env=ENV)


def _one_line_error(res, *needles):
    assert res.returncode != 0
    assert "Traceback" not in res.stderr + res.stdout, res.stderr[-3000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture
def malicious(tmp_path):
    """(torch.save file, plain pickle file, marker path) of a payload that creates the marker."""
    marker = tmp_path / "MARKER"
    pth, pkl = tmp_path / "evil.pth", tmp_path / "evil.pkl"
    torch.save({"model": Payload(marker)}, pth)
    with open(pkl, "wb") as f:
        pickle.dump({"model": Payload(marker), "__author__": "x"}, f)
    return pth, pkl, marker


def test_malicious_files_never_run(malicious, tmp_path):
    pth, pkl, marker = malicious
    for path in (pth, pkl):
        with pytest.raises(CheckpointError, match=r"needs posix\.system.*MODEL\.WEIGHTS_TRUSTED"):
            read_file(str(path))
    assert not marker.exists()
    common = ["--config-file", DEMO]
    runs = [
        _run("train_net.py", *common, *SMALL_R50, "MODEL.WEIGHTS", pth, "OUTPUT_DIR", tmp_path / "o"),
        _run("export_width.py", *common, "--weights", pkl, "--width", "0.5", "--output",
             tmp_path / "x.pth", *SMALL_R50),
        _run("recalibrate_bn.py", *common, "--weights", pth, "--num-batches", "1", "--output",
             tmp_path / "r.pth", *SMALL_R50),
        _run("convert_to_d2.py", pth, "--slimmable", "-o", tmp_path / "d.pkl"),
        _run("convert_to_d2.py", pkl, "--width", "1.0", "-o", tmp_path / "d.pkl"),
    ]
    for res in runs:
        line = _one_line_error(res, "evil.p", "posix.system")
        assert "WEIGHTS_TRUSTED" in line or "--trust-checkpoint" in line
    assert not marker.exists()
    assert not (tmp_path / "x.pth").exists() and not (tmp_path / "d.pkl").exists()


def test_allowlisted_types_load_and_others_need_the_opt_in(tmp_path):
    from fractions import Fraction

    arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.int64(3),
              "args": argparse.Namespace(lr=0.1), "h": np.zeros(2, np.float16)}
    torch.save(arrays, tmp_path / "np.pth")
    data = read_file(str(tmp_path / "np.pth"))
    assert data["w"].tolist() == [[0, 1, 2], [3, 4, 5]] and data["args"].lr == 0.1
    # A Detectron2-style pickle written by numpy 1.x (``numpy.core`` names, protocol 2).
    raw = pickle.dumps({"model": {"w": np.ones(3, np.float32)}, "__author__": "x"}, protocol=2)
    (tmp_path / "old.pkl").write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert read_file(str(tmp_path / "old.pkl"))["model"]["w"].tolist() == [1, 1, 1]
    # Anything else: refused, naming the global and the opt-in; loads when trusted.
    torch.save({"x": Fraction(1, 3)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=r"needs fractions\.Fraction.*set MODEL\.WEIGHTS_TRUSTED True"):
        read_file(str(tmp_path / "other.pth"))
    assert read_file(str(tmp_path / "other.pth"), trusted=True)["x"] == Fraction(1, 3)


# ------------------------------------------------------------------ broken files, one line each
TRAIN = ["--config-file", DEMO, *SMALL_R50]
PROBE = ["--config-file", str(ROOT / "configs/demo/lincls_demo.yaml"), *SMALL_R50]
# --eval-only needs an evaluator (TEST.EVALUATORS [] is refused before any weights are read).
EVAL = ["TEST.EVALUATORS", "['KNNEvaluator']"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A short pre-training run of the small R-50 (3 periodic checkpoints + final)."""
    out = tmp_path_factory.mktemp("run")
    res = _run("train_net.py", *TRAIN, "SOLVER.MAX_ITER", "6", "SOLVER.CHECKPOINT_PERIOD", "2",
               "SOLVER.MAX_TO_KEEP", "0", "OUTPUT_DIR", out)
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def test_our_checkpoints_load_weights_only(run_dir):
    ckpt = read_checkpoint(str(run_dir / "model_final.pth"))
    assert ckpt.layout == "slimdet" and ckpt.extra["iteration"] == 5
    assert set(ckpt.extra["trainer"]) >= {"iteration", "optimizer", "hooks"}


def test_broken_inputs_fail_in_one_line(run_dir, tmp_path):
    good = (run_dir / "model_final.pth").read_bytes()
    (tmp_path / "truncated.pth").write_bytes(good[: len(good) // 2])
    (tmp_path / "notes.pth").write_text("these are my notes\n")
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "tv.pth")
    out = tmp_path / "o"
    cases = [
        (_run("train_net.py", *TRAIN, "MODEL.WEIGHTS", tmp_path / "truncated.pth", "OUTPUT_DIR", out),
         ["truncated.pth", "truncated or corrupt"]),
        (_run("export_width.py", *TRAIN[:2], "--weights", tmp_path / "notes.pth", "--width", "0.5",
              "--output", tmp_path / "e.pth", *SMALL_R50),
         ["notes.pth", "text file"]),
        (_run("train_net.py", "--eval-only", *TRAIN, *EVAL, "MODEL.WEIGHTS", tmp_path / "tv.pth",
              "OUTPUT_DIR", out),
         ["tv.pth", "torchvision-style single-width ResNet"]),
        (_run("train_net.py", "--eval-only", *PROBE, *EVAL, "MODEL.WEIGHTS",
              run_dir / "model_final.pth", "OUTPUT_DIR", out),
         ["model_final.pth", "no weights for 'classifier'"]),
        (_run("train_net.py", "--eval-only", *PROBE, *EVAL, "OUTPUT_DIR", out),
         ["--eval-only needs", "MODEL.WEIGHTS"]),
        (_run("train_net.py", *TRAIN, "MODEL.WEIGHTS", tmp_path / "nowhere.pth", "OUTPUT_DIR", out),
         ["nowhere.pth", "does not exist"]),
        (_run("export_width.py", *TRAIN[:2], "--weights", run_dir / "model_final.pth", "--width",
              "0.75", "--output", tmp_path / "e.pth", *SMALL_R50),
         ["--width 0.75", "[1.0, 0.5, 0.25]"]),
        (_run("convert_to_d2.py", tmp_path / "tv.pth", "--slimmable", "-o", tmp_path / "d.pkl"),
         ["tv.pth", "torchvision-style"]),
    ]
    for res, needles in cases:
        _one_line_error(res, *needles)
    assert not (tmp_path / "e.pth").exists() and not (tmp_path / "d.pkl").exists()


def test_resume_problems_fail_in_one_line(run_dir, tmp_path):
    import shutil

    # last_checkpoint naming a file that is gone.
    gone = tmp_path / "gone"
    shutil.copytree(run_dir, gone)
    (gone / "model_final.pth").unlink()
    res = _run("train_net.py", "--resume", *TRAIN, "SOLVER.MAX_ITER", "8", "OUTPUT_DIR", gone)
    _one_line_error(res, "last_checkpoint", "model_final.pth")
    # Resuming with another architecture.
    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    res = _run("train_net.py", "--resume", *TRAIN, "SOLVER.MAX_ITER", "8",
               "MODEL.WIDTHS", "[1.0, 0.5]", "OUTPUT_DIR", other)
    _one_line_error(res, "model_final.pth", "widths [1.0, 0.5, 0.25]", "widths [1.0, 0.5]")
    assert (other / "model_final.pth").read_bytes() == (run_dir / "model_final.pth").read_bytes()


def test_resume_cleans_stale_temp_files_and_keeps_max_to_keep(run_dir, tmp_path):
    import shutil
    import socket

    folder = tmp_path / "run"
    shutil.copytree(run_dir, folder)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid is free: a writer killed mid-write would leave such a file
    stale = folder / f"model_0000007.pth.tmp.{socket.gethostname()}.{dead.pid}"
    stale.write_bytes(b"half a checkpoint")
    live = folder / f"model_0000009.pth.tmp.{socket.gethostname()}.{os.getpid()}"
    live.write_bytes(b"being written")
    assert sorted(p.name for p in folder.glob("model_*.pth")) == [
        "model_0000001.pth", "model_0000003.pth", "model_0000005.pth", "model_final.pth"]
    res = _run("train_net.py", "--resume", *TRAIN, "SOLVER.MAX_ITER", "10",
               "SOLVER.CHECKPOINT_PERIOD", "2", "SOLVER.MAX_TO_KEEP", "2", "OUTPUT_DIR", folder)
    assert res.returncode == 0, res.stderr[-3000:]
    assert not stale.exists() and live.exists()  # only a dead writer's file is removed
    # Two periodic checkpoints kept, counting the ones the first process saved.
    assert sorted(p.name for p in folder.glob("model_*.pth")) == [
        "model_0000007.pth", "model_0000009.pth", "model_final.pth"]


# ----------------------------------------------------------------------------------- export
def test_export_width_one_loads_strictly_into_torchvision_resnet50(tmp_path):
    cfg = load_cfg("", ["MODEL.METHOD", "Supervised", "MODEL.WIDTHS", [1.0, 0.5],
                        "MODEL.NUM_CLASSES", 1000, "MODEL.DEVICE", "cpu"])
    model = randomise(build_model(cfg))
    state = export_width_state_dict(model, 1.0)
    path = tmp_path / "r50_w1.pth"
    torch.save(state, path)

    tv = torchvision.models.resnet50()
    tv.load_state_dict(torch.load(path), strict=True)
    tv.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(), use_width(model, 1.0):
        assert torch.allclose(tv(x), model.classify(x), atol=1e-4)
        tv.fc = torch.nn.Identity()
        assert torch.allclose(tv(x), model.backbone(x), atol=1e-5)

    # A narrower width exports to torchvision names with the sliced shapes.
    half = export_width_state_dict(model, 0.5)
    assert set(half) == set(state)
    assert half["conv1.weight"].shape == (32, 3, 7, 7)
    assert half["fc.weight"].shape == (1000, 1024)


def test_export_self_supervised_model_with_fresh_fc():
    cfg = load_cfg("", ["MODEL.METHOD", "MoCoV2", "MODEL.WIDTHS", [1.0, 0.5],
                        "MODEL.MOCOV2.QUEUE_SIZE", 16, "MODEL.DEVICE", "cpu"])
    model = build_model(cfg)
    assert "fc.weight" not in export_width_state_dict(model, 1.0)
    state = export_width_state_dict(model, 1.0, init_fc_classes=1000)
    torchvision.models.resnet50().load_state_dict(state, strict=True)


@pytest.mark.parametrize("method", ["MoCoV2", "MoCoV3", "SimCLR"])
def test_heads_start_as_the_reference_initialises_them(method):
    """Every head Linear: weight N(0, 0.01), zero bias (docs/method.md §1)."""
    model = build_model(load_cfg("", ["MODEL.METHOD", method, "MODEL.BACKBONE.DEPTH", 18,
                                      "MODEL.MOCOV2.QUEUE_SIZE", 16]))
    linears = [m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)
               and name.startswith(("projector.", "predictor."))]
    assert linears
    for linear in linears:
        assert abs(linear.weight.std().item() - 0.01) < 5e-4, linear
        assert linear.bias is None or not linear.bias.any()
    if method == "MoCoV3":
        assert all(linear.bias is None for linear in linears)


def test_recalibrate_bn_sets_each_width_statistics_to_data_averages():
    from slimdet.layers import recalibrate_bn

    net = SlimResNet(depth=18, widths=[1.0, 0.5], base_channels=8, in_channels=1, cifar_stem=True)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(6, 1, 16, 16, generator=g) * 2 + 3 for _ in range(3)]
    recalibrate_bn(net, batches, num_batches=3)
    assert net.training  # the mode is restored
    with torch.no_grad():
        stem_means = torch.stack([net.conv1(x).mean(dim=(0, 2, 3)) for x in batches]).mean(0)
    # Width 1.0 sees all 8 stem channels, width 0.5 the leading 4; each BN gets its own average.
    assert torch.allclose(net.bn1.bn[0].running_mean, stem_means, atol=1e-5)
    assert torch.allclose(net.bn1.bn[1].running_mean, stem_means[:4], atol=1e-5)
    # Deeper BNs of the narrow width were updated too (no longer the initial zeros / ones).
    assert net.layer4[0].bn1.bn[1].running_var.sub(1).abs().max() > 1e-3


def test_recalibrate_bn_tool_writes_only_what_it_read(reference_files, tmp_path):
    """A reference MoCo v2 file through tools/recalibrate_bn.py: the output holds the file's
    weights with new BN statistics, and nothing the file lacked (no invented queue_filled)."""
    source, _, path = reference_files["mocov2"]
    out = tmp_path / "recal.pth"
    res = _run("recalibrate_bn.py", "--config-file", DEMO, "--weights", path, "--num-batches", "2",
               "--output", out, *SMALL_R50)
    assert res.returncode == 0, res.stderr[-3000:]
    state = torch.load(out, weights_only=True)["model"]
    assert "queue_filled" not in state and torch.equal(state["queue"], source.queue)
    assert torch.equal(state["backbone.conv1.weight"], source.backbone.conv1.weight)
    assert not torch.equal(state["backbone.bn1.bn.1.running_mean"], source.backbone.bn1.bn[1].running_mean)
