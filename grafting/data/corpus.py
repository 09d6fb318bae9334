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
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True)
class TextSource:
    """Where general text comes from (the ``corpus`` / ``dataloader.text`` config node).

    ``source`` is ``builtin`` (the CPython docs, offline), ``local`` (``files`` in ``format``, the text in
    ``text_column``) or ``fineweb`` (``hub_id`` / ``hub_name``, the first ``max_documents`` streamed).
    """

    source: str = "builtin"
    files: tuple[str, ...] | str | None = None
    format: str | None = None
    text_column: str = "text"
    hub_id: str = "HuggingFaceFW/fineweb"
    hub_name: str | None = None
    max_documents: int = 20000

    def get(self, key: str, default: Any = None) -> Any:
        value = getattr(self, key, default)
        return default if value is None else value


def text_source(spec: TextSource | Mapping[str, Any]) -> TextSource:
    """A :class:`TextSource` from itself or from a mapping with the same keys (unknown keys are ignored)."""
    if isinstance(spec, TextSource):
        return spec
    keys = TextSource.__dataclass_fields__
    values = {k: spec[k] for k in keys if k in spec and spec[k] is not None}
    if "files" in values and not isinstance(values["files"], str):
        values["files"] = tuple(values["files"])
    return TextSource(**values)


def load_text_dataset(spec: TextSource | Mapping[str, Any]) -> datasets.Dataset | datasets.IterableDataset:
    """A dataset with a ``text`` column, from ``spec.source`` in {builtin, local, fineweb}."""
    src = text_source(spec)
    source = src.source
    if source == "builtin":
        return datasets.Dataset.from_dict({"text": list(builtin_documents())})
    if source == "local":
        files = list(src.files) if not isinstance(src.files, str) else [src.files]
        for f in files:
            if not Path(f).exists():
                raise ConfigError("dataloader.text.files", f"file {f!r} does not exist.")
        fmt = src.get("format") or _guess_format(files[0])
        try:
            ds = datasets.load_dataset(fmt, data_files=files, split="train")
        except Exception as err:  # datasets' own errors do not say which config key to fix
            raise ConfigError("dataloader.text.files", f"could not read {files} as {fmt!r}: {err}") from err
        if len(ds) == 0:
            raise ConfigError("dataloader.text.files", f"{files} hold no rows: the corpus is empty.")
        column = src.get("text_column", "text")
        if column not in ds.column_names:
            raise ConfigError("dataloader.text.text_column", f"{column!r} not in columns {ds.column_names}.")
        return ds.rename_column(column, "text") if column != "text" else ds
    if source == "fineweb":
        ds = datasets.load_dataset(src.hub_id, name=src.get("hub_name"), split="train", streaming=True)
        return ds.take(int(src.max_documents))
    raise ConfigError("dataloader.text.source", f"unknown source {source!r}; allowed: builtin, local, fineweb.")


def _guess_format(path: str) -> str:
    suffix = Path(path).suffix.lower()
    return {".jsonl": "json", ".json": "json", ".parquet": "parquet"}.get(suffix, "text")
