"""Alignment methods are one file each (grafting/stages/align_methods): the config check and the pipeline find
a new one with no other edit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from grafting.errors import ConfigError
from grafting.stages import align_methods

METHODS_DIR = Path(align_methods.__file__).parent
TOY = '''"""align.method=toy: scales the post translator's output by 1 + 1e-3 (a newcomer's method in one file)."""

import torch

from grafting.graft.grafted import graft_of


def refine(ctx, grafted, controls, host, tuned_model, tokenizer):
    with torch.no_grad():
        for p in graft_of(grafted)[1].post_translator.parameters():
            p.mul_(1.0 + 1e-3)
    return {"toy": {"scaled_by": 1.0 + 1e-3, "controls": sorted(controls)}}
'''


def test_the_shipped_methods_are_listed_without_importing_them():
    assert {"paper", "distill"} <= set(align_methods.names())
    assert all(callable(align_methods.get(n).refine) for n in align_methods.names())


def test_an_unknown_method_is_refused_naming_the_key_and_the_choices(tmp_path):
    from conftest import compose_config

    from grafting.schema import validate_config

    with pytest.raises(ConfigError, match=r"align\.method.*distill.*paper"):
        validate_config(compose_config(["align.method=nope"], tmp_path))


@pytest.mark.e2e
def test_a_new_method_is_one_file_and_runs_from_the_cli(tmp_path):
    """A toy method dropped into the folder: `python train.py align.method=toy` runs it, nothing else edited.

    A fresh process on purpose: the method list must come from the folder as it is when the command starts."""
    from conftest import in_copy_env, source_copy
    from test_cli import _results

    copy = source_copy(tmp_path / "code")  # the toy file goes into a copy: tests beside this one never see it
    toy = copy / METHODS_DIR.relative_to(METHODS_DIR.parents[2]) / "toy.py"
    assert toy.parent.is_dir() and not toy.exists()
    toy.write_text(TOY)
    cmd = [sys.executable, "train.py", f"paths.log_dir={tmp_path}", "debug=smoke", "align.method=toy",
           "finetune.steps=2", "align.steps=2"]
    proc = subprocess.run(cmd, cwd=copy, env=in_copy_env(copy), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    history = _results(tmp_path)["align"]["toy"]
    assert history["scaled_by"] == pytest.approx(1.001) and "VanillaGraft" in history["controls"]
