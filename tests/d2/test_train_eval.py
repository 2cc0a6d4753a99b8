"""Two iterations of multi-width Mask R-CNN on the tiny set, then AP of every width."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from slimdet.d2 import PerWidthNorm, SlimDetTrainer, format_width_table, get_slim_det_cfg
from slimdet.utils.results import width_key

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import convert_to_d2  # noqa: E402

WIDTHS = [1.0, 0.75, 0.5, 0.25]


def tiny_cfg(out_dir: Path, weights: str):
    """Slimmable R-18 Mask R-CNN, small enough for two shared CPU cores."""
    cfg = get_slim_det_cfg()
    cfg.merge_from_file(str(ROOT / "configs/detection/mask_rcnn_slim_R_50_FPN_tiny_demo.yaml"))
    cfg.merge_from_list([
        "MODEL.WEIGHTS", weights, "OUTPUT_DIR", str(out_dir),
        "MODEL.WIDTHS", str(WIDTHS),
        "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
        "MODEL.FPN.OUT_CHANNELS", "64", "MODEL.FPN.NORM", "BN",  # BN: exercises per-width head norms
        "MODEL.ROI_BOX_HEAD.FC_DIM", "128", "MODEL.ROI_MASK_HEAD.CONV_DIM", "32",
        "MODEL.ROI_MASK_HEAD.NUM_CONV", "1", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32",
        "MODEL.RPN.POST_NMS_TOPK_TRAIN", "50", "MODEL.RPN.POST_NMS_TOPK_TEST", "30",
        "TEST.DETECTIONS_PER_IMAGE", "20",
        "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "160",
        "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "160",
        "SOLVER.MAX_ITER", "2", "SOLVER.WARMUP_ITERS", "0", "SOLVER.BASE_LR", "0.02",
    ])
    return cfg


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_coco):
    out = tmp_path_factory.mktemp("det")
    weights = out / "slim_r18.pkl"
    assert convert_to_d2.main(["--random-init", "18", "--slimmable", "-o", str(weights)]) == 0
    cfg = tiny_cfg(out, str(weights))
    trainer = SlimDetTrainer(cfg)
    trainer.resume_or_load(resume=False)
    before = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    results = trainer.train()  # Detectron2's EvalHook evaluates every width after the last step
    return cfg, trainer, before, results


def test_two_iterations_train_every_width(trained):
    cfg, trainer, before, _ = trained
    after = trainer.model.state_dict()
    assert trainer.iter == 2  # iterations 0 and 1 ran
    histories = trainer.storage.histories()
    for w in WIDTHS:
        for loss in ("loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc"):
            values = [v for v, _ in histories[f"{loss}/w{w:g}"].values()]
            assert len(values) == 2 and all(math.isfinite(v) for v in values), (loss, w, values)
    # Every width's own BN was trained (so every width ran forward + backward) ...
    for i in range(len(WIDTHS)):
        for key in (f"backbone.bottom_up.resnet.bn1.bn.{i}.weight",
                    f"backbone.bottom_up.resnet.layer3.1.bn2.bn.{i}.weight"):
            assert not torch.equal(before[key], after[key]), key
        norm_key = f"backbone.fpn_lateral2.norm.norms.{i}.running_mean"
        assert not torch.equal(before[norm_key], after[norm_key]), norm_key
    # ... and the shared weights, backbone and heads, moved.
    for key in ("backbone.bottom_up.resnet.conv1.weight", "backbone.fpn_output2.weight",
                "roi_heads.box_predictor.cls_score.weight", "roi_heads.mask_head.predictor.weight",
                "proposal_generator.rpn_head.conv.weight"):
        assert not torch.equal(before[key], after[key]), key
    # The shared FPN's norms have a private copy per width, with private statistics.
    fpn_norm = trainer.model.backbone.fpn_lateral2.norm
    assert isinstance(fpn_norm, PerWidthNorm) and len(fpn_norm.norms) == len(WIDTHS)
    assert not torch.equal(fpn_norm.norms[0].running_mean, fpn_norm.norms[3].running_mean)


def test_evaluation_reports_every_width(trained):
    cfg, trainer, _, results = trained
    assert list(results) == ["bbox", "segm"]
    for w in WIDTHS:
        for task in ("bbox", "segm"):
            ap = results[task][width_key("AP", w)]
            assert math.isfinite(ap) and 0.0 <= ap <= 100.0, (w, task, ap)
    table = format_width_table({"tiny_coco_val": results})
    lines = table.splitlines()
    assert lines[0] == "tiny_coco_val:"
    assert "box AP" in lines[1] and "mask AP" in lines[1]
    rows = lines[3:]
    assert [float(r.split("|")[1]) for r in rows] == WIDTHS
    ap_column = [h.strip() for h in lines[1].split("|")].index("box AP")
    assert [float(r.split("|")[ap_column]) for r in rows] == \
        [round(results["bbox"][width_key("AP", w)], 2) for w in WIDTHS]


def test_eval_only_loads_every_weight_of_the_trained_detector(trained):
    cfg, trainer, _, _ = trained
    final = Path(cfg.OUTPUT_DIR) / "model_final.pth"
    assert final.is_file()
    for resume, weights in ((False, str(final)), (True, "")):  # MODEL.WEIGHTS, or --resume
        eval_cfg = cfg.clone()
        eval_cfg.MODEL.WEIGHTS = weights
        model, path = SlimDetTrainer.load_for_evaluation(eval_cfg, resume=resume)
        assert Path(path).resolve() == final.resolve()  # the file eval-only reports and names
        loaded, ours = model.state_dict(), trainer.model.state_dict()
        assert loaded.keys() == ours.keys()
        for key in ours:
            assert torch.equal(loaded[key], ours[key]), key
