"""``python -m grafting.cache ls|verify|prune|adopt``: see what the cache holds, check it, clean it.

- ``ls``: the entries per kind, with size, age and the recipe (or key) that made them;
- ``verify``: re-hash every entry, name the damaged ones, exit 1 if there is any;
- ``prune``: remove entries ``--older-than`` an age (``30d``, ``12h``, ``90m``), ``--all``, or only
  ``--aside`` (damaged entries set aside, half-written folders); ``--kind`` narrows any command;
- ``adopt``: give a manifest to entries written before entries had one (trusting their files as they are).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from grafting.cache import KINDS
from grafting.cache.inventory import adopt, items, prune, verify
from grafting.paths import default_cache_dir

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """Seconds in ``30d`` / ``12h`` / ``90m`` / ``45s`` / ``2w`` (a bare number is days)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"--older-than {text!r}: use a number and a unit, e.g. 30d, 12h, 90m")
    return float(match.group(1)) * _UNITS[match.group(2) or "d"]


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def human_age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _recipe(recipe, width: int = 100) -> str:
    text = json.dumps(recipe, sort_keys=True, separators=(",", ":")) if recipe is not None else "-"
    return text if len(text) <= width else text[: width - 1] + "…"


def cmd_ls(root: Path, kinds: list[str] | None) -> int:
    now, kind = time.time(), None
    for item in items(root, kinds):
        if item.kind != kind:
            kind = item.kind
            print(f"{kind}/  ({KINDS.get(kind, 'not a known kind')})")
        note = {"entry": "", "aside": "  [set aside: damaged]", "temp": "  [temporary]"}[item.state]
        print(f"  {item.path.name}  {human_size(item.size)}  {human_age(now - item.created)}{note}")
        if item.state == "entry":
            print(f"      recipe: {_recipe(item.recipe)}")
    if kind is None:
        print(f"{root}: empty")
    return 0


def cmd_verify(root: Path, kinds: list[str] | None) -> int:
    bad = 0
    for item, verdict in verify(root, kinds):
        name = f"{item.kind}/{item.path.name}"
        if item.state == "entry" and verdict != "ok":
            bad += 1
            print(f"BAD   {name}: {verdict}")
        else:
            print(f"{'ok' if verdict == 'ok' else 'note':<5} {name}{'' if verdict == 'ok' else ': ' + verdict}")
    print(f"{bad} damaged entr{'y' if bad == 1 else 'ies'} under {root}" + (
        "; each is recomputed (with a warning) when a job next needs it, or remove them with "
        "`python -m grafting.cache prune`" if bad else ""))
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grafting.cache", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="the cache (default: $GRAFTING_CACHE_DIR or "
                                                                 "~/.cache/grafting)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("ls", "list the entries"), ("verify", "re-hash every entry"),
                       ("prune", "remove entries"), ("adopt", "give old entries a manifest")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--kind", action="append", help=f"only this kind (repeatable): {', '.join(KINDS)}")
        if name == "prune":
            which = cmd.add_mutually_exclusive_group(required=True)
            which.add_argument("--older-than", type=parse_age, help="entries older than this age (30d, 12h)")
            which.add_argument("--all", action="store_true", help="every entry")
            which.add_argument("--aside", action="store_true", help="damaged entries set aside, half-written folders")
            cmd.add_argument("--dry-run", action="store_true", help="list what would be removed")
    args = parser.parse_args(argv)
    root = (args.dir or default_cache_dir()).expanduser()
    if args.command == "ls":
        return cmd_ls(root, args.kind)
    if args.command == "verify":
        return cmd_verify(root, args.kind)
    if args.command == "prune":
        removed = prune(root, args.kind, args.older_than, args.all, args.aside, args.dry_run)
        for item in removed:
            print(f"{'would remove' if args.dry_run else 'removed'} {item.kind}/{item.path.name}")
        print(f"{len(removed)} item(s), {root}")
        return 0
    for path in adopt(root, args.kind):
        print(f"adopted {path.parent.name}/{path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
