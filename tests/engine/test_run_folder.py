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
