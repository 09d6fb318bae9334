"""Every composed config passes the schema, and every key of the schema rejects bad values by name.

1. Each composed config (every stage, with and without debug=smoke, every experiment, every option of the
   host/donor/dataloader/loss/layer/trainer/logger groups, evaluate.yaml) passes validate_config.
2. Unknown keys: a key added to any node of a composed config is refused, the error naming it (except in
   the nodes that are keyword arguments of a class outside the package: trainer, a logger, a model's arch).
   This is what keeps a new config key from going unchecked: it must be added to the schema.
3. Property (hypothesis): for every leaf of the schema (grafting.schema.Config, walked field by field), invalid
   values drawn from its type (wrong type, out of range, not an allowed name) patched into a composed config
   raise ConfigError naming exactly that key.
"""

from __future__ import annotations

import math
import string
import tempfile
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import annotated_types as at
import pytest
from conftest import CONF_DIR, compose_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import DictConfig, OmegaConf, open_dict
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from grafting.errors import ConfigError
from grafting.schema import Config, validate_config
from grafting.schema.base import Kwargs


def _options(group: str) -> list[str]:
    """The options of a config group, in conf/ or in Hydra's ConfigStore (what ``import grafting`` stores)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import grafting  # noqa: F401 (registers what the package stores)

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return sorted(GlobalHydra.instance().config_loader().get_group_options(group))


CONFIGS: list[tuple[str, ...]] = [()]
CONFIGS += [(f"stage={s}",) for s in _options("stage")] + [(f"stage={s}", "debug=smoke") for s in _options("stage")]
CONFIGS += [(f"experiment={e}",) for e in _options("experiment")]
# graft.layer=1: a block of every model (tiny-random has 2), so the graft cross-check holds for every host/donor.
CONFIGS += [(f"{g}={o}", "graft.layer=1") for g in ("host", "donor", "dataloader", "loss", "layer", "trainer", "logger")
            for o in _options(g)]
EVALUATE = ("config_name=evaluate",)
CONFIGS += [EVALUATE]


_ROOT = Path(tempfile.mkdtemp(prefix="schema-"))
_COMPOSED: dict[tuple[str, ...], DictConfig] = {}


def composed_config(overrides: tuple[str, ...]) -> DictConfig:
    """A composed config, once per set of overrides (tests patch it in place and restore it)."""
    if overrides not in _COMPOSED:
        name = "evaluate" if overrides == EVALUATE else "train"
        _COMPOSED[overrides] = compose_config([o for o in overrides if o != EVALUATE[0]], _ROOT, config_name=name)
    return _COMPOSED[overrides]


@pytest.fixture(scope="module")
def composed():
    return composed_config


@pytest.mark.parametrize("overrides", CONFIGS, ids=" ".join)
def test_every_config_passes(composed, overrides):
    validate_config(composed(overrides))


# ---- walking the schema ---------------------------------------------------------------------------------

def _unpack(tp: Any, meta: list[Any]) -> tuple[Any, list[Any]]:
    """``Annotated[T, constraints]`` -> ``(T, constraints)``, through nested Annotated."""
    if typing.get_origin(tp) is Annotated:
        base, *extra = typing.get_args(tp)
        return _unpack(base, meta + [m for e in extra for m in (e.metadata if isinstance(e, FieldInfo) else [e])])
    return tp, meta


def _members(tp: Any) -> list[Any]:
    return list(typing.get_args(tp)) if typing.get_origin(tp) in (typing.Union, types.UnionType) else [tp]


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _child(node: Any, name: str) -> Any:
    return node.get(name) if isinstance(node, dict) else None


def walk(model: type[BaseModel], prefix: str, node: Any, leaves: list, nodes: list) -> None:
    """Every leaf ``(key, type, constraints)`` and every node ``(key, model)`` of ``model`` at ``prefix``;
    ``node``: the config's value there (plain), for the names of mappings (``skill.tasks.<name>``)."""
    nodes.append((prefix, model))
    for name, field in model.model_fields.items():
        name = field.alias or name
        key = f"{prefix}.{name}" if prefix else name
        _walk_type(field.annotation, list(field.metadata), key, _child(node, name), leaves, nodes)


