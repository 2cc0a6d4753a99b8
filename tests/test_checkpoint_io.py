"""Checkpoints in and out: reference-layout import, export of one width to torchvision."""
import re

import pytest
import torch
import torchvision

from slimdet.checkpoint.export import export_width_state_dict
from slimdet.checkpoint.reference import CheckpointFormatError, load_checkpoint
from slimdet.engine import load_cfg
from slimdet.layers import use_width
from slimdet.modeling import build_model
from slimdet.modeling.backbone import STAGE_BLOCKS

SMALL_R50 = ["MODEL.BACKBONE.DEPTH", 50, "MODEL.BACKBONE.BASE_CHANNELS", 16,
             "MODEL.WIDTHS", [1.0, 0.5, 0.25], "MODEL.MOCO.HIDDEN_DIM", 64,
             "MODEL.MOCO.QUEUE_SIZE", 32, "MODEL.NUM_CLASSES", 10, "MODEL.DEVICE", "cpu"]


def _cfg(method, *extra):
    return load_cfg("", ["MODEL.METHOD", method] + SMALL_R50 + list(extra))


def _to_reference_backbone_key(key: str) -> str:
    """Our torchvision-style backbone key -> the reference's flat ``features.{k}`` name
    (written independently of the library's converter, from SPEC §8)."""
    m = re.match(r"layer(\d)\.(\d+)\.(.*)$", key)
    if not m:
        return key
    stage, block, rest = int(m.group(1)) - 1, int(m.group(2)), m.group(3)
    k = sum(STAGE_BLOCKS[50][:stage]) + block
    return f"features.{k}." + rest.replace("downsample.", "shortcut.")


def _mocov2_reference_state(method) -> dict:
    out = {}
    for key, value in method.state_dict().items():
        top, _, rest = key.partition(".")
        if top == "backbone":
            out["module.encoder_q." + _to_reference_backbone_key(rest)] = value.clone()
        elif top == "backbone_k":
            out["module.encoder_k." + _to_reference_backbone_key(rest)] = value.clone()
        elif top == "projector":
            out["module.encoder_q.fc." + rest] = value.clone()
        elif top == "projector_k":
            out["module.encoder_k.fc." + rest] = value.clone()
        elif top in ("queue", "queue_ptr"):
            out["module." + top] = value.clone()
    return out


