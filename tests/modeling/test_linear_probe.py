"""The switchable linear probe on the embedded data set (Fashion-MNIST)."""
import os

import pytest
import torch

from slimdet.checkpoint import load_weights
from slimdet.engine import load_cfg
from slimdet.engine.trainer import SlimTrainer
from slimdet.evaluation import build_evaluators
from slimdet.engine.linear_probe_run import run_linear_probe
from slimdet.modeling import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMALL_DATA = ["DATASETS.TRAIN_SUBSET", 1000, "DATASETS.TEST_SUBSET", 500, "MODEL.DEVICE", "cpu",
              "TEST.IMS_PER_BATCH", 500, "LOG_PERIOD", 1000, "SEED", 0]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> str:
    """A short SlimCLR-MoCo v2 pre-training of the demo network (the probe's input)."""
    out = tmp_path_factory.mktemp("pretrain")
    cfg = load_cfg(os.path.join(ROOT, "configs/demo/slimclr_mocov2_demo.yaml"), SMALL_DATA + [
        "SOLVER.IMS_PER_BATCH", 100, "SOLVER.MAX_ITER", 20, "MODEL.MOCOV2.QUEUE_SIZE", 200,
        "TEST.EVALUATORS", [], "OUTPUT_DIR", str(out)])
    trainer = SlimTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    return str(out / "model_final.pth")


def _probe_cfg(out):
    # The demo probe standardises features (MODEL.PROBE.FEATURE_BN), so the random-init
    # baseline learns too and the comparison means something. Its LR 1.0 settles over the
    # demo's 156 steps; in 16 steps it left widths at chance (seed 1), LR 0.1 does not:
    # pretrained 40-48 / 28-30 / 24-25 % against random 18-22 / 17-23 / 12-19 % (SEED 0, 1).
    return load_cfg(os.path.join(ROOT, "configs/demo/lincls_demo.yaml"), SMALL_DATA + [
        "SOLVER.IMS_PER_BATCH", 250, "SOLVER.MAX_ITER", 16, "SOLVER.BASE_LR", 0.1,
        "OUTPUT_DIR", str(out)])


def test_probe_on_pretrained_features_beats_random_init(pretrained, tmp_path):
    ours = run_linear_probe(_probe_cfg(tmp_path / "ours"), pretrained)
    random_init = run_linear_probe(_probe_cfg(tmp_path / "random"), None)
    print("probe pretrained:", ours, "\nprobe random init:", random_init)
    for w in (1.0, 0.5, 0.25):
        key = f"linear_top1/w{w:g}"
        assert ours[key] > random_init[key], (key, ours, random_init)

    # --eval-only path: the probe checkpoint rebuilds the same classifiers and the same numbers.
    cfg = _probe_cfg(tmp_path / "eval")
    cfg.MODEL.WEIGHTS = str(tmp_path / "ours" / "model_final.pth")
    os.makedirs(cfg.OUTPUT_DIR)
    trainer = SlimTrainer(cfg)
    trainer.load_for_evaluation()
    again = SlimTrainer.test(cfg, trainer.method)
    for w in (1.0, 0.5, 0.25):
        assert again[f"top1/w{w:g}"] == pytest.approx(ours[f"linear_top1/w{w:g}"])


def test_backbone_is_frozen_and_stays_in_eval_mode(pretrained):
    probe = build_model(_probe_cfg("/tmp/unused"))
    load_weights(probe, pretrained, probe.frozen_parts())
    probe.train()
    assert probe.training and not probe.backbone.training
    assert all(not p.requires_grad for p in probe.backbone.parameters())
    bn = probe.backbone.bn1.bn[2]
    before = bn.running_mean.clone()
    batch = {"views": [torch.randn(8, 1, 32, 32)], "label": torch.zeros(8, dtype=torch.long)}
    from slimdet.layers import set_width

    set_width(probe, 0.25)
    logits = probe(batch)
    assert logits.shape == (8, 10)
    out = probe.task_loss(logits, probe.prepare(batch), is_full=False)
    out.loss.backward()
    assert torch.equal(bn.running_mean, before)
    assert probe.classifier.linears[2].weight.grad is not None
    assert probe.classifier.linears[0].weight.grad is None
    assert "train_top1" in out.metrics