def _walk_type(tp: Any, meta: list[Any], key: str, value: Any, leaves: list, nodes: list) -> None:
    tp, meta = _unpack(tp, meta)
    members = [_unpack(m, [])[0] for m in _members(tp)]
    models = [m for m in members if _is_model(m)]
    if len(members) == 1 and models:
        return walk(models[0], key, value, leaves, nodes)
    dicts = [m for m in members if typing.get_origin(m) is dict]
    if dicts:  # a mapping of names: walk its first entry in the config (every entry has the same type)
        item = typing.get_args(dicts[0])[1]
        for name, entry in list(value.items())[:1] if isinstance(value, dict) else []:
            _walk_type(item, [], f"{key}.{name}", entry, leaves, nodes)
        return
    leaves.append((key, tp, meta))
    if models and isinstance(value, dict):  # one value or a mapping (a compressor by name or as a spec)
        walk(models[0], key, value, leaves, nodes)


BASES = {"skill": ("stage=skillpack_continual", "debug=smoke"), "skillpack": ("stage=skillpack_continual", "debug=smoke"),
         "continual": ("stage=skillpack_continual", "debug=smoke"), "transplant": ("stage=transplant", "debug=smoke"),
         "logger": ("logger=wandb",)}


def _schema(composed) -> tuple[dict, dict]:
    leaves: dict[str, tuple] = {}
    nodes: dict[str, tuple] = {}
    for base in {(), EVALUATE, *BASES.values()}:
        found_leaves, found_nodes = [], []
        walk(Config, "", OmegaConf.to_container(composed(base), resolve=False), found_leaves, found_nodes)
        for key, tp, meta in found_leaves:
            if BASES.get(key.split(".")[0], ()) == base or key.split(".")[0] not in BASES:
                leaves.setdefault(key, (base, tp, meta))
        for key, model in found_nodes:
            if key and (BASES.get(key.split(".")[0], ()) == base or key.split(".")[0] not in BASES):
                nodes.setdefault(key, (base, model))
    return leaves, nodes


LEAVES, NODES = _schema(composed_config)  # the schema's leaves and nodes, in the composed configs


_MISSING = object()


def _patched_error(cfg: DictConfig, key: str, value: Any) -> ConfigError | None:
    """Set ``key`` to ``value`` in place (replacing a non-mapping or interpolated parent), validate, restore."""
    parts = key.split(".")
    node, i = cfg, 0
    while i < len(parts) - 1 and parts[i] in node and not OmegaConf.is_interpolation(node, parts[i]) \
            and isinstance(node[parts[i]], DictConfig):
        node, i = node[parts[i]], i + 1
    name = parts[i]
    new = value
    for part in reversed(parts[i + 1:]):
        new = {part: new}
    old = OmegaConf.to_container(node, resolve=False).get(name, _MISSING)
    with open_dict(node):
        node[name] = new
    try:
        validate_config(cfg)
    except ConfigError as err:
        return err
    finally:
        with open_dict(node):
            if old is _MISSING:
                del node[name]
            else:
                node[name] = old
    return None


# ---- unknown keys ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("node", sorted(NODES))
def test_an_unknown_key_is_refused_naming_it(composed, node):
    base, model = NODES[node]
    err = _patched_error(composed(base), f"{node}.zz_typo", 1)
    if issubclass(model, Kwargs):  # keyword arguments of a Lightning / transformers class: theirs to check
        assert err is None, err
    else:
        assert err is not None and err.key == f"{node}.zz_typo", err
        assert "not a key" in str(err)


def test_an_unknown_top_level_key_is_refused(composed):
    err = _patched_error(composed(()), "zz_typo", 1)
    assert err is not None and err.key == "zz_typo"


# ---- invalid values -------------------------------------------------------------------------------------

TEXT = st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=1, max_size=8)
NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])

# Leaves whose type is a union of several kinds: their invalid values are listed here (a new one needs a line).
HANDPICKED: dict[str, list[Any]] = {
    "trainer.devices": [0, -2, 1.5, "gpu", "", [], [-1], True],
    "trainer.deterministic": [1, 0, "yes", None, 1.5],
    "logger.*.log_model": [1, "some", None],
    "corpus.files": [3, [], [1], True, [["a.txt"]]],
    "dataloader.text.files": [3, [], [1], True, [["a.txt"]]],
    "skillpack.methods.*.*": ["gzip", 3, True, None, [], {"method": "gzip"}],
    "skillpack.methods.*.*.schedule": [[], [[4]], [[4, 5]], [[-2, 8]], "8", [[None, "8"]], [[1.5, 8]], 3, None],
    "skillpack.methods.*.*.params.schedule": [[], [[4, 5]], [[True, 8]], "8", None],
    "skillpack.fusion.mergers.*.lam": ["x", True, [], ["x"], None, math.nan],
    "skillpack.fusion.mergers.*.density": [0, 1.5, [0], [], "x", True, None],
    "skillpack.fusion.mergers.*.p": [1, -0.1, [1.0], [], "x", None],
    "skillpack.fusion.router.temperature": [0, -1.0, [0.0], [], "x", ["x"], True, None, math.nan],
    "transplant.source": [True, ["a"], None, {"source": "ftp"}],
    "skillpack.router": ["Arrow", "", [], ["learned", "moe"], 3, None, {"learned": 1}],
}