def _randomise_bn(model):
    """Give every BN non-trivial statistics so a wrong BN index would change the outputs."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                if m.weight is not None:
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.1, 0.1)


def _save_reference(path, state):
    torch.save({"epoch": 200, "global_step": 1, "arch": "resnet50", "state_dict": state,
                "best_acc1": 0.0, "optimizer": {}, "scaler": {}}, path)


def test_reference_mocov2_file_loads_every_width(tmp_path):
    source = build_model(_cfg("MoCoV2"))
    _randomise_bn(source)
    path = tmp_path / "moco_v2_reference.pth.tar"
    _save_reference(path, _mocov2_reference_state(source))

    target = build_model(_cfg("MoCoV2"))
    report = load_checkpoint(target, str(path), depth=50)
    backbone_keys = [k for k in target.state_dict() if k.startswith("backbone.")]
    assert set(backbone_keys) <= set(report["loaded"])  # zero missing backbone keys
    assert torch.equal(target.queue, source.queue)
    for k, v in source.state_dict().items():
        if k != "queue_filled":
            assert torch.equal(target.state_dict()[k], v), k

    # The probe built from the same file: zero missing / unexpected backbone keys, equal features.
    probe = build_model(_cfg("LinearProbe", "MODEL.WEIGHTS", str(path)))
    source.eval()
    x = torch.randn(2, 3, 64, 64)
    for w in source.widths:
        with use_width(source.backbone, w), use_width(probe.backbone, w):
            assert torch.allclose(probe.backbone(x), source.backbone(x), atol=1e-6), w


def test_reference_linear_probe_file_loads_classifiers(tmp_path):
    source = build_model(_cfg("LinearProbe"))
    _randomise_bn(source)
    with torch.no_grad():
        for linear in source.classifier.linears:
            linear.weight.normal_()
    state = {}
    for key, value in source.state_dict().items():
        top, _, rest = key.partition(".")
        state["module." + (_to_reference_backbone_key(rest) if top == "backbone" else "fc." + rest)] = value
    path = tmp_path / "lincls_reference.pth.tar"
    _save_reference(path, state)
    probe = build_model(_cfg("LinearProbe", "MODEL.WEIGHTS", str(path)))
    x = torch.randn(2, 3, 64, 64)
    source.eval(), probe.eval()
    for w in source.widths:
        with use_width(source, w), use_width(probe, w):
            assert torch.allclose(probe.classify(x), source.classify(x), atol=1e-6), w


def test_wrong_or_truncated_file_names_file_and_key(tmp_path):
    source = build_model(_cfg("MoCoV2"))
    state = _mocov2_reference_state(source)
    good = tmp_path / "good.pth"
    _save_reference(good, state)

    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(CheckpointFormatError, match="truncated.pth"):
        load_checkpoint(build_model(_cfg("MoCoV2")), str(truncated), depth=50)

    missing_key = "module.encoder_q.features.7.shortcut.1.bn.2.running_var"
    broken = dict(state)
    del broken[missing_key]
    path = tmp_path / "broken.pth"
    _save_reference(path, broken)
    with pytest.raises(CheckpointFormatError) as err:
        build_model(_cfg("LinearProbe", "MODEL.WEIGHTS", str(path)))
    assert "broken.pth" in str(err.value)
    assert "backbone.layer3.0.downsample.1.bn.2.running_var" in str(err.value)

    # A ResNet-50 file read as a ResNet-18: a clear error about the block index.
    with pytest.raises(CheckpointFormatError, match="ResNet-18 has 8 blocks"):
        load_checkpoint(build_model(load_cfg("", ["MODEL.BACKBONE.DEPTH", 18] + SMALL_R50[2:])),
                        str(good), depth=18)


def test_export_width_one_loads_strictly_into_torchvision_resnet50(tmp_path):
    cfg = load_cfg("", ["MODEL.METHOD", "Supervised", "MODEL.WIDTHS", [1.0, 0.5],
                        "MODEL.NUM_CLASSES", 1000, "MODEL.DEVICE", "cpu"])
    model = build_model(cfg)
    _randomise_bn(model)
    with torch.no_grad():
        model.fc.weight.normal_()
    model.eval()
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


def test_export_self_supervised_model_with_fresh_fc(tmp_path):
    cfg = load_cfg("", ["MODEL.METHOD", "MoCoV2", "MODEL.WIDTHS", [1.0, 0.5],
                        "MODEL.MOCO.QUEUE_SIZE", 16, "MODEL.DEVICE", "cpu"])
    model = build_model(cfg)
    assert "fc.weight" not in export_width_state_dict(model, 1.0)
    state = export_width_state_dict(model, 1.0, init_fc_classes=1000)
    torchvision.models.resnet50().load_state_dict(state, strict=True)


def test_recalibrate_bn_sets_each_width_statistics_to_data_averages():
    from slimdet.checkpoint.recalibrate_bn import recalibrate_bn
    from slimdet.modeling.backbone import SlimResNet

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


def test_trainer_checkpointer_reads_reference_file(tmp_path):
    """MODEL.WEIGHTS may name a reference file for the engine's checkpointer too
    (``train_net.py``'s load after building the method)."""
    from slimdet.checkpoint import SlimCheckpointer

    source = build_model(_cfg("MoCoV2"))
    _randomise_bn(source)
    path = tmp_path / "ref.pth.tar"
    _save_reference(path, _mocov2_reference_state(source))
    target = build_model(_cfg("MoCoV2"))
    SlimCheckpointer(target, str(tmp_path / "out")).load(str(path))
    for k, v in source.state_dict().items():
        if k != "queue_filled":
            assert torch.equal(target.state_dict()[k], v), k
    bad = tmp_path / "bad.pth"
    torch.save({"weights": torch.zeros(1)}, bad)
    with pytest.raises(CheckpointFormatError, match="bad.pth"):
        SlimCheckpointer(target, str(tmp_path / "out")).load(str(bad))


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_reference_depth_is_read_off_the_blocks(depth):
    from slimdet.checkpoint.reference import reference_depth
    from slimdet.modeling.backbone import SlimResNet

    state = {}
    for key, value in SlimResNet(depth, [1.0, 0.5], base_channels=8).state_dict().items():
        m = re.match(r"layer(\d)\.(\d+)\.(.*)$", key)
        if m:
            k = sum(STAGE_BLOCKS[depth][:int(m.group(1)) - 1]) + int(m.group(2))
            key = f"features.{k}." + m.group(3).replace("downsample.", "shortcut.")
        state["module.encoder_q." + key] = value
    assert reference_depth(state) == depth
    state.pop(next(k for k in state if ".features.0." in k and k.endswith("conv1.weight")))
    assert reference_depth(state) == depth  # one missing tensor does not change the block count
    with pytest.raises(CheckpointFormatError, match="match no ResNet depth"):
        reference_depth({k: v for k, v in state.items() if ".features.1." not in k})
