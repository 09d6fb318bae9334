"""evaluate.py run_dir=: the evaluation settings of the command line are used and reported; the run is left alone.

The jobs run in this process (``conftest.run_job``); tests/test_cli.py runs evaluate.py itself once.
"""

import json
from pathlib import Path

import pytest
import torch
from conftest import run_job

from grafting.cli import rewrite_model_override
from grafting.models.loading import load_model


def multiline_model(folder: Path) -> None:
    """A 2-block model whose greedy answer to any prompt is ``1\\n1\\n1...``: its blocks add nothing, the
    embedding puts each token in one direction and the head maps them: any token -> 1 -> newline -> 1."""
    arch = {"model_type": "gpt_neox", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "intermediate_size": 128, "vocab_size": 4096, "max_position_embeddings": 256}
    model, tok = load_model({"source": "random", "seed": 0, "tokenizer_vocab": 4096, "arch": arch}, "host")
    (one,), (newline,) = (tok.convert_tokens_to_ids(tok.tokenize(t)) for t in ("1", "\n"))
    with torch.no_grad():
        for block in model.gpt_neox.layers:
            for linear in (block.attention.dense, block.mlp.dense_4h_to_h):
                linear.weight.zero_()
                linear.bias.zero_()
        emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
        assert emb is not head
        emb.zero_()
        emb[:, 0] = 1  # every token in direction 0, except "1" (direction 1) and newline (direction 2)
        emb[one], emb[newline] = 0, 0
        emb[one, 1] = emb[newline, 2] = 1
        head.zero_()
        head[one, 0] = head[one, 2] = head[newline, 1] = 10
    model.save_pretrained(folder)
    tok.save_pretrained(folder)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A smoke pipeline run of the multi-line model (host = donor), scored on 8 points, answer line only
    (no MLM scorer: not needed here)."""
    tmp = tmp_path_factory.mktemp("evaluate")
    multiline_model(tmp / "multiline")
    return run_job(["debug=smoke", "host=local", f"host.path={tmp / 'multiline'}", "donor=local",
                    f"donor.path={tmp / 'multiline'}", "evaluation.task_points=8",
                    "evaluation.language.mlm_model=null"], tmp / "train")


def _snapshot(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime for p in folder.rglob("*") if p.is_file()}


def test_command_line_evaluation_settings_are_used_and_reported(run_dir, tmp_path, capsys):
    saved = json.loads((run_dir / "results.json").read_text())["models"]
    sample = saved["Host"]["samples"][0]  # the run scored the answer line of a multi-line output
    assert sample["answer_line"] == "1" and sample["output"].startswith("1\n1")
    before = _snapshot(run_dir)
    run_job([f"run_dir={run_dir}", "evaluation.first_line_only=false", "evaluation.task_points=200", "task.n=5"],
            tmp_path, config_name="evaluate")
    stdout = capsys.readouterr().out
    assert "evaluation.first_line_only: True -> False" in stdout, stdout[-2000:]
    assert "evaluation.task_points: 8 -> 200" in stdout
    assert "not applied to the re-evaluation of a run (its own config is used): task.n=5" in stdout
    assert _snapshot(run_dir) == before  # nothing written into the run
    evaluation = json.loads(next(tmp_path.rglob("evaluation.json")).read_text())
    assert evaluation["settings_changed"] == {"evaluation.first_line_only": {"run": True, "now": False},
                                              "evaluation.task_points": {"run": 8, "now": 200}}
    assert evaluation["evaluation"]["first_line_only"] is False
    scores = evaluation["models"]
    multiline = [m for m, s in scores.items() if any("\n" in x["output"] for x in s["samples"])]
    assert "Host" in multiline and "Vanilla" in multiline
    assert {s["n"] for s in scores.values()} == {16}  # every test point of the smoke task, not the run's 8
    for name in multiline:  # more than one number once the whole output counts
        assert scores[name]["f_S"] < saved[name]["f_S"], (name, scores[name], saved[name])
    assert scores["Host"]["f_S"] == 0.0 and saved["Host"]["f_S"] == 1.0


def test_a_saved_model_folder_is_evaluated(run_dir, tmp_path):
    """`evaluate.py model=<folder>`: the command line's ``model=`` reaches the runner as ``model_dir``."""
    folder = next(p / "multiline" for p in run_dir.parents if (p / "multiline").is_dir())
    run_job(rewrite_model_override([f"model={folder}", "debug=smoke", "evaluation.task_points=8",
                                    "evaluation.language.mlm_model=null"]), tmp_path, config_name="evaluate")
    scores = json.loads(next(tmp_path.rglob("evaluation.json")).read_text())["models"]
    assert set(scores) == {"multiline", "Host"}
    assert scores["multiline"]["samples"][0]["answer_line"] == "1" and scores["multiline"]["f_S"] == 1.0
