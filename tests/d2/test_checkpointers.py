"""The detection checkpointers: no file runs code, a complete load names what is missing,
training from a backbone keeps the heads new in one summary line."""
from __future__ import annotations

import logging
import pickle
from fractions import Fraction

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

from slimdet.checkpoint import CheckpointError
from slimdet.d2 import SafeDetectionCheckpointer, SlimDetectionCheckpointer, load_det_cfg
from slimdet.d2.checkpoint import detectron2_checkpoint, to_slim_d2_state

from d2_helpers import SLIM_DEMO, SMALL, STOCK_CONVERTED, STOCK_SMALL, randomized_resnet

LOGGER = "slimdet.d2.checkpoint"


def _stock_model(*opts):
    return build_model(load_det_cfg(STOCK_CONVERTED, STOCK_SMALL + list(opts))).eval()


def _summaries(caplog):
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


@pytest.fixture(scope="module")
def slim_model():
    return build_model(load_det_cfg(SLIM_DEMO, SMALL)).eval()


@pytest.fixture(scope="module")
def resnet18():
    return randomized_resnet(18)


@pytest.fixture(scope="module")
def backbone_pkl(resnet18, tmp_path_factory):
    """What tools/convert_to_d2.py --slimmable writes: every width of a backbone, no heads."""
    path = tmp_path_factory.mktemp("conv") / "slim_r18.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": to_slim_d2_state(resnet18), "__author__": "test",
                     "matching_heuristics": False}, f)
    return str(path)


def test_training_from_a_backbone_keeps_new_heads_in_one_line(slim_model, resnet18, backbone_pkl,
                                                               caplog):
    heads_before = slim_model.roi_heads.box_predictor.cls_score.weight.detach().clone()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        SlimDetectionCheckpointer(slim_model).load(backbone_pkl, checkpointables=[])
    (line,) = _summaries(caplog)
    # Real weights: BN's batch counters (in the file, but filled in by torch even when not)
    # are not counted.
    n_backbone = len([k for k in resnet18.state_dict() if not k.endswith("num_batches_tracked")])
    assert line.startswith(f"loaded {n_backbone} of ") and f"backbone.bottom_up ({n_backbone})" in line
    assert "not in the file, left at initialisation: backbone.fpn (" in line
    assert "roi_heads.box_predictor (4)" in line and "proposal_generator.rpn_head (" in line
    for key, value in resnet18.state_dict().items():
        assert torch.equal(slim_model.backbone.bottom_up.resnet.state_dict()[key], value), key
    assert torch.equal(slim_model.roi_heads.box_predictor.cls_score.weight, heads_before)


def test_evaluating_or_resuming_needs_every_weight(slim_model, backbone_pkl):
    for kwargs in ({"checkpointables": [], "complete": True, "purpose": "evaluating"}, {}):
        with pytest.raises(CheckpointError) as err:
            SlimDetectionCheckpointer(slim_model).load(backbone_pkl, **kwargs)
        msg = str(err.value)
        assert msg.startswith(f"{backbone_pkl!r} has no weights for backbone.fpn (")
        assert "roi_heads.box_predictor (4)" in msg and "backbone only" in msg
        assert f"which {kwargs.get('purpose', 'a complete load (resume, inference)')} needs" in msg


def test_stock_checkpointer_complete_partial_and_reshaped(tmp_path, caplog):
    model = _stock_model()
    full = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.save({"model": full}, tmp_path / "full.pth")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        SafeDetectionCheckpointer(_stock_model()).load(str(tmp_path / "full.pth"), complete=True)
    assert _summaries(caplog) == [
        "loaded 136 of 136 tensors (backbone.fpn (16), backbone.bottom_up (100), "
        "proposal_generator.rpn_head (6), roi_heads.box_head (4), roi_heads.box_predictor (4), "
        f"roi_heads.mask_head (6)) from {tmp_path / 'full.pth'}"]
    assert len(full) == 156  # and 20 BN batch counters, which are not weights

    no_heads = {k: v for k, v in full.items() if not k.startswith("roi_heads.")}
    torch.save({"model": no_heads}, tmp_path / "no_heads.pth")
    with pytest.raises(CheckpointError, match=r"no_heads.pth' has no weights for "
                       r"roi_heads.box_head \(4\), roi_heads.box_predictor \(4\), "
                       r"roi_heads.mask_head \(6\) \(14 tensors.*which --eval-only needs$"):
        SafeDetectionCheckpointer(_stock_model()).load(
            str(tmp_path / "no_heads.pth"), checkpointables=[], complete=True,
            purpose="--eval-only")
    # Another class count: a fine-tuning start (heads of that shape stay new), not an evaluation.
    other = _stock_model("MODEL.ROI_HEADS.NUM_CLASSES", "3")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        SafeDetectionCheckpointer(other).load(str(tmp_path / "full.pth"), checkpointables=[])
    assert "of another shape in the file, left at initialisation: roi_heads.box_predictor (4), " \
           "roi_heads.mask_head" in _summaries(caplog)[-1]
    with pytest.raises(CheckpointError, match=r"shape mismatch.*'roi_heads.box_predictor"):
        SafeDetectionCheckpointer(other).load(str(tmp_path / "full.pth"))


