"""Text corpora: the built-in offline corpus, local files, and FineWeb from the hub.

``builtin`` is real human-written English that ships with every CPython: the pydoc topic pages
(``pydoc_data.topics``) and the docstrings of the standard library, read with ``ast`` (nothing is
imported, so no module runs). It is the offline stand-in for FineWeb.
"""

from __future__ import annotations

import ast
import hashlib
import json
import sysconfig
from functools import lru_cache
from pathlib import Path

import datasets

from grafting.errors import ConfigError

# Packages whose docstrings are test scaffolding or tool code rather than prose.
_SKIP_TOP = {"test", "idlelib", "site-packages", "lib2to3", "tkinter", "turtledemo", "ensurepip", "venv"}
MIN_DOC_CHARS = 200


def _stdlib_docstrings() -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    docs: list[str] = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if parts[0] in _SKIP_TOP or "tests" in parts:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= MIN_DOC_CHARS:
                    docs.append(doc)
    return docs


def _pydoc_topics() -> list[str]:
    from pydoc_data.topics import topics

    # Topic pages are long; split them into paragraphs-groups of a few hundred words.
    docs: list[str] = []
    for key in sorted(topics):
        paragraphs = [p.strip() for p in topics[key].split("\n\n") if p.strip()]
        chunk: list[str] = []
        for p in paragraphs:
            chunk.append(p)
            if sum(len(c) for c in chunk) > 1500:
                docs.append("\n\n".join(chunk))
                chunk = []
        if chunk and sum(len(c) for c in chunk) >= MIN_DOC_CHARS:
            docs.append("\n\n".join(chunk))
    return docs


@lru_cache(maxsize=1)
def builtin_documents() -> tuple[str, ...]:
    """The built-in corpus as a tuple of documents, in a fixed order."""
    return tuple(_pydoc_topics() + _stdlib_docstrings())


def builtin_fingerprint() -> str:
    """Short hash of the built-in corpus, so caches built on it change when Python's docs do."""
    return hashlib.sha256(json.dumps(builtin_documents()).encode()).hexdigest()[:10]


def load_text_dataset(cfg) -> datasets.Dataset | datasets.IterableDataset:
    """A dataset with a ``text`` column, from ``cfg.source`` in {builtin, local, fineweb}.

    Args:
        cfg: the ``dataloader.text`` node: ``source``, and ``files`` / ``format`` (local) or
            ``hub_id`` / ``hub_name`` / ``max_documents`` (fineweb).
    """
    source = cfg.source
    if source == "builtin":
        return datasets.Dataset.from_dict({"text": list(builtin_documents())})
    if source == "local":
        files = list(cfg.files) if not isinstance(cfg.files, str) else [cfg.files]
        for f in files:
            if not Path(f).exists():
                raise ConfigError("dataloader.text.files", f"file {f!r} does not exist.")
        fmt = cfg.get("format") or _guess_format(files[0])
        try:
            ds = datasets.load_dataset(fmt, data_files=files, split="train")
        except Exception as err:  # datasets' own errors do not say which config key to fix
            raise ConfigError("dataloader.text.files", f"could not read {files} as {fmt!r}: {err}") from err
        if len(ds) == 0:
            raise ConfigError("dataloader.text.files", f"{files} hold no rows: the corpus is empty.")
        column = cfg.get("text_column", "text")
        if column not in ds.column_names:
            raise ConfigError("dataloader.text.text_column", f"{column!r} not in columns {ds.column_names}.")
        return ds.rename_column(column, "text") if column != "text" else ds
    if source == "fineweb":
        ds = datasets.load_dataset(cfg.hub_id, name=cfg.get("hub_name"), split="train", streaming=True)
        return ds.take(int(cfg.max_documents))
    raise ConfigError("dataloader.text.source", f"unknown source {source!r}; allowed: builtin, local, fineweb.")


def _guess_format(path: str) -> str:
    suffix = Path(path).suffix.lower()
    return {".jsonl": "json", ".json": "json", ".parquet": "parquet"}.get(suffix, "text")
