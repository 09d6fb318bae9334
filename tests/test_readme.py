"""The README's Python example runs as printed, and the graft it builds carries the skill the host lacks."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_python_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## From Python", 1)[1]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "README's 'From Python' section has no python block"
    return blocks[0]


def test_the_example_is_short():
    assert len(readme_python_example().strip().splitlines()) <= 12


@pytest.mark.slow
def test_the_readme_python_example_runs(capsys):
    namespace: dict = {}
    exec(compile(readme_python_example(), "README.md", "exec"), namespace)  # noqa: S102 (the README's own code)
    scores = namespace["scores"]
    assert set(scores) == {"Grafted", "Host"}
    # the tuned block carries the answer format into the host; the host alone never produces it
    assert scores["Grafted"]["f_H"] >= 0.9 > 0.1 >= scores["Host"]["f_H"]
    assert "Grafted" in capsys.readouterr().out
