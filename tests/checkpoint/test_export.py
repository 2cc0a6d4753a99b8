"""Export of any width: BN folded into the convolutions, TorchScript and ONNX files that run
without slimdet and agree with the eager model, the tool's checks and one-line errors."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import json

import pytest
import torch
import torch.nn.functional as F

from slimdet.checkpoint.export import (ExportError, deployable_width, eager_output,
                                       export_metadata, export_width_state_dict,
                                       read_export_metadata, run_exported, write_onnx,
                                       write_torchscript)
from slimdet.data.batch_transforms import eval_batch_transform
from slimdet.data.transforms import eval_input_record
from slimdet.layers import WidthAware, add_widths, recalibrate_bn
from slimdet.modeling import build_model
from tests.helpers import tiny_cfg

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, OMP_NUM_THREADS="1")
HAVE_ONNX = all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime"))
needs_onnx = pytest.mark.skipif(not HAVE_ONNX, reason="onnx / onnxruntime not installed "
                                "(optional extra: pip install -e .[onnx])")
FORMATS = ["torchscript", pytest.param("onnx", marks=needs_onnx)]


def _calibrated(method_name, width=0.6):
    cfg = tiny_cfg(method_name)
    cfg.MODEL.NUM_CLASSES = 10
    method = build_model(cfg).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # BN parameters and statistics far from the identity
        for m in method.backbone.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.5, 0.5, generator=g)
    add_widths(method.backbone, [width])
    batches = [torch.randn(8, 1, 16, 16, generator=g) * 2 + 1 for _ in range(2)]
    recalibrate_bn(method.backbone, batches, 2)  # every width: no statistic is the identity
    return method


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("method_name,width", [("MoCoV2", 0.6), ("Supervised", 0.5)])
def test_exported_file_equals_the_eager_model(fmt, method_name, width, tmp_path):
    method = _calibrated(method_name)
    model = deployable_width(method, width)
    kinds = {type(m) for m in model.modules()}
    assert not any(issubclass(k, torch.nn.modules.batchnorm._BatchNorm) for k in kinds)  # folded
    assert not any(isinstance(m, WidthAware) for m in model.modules())  # plain torch layers
    path = str(tmp_path / "new" / f"w.{fmt}")  # the folder does not exist yet
    (write_onnx if fmt == "onnx" else write_torchscript)(model, torch.randn(2, 1, 16, 16), path)
    x = torch.randn(5, 1, 16, 16)  # another batch size than the traced one
    want = eager_output(method, width, x)
    got = run_exported(path, fmt, x)
    assert got.shape == want.shape == ((5, 10) if method_name == "Supervised" else (5, 38 if width == 0.6 else 32))
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-4)


def _metadata_as_a_user_reads_it(path, fmt):
    """The record read without slimdet: torch.jit.load's extra files, onnxruntime's metadata."""
    if fmt == "torchscript":
        extra = {"slimdet.json": ""}
        torch.jit.load(path, _extra_files=extra)
        return json.loads(extra["slimdet.json"])
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return json.loads(session.get_modelmeta().custom_metadata_map["slimdet"])


def _prepared_as_the_record_says(images, record):
    """uint8 [B, C, H, W] images made network input from the record alone, as a program
    without slimdet would: resize the short side, centre crop, divide, normalise."""
    spec = record["input"]
    assert spec["layout"] == "NCHW" and spec["crop"] == "centre"
    x = images.float() / spec["pixel_divisor"]
    h, w = x.shape[-2:]
    short = spec["resize_short_side"]
    size = (short, int(short * w / h)) if h <= w else (int(short * h / w), short)
    x = F.interpolate(x, size=size, mode=spec["resize_interpolation"], align_corners=False,
                      antialias=spec["resize_antialias"])
    crop = spec["crop_size"]
    top, left = round((size[0] - crop) / 2), round((size[1] - crop) / 2)
    x = x[..., top:top + crop, left:left + crop]
    mean, std = (torch.tensor(spec[k]).view(1, -1, 1, 1) for k in ("mean", "std"))
    return (x - mean) / std


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("method_name,width", [("MoCoV2", 0.6), ("Supervised", 0.5)])
def test_exported_file_records_how_to_feed_it_and_what_it_returns(fmt, method_name, width,
                                                                  tmp_path):
    cfg = tiny_cfg(method_name)  # _calibrated's config: its input and network
    cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD = [0.3], [0.4]
    method = _calibrated(method_name)
    classes = [f"class{i}" for i in range(10)]
    network = {"method": method_name, "backbone": "SlimResNet", "depth": 18}
    record = export_metadata(method, width, "run/model.pth", network, eval_input_record(cfg),
                             classes=classes)
    path = str(tmp_path / f"w.{fmt}")
    (write_onnx if fmt == "onnx" else write_torchscript)(
        deployable_width(method, width), torch.randn(2, 1, 16, 16), path, metadata=record)
    for read in (_metadata_as_a_user_reads_it(path, fmt), read_export_metadata(path, fmt)):
        assert read == record
        assert read["slimdet_export"] == 1 and read["width"] == width
        assert read["network"] == network and read["weights"] == "run/model.pth"
        assert read["input"]["mean"] == [0.3] and read["input"]["std"] == [0.4]
        assert read["input"]["crop_size"] == 16 and read["input"]["resize_short_side"] == 18
        assert read["input"]["channels"] == 1 and read["input"]["channel_order"] == "grey"
    if method_name == "Supervised":
        assert record["output"] == {"kind": "logits", "num_classes": 10,
                                    "classifier": "trained", "classes": classes}
    else:  # no classifier: the file's class names would name nothing it returns
        assert record["output"] == {"kind": "features", "dim": 38}
    # Images of another size than the crop, prepared from the record alone, give what the
    # evaluation pipeline's input gives the eager model.
    images = torch.randint(0, 256, (3, 1, 20, 27), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(3))
    pipeline = eval_batch_transform(cfg)(images.clone())
    prepared = _prepared_as_the_record_says(images, record)
    assert torch.allclose(prepared, pipeline, atol=1e-5)
    assert torch.allclose(run_exported(path, fmt, prepared), eager_output(method, width, pipeline),
                          atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_file_without_a_record_is_one_line_naming_it(fmt, tmp_path):
    method = _calibrated("MoCoV2")
    bare = str(tmp_path / f"bare.{fmt}")
    (write_onnx if fmt == "onnx" else write_torchscript)(
        deployable_width(method, 1.0), torch.randn(2, 1, 16, 16), bare)
    with pytest.raises(ExportError, match="no slimdet metadata") as e:
        read_export_metadata(bare, fmt)
    assert bare in str(e.value) and "\n" not in str(e.value)
    garbage = tmp_path / f"garbage.{fmt}"
    garbage.write_bytes(b"not a model")
    with pytest.raises(ExportError, match=f"{garbage}: not a readable") as e:
        read_export_metadata(str(garbage), fmt)
    assert "\n" not in str(e.value)


def test_a_classifiers_class_names_must_match_its_outputs():
    cfg = tiny_cfg("Supervised")
    with pytest.raises(ExportError, match="run/model.pth: its 3 class names do not match the 10 "
                                          "outputs of its classifier at width 0.5"):
        export_metadata(_calibrated("Supervised"), 0.5, "run/model.pth", {},
                        eval_input_record(cfg), classes=["a", "b", "c"])


def test_torchvision_state_of_an_untrained_width_has_its_calibrated_statistics():
    method = _calibrated("Supervised")
    state = export_width_state_dict(method, 0.6)
    assert state["conv1.weight"].shape[0] == int(8 * 0.6)
    assert torch.equal(state["bn1.running_mean"], method.backbone.bn1.statistics_at(0.6).running_mean)
    assert torch.equal(state["bn1.weight"], method.backbone.bn1.bn[0].weight[:4])  # from width 1.0
    assert state["fc.weight"].shape == (10, int(64 * 0.6))


def _run(*args):
    return subprocess.run([sys.executable, str(ROOT / "tools/export_width.py"), *map(str, args)],
                          capture_output=True, text=True, env=ENV)


SMALL = ["MODEL.BACKBONE.BASE_CHANNELS", "8", "MODEL.MOCOV2.HIDDEN_DIM", "32", "MODEL.MOCOV2.DIM",
         "16", "MODEL.MOCOV2.QUEUE_SIZE", "64", "MODEL.DEVICE", "cpu", "DATASETS.TRAIN_SUBSET", "200",
         "SOLVER.IMS_PER_BATCH", "50"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_tool_writes_a_calibrated_untrained_width(fmt, tmp_path):
    from slimdet.engine import load_cfg

    cfg = load_cfg(str(ROOT / "configs/demo/slimclr_mocov2_demo.yaml"), SMALL)
    weights = tmp_path / "model.pth"
    torch.save({"model": build_model(cfg).state_dict()}, weights)
    common = ["--config-file", ROOT / "configs/demo/slimclr_mocov2_demo.yaml", "--weights", weights,
              "--width", "0.6", "--format", fmt]
    refused = _run(*common, "--output", tmp_path / "x", *SMALL)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "--calibrate-batches" in refused.stderr.strip().splitlines()[-1]
    out = tmp_path / "deploy" / f"w0.6.{fmt}"
    res = _run(*common, "--calibrate-batches", "2", "--output", out, *SMALL)
    assert res.returncode == 0, res.stderr[-3000:]
    assert out.is_file() and "max |difference| to the eager model" in res.stdout
    assert run_exported(str(out), fmt, torch.randn(3, 1, 32, 32)).shape == (3, int(64 * 0.6))
    # The file says how to feed it: the config's input, and features of the exported width.
    record = read_export_metadata(str(out), fmt)
    assert record["width"] == 0.6 and record["weights"] == str(weights)
    assert record["network"] == {"method": "MoCoV2", "backbone": "SlimResNet", "depth": 18,
                                 "base_channels": 8, "cifar_stem": True}
    assert record["input"] == {
        "layout": "NCHW", "dtype": "float32", "channels": cfg.MODEL.BACKBONE.IN_CHANNELS,
        "channel_order": "grey", "resize_short_side": 36, "resize_interpolation": "bilinear",
        "resize_antialias": True, "crop": "centre", "crop_size": cfg.INPUT.CROP_SIZE,
        "pixel_divisor": 255.0, "mean": list(cfg.INPUT.PIXEL_MEAN),
        "std": list(cfg.INPUT.PIXEL_STD), "normalize": "(pixel / 255 - mean[c]) / std[c]"}
    assert record["output"] == {"kind": "features", "dim": int(64 * 0.6)}
    assert (f"{out} records input NCHW 1x32x32 grey (short side resized to 36, centre crop), "
            "(pixel / 255 - mean [0.286]) / std [0.353]; output features of dim 38") in res.stdout


def test_a_fresh_fc_is_one_fc_in_every_export_whatever_the_global_generator():
    method = _calibrated("MoCoV2")
    torch.manual_seed(1)
    model = deployable_width(method, 0.5, init_fc_classes=10)
    torch.manual_seed(2)
    state = export_width_state_dict(method, 0.5, init_fc_classes=10)
    assert torch.equal(model[1].weight, state["fc.weight"]) and not state["fc.bias"].any()
    assert 0.005 < state["fc.weight"].std().item() < 0.02  # N(0, 0.01): drawn, not left empty
    x = torch.randn(3, 1, 16, 16)
    assert torch.allclose(model(x), eager_output(method, 0.5, x, init_fc_classes=10), atol=1e-6)


def test_a_written_file_that_fails_its_check_leaves_the_earlier_file(tmp_path):
    from slimdet.utils.file_io import atomic_write

    path = tmp_path / "w.ts"
    path.write_bytes(b"good")

    def refuse(written):
        assert open(written, "rb").read() == b"bad"  # the check sees the complete new file
        raise ValueError("differs")

    with pytest.raises(ValueError, match="differs"):
        atomic_write(str(path), lambda f: f.write(b"bad"), check=refuse)
    assert path.read_bytes() == b"good" and os.listdir(tmp_path) == ["w.ts"]
    atomic_write(str(path), lambda f: f.write(b"new"), check=lambda written: None)
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["w.ts"]


@pytest.fixture(scope="module")
def demo_weights(tmp_path_factory):
    from slimdet.engine import load_cfg

    cfg = load_cfg(str(ROOT / "configs/demo/slimclr_mocov2_demo.yaml"), SMALL)
    path = tmp_path_factory.mktemp("weights") / "model.pth"
    torch.save({"model": build_model(cfg).state_dict(), "trainer": {"iteration": 3}}, path)
    return path


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_tool_with_a_fresh_fc_replaces_an_earlier_file(fmt, demo_weights, tmp_path):
    out = tmp_path / f"w.{fmt}"
    out.write_bytes(b"an earlier export")
    # Required flags before the overrides, optional ones after them (README: any order).
    command = ["--config-file", ROOT / "configs/demo/slimclr_mocov2_demo.yaml", "--weights",
               demo_weights, "--width", "1.0", "--init-fc-classes", "10", "--output", out,
               *SMALL, "--format", fmt]
    refused = _run(*command)  # an existing file is replaced only when asked to
    assert refused.returncode == 2 and "exists: pass --overwrite" in refused.stderr, refused.stderr
    assert out.read_bytes() == b"an earlier export"
    res = _run(*command, "--overwrite")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "max |difference| to the eager model" in res.stdout
    assert run_exported(str(out), fmt, torch.randn(3, 1, 32, 32)).shape == (3, 10)
    assert sorted(os.listdir(tmp_path)) == [out.name]  # no temporary file left
    # An untrained fc's outputs name no class: the record says it is fresh.
    assert read_export_metadata(str(out), fmt)["output"] == {"kind": "logits", "num_classes": 10,
                                                            "classifier": "fresh"}


def test_export_tool_refuses_to_write_over_its_input_and_bad_flag_values(demo_weights, tmp_path):
    import hashlib

    digest = hashlib.sha1(demo_weights.read_bytes()).hexdigest()
    common = ["--config-file", ROOT / "configs/demo/slimclr_mocov2_demo.yaml", "--weights",
              demo_weights, "--width", "1.0"]
    alias = tmp_path / "alias.pth"
    alias.symlink_to(demo_weights)
    cases = [(["--output", demo_weights], ["--output", "is the --weights file itself"]),
             (["--output", alias], ["alias.pth", "is the --weights file itself"]),
             (["--format", "torchscript", "--check-batch", "0", "--output", tmp_path / "x"],
              ["--check-batch 0"]),
             (["--init-fc-classes", "-1", "--output", tmp_path / "x"], ["--init-fc-classes -1"])]
    for extra, fragments in cases:
        res = _run(*common, *extra, *SMALL)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.stderr
        assert all(f in lines[0] for f in fragments), lines[0]
    assert hashlib.sha1(demo_weights.read_bytes()).hexdigest() == digest
    assert not (tmp_path / "x").exists()


def test_a_probes_untrained_width_is_exported_only_with_its_own_calibration(tmp_path):
    """The classifier of a probe's untrained width was trained on BN statistics of its own
    calibration; exporting it with other ones gave other logits and accuracy, exit 0."""
    from slimdet.engine import load_cfg

    config = ROOT / "configs/demo/lincls_demo.yaml"
    probe = ["TEST.WIDTHS", "[1.0, 0.6, 0.5, 0.25]", "TEST.CALIBRATE_BATCHES", "2",
             "DATASETS.TRAIN_SUBSET", "200", "SOLVER.IMS_PER_BATCH", "50"]
    weights = tmp_path / "probe.pth"
    torch.save({"model": build_model(load_cfg(str(config), probe)).state_dict()}, weights)
    common = ["--config-file", config, "--weights", weights, "--width", "0.6"]
    res = _run(*common, "--calibrate-batches", "1", "--output", tmp_path / "a.pth", *probe)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-3000:]
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("error: --width 0.6 with --calibrate-batches 1 (TEST.CALIBRATE_BATCHES "
                           "here): the classifiers of widths ['0.6'] were trained on BN "
                           "statistics estimated with TEST.CALIBRATE_BATCHES 2 (now 1)"), line
    assert not (tmp_path / "a.pth").exists()
    res = _run(*common, "--calibrate-batches", "2", "--output", tmp_path / "b.pth", *probe)
    assert res.returncode == 0, res.stderr[-3000:]
    assert torch.load(tmp_path / "b.pth")["fc.weight"].shape == (10, int(128 * 0.6))  # base 16
    # A narrower probe config than the file's: the hint names the config, not a new training.
    res = _run("--config-file", config, "--weights", weights, "--width", "0.6",
               "--calibrate-batches", "2", "--output", tmp_path / "c.pth")
    assert res.returncode == 2
    assert "the probe of this config has classifiers for TEST.WIDTHS [1.0, 0.5, 0.25] only: " \
           f"if {str(weights)!r} was trained at 0.6, pass its run's config.yaml" in res.stderr