@pytest.mark.parametrize("norm", ["BN", "FrozenBN"])  # FrozenBN: Detectron2's default
def test_a_converted_width_without_its_channel_overrides_is_refused(norm, tmp_path, caplog):
    """Stock Detectron2 from a tools/convert_to_d2.py --width export: without the channels
    the converter printed, no backbone tensor fits; Detectron2 warns and trains a random
    backbone, which is refused here; with them every backbone weight loads. FrozenBN fills in
    the running statistics a file lacks, which must not count as loaded."""
    from slimdet.d2.checkpoint import to_stock_d2_state

    state, _ = to_stock_d2_state(randomized_resnet(50), 0.5)
    path = tmp_path / "r50_w0.5.pkl"
    with open(path, "wb") as f:  # as the converter writes it
        pickle.dump({"model": state, "__author__": "slimdet convert_to_d2 --width 0.5",
                     "matching_heuristics": True,
                     "slimdet": {"width": 0.5, "widths": [1.0, 0.5], "depth": 50}}, f)
    r50 = ["MODEL.RESNETS.DEPTH", "50", "MODEL.RESNETS.RES2_OUT_CHANNELS", "256",
           "MODEL.RESNETS.NORM", norm]
    with pytest.raises(CheckpointError) as err:
        SafeDetectionCheckpointer(_stock_model(*r50)).load(str(path), checkpointables=[])
    assert str(err.value) == (
        f"{str(path)!r} gives the backbone no weight: all {len(state)} backbone.bottom_up "
        "tensors are missing from it or of another shape (first: 'stem.conv1.weight' is "
        "(32, 3, 7, 7) in the file, (64, 3, 7, 7) in the model), so it would train from a "
        "random backbone; it is width 0.5 of a slimmable ResNet-50 (tools/convert_to_d2.py): "
        "pass the overrides the converter printed (MODEL.RESNETS.DEPTH 50 "
        "MODEL.RESNETS.STEM_OUT_CHANNELS 32 MODEL.RESNETS.RES2_OUT_CHANNELS 128 "
        "MODEL.RESNETS.WIDTH_PER_GROUP 32 MODEL.RESNETS.STRIDE_IN_1X1 False, and its "
        "INPUT.FORMAT / MODEL.PIXEL_MEAN / PIXEL_STD)")
    fitting = _stock_model("MODEL.RESNETS.DEPTH", "50", "MODEL.RESNETS.STEM_OUT_CHANNELS", "32",
                           "MODEL.RESNETS.RES2_OUT_CHANNELS", "128",
                           "MODEL.RESNETS.WIDTH_PER_GROUP", "32", "MODEL.RESNETS.NORM", norm)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        SafeDetectionCheckpointer(fitting).load(str(path), checkpointables=[])
    line = _summaries(caplog)[-1]
    assert line.startswith(f"loaded {len(state)} of ") and \
        f"(backbone.bottom_up ({len(state)}))" in line, line
    torch.testing.assert_close(fitting.backbone.bottom_up.stem.conv1.weight,
                               torch.as_tensor(state["stem.conv1.weight"]))


def test_only_the_trusted_weights_file_is_unpickled_fully(tmp_path):
    model = _stock_model()
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    for name in ("a.pkl", "b.pkl"):
        with open(tmp_path / name, "wb") as f:
            pickle.dump({"model": state, "__author__": "someone", "note": Fraction(1, 3)}, f)
    a, b = str(tmp_path / "a.pkl"), str(tmp_path / "b.pkl")
    with pytest.raises(CheckpointError, match=r"a.pkl' needs fractions.Fraction .*"
                       r"set MODEL.WEIGHTS_TRUSTED True"):
        SafeDetectionCheckpointer(model).load(a)
    trusting_a = SafeDetectionCheckpointer(model, trusted_path=a)
    assert trusting_a.load(a)["note"] == Fraction(1, 3)
    with pytest.raises(CheckpointError, match="b.pkl' needs fractions.Fraction"):
        trusting_a.load(b)
    with pytest.raises(CheckpointError, match="nowhere.pkl' does not exist"):
        trusting_a.load(str(tmp_path / "nowhere.pkl"))


