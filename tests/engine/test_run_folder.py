import json

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
    assert latest["weights"] == "b.pth" and latest["results"] == {"linear_top1/w0.25": 33.0}
    history = [json.loads(line) for line in (tmp_path / EVAL_HISTORY).read_text().splitlines()]
    assert [(r["weights"], r["results"]) for r in history] == [
        ("old.pth", {"knn_top1/w1": 11.0}),
        ("a.pth", {"knn_top1/w1": 22.0, "knn_top1/w0.5": 21.0}),
        ("b.pth", {"linear_top1/w0.25": 33.0})]
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
    with pytest.raises(OutputDirError) as err:
        check_output_dir(str(tmp_path), resume=True, overwrite=False, weights="other.pth")
    message = str(err.value)
    assert "other.pth" in message and "pre.pth" in message and "MODEL.WEIGHTS" in message
    assert "\n" not in message


def test_overwrite_removes_the_eval_results_of_the_run_it_replaces(tmp_path):
    from slimdet.engine.run_folder import clear_previous_run

    for name in ("config.yaml", "model_final.pth", "last_checkpoint", "notes.txt"):
        (tmp_path / name).write_text("x")
    write_eval_results(str(tmp_path), {"top1/w1": 50.0}, str(tmp_path / "model_final.pth"))
    removed = clear_previous_run(str(tmp_path))
    assert sorted(removed) == sorted(["config.yaml", "model_final.pth", "last_checkpoint",
                                      EVAL_RESULTS, EVAL_HISTORY])
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