def _handpicked(key: str) -> list[Any] | None:
    for pattern, values in HANDPICKED.items():
        a, b = pattern.split("."), key.split(".")
        if len(a) == len(b) and all(x in ("*", y) for x, y in zip(a, b, strict=True)):
            return values
    return None


def _bounds(meta: list[Any], integer: bool) -> list[st.SearchStrategy]:
    out = []
    number = st.integers if integer else (lambda **kw: st.floats(allow_nan=False, allow_infinity=False, **kw))
    for m in meta:
        if isinstance(m, at.Ge):
            out.append(number(max_value=m.ge - 1) if integer else st.floats(max_value=m.ge, exclude_max=True,
                                                                            allow_nan=False, allow_infinity=False))
        elif isinstance(m, at.Gt):
            out.append(number(max_value=m.gt))
        elif isinstance(m, at.Le):
            out.append(number(min_value=m.le + 1) if integer else st.floats(min_value=m.le, exclude_min=True,
                                                                            allow_nan=False, allow_infinity=False))
        elif isinstance(m, at.Lt):
            out.append(number(min_value=m.lt))
    return out


def invalid(key: str, tp: Any, meta: list[Any]) -> st.SearchStrategy:
    """Values the leaf ``key`` of type ``tp`` (constraints ``meta``) must refuse."""
    picked = _handpicked(key)
    if picked is not None:
        return st.sampled_from(picked)
    members = [_unpack(m, []) for m in _members(tp)]
    nullable = any(m is type(None) for m, _ in members)
    members = [(m, mm) for m, mm in members if m is not type(None)]
    assert len(members) == 1, f"{key}: a union of several kinds; list its invalid values in HANDPICKED"
    tp, meta = members[0][0], meta + members[0][1]
    s = [] if nullable else [st.none()]
    if tp is bool:
        s += [TEXT, st.integers()]
    elif tp is int:
        s += [TEXT, st.booleans(), st.floats().filter(lambda x: not float(x).is_integer()), st.just([1])]
        s += _bounds(meta, integer=True)
    elif tp is float:
        s += [TEXT, st.booleans(), NON_FINITE, st.just([0.5])] + _bounds(meta, integer=False)
    elif tp is str:
        s += [st.lists(TEXT, min_size=1, max_size=3), st.booleans()]
    elif typing.get_origin(tp) is Literal:
        options = typing.get_args(tp)
        s += [TEXT.filter(lambda x: x not in options), st.integers().filter(lambda x: x not in options),
              st.just([options[0]])]
        if not any(isinstance(o, bool) for o in options):
            s.append(st.booleans())
    elif typing.get_origin(tp) is list:
        item, item_meta = _unpack(typing.get_args(tp)[0], [])
        s += [TEXT, st.integers(), invalid(f"{key}[]", item, item_meta).map(lambda x: [x])]
        if any(isinstance(m, at.MinLen) for m in meta):
            s.append(st.just([]))
    else:
        raise AssertionError(f"{key}: no invalid values for {tp!r}; list them in HANDPICKED")
    return st.one_of(s)


@pytest.mark.parametrize("key", sorted(LEAVES))
@settings(max_examples=2, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_invalid_values_fail_naming_the_key(composed, key, data):
    base, tp, meta = LEAVES[key]
    value = data.draw(invalid(key, tp, meta), label="invalid value")
    err = _patched_error(composed(base), key, value)
    assert err is not None, f"{key}={value!r} was accepted"
    assert err.key == key, f"{key}={value!r}: the error names {err.key}: {err}"


def test_the_walk_covers_the_schema():
    """Each node model of the schema is reached in a composed config (so its leaves are tested)."""
    reached = {model for _, model in NODES.values()}
    every: set[type[BaseModel]] = set()

    def models_of(tp: Any) -> None:
        if _is_model(tp) and tp not in every:
            every.add(tp)
            for field in tp.model_fields.values():
                models_of(field.annotation)
        for arg in typing.get_args(tp):
            if not isinstance(arg, (FieldInfo, str, int, float, bool)) and arg is not None:
                models_of(arg)

    models_of(Config)
    assert every - reached - {Config} == set(), "no composed config holds these nodes: extend BASES"
