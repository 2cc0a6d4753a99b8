"""MoCo's key encoder (slimdet/modeling/methods/momentum.py) when training starts from a file."""
import os

import torch

from slimdet.engine import load_cfg
from slimdet.engine.trainer import SlimTrainer
from slimdet.modeling import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CFG = os.path.join(ROOT, "configs/demo/slimclr_mocov2_demo.yaml")
SMALL = ["DATASETS.TRAIN_SUBSET", 256, "DATASETS.TEST_SUBSET", 100, "SOLVER.IMS_PER_BATCH", 64,
         "MODEL.MOCOV2.QUEUE_SIZE", 128, "TEST.EVALUATORS", [], "MODEL.DEVICE", "cpu"]


def _trainer(tmp_path, weights):
    cfg = load_cfg(CFG, SMALL + ["MODEL.WEIGHTS", str(weights), "OUTPUT_DIR", str(tmp_path / "o")])
    trainer = SlimTrainer(cfg)
    trainer.resume_or_load(resume=False)
    return trainer.method


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sb = b.state_dict()
    return all(torch.equal(v, sb[k]) for k, v in a.state_dict().items())


def test_a_file_without_key_encoder_starts_it_as_a_copy_of_the_loaded_student(tmp_path):
    torch.manual_seed(1)
    source = build_model(load_cfg(CFG, SMALL))
    with torch.no_grad():  # a student unlike a fresh one, so a copy is told from an init
        for p in source.backbone.parameters():
            p.add_(torch.randn_like(p))
    backbone_only = tmp_path / "backbone.pth"
    torch.save({"model": {f"backbone.{k}": v for k, v in source.backbone.state_dict().items()}},
               backbone_only)
    method = _trainer(tmp_path, backbone_only)
    assert _same(method.backbone, source.backbone)
    assert _same(method.backbone_k, method.backbone)  # not the random initialisation
    assert _same(method.projector_k, method.projector)

    # A file that has its own key encoder keeps it (a MoCo checkpoint: the EMA differs).
    full = source.state_dict()
    for k in full:
        if k.startswith("backbone_k.") and full[k].is_floating_point():
            full[k] = full[k] + 1.0
    torch.save({"model": full}, tmp_path / "full.pth")
    method = _trainer(tmp_path, tmp_path / "full.pth")
    expected = {k[len("backbone_k."):]: v for k, v in full.items() if k.startswith("backbone_k.")}
    assert all(torch.equal(v, expected[k]) for k, v in method.backbone_k.state_dict().items())
    assert not _same(method.backbone_k, method.backbone)
