"""tools/convert_to_d2.py: stock Detectron2 export per width, slimmable export, clear errors."""
from __future__ import annotations

import pickle
import sys
from pathlib import Path

import pytest
import torch
from detectron2 import model_zoo
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model

from slimdet.checkpoint import CheckpointError
from slimdet.config import ConfigError
from slimdet.d2 import SlimDetectionCheckpointer, get_slim_det_cfg, stock_d2_overrides
from slimdet.d2.backbone import build_slim_resnet_fpn_backbone
from slimdet.layers import set_width
from slimdet.utils.file_io import OutputError

from d2_helpers import randomized_resnet, reference_layout

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import convert_to_d2  # noqa: E402

STOCK_BACKBONE = "backbone.bottom_up."


@pytest.fixture(scope="module")
def r50():
    return randomized_resnet(50)


@pytest.fixture(scope="module")
def slimdet_ckpt(r50, tmp_path_factory):
    """A slimdet pre-training checkpoint: student backbone under ``backbone.`` plus the things
    the converter must drop (projection head, momentum encoder, queue)."""
    state = {"backbone." + k: v for k, v in r50.state_dict().items()}
    state["projector.0.weight"] = torch.randn(8, 2048)
    state["backbone_k.conv1.weight"] = torch.randn(64, 3, 7, 7)
    state["queue"] = torch.randn(128, 16)
    path = tmp_path_factory.mktemp("ckpt") / "slimclr.pth"
    torch.save({"model": state, "iteration": 10}, path)
    return path


def _stock_model(overrides):
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"))
    cfg.merge_from_list(overrides + ["MODEL.DEVICE", "cpu"])
    return build_model(cfg).eval()


