"""slimdet/evaluation/calibration.py: the batches untrained widths are calibrated on are the
same whole batches in every process of any job."""
import os

import torch
from detectron2.utils import comm

from slimdet.data import build_train_loader
from slimdet.engine import load_cfg
from slimdet.evaluation.calibration import CalibrationImages

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
US_DEMO = os.path.join(ROOT, "configs/demo/us_mocov2_demo.yaml")
SMALL = ["DATASETS.TRAIN_SUBSET", 300, "DATASETS.TEST_SUBSET", 100, "SOLVER.IMS_PER_BATCH", 50,
         "TEST.CALIBRATE_BATCHES", 2, "MODEL.DEVICE", "cpu"]


def _first_batches(images, n: int = 2):
    it = iter(images)
    return [next(it) for _ in range(n)]


def test_calibration_batches_do_not_depend_on_the_rank_or_the_number_of_processes(monkeypatch):
    cfg = load_cfg(US_DEMO, SMALL)
    device = torch.device("cpu")
    alone = _first_batches(CalibrationImages(cfg, device))
    assert [b.shape[0] for b in alone] == [50, 50]  # whole SOLVER.IMS_PER_BATCH batches
    for rank in (0, 1):  # each process of a two-process job
        monkeypatch.setattr(comm, "get_rank", lambda: rank)
        monkeypatch.setattr(comm, "get_world_size", lambda: 2)
        # The job's own loader is sharded there (half batches, a rank's own augmentation) ...
        shard = _first_batches(build_train_loader(cfg, device), 1)[0]["views"][0]
        assert shard.shape[0] == 25
        # ... the calibration batches are not.
        seen = _first_batches(CalibrationImages(cfg, device))
        assert all(torch.equal(a, b) for a, b in zip(seen, alone)), rank
    # The torch backend whatever DATALOADER.BACKEND: a DALI pipeline is one stream that
    # cannot restart at the first batch for each calibrated width.
    dali = load_cfg(US_DEMO, SMALL + ["DATALOADER.BACKEND", "dali"])
    assert all(torch.equal(a, b) for a, b in zip(_first_batches(CalibrationImages(dali, device)),
                                                  alone))
    # Re-iterable: the next evaluation starts again at the same first batch.
    images = CalibrationImages(cfg, device)
    assert torch.equal(_first_batches(images, 1)[0], _first_batches(images, 1)[0])


PROBE = os.path.join(ROOT, "configs/demo/lincls_demo.yaml")
# A probe at the untrained width 0.6: its BN statistics are calibrated before the probe trains.
PROBE_KEYS = SMALL + ["MODEL.BACKBONE.BASE_CHANNELS", 8, "TEST.WIDTHS", [1.0, 0.6, 0.25],
                      "SOLVER.AMP.ENABLED", False]


def _calibrated_statistics() -> dict:
    """Width 0.6's BN statistics as the probe's ``CalibrationHook`` estimates them in this
    process (alone, or one of a job's): ``{"<bn>.running_mean": ..., "<bn>.running_var": ...}``.
    They are not in the state dict (never saved), so they are read from each switchable BN."""
    from slimdet.engine.hooks import CalibrationHook
    from slimdet.layers import SwitchableBatchNorm, uncalibrated_widths
    from slimdet.modeling import build_model

    cfg = load_cfg(PROBE, PROBE_KEYS)
    torch.manual_seed(0)  # the same random backbone in every process
    method = build_model(cfg)
    assert uncalibrated_widths(method.backbone, [0.6]) == [0.6]
    CalibrationHook(cfg, method, torch.device("cpu")).before_train()
    assert uncalibrated_widths(method.backbone, [0.6]) == []
    out = {}
    for name, m in method.backbone.named_modules():
        if isinstance(m, SwitchableBatchNorm):
            bn = m.statistics_at(0.6)
            out[f"{name}.running_mean"] = bn.running_mean.clone()
            out[f"{name}.running_var"] = bn.running_var.clone()
    return out


def _save_calibrated_statistics(out_dir: str) -> None:
    # Runs in each worker of a launched job (spawned: a module-level function).
    torch.save(_calibrated_statistics(), os.path.join(out_dir, f"rank{comm.get_rank()}.pt"))


def test_two_processes_calibrate_the_statistics_one_process_does(tmp_path):
    """The probe's untrained widths under DDP (two CPU processes over gloo): every rank
    estimates the statistics a one-process run (a later --eval-only) estimates, bit for bit."""
    from slimdet.engine.launch import launch

    alone = _calibrated_statistics()
    assert len(alone) == 2 * 20  # the 20 BNs of the CIFAR-stem ResNet-18 backbone
    launch(_save_calibrated_statistics, 2, args=(str(tmp_path),))
    for rank in (0, 1):
        theirs = torch.load(tmp_path / f"rank{rank}.pt")
        assert sorted(theirs) == sorted(alone)
        differ = [k for k in alone if not torch.equal(theirs[k], alone[k])]
        assert not differ, (rank, differ[:3])


