import json
import os

from slimdet.engine.run_folder import EVAL_HISTORY, EVAL_RESULTS, write_eval_results


def test_eval_results_keep_every_evaluation(tmp_path):
    # An evaluation of other weights or widths replaces eval_results.json (the latest) but
    # never loses the earlier numbers: eval_history.jsonl holds one record per evaluation,
    # and a record written before the history existed is its first line.
    (tmp_path / EVAL_RESULTS).write_text(json.dumps(
        {"weights": "old.pth", "results": {"knn_top1/w1": 11.0}}, indent=2))
    write_eval_results(str(tmp_path), {"knn_top1/w1": 22.0, "knn_top1/w0.5": 21.0}, "a.pth")
    write_eval_results(str(tmp_path), {"linear_top1/w0.25": 33.0}, "b.pth")

    latest = json.loads((tmp_path / EVAL_RESULTS).read_text())
    assert latest["weights"] == os.path.abspath("b.pth") and latest["results"] == {"linear_top1/w0.25": 33.0}
    history = [json.loads(line) for line in (tmp_path / EVAL_HISTORY).read_text().splitlines()]
    assert [(r["weights"], r["results"]) for r in history] == [
        ("old.pth", {"knn_top1/w1": 11.0}),
        (os.path.abspath("a.pth"), {"knn_top1/w1": 22.0, "knn_top1/w0.5": 21.0}),
        (os.path.abspath("b.pth"), {"linear_top1/w0.25": 33.0})]
    assert all("time" in r for r in history[1:])
    assert sorted(p.name for p in tmp_path.iterdir()) == [EVAL_HISTORY, EVAL_RESULTS]


def test_resume_refuses_a_model_weights_it_would_not_read(tmp_path):
    # A resume continues from the run's checkpoint: another MODEL.WEIGHTS would be recorded in
    # config.yaml as the run's origin although nothing was read from it.
    import pytest
    import yaml

    from slimdet.engine.run_folder import OutputDirError, check_output_dir

    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"MODEL": {"WEIGHTS": "pre.pth"}}))
    check_output_dir(str(tmp_path), resume=True, overwrite=False, weights="other.pth")  # no checkpoint: a fresh start
    (tmp_path / "model_0000001.pth").write_bytes(b"")
    (tmp_path / "last_checkpoint").write_text("model_0000001.pth")
    check_output_dir(str(tmp_path), resume=True, overwrite=False, weights="pre.pth")
    check_output_dir(str(tmp_path), resume=True, overwrite=False, weights="")
    # The same file written another way (relative / absolute, ./, a double slash, a symlink).
    (tmp_path / "pre.pth").write_bytes(b"w")
    (tmp_path / "link.pth").symlink_to(tmp_path / "pre.pth")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        for same in ("./pre.pth", str(tmp_path / "pre.pth"), f"{tmp_path}//pre.pth", "link.pth"):
            check_output_dir(str(tmp_path), resume=True, overwrite=False, weights=same)
    finally:
        os.chdir(cwd)
    with pytest.raises(OutputDirError) as err:
        check_output_dir(str(tmp_path), resume=True, overwrite=False, weights="other.pth")
    message = str(err.value)
    assert "other.pth" in message and "pre.pth" in message and "MODEL.WEIGHTS" in message
    assert "\n" not in message
    # A run that recorded no MODEL.WEIGHTS (started from scratch, or resumed without it).
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"MODEL": {"WEIGHTS": ""}}))
    check_output_dir(str(tmp_path), resume=True, overwrite=False, weights="other.pth")


def test_overwrite_removes_the_eval_results_of_the_run_it_replaces(tmp_path):
    from slimdet.engine.run_folder import clear_previous_run

    for name in ("config.yaml", "model_final.pth", "last_checkpoint", "notes.txt"):
        (tmp_path / name).write_text("x")
    write_eval_results(str(tmp_path), {"top1/w1": 50.0}, str(tmp_path / "model_final.pth"))
    # The trajectory the run saved (a landscape would mix it with the new run's).
    (tmp_path / "trajectory").mkdir()
    for name in ("iter_0000000.pth", "iter_0000004.pth", "mine.txt"):
        (tmp_path / "trajectory" / name).write_text("x")
    removed = clear_previous_run(str(tmp_path))
    assert sorted(removed) == sorted(["config.yaml", "model_final.pth", "last_checkpoint",
                                      EVAL_RESULTS, EVAL_HISTORY, "trajectory/iter_0000000.pth",
                                      "trajectory/iter_0000004.pth"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "trajectory"]
    assert [p.name for p in (tmp_path / "trajectory").iterdir()] == ["mine.txt"]


def test_a_resume_refuses_checkpoints_without_last_checkpoint(tmp_path):
    # A kill after a checkpoint was written and before last_checkpoint named it: a resume would
    # start a new run from iteration 0 and replace those checkpoints.
    import pytest

    from slimdet.engine.run_folder import OutputDirError, check_output_dir

    check_output_dir(str(tmp_path), resume=True, overwrite=False)  # empty: a fresh start
    (tmp_path / "metrics.json").write_text('{"iteration": 0}\n')
    check_output_dir(str(tmp_path), resume=True, overwrite=False)  # no checkpoint to lose
    (tmp_path / "model_0000001.pth").write_bytes(b"w")
    with pytest.raises(OutputDirError, match=r"holds checkpoints \(model_0000001.pth\) but no "
                                             r"last_checkpoint"):
        check_output_dir(str(tmp_path), resume=True, overwrite=False)
    (tmp_path / "last_checkpoint").write_text("model_0000001.pth")
    check_output_dir(str(tmp_path), resume=True, overwrite=False)