def test_profiler_evaluator_reports_every_width():
    cfg = load_cfg(os.path.join(ROOT, "configs/demo/lincls_demo.yaml"),
                   ["TEST.EVALUATORS", ["ProfilerEvaluator"]])
    res = SlimTrainer.test(cfg, build_model(cfg), build_evaluators(cfg))
    params = [res[f"params_M/w{w:g}"] for w in (1.0, 0.5, 0.25)]
    macs = [res[f"macs_M/w{w:g}"] for w in (1.0, 0.5, 0.25)]
    assert params[0] > params[1] > params[2] > 0 and macs[0] > macs[1] > macs[2] > 0


def test_probe_trains_a_classifier_per_requested_width_and_eval_only_repeats_it(pretrained, tmp_path):
    """TEST.WIDTHS with an untrained width: its BN statistics are estimated before the probe
    trains, and --eval-only of the probe checkpoint estimates the same ones again."""
    widths = ["TEST.WIDTHS", "[1.0, 0.6, 0.25]", "TEST.CALIBRATE_BATCHES", 2]
    cfg = load_cfg(os.path.join(ROOT, "configs/demo/lincls_demo.yaml"), SMALL_DATA + widths + [
        "SOLVER.IMS_PER_BATCH", 250, "SOLVER.MAX_ITER", 8, "OUTPUT_DIR", str(tmp_path / "p")])
    ours = run_linear_probe(cfg, pretrained)
    assert sorted(k for k in ours if k.startswith("linear_top1")) == [
        "linear_top1/w0.25", "linear_top1/w0.6", "linear_top1/w1"]
    # 10 classes, 500 test images: chance is 10 +- 1.3 %; the 0.6 classifier learned.
    assert ours["linear_top1/w0.6"] > 15

    # The same training loader (batch size included): the same calibration batches.
    cfg = load_cfg(os.path.join(ROOT, "configs/demo/lincls_demo.yaml"), SMALL_DATA + widths + [
        "SOLVER.IMS_PER_BATCH", 250, "MODEL.WEIGHTS", str(tmp_path / "p" / "model_final.pth"),
        "OUTPUT_DIR", str(tmp_path / "e")])
    os.makedirs(cfg.OUTPUT_DIR)
    trainer = SlimTrainer(cfg)
    trainer.load_for_evaluation()
    assert [linear.in_features for linear in trainer.method.classifier.linears] == [128, 76, 32]
    again = SlimTrainer.test(cfg, trainer.method)
    for w in (1.0, 0.6, 0.25):
        assert again[f"top1/w{w:g}"] == pytest.approx(ours[f"linear_top1/w{w:g}"]), w


def test_feature_bn_is_folded_into_each_width_classifier():
    """With MODEL.PROBE.FEATURE_BN the probe standardises each width's features; the plain
    Linear of ``classifier_for`` (what an export needs) gives the same logits in eval mode."""
    from slimdet.layers import set_width, use_width

    cfg = load_cfg(os.path.join(ROOT, "configs/demo/lincls_demo.yaml"),
                   ["MODEL.PROBE.FEATURE_BN", True])
    probe = build_model(cfg)
    g = torch.Generator().manual_seed(0)
    probe.train()
    for _ in range(30):  # running statistics move away from (0, 1)
        images = 3.0 * torch.randn(16, 1, 32, 32, generator=g) + 1.0
        for w in probe.widths:
            with use_width(probe, w):
                probe.classify(images)
    for linear in probe.classifier.linears:  # a trained-looking classifier, not the init
        torch.nn.init.normal_(linear.weight, 0.0, 1.0)
        torch.nn.init.normal_(linear.bias, 0.0, 1.0)
    probe.eval()
    images = 3.0 * torch.randn(8, 1, 32, 32, generator=g) + 1.0
    for w in probe.widths:
        set_width(probe, w)
        bn = probe.feature_norm.bn[probe.widths.index(w)]
        assert bn.weight is None and (bn.running_var - 1).abs().max() > 0.05
        with torch.no_grad():
            expected = probe.classify(images)
            folded = probe.classifier_for(w)(probe.backbone(images))
        assert type(probe.classifier_for(w)) is torch.nn.Linear
        torch.testing.assert_close(folded, expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match=r"classifiers for widths \[1.0, 0.5, 0.25\] only, not 0.75"):
        probe.classifier_for(0.75)
    # Without the key there is no normalisation and classifier_for is the linear layer itself.
    plain = build_model(load_cfg(os.path.join(ROOT, "configs/demo/lincls_demo.yaml"),
                                 ["MODEL.PROBE.FEATURE_BN", False]))
    assert not any("feature_norm" in k for k in plain.state_dict())
    torch.testing.assert_close(plain.classifier_for(0.5).weight, plain.classifier.linears[1].weight)


