"""The pack format: exact round trip, integrity errors naming the file, fingerprints, atomic overwrite."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from grafting.skillpack.compressors import decompress
from grafting.skillpack.pack import (
    FingerprintMismatchError,
    PackExistsError,
    PackIntegrityError,
    load_pack,
    pack_nbytes,
    save_pack,
    state_fingerprint,
)
from grafting.skillpack.policy import compress_delta

NAMES = {
    "gpt_neox.embed_in.weight": (64, 32),
    "gpt_neox.layers.0.attention.query_key_value.weight": (96, 32),
    "gpt_neox.layers.0.attention.query_key_value.bias": (96,),
    "gpt_neox.layers.0.mlp.dense_h_to_4h.weight": (128, 32),
    "gpt_neox.layers.0.input_layernorm.weight": (32,),
    "lm_head.weight": (64, 32),
    "some.other.weight": (5, 7),
}

# Exercises every method and both sparse encodings.
POLICY = {
    "embedding": {"method": "magnitude", "alpha": 0.01},
    "lm_head": {"method": "magnitude", "alpha": 0.5, "dtype": "float16"},
    "attention": {"method": "svd_quant", "rank": 20, "schedule": [[2, 8], [6, 3], [None, 2]], "group_size": 16},
    "mlp": {"method": "svd_quant", "beta": 0.9},
    "other": {"method": "bitdelta"},
    "vector": {"method": "dare", "p": 0.5, "seed": 1},
}


def _delta(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {n: torch.randn(s, generator=gen) * 1e-2 for n, s in NAMES.items()}


def _save(tmp_path: Path, name: str = "pack", policy: dict | None = None, **kw) -> Path:
    return save_pack(compress_delta(_delta(), policy or POLICY), "f" * 64, tmp_path / name, **kw)


def _shard(pack: Path) -> Path:
    return sorted(pack.glob("*.safetensors"))[0]


def test_round_trip_is_exact(tmp_path: Path) -> None:
    compressed = compress_delta(_delta(), POLICY)
    methods = {c.meta["method"] for c in compressed.values()}
    assert methods == {"magnitude", "svd_quant", "dare", "none", "bitdelta"}
    encodings = {c.meta.get("encoding") for c in compressed.values()}
    assert {"int32", "bitmask"} <= encodings
    path = save_pack(compressed, "ab" * 32, tmp_path / "p", metadata={"task": "mod-add"})
    pack = load_pack(path, expected_fingerprint="ab" * 32)
    assert pack.base_fingerprint == "ab" * 32 and pack.metadata == {"task": "mod-add"}
    assert set(pack.modules) == set(compressed)
    for name, c in compressed.items():
        loaded = pack.modules[name]
        assert loaded.meta == json.loads(json.dumps(c.meta))
        for tname, t in c.tensors.items():
            assert loaded.tensors[tname].dtype == t.dtype and torch.equal(loaded.tensors[tname], t)
        assert torch.equal(decompress(loaded), decompress(c))


def test_manifest_contents_and_honest_bytes(tmp_path: Path) -> None:
    path = _save(tmp_path, shard_bytes=4000)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format"] == "grafting-skillpack" and manifest["format_version"] == 1
    assert manifest["base_fingerprint"] == "f" * 64
    assert len(manifest["files"]) > 1  # sharded
    for fname, info in manifest["files"].items():
        data = (path / fname).read_bytes()
        assert info == {"sha256": hashlib.sha256(data).hexdigest(), "nbytes": len(data)}
    assert manifest["total_bytes"] == sum(i["nbytes"] for i in manifest["files"].values())
    entry = manifest["modules"]["gpt_neox.layers.0.attention.query_key_value.weight"]
    assert entry["method"] == "svd_quant" and entry["shape"] == [96, 32] and entry["params"]["rank"] == 20
    assert pack_nbytes(path) == manifest["total_bytes"] + (path / "manifest.json").stat().st_size
    assert {p.suffix for p in path.iterdir()} == {".json", ".safetensors"}  # no pickle anywhere
    assert [p.name for p in tmp_path.iterdir()] == ["pack"]  # no temporary directory left behind
    assert load_pack(path).modules.keys() == set(NAMES)


def test_flipped_byte_names_the_file(tmp_path: Path) -> None:
    path = _save(tmp_path)
    shard = _shard(path)
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(PackIntegrityError, match=rf"sha256 mismatch.*{shard.name}"):
        load_pack(path)


def test_truncated_file_names_the_file(tmp_path: Path) -> None:
    path = _save(tmp_path)
    shard = _shard(path)
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(PackIntegrityError, match=rf"{shard.name} has \d+ bytes.*truncated"):
        load_pack(path)


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = _save(tmp_path)
    shard = _shard(path)
    shard.unlink()
    with pytest.raises(PackIntegrityError, match=rf"{shard.name} is missing"):
        load_pack(path)
    (path / "manifest.json").unlink()
    with pytest.raises(PackIntegrityError, match="manifest.json"):
        load_pack(path)


def test_corrupt_manifest_is_a_clear_error(tmp_path: Path) -> None:
    path = _save(tmp_path)
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(PackIntegrityError, match="manifest.json.*not valid JSON"):
        load_pack(path)


def test_manifest_cannot_point_outside_the_pack(tmp_path: Path) -> None:
    path = _save(tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"] = {"../evil.safetensors": {"sha256": "0", "nbytes": 0}}
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PackIntegrityError, match="illegal file name"):
        load_pack(path)


def test_fingerprint_mismatch(tmp_path: Path) -> None:
    path = _save(tmp_path)
    with pytest.raises(FingerprintMismatchError, match="different|built for"):
        load_pack(path, expected_fingerprint="0" * 64)
    assert load_pack(path, expected_fingerprint="f" * 64).base_fingerprint == "f" * 64


def test_no_overwrite_without_permission(tmp_path: Path) -> None:
    path = _save(tmp_path)
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    other = compress_delta(_delta(seed=1), {"attention": "dense"})
    with pytest.raises(PackExistsError, match="overwrite=True"):
        save_pack(other, "f" * 64, path)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    load_pack(path)  # still valid
    save_pack(other, "e" * 64, path, overwrite=True)
    assert load_pack(path).base_fingerprint == "e" * 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pack"]


def test_overwrite_never_replaces_a_non_pack(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("important")
    with pytest.raises(PackExistsError, match="not a SkillPack"):
        save_pack(compress_delta(_delta()), None, precious, overwrite=True)
    assert (precious / "thesis.tex").read_text() == "important"


def test_state_fingerprint_sensitivity() -> None:
    state = {"w": torch.ones(2, 3), "b": torch.zeros(3, dtype=torch.bfloat16)}
    config = {"hidden_size": 3, "transformers_version": "5.0", "_name_or_path": "/a"}
    fp = state_fingerprint(state, config)
    assert fp == state_fingerprint(dict(reversed(state.items())), {**config, "transformers_version": "9", "_name_or_path": "/b"})
    changed = {**state, "w": state["w"].clone()}
    changed["w"][1, 2] = 1.0000001
    assert state_fingerprint(changed, config) != fp
    assert state_fingerprint({**state, "w": torch.ones(3, 2)}, config) != fp  # same bytes, other shape
    assert state_fingerprint({"v": state["w"], "b": state["b"]}, config) != fp  # same bytes, other name
    assert state_fingerprint({"w": torch.ones(2, 3), "b": torch.zeros(3, dtype=torch.bfloat16)}, {"hidden_size": 4}) != fp


def test_empty_factors_round_trip(tmp_path: Path) -> None:
    """A zero delta compresses to rank 0: zero-size tensors (svd_energy) or no tensors (svd_quant)."""
    delta = {"model.layers.0.mlp.up_proj.weight": torch.zeros(8, 4), "model.layers.0.self_attn.q_proj.weight": torch.zeros(4, 4)}
    compressed = compress_delta(delta, {"mlp": {"method": "svd_energy", "beta": 0.5},
                                        "attention": {"method": "svd_quant", "beta": 0.5}})
    assert compressed["model.layers.0.mlp.up_proj.weight"].tensors["A"].shape == (8, 0)
    assert compressed["model.layers.0.self_attn.q_proj.weight"].tensors == {}
    pack = load_pack(save_pack(compressed, None, tmp_path / "z"))
    for name, d in delta.items():
        assert torch.equal(decompress(pack.modules[name]), d)
