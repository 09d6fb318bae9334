"""The benchmark suite runs end to end (tiny models) and its exactness checks hold; no timing is asserted."""

import json

from benchmarks.__main__ import main


def test_quick_suite_writes_results_and_fast_paths_agree(tmp_path):
    assert main(["--quick", "--only", "bdfh", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "results.json").read_text())
    rows = {m["case"]: [] for m in report["measurements"]}
    for m in report["measurements"]:
        rows[m["case"]].append(m)
    assert set(rows) == {"b", "d", "f", "h"}
    # (h) the closed-form KL backward gives the gradient autograd gives
    assert rows["h"][0]["extra"]["max_abs_grad_difference"] < 1e-6
    # (b) the truncated forward returns exactly the residual the full forward's hook sees
    assert all(m["extra"]["max_abs_difference"] < 1e-6 for m in rows["b"])
    # (d) batched and one-by-one MLM scoring give the same score
    (mlm,) = rows["d"]
    assert abs(mlm["extra"]["score_batched"] - mlm["extra"]["score_naive"]) < 1e-6
    # (f) the framework keeps only the translator's input for backward, far less than full forwards do
    assert all(m["extra"]["saved_ratio"] > 5 for m in rows["f"])
    text = (tmp_path / "RESULTS.md").read_text()
    assert "## (b)" in text and "Machine:" in text


def test_quick_run_refuses_to_overwrite_full_size_figures(tmp_path, capsys):
    full = {"quick": False, "command": "python -m benchmarks", "cases": {}, "measurements": []}
    (tmp_path / "results.json").write_text(json.dumps(full))
    (tmp_path / "RESULTS.md").write_text("# full-size figures\n")
    try:
        main(["--quick", "--only", "b", "--out", str(tmp_path)])
    except SystemExit as stop:
        assert stop.code == 2
    else:
        raise AssertionError("a quick run replaced full-size figures")
    assert "--out" in capsys.readouterr().err
    assert json.loads((tmp_path / "results.json").read_text()) == full
    assert (tmp_path / "RESULTS.md").read_text() == "# full-size figures\n"