def test_a_probe_without_weights_says_its_backbone_is_random(tmp_path, caplog):
    trainer = SlimTrainer(_probe_cfg(tmp_path / "random"))
    trainer.resume_or_load(resume=False)
    assert "MODEL.WEIGHTS is empty: the frozen backbone keeps its random initialisation" \
        in caplog.text


def test_a_new_probe_started_from_a_probe_file_says_it_continues_that_probe(pretrained, tmp_path,
                                                                            caplog):
    """A probe's model_final.pth given as MODEL.WEIGHTS where the pre-training checkpoint was
    meant: the new run starts from the trained classifiers (its accuracy is a continued
    probe's), which is said; started from the pre-training checkpoint, nothing is."""
    import logging

    first = _probe_cfg(tmp_path / "first")
    first.defrost()
    first.SOLVER.MAX_ITER, first.MODEL.WEIGHTS = 2, pretrained
    trainer = SlimTrainer(first)
    with caplog.at_level(logging.WARNING, logger="slimdet"):
        trainer.resume_or_load(resume=False)
    assert "holds a trained classifier" not in caplog.text
    trainer.train()
    again = _probe_cfg(tmp_path / "again")
    again.defrost()
    again.MODEL.WEIGHTS = str(tmp_path / "first" / "model_final.pth")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="slimdet"):
        SlimTrainer(again).resume_or_load(resume=False)
    warned = [r.getMessage() for r in caplog.records if "holds a trained classifier" in r.getMessage()]
    assert len(warned) == 1 and again.MODEL.WEIGHTS in warned[0]
    assert "classifier (" in warned[0] and "not from a fresh initialisation" in warned[0]


def test_an_evaluation_calibrating_otherwise_than_the_probe_was_trained_says_so(tmp_path):
    def cfg(batches):
        return load_cfg(os.path.join(ROOT, "configs/demo/lincls_demo.yaml"), SMALL_DATA + [
            "TEST.WIDTHS", [1.0, 0.6], "TEST.CALIBRATE_BATCHES", batches])

    trained = build_model(cfg(2))  # classifiers at the untrained 0.6 fit 2-batch statistics
    path = tmp_path / "probe.pth"
    torch.save({"model": trained.state_dict()}, path)
    assert trained.calibration_mismatch(cfg(2)) == ""
    evaluated = build_model(cfg(3))
    load_weights(evaluated, str(path), evaluated.eval_parts(), "--eval-only")
    assert "widths ['0.6'] were trained on BN statistics estimated with TEST.CALIBRATE_BATCHES 2 " \
           "(now 3)" in evaluated.calibration_mismatch(cfg(3))
    assert evaluated.calibration_mismatch(cfg(2)) == ""
    # Trained widths alone need no calibration: nothing to compare.
    plain = load_cfg(os.path.join(ROOT, "configs/demo/lincls_demo.yaml"), SMALL_DATA)
    assert build_model(plain).calibration_mismatch(cfg(3)) == ""


def _trained_looking_probe(overrides=()):
    """The demo probe (widths 1.0 / 0.5 / 0.25, feature BN) with random classifiers and
    feature statistics, as a trained probe has."""
    probe = build_model(load_cfg(os.path.join(ROOT, "configs/demo/lincls_demo.yaml"), list(overrides)))
    g = torch.Generator().manual_seed(0)
    for i, linear in enumerate(probe.classifier.linears):
        torch.nn.init.normal_(linear.weight, 0.0, 1.0, generator=g)
        torch.nn.init.normal_(linear.bias, 0.0, 1.0, generator=g)
        probe.feature_norm.bn[i].running_mean.normal_(generator=g)
        probe.feature_norm.bn[i].running_var.uniform_(0.5, 2.0, generator=g)
    return probe.eval()