@pytest.mark.parametrize("width", [1.0, 0.25])
def test_width_export_loads_into_stock_detectron2_and_matches_features(
        width, r50, slimdet_ckpt, tmp_path, capsys):
    out = tmp_path / f"w{width}.pkl"
    assert convert_to_d2.main([str(slimdet_ckpt), "--width", str(width), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "found a slimmable ResNet-50 with widths [1.0, 0.75, 0.5, 0.25]" in printed
    assert "in slimdet layout" in printed
    for dropped in ("projector.0.weight", "backbone_k.conv1.weight", "queue"):
        assert dropped in printed

    with open(out, "rb") as f:
        converted = pickle.load(f)
    assert converted["matching_heuristics"] is True and "__author__" in converted

    model = _stock_model(stock_d2_overrides(r50, width))
    stock_keys = {k for k in model.state_dict() if k.startswith(STOCK_BACKBONE)}
    # Every converted tensor has a stock name (heuristic matching would silently drop the rest).
    assert {STOCK_BACKBONE + k for k in converted["model"]} == stock_keys

    checkpointer = DetectionCheckpointer(model)
    incompatible = checkpointer._load_model(checkpointer._load_file(str(out)))
    assert [k for k in incompatible.missing_keys if k.startswith(STOCK_BACKBONE)] == []
    assert incompatible.unexpected_keys == []
    assert incompatible.incorrect_shapes == []

    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        stock = model.backbone.bottom_up(x)
        set_width(r50, width)
        ours = r50.forward_features(x)
        set_width(r50, 1.0)
    for name in ("res2", "res3", "res4", "res5"):
        assert stock[name].shape == ours[name].shape
        torch.testing.assert_close(stock[name], ours[name], rtol=1e-4, atol=1e-4)


def test_reference_checkpoint_to_slimmable_backbone(r50, tmp_path, capsys):
    """Reference layout (docs/method.md §8) -> --slimmable -> our Detectron2 backbone, every
    width equal to the SlimResNet's stage outputs, zero-padded to the full width."""
    state = reference_layout(r50.state_dict(), 50, "module.encoder_q.")
    assert "module.encoder_q.features.13.shortcut.1.bn.3.weight" in state  # docs/method.md §8
    state.update({k.replace("encoder_q", "encoder_k"): v.clone() for k, v in list(state.items())})
    state["module.encoder_q.fc.0.weight"] = torch.randn(2048, 2048)
    state["module.queue"] = torch.randn(128, 32)
    src = tmp_path / "reference.pth.tar"
    torch.save({"epoch": 200, "arch": "resnet50", "state_dict": state}, src)
    out = tmp_path / "slim.pkl"
    assert convert_to_d2.main([str(src), "--slimmable", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "in reference MoCo v2 layout" in printed
    assert "widths [1.0, 0.75, 0.5, 0.25]" in printed
    assert "backbone_k.* (" in printed and "projector.0.weight" in printed
    assert "queue" in printed

    cfg = get_slim_det_cfg()
    cfg.merge_from_file(str(Path(__file__).resolve().parents[2] /
                            "configs/detection/Base-SlimRCNN-FPN.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.RESNETS.NORM", "BN", "MODEL.FPN.NORM", ""])
    backbone = build_slim_resnet_fpn_backbone(cfg, ShapeSpec(channels=3)).eval()
    holder = torch.nn.Module()
    holder.backbone = backbone  # names as inside the detector: backbone.bottom_up.resnet.*
    # As for training from MODEL.WEIGHTS (checkpointables=[]): the FPN is not in the file.
    SlimDetectionCheckpointer(holder).load(str(out), checkpointables=[])

    x = torch.randn(1, 3, 64, 64)
    for width in (0.5, 0.25):
        with torch.no_grad():
            set_width(holder, width)
            padded = backbone.bottom_up(x)
            set_width(r50, width)
            ours = r50.forward_features(x)
        for name, feat in ours.items():
            c = feat.shape[1]
            assert padded[name].shape[1] == r50.stage_channels[int(name[-1]) - 2]
            torch.testing.assert_close(padded[name][:, :c], feat, rtol=1e-4, atol=1e-4)
            assert padded[name][:, c:].abs().max() == 0
    set_width(r50, 1.0)


def test_wrong_architecture_is_refused_naming_the_key(tmp_path):
    """A ResNet-18 slimmable export loaded into the slimmable ResNet-50 detector."""
    r18 = randomized_resnet(18)
    src = tmp_path / "r18.pth"
    torch.save({"model": {"backbone." + k: v for k, v in r18.state_dict().items()}}, src)
    out = tmp_path / "r18.pkl"
    assert convert_to_d2.main([str(src), "--slimmable", "-o", str(out)]) == 0

    cfg = get_slim_det_cfg()
    cfg.merge_from_file(str(Path(__file__).resolve().parents[2] /
                            "configs/detection/Base-SlimRCNN-FPN.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.RESNETS.NORM", "BN"])
    model = build_model(cfg)
    with pytest.raises(CheckpointError) as err:
        SlimDetectionCheckpointer(model).load(str(out))
    msg = str(err.value)
    assert "r18.pkl" in msg
    assert "holds a slimmable ResNet-18 with widths [1.0, 0.75, 0.5, 0.25]" in msg, msg
    assert "uses a slimmable ResNet-50" in msg, msg


def test_inconsistent_checkpoint_names_the_key(r50, tmp_path):
    state = {"backbone." + k: v.clone() for k, v in r50.state_dict().items()}
    state["backbone.layer2.1.conv2.weight"] = torch.randn(128, 100, 3, 3)
    src = tmp_path / "bad.pth"
    torch.save({"model": state}, src)
    with pytest.raises(CheckpointError, match=r"bad.pth.*backbone\.layer2\.1\.conv2\.weight.*"
                       r"\(128, 100, 3, 3\) in the file, \(128, 128, 3, 3\)"):
        convert_to_d2.main([str(src), "--width", "1.0", "-o", str(tmp_path / "x.pkl")])


def test_no_backbone_and_unknown_width_are_clear(r50, tmp_path, capsys):
    src = tmp_path / "heads_only.pth"
    torch.save({"model": {"head.fc.weight": torch.zeros(2, 2)}}, src)
    with pytest.raises(CheckpointError, match="heads_only.pth.*no slimmable backbone.*head.fc.weight"):
        convert_to_d2.main([str(src), "--slimmable", "-o", str(tmp_path / "x.pkl")])

    src = tmp_path / "ok.pth"
    torch.save({"model": {"backbone." + k: v for k, v in r50.state_dict().items()}}, src)
    assert convert_to_d2.main([str(src), "--width", "0.3", "-o", str(tmp_path / "y.pkl")]) == 2
    assert "width 0.3 is not one of the checkpoint's widths [1.0, 0.75, 0.5, 0.25]" in \
        capsys.readouterr().err
    assert not (tmp_path / "y.pkl").exists()


def test_single_width_export_refused_by_slimmable_detector(r50, tmp_path):
    src = tmp_path / "ok.pth"
    torch.save({"model": {"backbone." + k: v for k, v in r50.state_dict().items()}}, src)
    out = tmp_path / "w1.pkl"
    assert convert_to_d2.main([str(src), "--width", "1.0", "-o", str(out)]) == 0
    cfg = get_slim_det_cfg()
    cfg.merge_from_file(str(Path(__file__).resolve().parents[2] /
                            "configs/detection/Base-SlimRCNN-FPN.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.RESNETS.NORM", "BN"])
    with pytest.raises(CheckpointError, match="w1.pkl.*--slimmable"):
        SlimDetectionCheckpointer(build_model(cfg)).load(str(out))


def test_detector_checkpointer_never_runs_a_malicious_pickle(tmp_path):
    """Detectron2 .pkl files are pickles: the slimmable detector reads them with the allowlist."""
    import os

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'MARKER'}",)

    evil = tmp_path / "evil.pkl"
    with open(evil, "wb") as f:
        pickle.dump({"model": {"x": Payload()}, "__author__": "someone"}, f)
    cfg = get_slim_det_cfg()
    cfg.merge_from_file(str(Path(__file__).resolve().parents[2] /
                            "configs/detection/Base-SlimRCNN-FPN.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.RESNETS.NORM", "BN"])
    with pytest.raises(CheckpointError, match=r"evil.pkl.*needs posix\.system"):
        SlimDetectionCheckpointer(build_model(cfg)).load(str(evil))
    assert not (tmp_path / "MARKER").exists()
    with pytest.raises(CheckpointError, match="nowhere.pkl.*does not exist"):
        SlimDetectionCheckpointer(build_model(cfg)).load(str(tmp_path / "nowhere.pkl"))


@pytest.mark.parametrize("depth,widths,width,kwargs,match", [
    # int(c * 0.35) per stage (22 -> 89, 179, 358, 716) does not double as Detectron2's stages
    # do (89 -> 178, 356, 712): half the tensors would be left random by a stock load.
    (50, (1.0, 0.35), 0.35, {}, r"width 0\.35 of this ResNet-50 is not a stock Detectron2 "
                                r"ResNet: 173 tensor\(s\) of other shapes.*res3\.0\..*--slimmable"),
    (50, (1.0, 0.5), 1.0, {"cifar_stem": True},
     r"CIFAR stem.*none can load it: pre-train with MODEL.BACKBONE.CIFAR_STEM False"),
    (18, (1.0, 0.5), 0.5, {}, r"RES2_OUT_CHANNELS = 64.*--slimmable"),
    (50, (1.0, 0.5), 0.5, {"in_channels": 1}, r"1-channel images.*--slimmable"),
    # Grey and CIFAR (the Fashion-MNIST demo): --slimmable refuses it too, so it is not named.
    (18, (1.0, 0.5), 1.0, {"in_channels": 1, "cifar_stem": True}, r"CIFAR stem.*none can load it"),
])
def test_widths_a_stock_detectron2_resnet_cannot_hold_are_refused(depth, widths, width, kwargs,
                                                                   match):
    from slimdet.config import ConfigError
    from slimdet.d2 import to_stock_d2_state
    from slimdet.modeling.backbone.slim_resnet import SlimResNet

    with pytest.raises(ConfigError, match=match):
        to_stock_d2_state(SlimResNet(depth=depth, widths=list(widths), **kwargs), width)


def test_widths_of_a_035_checkpoint_are_inferred_exactly(tmp_path, capsys):
    """int(c * 0.35) sizes every layer: the widths read off the file are [1.0, 0.35] (not the
    rounded ratio of one layer), so the file converts without --widths (with --slimmable: no
    stock Detectron2 ResNet holds width 0.35, see the test above)."""
    net = randomized_resnet(50, widths=(1.0, 0.35))
    src = tmp_path / "r50_035.pth"
    torch.save({"model": {"backbone." + k: v for k, v in net.state_dict().items()}}, src)
    out = tmp_path / "w035.pkl"
    assert convert_to_d2.main([str(src), "--slimmable", "-o", str(out)]) == 0
    assert "widths [1.0, 0.35]," in capsys.readouterr().out
    with open(out, "rb") as f:
        meta = pickle.load(f)["slimdet"]
    assert meta["widths"] == [1.0, 0.35]


def test_a_stale_width_names_recalibrate_bn_not_a_flag_this_tool_lacks(tmp_path):
    net = randomized_resnet(50, widths=(1.0, 0.5))
    net.mark_statistics_stale()  # as sandwich-rule training leaves it
    src = tmp_path / "stale.pth"
    torch.save({"model": {"backbone." + k: v for k, v in net.state_dict().items()}}, src)
    with pytest.raises(CheckpointError) as err:
        convert_to_d2.main([str(src), "--width", "0.5", "-o", str(tmp_path / "x.pkl")])
    msg = str(err.value)
    assert "stale.pth" in msg and "tools/recalibrate_bn.py" in msg, msg
    assert "--calibrate-batches" not in msg
    with pytest.raises(CheckpointError, match=r"widths \['1', '0.5'\] of .*stale.pth.* stale BN "
                                              r"statistics.*tools/recalibrate_bn.py"):
        convert_to_d2.main([str(src), "--slimmable", "-o", str(tmp_path / "x.pkl")])
    assert not (tmp_path / "x.pkl").exists()


def _printed_overrides(printed: str, output: Path):
    import shlex

    hint = next(line for line in printed.splitlines() if line.startswith("use it "))
    return shlex.split(hint.split(f"MODEL.WEIGHTS {output} ", 1)[1])


def test_output_pixel_statistics_and_stems_the_detector_cannot_hold(tmp_path, capsys):
    """An existing -o is replaced only with --overwrite; the hint's pixel statistics are the
    pre-training run's (config.yaml beside the checkpoint) and its channel keys fit the
    slimmable detector (a grey-image R-18 here, which the detector then loads); a CIFAR stem,
    which no detector config holds, is refused."""
    from slimdet.d2 import load_det_cfg
    from slimdet.modeling.backbone import SlimResNet

    from d2_helpers import SLIM_DEMO, SMALL

    run = tmp_path / "run"
    run.mkdir()
    grey = SlimResNet(depth=18, widths=[1.0, 0.5], in_channels=1)
    torch.save({"model": {"backbone." + k: v for k, v in grey.state_dict().items()}},
               run / "model_final.pth")
    (run / "config.yaml").write_text("INPUT:\n  PIXEL_MEAN: [0.5]\n  PIXEL_STD: [0.25]\n")
    out = tmp_path / "grey.pkl"
    out.write_bytes(b"someone's file")
    with pytest.raises(OutputError, match=r"^-o/--output .*grey.pkl exists: pass --overwrite"):
        convert_to_d2.main([str(run / "model_final.pth"), "--slimmable", "-o", str(out)])
    assert out.read_bytes() == b"someone's file"
    for extra in ([], ["--overwrite"]):  # a folder: --overwrite would not help, so not named
        with pytest.raises(OutputError, match=r"^-o/--output .* is a folder, not a file$"):
            convert_to_d2.main([str(run / "model_final.pth"), "--slimmable", "-o", str(run),
                                *extra])
    # A place no file can be made in is refused before the checkpoint is read (the file is
    # not a checkpoint at all here, so reading it first would fail with another error).
    not_a_checkpoint = tmp_path / "notes.txt"
    not_a_checkpoint.write_text("not a checkpoint")
    with pytest.raises(OutputError, match=r"^-o/--output .*notes.txt/x.pkl.*is a file, not a folder$"):
        convert_to_d2.main([str(not_a_checkpoint), "--width", "1.0",
                            "-o", str(not_a_checkpoint / "x.pkl")])
    capsys.readouterr()
    assert convert_to_d2.main([str(run / "model_final.pth"), "--slimmable", "-o", str(out),
                               "--overwrite"]) == 0
    printed = capsys.readouterr().out
    overrides = _printed_overrides(printed, out)
    assert overrides == ["MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.STEM_OUT_CHANNELS", "64",
                         "MODEL.RESNETS.RES2_OUT_CHANNELS", "64", "MODEL.RESNETS.WIDTH_PER_GROUP",
                         "64", "MODEL.WIDTHS", "[1.0, 0.5]", "INPUT.FORMAT", "L",
                         "MODEL.PIXEL_MEAN", "[127.500]", "MODEL.PIXEL_STD", "[63.750]"]
    assert f"INPUT.PIXEL_MEAN / PIXEL_STD of {run / 'config.yaml'}" in printed
    # The printed keys are all the slimmable detector needs to hold every backbone weight
    # (without RES2_OUT_CHANNELS an R-18 did not build).
    base = [k for pair in zip(SMALL[::2], SMALL[1::2]) if not pair[0].startswith("MODEL.RESNETS")
            for k in pair]
    model = build_model(load_det_cfg(SLIM_DEMO, base + overrides))
    checkpointer = SlimDetectionCheckpointer(model)
    checkpointer.load(str(out), checkpointables=[])
    torch.testing.assert_close(model.backbone.bottom_up.resnet.conv1.weight, grey.conv1.weight)
    # The file records what the printed keys say; a config without them is refused.
    from slimdet.d2.checkpoint import check_cfg_fits_file
    check_cfg_fits_file(load_det_cfg(SLIM_DEMO, base + overrides), checkpointer.file_meta, str(out))
    no_input_keys = overrides[:overrides.index("INPUT.FORMAT")]
    with pytest.raises(ConfigError, match=r"\(INPUT.FORMAT is RGB here, MODEL.PIXEL_MEAN is "
                       r"\[123.675,116.28,103.53\] here, .*: pass INPUT.FORMAT L "
                       r"MODEL.PIXEL_MEAN \[127.500\] MODEL.PIXEL_STD \[63.750\]$"):
        check_cfg_fits_file(load_det_cfg(SLIM_DEMO, base + no_input_keys),
                            checkpointer.file_meta, str(out))

    # Without a config.yaml beside it the hint says it assumes ImageNet statistics.
    rgb = tmp_path / "rgb.pth"
    torch.save({"model": {"backbone." + k: v
                          for k, v in SlimResNet(depth=18, widths=[1.0, 0.5]).state_dict().items()}}, rgb)
    assert convert_to_d2.main([str(rgb), "--slimmable", "-o", str(tmp_path / "rgb.pkl")]) == 0
    printed = capsys.readouterr().out
    assert "MODEL.PIXEL_MEAN [123.675,116.280,103.530]" in printed
    assert "ImageNet's assumed (no config.yaml beside the checkpoint)" in printed

    cifar = tmp_path / "cifar.pth"
    torch.save({"model": {"backbone." + k: v for k, v in SlimResNet(
        depth=18, widths=[1.0, 0.5], cifar_stem=True).state_dict().items()}}, cifar)
    with pytest.raises(ConfigError, match="has a CIFAR stem .*no detector config can load it"):
        convert_to_d2.main([str(cifar), "--slimmable", "-o", str(tmp_path / "cifar.pkl")])
    assert not (tmp_path / "cifar.pkl").exists()



def test_pixel_statistics_of_a_config_yaml_whose_base_holds_them(tmp_path, capsys):
    """A config.yaml beside the checkpoint whose INPUT.PIXEL_MEAN / STD lie in its _BASE_ was
    read as a file without them: the converted file and its hint got ImageNet's statistics,
    noted as "no config.yaml beside the checkpoint", exit 0. One that slimdet cannot read is
    named as such."""
    from slimdet.modeling.backbone import SlimResNet

    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model": {"backbone." + k: v for k, v in
                          SlimResNet(depth=18, widths=[1.0, 0.5]).state_dict().items()}},
               run / "model_final.pth")
    (run / "base.yaml").write_text("INPUT:\n  PIXEL_MEAN: [0.5, 0.4, 0.3]\n"
                                   "  PIXEL_STD: [0.2, 0.2, 0.2]\n")
    (run / "config.yaml").write_text('_BASE_: "base.yaml"\nMODEL:\n  METHOD: MoCoV2\n')
    out = tmp_path / "w.pkl"
    capsys.readouterr()
    assert convert_to_d2.main([str(run / "model_final.pth"), "--slimmable", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "MODEL.PIXEL_MEAN [127.500,102.000,76.500] MODEL.PIXEL_STD [51.000,51.000,51.000]" \
        in printed
    assert f"INPUT.PIXEL_MEAN / PIXEL_STD of {run / 'config.yaml'}" in printed
    with open(out, "rb") as f:
        assert pickle.load(f)["slimdet"]["input"]["pixel_mean"] == pytest.approx(
            [127.5, 102.0, 76.5])
    (run / "config.yaml").write_text("MODEL:\n  RESNETS:\n    DEPTH: 50\n")  # Detectron2's
    assert convert_to_d2.main([str(run / "model_final.pth"), "--slimmable", "-o", str(out),
                               "--overwrite"]) == 0
    printed = capsys.readouterr().out
    assert "ImageNet's assumed (config.yaml beside the checkpoint not read: " in printed
    assert "unknown config key MODEL.RESNETS" in printed