def _statistics(net, widths) -> dict:
    from slimdet.layers import SwitchableBatchNorm

    return {f"{name}.{w}.{k}": getattr(m.statistics_at(w), k).clone()
            for name, m in net.backbone.named_modules() if isinstance(m, SwitchableBatchNorm)
            for w in widths for k in ("running_mean", "running_var")}


def _statistics_calibrated_for_an_evaluation(sync_bn: bool, every_process: bool = False) -> dict:
    """The BN statistics of widths 1.0, 0.6 (untrained) and 0.25 in the copy an evaluation
    calibrates of the demo's sandwich network, its BNs SyncBatchNorms with ``sync_bn``: this
    process's copy (``with_calibrated_widths``), or with ``every_process`` the one every process
    of the job evaluates with (``evaluation_model``, collective)."""
    from slimdet.evaluation.calibration import evaluation_model, with_calibrated_widths
    from slimdet.layers import uncalibrated_widths
    from slimdet.modeling import build_model

    cfg = load_cfg(US_DEMO, SMALL)
    torch.manual_seed(0)  # the same random network in every process
    model = build_model(cfg).eval()
    model.backbone.mark_statistics_stale()  # as sandwich-rule training leaves it
    if sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    widths = [1.0, 0.6, 0.25]  # trained widths (their BNs SyncBatchNorms) and an untrained one
    assert uncalibrated_widths(model.backbone, widths) == widths
    copy_for = evaluation_model if every_process else with_calibrated_widths
    twin = copy_for(cfg, model, widths, torch.device("cpu"))
    assert twin is not model and uncalibrated_widths(model.backbone, widths) == widths
    assert uncalibrated_widths(twin.backbone, widths) == []  # every process may evaluate it
    return _statistics(twin, widths)


def _trained_statistics_of_the_main_process() -> dict:
    """A network whose trained widths have statistics, different in each process (per-process
    BN training): the ones each process evaluates with (``evaluation_model``), and its own."""
    from slimdet.evaluation.calibration import evaluation_model
    from slimdet.modeling import build_model

    cfg = load_cfg(US_DEMO, SMALL)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    for m in model.backbone.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.add_(comm.get_rank())  # this process's own training statistics
    widths = [1.0, 0.25]
    net = evaluation_model(cfg, model, widths, torch.device("cpu"))
    return {"evaluated": _statistics(net, widths), "own": _statistics(model, widths)}


def _evaluate_in_every_process(out_dir: str) -> None:
    # As the evaluators run: the main process calibrates, every process evaluates its share.
    rank = comm.get_rank()
    torch.save(_statistics_calibrated_for_an_evaluation(sync_bn=True, every_process=True),
               os.path.join(out_dir, f"calibrated{rank}.pt"))
    torch.save(_trained_statistics_of_the_main_process(),
               os.path.join(out_dir, f"trained{rank}.pt"))


def test_an_evaluation_of_a_sync_bn_job_calibrates_on_the_main_process_for_every_process(tmp_path):
    """MODEL.SYNC_BN under DDP: a SyncBatchNorm in training mode all-reduces with the other
    processes, which wait for the calibration instead (a hang on GPUs; on these CPU processes
    torch refuses the all-reduce). The calibrated copy normalises over its own batches, as
    plain BN does: the statistics a one-process plain-BN network gets; the main process
    broadcasts them, so every process evaluates with exactly the same ones. Statistics of
    trained widths, per-process after training, are the main process's in every evaluation
    too (a one-process evaluation of the checkpoint holds those), the model itself unchanged."""
    from slimdet.engine.launch import launch

    launch(_evaluate_in_every_process, 2, args=(str(tmp_path),))
    ours = torch.load(tmp_path / "calibrated0.pt")
    alone = _statistics_calibrated_for_an_evaluation(sync_bn=False)
    assert sorted(ours) == sorted(alone) and alone
    for k in alone:
        torch.testing.assert_close(ours[k], alone[k])
    theirs = torch.load(tmp_path / "calibrated1.pt")
    assert all(torch.equal(theirs[k], ours[k]) for k in ours)
    main, other = torch.load(tmp_path / "trained0.pt"), torch.load(tmp_path / "trained1.pt")
    assert all(torch.equal(other["evaluated"][k], main["own"][k]) for k in main["own"])
    assert all(torch.equal(main["evaluated"][k], main["own"][k]) for k in main["own"])
    differ = [k for k in main["own"] if not torch.equal(other["own"][k], main["own"][k])]
    assert differ  # the other process's own statistics are left as they were