def test_a_probe_evaluates_some_of_its_widths_with_their_own_classifiers(tmp_path):
    """``TEST.WIDTHS [0.5, 0.25]`` (or ``[0.25]``, ``[1.0, 0.25]``) of a probe file trained at
    [1.0, 0.5, 0.25]: each width's logits are those of the full probe at that width."""
    from slimdet.layers import use_width

    trained = _trained_looking_probe()
    path = tmp_path / "probe.pth"
    torch.save({"model": trained.state_dict()}, path)
    images = torch.randn(6, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    for widths in ([0.5, 0.25], [0.25], [1.0, 0.25], [1.0]):
        probe = build_model(load_cfg(os.path.join(ROOT, "configs/demo/lincls_demo.yaml"),
                                     ["TEST.WIDTHS", widths]))
        load_weights(probe, str(path), probe.eval_parts(), "--eval-only")
        probe.eval()
        for w in widths:
            with torch.no_grad(), use_width(probe, w), use_width(trained, w):
                torch.testing.assert_close(probe.classify(images), trained.classify(images),
                                           rtol=0, atol=0)


def test_a_probe_file_without_a_width_or_with_feature_bn_is_refused_by_name(tmp_path):
    from slimdet.checkpoint import CheckpointError

    path = tmp_path / "probe.pth"
    trained = _trained_looking_probe(["TEST.WIDTHS", [1.0, 0.5]])
    torch.save({"model": trained.state_dict()}, path)
    probe = build_model(load_cfg(os.path.join(ROOT, "configs/demo/lincls_demo.yaml"), []))
    with pytest.raises(CheckpointError, match=r"probe.pth' \(slimdet\) does not fit the model for "
                       r"--eval-only: it holds probe classifiers for widths \['1', '0.5'\] .*none "
                       r"for \['0.25'\] of this probe's widths \['1', '0.5', '0.25'\]"):
        load_weights(probe, str(path), probe.eval_parts(), "--eval-only")
    # Leaving the file's feature BN out would change every logit, with exit status 0.
    torch.save({"model": _trained_looking_probe().state_dict()}, path)
    plain = build_model(load_cfg(os.path.join(ROOT, "configs/demo/lincls_demo.yaml"),
                                 ["MODEL.PROBE.FEATURE_BN", False]))
    with pytest.raises(CheckpointError, match="trained on standardised features .*set "
                       "MODEL.PROBE.FEATURE_BN True"):
        load_weights(plain, str(path), plain.eval_parts(), "--eval-only")


def test_a_probe_run_draws_its_initial_weights_from_seed_not_from_what_ran_before(tmp_path):
    """The demo runs a random-init probe after pre-training and another probe in one process:
    its random backbone and classifiers must not depend on how much randomness ran before."""
    def probe(out, draws):
        torch.rand(draws)  # what earlier work in the process consumed
        cfg = load_cfg(os.path.join(ROOT, "configs/demo/lincls_demo.yaml"), SMALL_DATA + [
            "SOLVER.IMS_PER_BATCH", 250, "SOLVER.MAX_ITER", 2, "OUTPUT_DIR", str(out)])
        results = run_linear_probe(cfg, None)
        return results, torch.load(out / "model_final.pth", weights_only=False)["model"]

    first, first_state = probe(tmp_path / "a", 1)
    again, again_state = probe(tmp_path / "b", 1000)
    assert first == again
    for key in ("backbone.conv1.weight", "classifier.linears.0.weight"):
        assert torch.equal(first_state[key], again_state[key]), key


def test_resuming_a_finished_probe_run_evaluates_it_again(tmp_path):
    """The demo's --resume after a kill during its second probe: the finished probe (and the
    finished pre-training) is evaluated, not refused as a resume with nothing left to train."""
    cfg = load_cfg(os.path.join(ROOT, "configs/demo/lincls_demo.yaml"), SMALL_DATA + [
        "SOLVER.IMS_PER_BATCH", 250, "SOLVER.MAX_ITER", 2, "OUTPUT_DIR", str(tmp_path)])
    first = run_linear_probe(cfg, None)
    assert run_linear_probe(cfg, None, resume=True) == first
