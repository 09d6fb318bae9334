"""Every `python train.py` / `python evaluate.py` command quoted in README.md and docs/ composes under Hydra and
passes the config checks; every option the README's configuration table lists exists in conf/."""

from __future__ import annotations

import fnmatch
import re
import shlex
from pathlib import Path

import pytest
from conftest import compose_config

from grafting.schema import validate_config

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "sweeps").rglob("*.md"))]
_COMMAND = re.compile(r"python (train|evaluate)\.py((?:\\\n|[^`\n#\\])*)")


def quoted_commands() -> list[tuple[str, str, str]]:
    """``(document, entry point, arguments)`` of every command quoted in the documents."""
    found = set()
    for doc in DOCS:
        for match in _COMMAND.finditer(doc.read_text()):
            args = match.group(2).replace("\\\n", " ").strip()
            found.add((doc.relative_to(ROOT).as_posix(), match.group(1), args))
    return sorted(found)


def overrides(args: str) -> list[str] | None:
    """The Hydra overrides of a quoted command (a sweep's first value; ``-m`` and ``hydra.*`` dropped), or None
    when the command holds a placeholder for the reader to fill in (``<run>``, ``...``)."""
    if "<" in args or "..." in args or "…" in args:
        return None
    out = []
    for token in shlex.split(args):
        if token in ("-m", "--multirun") or token.startswith(("hydra.", "hydra/", "--")):
            continue
        key, _, value = token.partition("=")
        if "," in value and not value.startswith("["):  # a sweep: its first value stands for the others
            value = value.split(",")[0]
        out.append(f"{key}={value}" if _ else token)
    return out


def _unique(commands: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """One command per distinct (entry point, overrides): composing is slow, documents repeat themselves."""
    seen, out = set(), []
    for doc, entry, args in commands:
        parsed = overrides(args)
        key = (entry, tuple(parsed) if parsed is not None else None)
        if key not in seen:
            seen.add(key)
            out.append((doc, entry, args))
    return out


COMMANDS = _unique(quoted_commands())


def test_the_documents_quote_commands():
    assert len([c for c in quoted_commands() if c[1] == "train"]) >= 20


@pytest.mark.parametrize(("doc", "entry", "args"), COMMANDS, ids=[f"{d}:{a[:60]}" for d, _, a in COMMANDS])
def test_quoted_command_composes(doc, entry, args, tmp_path):
    parsed = overrides(args)
    if parsed is None:
        pytest.skip("a placeholder for the reader")
    if entry == "evaluate":
        from grafting.cli import rewrite_model_override

        compose_config(rewrite_model_override(parsed), tmp_path, config_name="evaluate")
        return
    cfg = compose_config(parsed, tmp_path)
    validate_config(cfg)


def _readme_table() -> dict[str, list[str]]:
    """``{group: [options]}`` from the README's configuration table (``*`` patterns kept as written)."""
    text = (ROOT / "README.md").read_text()
    table = text.split("| group | options | sets |", 1)[1].split("\n\n", 1)[0]
    groups = {}
    for row in table.splitlines()[2:]:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", row.strip().strip("|"))]
        names = re.findall(r"`([^`]+)`", cells[0])
        # whole code spans only: a span with "=" is a setting inside the group, not an option
        options = [o for o in re.findall(r"`([^`]+)`", cells[1]) if "=" not in o]
        for name in names:
            groups[name] = options
    return groups


def group_options(group: str) -> set[str]:
    """What ``group=<option>`` accepts: the files of ``conf/<group>``, and the shipped model presets."""
    from grafting import presets

    found = {p.stem for p in (ROOT / "conf" / group).glob("*.yaml")}
    return found | set(presets.model_names()) if group in presets.MODEL_GROUPS else found


def test_the_readme_table_lists_exactly_the_options_of_each_group():
    groups = _readme_table()
    assert {"host", "donor", "layer", "dataloader", "loss", "stage", "trainer", "logger", "debug"} <= set(groups)
    for group, listed in groups.items():
        have = group_options(group)
        unknown = [o for o in listed if not fnmatch.filter(have, o)]
        assert not unknown, f"README lists {group} options that do not exist: {unknown}"
        unlisted = sorted(o for o in have if not any(fnmatch.fnmatch(o, pattern) for pattern in listed))
        assert not unlisted, f"README's {group} row lacks {unlisted}"