def test_detectron2_file_formats_as_detectron2_reads_them():
    w = np.zeros((2, 2), np.float32)
    zoo = {"model": {"stem.conv1.weight": w}, "__author__": "Detectron2 Model Zoo"}
    assert detectron2_checkpoint(zoo, "m.pkl") is zoo
    caffe2 = detectron2_checkpoint({"blobs": {"conv1_w": w, "conv1_w_momentum": w}}, "r50.pkl")
    assert caffe2 == {"model": {"conv1_w": w}, "__author__": "Caffe2", "matching_heuristics": True}
    pycls = detectron2_checkpoint({"model_state": {"a": w, "bn.num_batches_tracked": w}}, "x.pyth")
    assert list(pycls["model"]) == ["a"] and pycls["matching_heuristics"]
    assert detectron2_checkpoint({"a": w}, "run/model_final.pth") == {"model": {"a": w}}
    with pytest.raises(CheckpointError, match=r"weight 'a' is a str, not a tensor"):
        detectron2_checkpoint({"model": {"a": "text"}}, "x.pth")


def test_a_slimmable_export_in_a_stock_frozen_bn_config_is_refused(backbone_pkl):
    """Every width under the slimmable detector's names: a stock model finds none of them; its
    FrozenBN statistics, filled in by Detectron2, said 'loaded' and training went on."""
    with pytest.raises(CheckpointError) as err:
        SafeDetectionCheckpointer(_stock_model("MODEL.RESNETS.NORM", "FrozenBN")).load(
            backbone_pkl, checkpointables=[])
    msg = str(err.value)
    assert msg.startswith(f"{backbone_pkl!r} gives the backbone no weight: all 100 ")
    assert msg.endswith("it holds a slimmable backbone (tools/convert_to_d2.py --slimmable), "
                        "which only the slimmable detector loads: train with configs/detection/"
                        "mask_rcnn_slim_R_50_FPN_1x.yaml, or convert one width with --width")


def test_a_backbone_of_fewer_blocks_is_refused_naming_its_depth(tmp_path):
    """An R-50 file in an R-101 config loads res2-res4.5 and res5 and leaves 17 blocks random:
    refused, with the depth read from the file's blocks."""
    from slimdet.d2.checkpoint import to_stock_d2_state

    state, _ = to_stock_d2_state(randomized_resnet(50, widths=(1.0,)), 1.0)
    path = tmp_path / "r50.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": state, "__author__": "test", "matching_heuristics": True}, f)
    r101 = _stock_model("MODEL.RESNETS.DEPTH", "101", "MODEL.RESNETS.RES2_OUT_CHANNELS", "256",
                        "MODEL.RESNETS.NORM", "FrozenBN")
    n = len([k for k in r101.state_dict() if k.startswith("backbone.bottom_up.")])
    with pytest.raises(CheckpointError) as err:
        SafeDetectionCheckpointer(r101).load(str(path), checkpointables=[])
    assert str(err.value) == (
        f"{str(path)!r} gives the backbone {len(state)} of its {n} tensors: {n - len(state)} "
        "are missing from it or of another shape (first: 'backbone.bottom_up.res4.6.conv1.weight'"
        " is not in the file), so it would train from a partly random backbone; set the "
        "detector's ResNet to the file's (MODEL.RESNETS.DEPTH 50 MODEL.RESNETS.STEM_OUT_CHANNELS "
        "64 MODEL.RESNETS.RES2_OUT_CHANNELS 256 MODEL.RESNETS.WIDTH_PER_GROUP 64)")


def test_caffe2_files_without_running_statistics_still_load_into_frozen_bn(tmp_path, caplog):
    """Detectron2's own ImageNet files (MSRA R-50.pkl) fold BN's statistics into weight and
    bias and hold none: FrozenBN's 0/1 are right for them, and the load is complete."""
    from slimdet.d2.checkpoint import to_stock_d2_state

    state, _ = to_stock_d2_state(randomized_resnet(18, widths=(1.0,)), 1.0)
    folded = {k: v for k, v in state.items() if not k.endswith(("running_mean", "running_var"))}
    path = tmp_path / "folded.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": folded, "__author__": "test", "matching_heuristics": True}, f)
    model = _stock_model("MODEL.RESNETS.NORM", "FrozenBN")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        SafeDetectionCheckpointer(model).load(str(path), checkpointables=[])
    n = len([k for k in model.state_dict() if k.startswith("backbone.bottom_up.")])
    assert f"backbone.bottom_up ({n})" in _summaries(caplog)[-1]
    assert n == len(state) > len(folded)


def test_a_save_killed_midway_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """Detectron2's checkpointer wrote model_final.pth and last_checkpoint in place: a run
    killed while saving left a truncated file where the previous one was."""
    model = _stock_model()
    checkpointer = SafeDetectionCheckpointer(model, str(tmp_path), fields={"slimdet": {"x": 1}})
    checkpointer.save("model_final", iteration=1)
    before = (tmp_path / "model_final.pth").read_bytes()
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"

    def killed(data, f):
        f.write(before[:100])
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        checkpointer.save("model_final", iteration=2)
    monkeypatch.undo()
    assert (tmp_path / "model_final.pth").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_final.pth"]
    from slimdet.checkpoint import read_file
    saved = read_file(str(tmp_path / "model_final.pth"))
    assert saved["iteration"] == 1 and saved["slimdet"] == {"x": 1}
