"""The training engine end to end: resume reproduces the loss sequence, DDP over gloo gives the
averaged per-width gradients, clear errors."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
TRAIN = [sys.executable, str(ROOT / "tools/train_net.py"), "--config-file",
         str(ROOT / "configs/demo/slimclr_mocov2_demo.yaml")]
# Small and quick: 1,280 images -> 10 iterations per epoch at batch 128.
FAST = ["DATASETS.TRAIN_SUBSET", "1280", "TEST.EVALUATORS", "[]", "LOG_PERIOD", "1",
        "SOLVER.MAX_ITER", "8", "SOLVER.CHECKPOINT_PERIOD", "3", "MODEL.SLIM.SLOW_START_EPOCH", "0"]
ENV = dict(os.environ, OMP_NUM_THREADS="1")


def _losses(out_dir: Path):
    """iteration -> total_loss from metrics.json (the last record of an iteration wins)."""
    rows = {}
    for line in (out_dir / "metrics.json").read_text().splitlines():
        r = json.loads(line)
        if "total_loss" in r:
            rows[r["iteration"]] = (r["total_loss"], r["loss_task/w0.25"], r["lr"])
    return rows


def _logged_iterations(out_dir: Path):
    try:
        text = (out_dir / "metrics.json").read_text()
    except OSError:
        return set()
    rows = []
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written
            pass
    return {r["iteration"] for r in rows if "total_loss" in r}


def test_kill_and_resume_reproduces_uninterrupted_losses(tmp_path):
    full = tmp_path / "full"
    subprocess.run(TRAIN + FAST + ["OUTPUT_DIR", str(full)], check=True, env=ENV,
                   capture_output=True)
    reference = _losses(full)
    assert sorted(reference) == list(range(8))

    killed = tmp_path / "killed"
    proc = subprocess.Popen(TRAIN + FAST + ["OUTPUT_DIR", str(killed)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    # Killed once checkpoint 5 is on disk and iteration 5 is logged: the checkpointer writes
    # before the metrics writer in each step, so waiting for the file alone can lose the row.
    while proc.poll() is None and not ((killed / "model_0000005.pth").exists() and
                                       5 in _logged_iterations(killed)):
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (killed / "last_checkpoint").exists()
    subprocess.run(TRAIN + ["--resume"] + FAST + ["OUTPUT_DIR", str(killed)],
                   check=True, env=ENV, capture_output=True)
    resumed = _losses(killed)
    assert sorted(resumed) == list(range(8))
    # Each iteration is recorded once: the rows the killed run wrote past its last checkpoint
    # (and a line the kill cut off) are dropped before the resumed run writes them again.
    rows = [json.loads(line) for line in (killed / "metrics.json").read_text().splitlines()]
    iterations = [r["iteration"] for r in rows if "total_loss" in r]
    assert sorted(iterations) == list(range(8)), iterations
    for it in range(8):
        assert resumed[it] == pytest.approx(reference[it], rel=1e-5, abs=1e-6), it


def test_two_cpu_processes_over_gloo_resume_with_shuffle_bn_to_the_same_losses(tmp_path):
    # One run of two processes, then its resume (one run less than a separate smoke test).
    # Shuffle-BN (MODEL.MOCOV2.SHUFFLE_BN, on by default) acts with 2 processes. Its
    # permutation once came from the global generator, reseeded at start-up and not
    # checkpointed: a resumed run drew other permutations, so other keys and losses.
    small = ["--num-gpus", "2"] + FAST + [
        "DATASETS.TRAIN_SUBSET", "256", "SOLVER.IMS_PER_BATCH", "32", "SOLVER.MAX_ITER", "4",
        "SOLVER.CHECKPOINT_PERIOD", "2", "MODEL.MOCOV2.QUEUE_SIZE", "64",
        "MODEL.BACKBONE.BASE_CHANNELS", "8", "MODEL.MOCOV2.HIDDEN_DIM", "64"]
    full = tmp_path / "full"
    res = subprocess.run(TRAIN + small + ["OUTPUT_DIR", str(full)], env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Rank 1 of 2" in (full / "log.txt.rank1").read_text()
    reference = _losses(full)
    assert sorted(reference) == [0, 1, 2, 3]
    assert all(torch.isfinite(torch.tensor(v[0])) for v in reference.values())
    # The folder as a run killed after checkpoint 1 would leave it (iterations 2 and 3 are
    # dropped from metrics.json by the resumed run and recorded again).
    resumed = tmp_path / "resumed"
    shutil.copytree(full, resumed)
    for name in ("model_0000003.pth", "model_final.pth"):
        (resumed / name).unlink()
    (resumed / "last_checkpoint").write_text("model_0000001.pth")
    res = subprocess.run(TRAIN + ["--resume"] + small + ["OUTPUT_DIR", str(resumed)], env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Resuming at iteration 2" in (resumed / "log.txt").read_text()
    again = _losses(resumed)
    assert sorted(again) == [0, 1, 2, 3]
    assert [again[it] for it in (2, 3)] == [reference[it] for it in (2, 3)]


def test_unknown_method_and_missing_data_fail_in_one_line(tmp_path):
    res = subprocess.run(TRAIN + ["MODEL.METHOD", "BYOLX", "OUTPUT_DIR", str(tmp_path)],
                         capture_output=True, text=True, env=ENV)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith("error: MODEL.METHOD: 'BYOLX'")
    assert "MoCoV2" in res.stderr
    res = subprocess.run(TRAIN + ["OUTPUT_DIR", str(tmp_path)], capture_output=True, text=True,
                         env=dict(ENV, SLIMDET_FMNIST_DIR=str(tmp_path / "nowhere")))
    assert res.returncode == 2
    assert str(tmp_path / "nowhere") in res.stderr.strip().splitlines()[-1]


def test_resume_drops_the_metrics_rows_it_records_again(tmp_path):
    from slimdet.engine.run_folder import trim_metrics_for_resume

    path = tmp_path / "metrics.json"
    rows = [{"iteration": i, "total_loss": 1.0 / (i + 1)} for i in range(6)]
    # A kill after checkpoint 3: rows 4 and 5 were written, then half of a line.
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"epoch": 0.5, "itera')
    assert trim_metrics_for_resume(str(path), start_iter=4) == 3
    assert [json.loads(line) for line in path.read_text().splitlines()] == rows[:4]
    assert trim_metrics_for_resume(str(path), start_iter=4) == 0  # nothing left to drop
    assert trim_metrics_for_resume(str(tmp_path / "absent.json"), start_iter=4) == 0

    # A finished run of 4 iterations resumed for more: its final evaluation (recorded at
    # iteration 4, a row without training scalars) measured the final model and is kept; a
    # killed run's rows at its start iteration are run again and go.
    final_eval = {"iteration": 4, "top1/w1": 50.0}
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:4] + [final_eval]))
    assert trim_metrics_for_resume(str(path), start_iter=4, run_finished=True) == 0
    assert trim_metrics_for_resume(str(path), start_iter=4) == 1
    assert [json.loads(line) for line in path.read_text().splitlines()] == rows[:4]


def test_only_a_folder_with_results_counts_as_a_previous_run(tmp_path):
    from slimdet.engine.run_folder import OutputDirError, check_output_dir

    (tmp_path / "config.yaml").write_text("a start that failed after writing its config\n")
    check_output_dir(str(tmp_path), resume=False, overwrite=False)  # nothing to lose
    (tmp_path / "metrics.json").write_text('{"iteration": 0}\n')
    with pytest.raises(OutputDirError, match=r"holds a previous run \(config\.yaml, metrics\.json\)"):
        check_output_dir(str(tmp_path), resume=False, overwrite=False)
    # --overwrite removes the run's checkpoints: not the one MODEL.WEIGHTS starts from.
    (tmp_path / "sub").mkdir()
    (tmp_path / "model_final.pth").write_bytes(b"weights")
    with pytest.raises(OutputDirError, match=r"MODEL.WEIGHTS .*model_final.pth is a file of the "
                       r"previous run .* which --overwrite removes"):
        check_output_dir(str(tmp_path), resume=False, overwrite=True,
                         weights=str(tmp_path / "sub" / ".." / "model_final.pth"))
    (tmp_path / "sub" / "model_final.pth").write_bytes(b"weights")  # not a file of the run
    check_output_dir(str(tmp_path), resume=False, overwrite=True,
                     weights=str(tmp_path / "sub" / "model_final.pth"))


def test_a_resume_with_changed_solver_keys_runs_the_new_schedule_from_its_first_step(tmp_path):
    """The file's LR belongs to the schedule the run started with: a resume that extends
    SOLVER.MAX_ITER (or changes the weight decay) runs the new config from the first step."""
    from slimdet.engine import load_cfg
    from slimdet.engine.trainer import SlimTrainer

    def cfg(max_iter, weight_decay):
        return load_cfg(str(ROOT / "configs/demo/slimclr_mocov2_demo.yaml"), [
            "DATASETS.TRAIN_SUBSET", 256, "SOLVER.IMS_PER_BATCH", 64, "TEST.EVALUATORS", [],
            "MODEL.SLIM.SLOW_START_EPOCH", 0, "SOLVER.MAX_ITER", max_iter,
            "SOLVER.WEIGHT_DECAY", weight_decay, "OUTPUT_DIR", str(tmp_path)])

    first = SlimTrainer(cfg(4, 1e-4))
    first.resume_or_load(resume=False)
    first.train()
    resumed = SlimTrainer(cfg(8, 5e-4))
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 4
    fresh = SlimTrainer(cfg(8, 5e-4)).scheduler  # the schedule of a run of 8 iterations
    fresh.last_epoch = 4
    assert [g["lr"] for g in resumed.optimizer.param_groups] == pytest.approx(fresh.get_lr())
    assert resumed.optimizer.param_groups[0]["lr"] > 0  # the old schedule ended at 0
    assert resumed.optimizer.param_groups[0]["weight_decay"] == 5e-4
    # The momentum buffers did come from the file.
    p = resumed.optimizer.param_groups[0]["params"][0]
    q = first.optimizer.param_groups[0]["params"][0]
    torch.testing.assert_close(resumed.optimizer.state[p]["momentum_buffer"],
                               first.optimizer.state[q]["momentum_buffer"])
    # A resume whose SOLVER.MAX_ITER leaves no iteration to run (lowered, or the run's own on a
    # finished run) is refused: it would end at once with exit 0 and no model_final.pth.
    from slimdet.engine.run_folder import OutputDirError
    for max_iter, says in ((3, "SOLVER.MAX_ITER 3 ends before the 4 iterations it already ran"),
                           (4, "it already ran the 4 iterations of SOLVER.MAX_ITER 4")):
        with pytest.raises(OutputDirError, match=f"{says}.*raise SOLVER.MAX_ITER above 4"):
            SlimTrainer(cfg(max_iter, 1e-4)).resume_or_load(resume=True)


def test_a_resume_with_another_number_of_processes_says_so(tmp_path, caplog):
    from slimdet.engine import load_cfg
    from slimdet.engine.trainer import SlimTrainer

    trainer = SlimTrainer(load_cfg(str(ROOT / "configs/demo/slimclr_mocov2_demo.yaml"), [
        "DATASETS.TRAIN_SUBSET", 256, "SOLVER.IMS_PER_BATCH", 64, "TEST.EVALUATORS", [],
        "OUTPUT_DIR", str(tmp_path)]))
    state = trainer.state_dict()
    assert state["world_size"] == 1
    trainer.load_state_dict(state)
    assert "Resuming a run of" not in caplog.text
    trainer.load_state_dict(dict(state, world_size=2))
    assert "Resuming a run of 2 process(es) with 1" in caplog.text


def test_a_resume_with_another_batch_size_or_epoch_length_is_refused(tmp_path):
    """Iteration t reads batch t % P of epoch t // P: resumed under another SOLVER.IMS_PER_BATCH
    or training set size (another P), the run would skip or repeat epochs, its metrics.json
    epoch would jump and every key counted in epochs would move (it ran with exit 0)."""
    from slimdet.checkpoint import CheckpointError
    from slimdet.engine import load_cfg
    from slimdet.engine.trainer import SlimTrainer

    def trainer_of(batch, images, max_iter):
        return SlimTrainer(load_cfg(str(ROOT / "configs/demo/slimclr_mocov2_demo.yaml"), [
            "DATASETS.TRAIN_SUBSET", images, "SOLVER.IMS_PER_BATCH", batch,
            "MODEL.MOCOV2.QUEUE_SIZE", 128, "TEST.EVALUATORS", [], "SOLVER.MAX_ITER", max_iter,
            "OUTPUT_DIR", str(tmp_path)]))

    first = trainer_of(64, 256, 2)
    first.resume_or_load(resume=False)
    first.train()
    before = sorted((p.name, p.stat().st_mtime_ns) for p in tmp_path.iterdir())
    for batch, images, now in ((128, 256, "SOLVER.IMS_PER_BATCH 128 with 2"),
                               (64, 128, "SOLVER.IMS_PER_BATCH 64 with 2"),
                               (32, 128, "SOLVER.IMS_PER_BATCH 32 with 4")):
        with pytest.raises(CheckpointError, match=(
                r"model_final\.pth'?: the run was trained at SOLVER\.IMS_PER_BATCH 64 with 4 "
                rf"iterations per epoch, and this config has {now} .*DATASETS\.TRAIN_SUBSET "
                rf"{images}\): its iteration 2 would be another point of the data")):
            trainer_of(batch, images, 4).resume_or_load(resume=True)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in tmp_path.iterdir()) == before
    resumed = trainer_of(64, 256, 4)  # the run's own batch and data: continued
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 2
    # A file without the record (written before it) is not checked.
    state = {k: v for k, v in first.state_dict().items()
             if k not in ("ims_per_batch", "iters_per_epoch")}
    trainer_of(128, 256, 4).load_state_dict(state)


def test_a_resumed_run_retires_the_eval_results_of_the_model_final_it_rewrites(tmp_path):
    """eval_results.json of an --eval-only on model_final.pth would read as the numbers of the
    model_final.pth a resumed run writes under the same name: it goes (the record, with the
    old file's SHA-256, stays in eval_history.jsonl); results of an unchanged file stay."""
    from slimdet.engine import load_cfg
    from slimdet.engine.run_folder import EVAL_HISTORY, EVAL_RESULTS, write_eval_results
    from slimdet.engine.trainer import SlimTrainer
    from slimdet.utils.file_io import file_sha256

    def trainer_of(max_iter):
        return SlimTrainer(load_cfg(str(ROOT / "configs/demo/slimclr_mocov2_demo.yaml"), [
            "DATASETS.TRAIN_SUBSET", 128, "SOLVER.IMS_PER_BATCH", 64, "TEST.EVALUATORS", [],
            "MODEL.SLIM.SLOW_START_EPOCH", 0, "SOLVER.MAX_ITER", max_iter,
            "OUTPUT_DIR", str(tmp_path)]))

    def run(max_iter, resume):
        trainer = trainer_of(max_iter)
        trainer.resume_or_load(resume=resume)
        trainer.train()

    final = tmp_path / "model_final.pth"
    run(2, resume=False)
    # A finished run is finished for its own length only: a raised SOLVER.MAX_ITER continues it
    # (the demo and the probe runner only evaluate a finished run).
    assert trainer_of(2).run_finished() and trainer_of(2).final_model_iterations() == 2
    assert not trainer_of(3).run_finished() and trainer_of(3).final_model_iterations() == 2
    old_digest = file_sha256(str(final))
    write_eval_results(str(tmp_path), {"knn_top1/w1": 12.5}, str(final))
    assert json.loads((tmp_path / EVAL_RESULTS).read_text())["weights_sha256"] == old_digest
    # An evaluation of another, unchanged file is kept by a run that rewrites model_final.pth.
    other = tmp_path / "elsewhere.pth"
    shutil.copy(final, other)
    run(3, resume=True)
    assert file_sha256(str(final)) != old_digest  # the resumed run wrote a new final model
    assert not (tmp_path / EVAL_RESULTS).exists()
    history = [json.loads(line) for line in (tmp_path / EVAL_HISTORY).read_text().splitlines()]
    assert [(r["weights"], r["weights_sha256"]) for r in history] == [(str(final), old_digest)]
    write_eval_results(str(tmp_path), {"knn_top1/w1": 13.0}, str(other))
    run(4, resume=True)
    assert json.loads((tmp_path / EVAL_RESULTS).read_text())["weights"] == str(other)


def test_eval_only_resume_without_a_run_checkpoint_says_which_weights_it_reads(tmp_path, caplog):
    """--eval-only --resume in a folder without last_checkpoint (a mistyped OUTPUT_DIR) reads
    MODEL.WEIGHTS, as Detectron2 does: that is said, and an error about that file says why it
    was read (it named only the pre-training file's missing classifier)."""
    from slimdet.checkpoint import CheckpointError, SlimCheckpointer
    from slimdet.config import ConfigError
    from slimdet.engine import load_cfg
    from slimdet.engine.trainer import load_for_evaluation
    from slimdet.modeling import build_model

    pretraining = str(ROOT / "configs/demo/slimclr_mocov2_demo.yaml")
    weights = tmp_path / "pretrained.pth"
    torch.save({"model": build_model(load_cfg(pretraining)).state_dict()}, weights)
    no_run = tmp_path / "mistyped"

    def attempt(config, model_weights):
        cfg = load_cfg(config, ["MODEL.WEIGHTS", model_weights, "OUTPUT_DIR", str(no_run)])
        checkpointer = SlimCheckpointer(build_model(cfg), cfg.OUTPUT_DIR, save_to_disk=False)
        return load_for_evaluation(checkpointer, cfg, resume=True)

    says = rf"--eval-only --resume: OUTPUT_DIR {no_run} holds no run checkpoint to evaluate"
    with pytest.raises(CheckpointError, match=rf"{says} .*so MODEL\.WEIGHTS was read instead: "
                       r".*pretrained\.pth.* has no weights for 'classifier'"):
        attempt(str(ROOT / "configs/demo/lincls_demo.yaml"), str(weights))
    assert attempt(pretraining, str(weights)) == str(weights)
    assert f"{no_run} holds no run checkpoint" in caplog.text
    assert f"so MODEL.WEIGHTS {weights} is evaluated instead" in caplog.text
    with pytest.raises(ConfigError, match=rf"{says} .*set OUTPUT_DIR to the run's folder"):
        attempt(pretraining, "")
    assert not no_run.exists()


def test_a_best_metric_no_evaluator_reports_is_refused_when_the_run_is_built(tmp_path):
    """TEST.BEST_METRIC that none of TEST.EVALUATORS reports kept no best evaluation: a warning
    at every evaluation and exit 0, the best numbers missing at the end of the run."""
    from slimdet.config import ConfigError
    from slimdet.engine import load_cfg
    from slimdet.engine.trainer import SlimTrainer, check_best_metric

    def cfg(config, *keys):
        return load_cfg(str(ROOT / "configs/demo" / config), [
            "DATASETS.TRAIN_SUBSET", 256, "SOLVER.IMS_PER_BATCH", 64, "SOLVER.MAX_ITER", 2,
            "OUTPUT_DIR", str(tmp_path / "run"), *keys])

    with pytest.raises(ConfigError, match=r"TEST\.BEST_METRIC 'top1' is not a metric of "
                       r"TEST\.EVALUATORS \['KNNEvaluator'\] \(they report knn_top1\)"):
        SlimTrainer(cfg("slimclr_mocov2_demo.yaml", "TEST.BEST_METRIC", "top1"))
    assert not (tmp_path / "run").exists()
    SlimTrainer(cfg("slimclr_mocov2_demo.yaml", "TEST.BEST_METRIC", "knn_top1"))
    probe = ["TEST.EVALUATORS", ["ClassificationEvaluator", "ProfilerEvaluator"]]
    for metric in ("top1", "top5", "macs_M", ""):
        check_best_metric(cfg("lincls_demo.yaml", *probe, "TEST.BEST_METRIC", metric))
    with pytest.raises(ConfigError, match=r"'top_1' .*they report top1, top5, params_M, macs_M"):
        check_best_metric(cfg("lincls_demo.yaml", *probe, "TEST.BEST_METRIC", "top_1"))
    # Of at most 5 classes no top-5 is reported.
    with pytest.raises(ConfigError, match=r"'top5' .*they report top1\)"):
        check_best_metric(cfg("lincls_demo.yaml", "MODEL.NUM_CLASSES", 5,
                              "TEST.BEST_METRIC", "top5"))
