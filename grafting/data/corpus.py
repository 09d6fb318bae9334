"""Text corpora: the built-in offline corpus, local files, and FineWeb from the hub.

``builtin`` is real human-written English that ships with every CPython: the pydoc topic pages
(``pydoc_data.topics``) and the docstrings of the standard library, read with ``ast`` (nothing is
imported, so no module runs). It is the offline stand-in for FineWeb.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import sys
import sysconfig
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grafting.errors import ConfigError

if TYPE_CHECKING:  # datasets (with pandas and pyarrow) loads only when a corpus other than builtin is read
    import datasets

# Packages whose docstrings are test scaffolding or tool code rather than prose.
_SKIP_TOP = {"test", "idlelib", "site-packages", "lib2to3", "tkinter", "turtledemo", "ensurepip", "venv"}
MIN_DOC_CHARS = 200


def _stdlib_files(root: Path) -> list[Path]:
    """The standard library's ``.py`` files that hold prose, in ``sorted(root.rglob("*.py"))`` order.

    Walks with the skipped folders pruned (site-packages alone is most of a virtual environment), so only
    the files that are read are listed; symlinked folders are not entered, as ``rglob`` does not.
    """
    files = []
    for folder, subdirs, names in os.walk(root):
        rel = Path(folder).relative_to(root).parts
        if (rel and rel[0] in _SKIP_TOP) or "tests" in rel:
            subdirs[:] = []
            continue
        files += [Path(folder) / n for n in names if n.endswith(".py") and not (not rel and n in _SKIP_TOP)]
    return sorted(files)


def _stdlib_docstrings() -> list[str]:
    docs: list[str] = []
    for path in _stdlib_files(Path(sysconfig.get_paths()["stdlib"])):
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


# (pid, output file) of a child harvesting the corpus (prefetch_builtin_documents), until collected
_prefetch: tuple[int, Path] | None = None


def prefetch_builtin_documents() -> None:
    """Start harvesting the built-in corpus in a forked child, so that it overlaps this process's imports.

    Parsing the standard library takes seconds of CPU, and every job on the built-in corpus or a shipped
    tiny model needs it right after importing torch, transformers and Lightning: on a machine with a free
    core the child does it meanwhile, and :func:`builtin_documents` collects its result (the same documents,
    read back from JSON). A no-op without ``os.fork``, once torch is loaded (forking a process with
    library thread pools is unsafe), or when the corpus is there already.
    """
    global _prefetch
    if (_prefetch is not None or builtin_documents.cache_info().currsize or not hasattr(os, "fork")
            or "torch" in sys.modules):
        return
    fd, name = tempfile.mkstemp(prefix="grafting-corpus-", suffix=".json")
    os.close(fd)
    pid = os.fork()
    if pid == 0:  # the child: harvest, write, leave without running the parent's exit handlers
        code = 1
        try:
            Path(name).write_text(json.dumps(_harvest()))
            code = 0
        finally:
            os._exit(code)
    _prefetch = (pid, Path(name))


def _collect_prefetched() -> list[str] | None:
    global _prefetch
    if _prefetch is None:
        return None
    (pid, path), _prefetch = _prefetch, None
    try:
        _, status = os.waitpid(pid, 0)
        return json.loads(path.read_text()) if status == 0 else None
    except (OSError, ValueError):  # the child failed or was killed: harvest here instead
        return None
    finally:
        path.unlink(missing_ok=True)


def _harvest() -> list[str]:
    return _pydoc_topics() + _stdlib_docstrings()


@lru_cache(maxsize=1)
def builtin_documents() -> tuple[str, ...]:
    """The built-in corpus as a tuple of documents, in a fixed order."""
    docs = _collect_prefetched()
    return tuple(docs if docs is not None else _harvest())


@lru_cache(maxsize=1)
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
    import datasets

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
