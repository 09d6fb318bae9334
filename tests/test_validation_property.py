"""Every config key has a rule, every default config passes it, and every rule rejects bad values by key.

1. Coverage: each composed config (every stage, with and without debug=smoke, every experiment, every
   option of the host/donor/dataloader/loss/layer/trainer/logger groups, evaluate.yaml) passes
   validate_config, and every leaf of it has a rule in grafting.validation.RULES (numbers and booleans
   a typed one, not free text). A new config key without a rule fails here.
2. Property (hypothesis): for each rule of the table, invalid values (wrong type, out of range, not an
   allowed value) patched into a composed config raise ConfigError naming exactly that key.
"""

from __future__ import annotations

import math
import string
import time
from pathlib import Path

import pytest
from conftest import CONF_DIR, compose_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import DictConfig, OmegaConf, open_dict

from grafting import validation as v
from grafting.errors import ConfigError

CONF = Path(CONF_DIR)


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


CONFIGS: list[tuple[str, ...]] = [()]
CONFIGS += [(f"stage={s}",) for s in _options("stage")] + [(f"stage={s}", "debug=smoke") for s in _options("stage")]
CONFIGS += [(f"experiment={e}",) for e in _options("experiment")]
# graft.layer=1: a block of every model (tiny-random has 2), so the graft cross-check holds for every host/donor.
CONFIGS += [(f"{g}={o}", "graft.layer=1") for g in ("host", "donor", "dataloader", "loss", "layer", "trainer", "logger")
            for o in _options(g)]
EVALUATE = ("config_name=evaluate",)
CONFIGS += [EVALUATE]


@pytest.fixture(scope="module")
def composed(tmp_path_factory):
    root, cache = tmp_path_factory.mktemp("cfg"), {}

    def get(overrides: tuple[str, ...]) -> DictConfig:
        if overrides not in cache:
            name = "evaluate" if overrides == EVALUATE else "train"
            cache[overrides] = compose_config([o for o in overrides if o != EVALUATE[0]], root, config_name=name)
        return cache[overrides]

    return get


@pytest.mark.parametrize("overrides", CONFIGS, ids=" ".join)
def test_every_key_of_every_config_has_a_rule_and_passes(composed, overrides):
    cfg = composed(overrides)
    v.validate_config(cfg)
    assert v.unchecked_keys(cfg) == [], "add these keys to grafting.validation.RULES"
    for e in v.entries(cfg):
        if isinstance(e.value, (bool, int, float)):
            assert not isinstance(e.rule, v.Str), f"{e.key} = {e.value!r} is a number/bool: give it a typed rule"


def test_a_key_without_a_rule_is_reported(composed):
    cfg = composed(())
    with open_dict(cfg):
        cfg.finetune.lr_typo = 1.0
    try:
        assert v.unchecked_keys(cfg) == ["finetune.lr_typo"]
    finally:
        with open_dict(cfg):
            del cfg.finetune["lr_typo"]


# ---- the property test ---------------------------------------------------------------------------------

def _base(pattern: str) -> tuple[str, ...]:
    """A composed config that holds the key's node."""
    top = pattern.split(".")[0]
    if top in ("skill", "skillpack", "continual"):
        return ("stage=skillpack_continual", "debug=smoke")
    if top == "transplant":
        return ("stage=transplant", "debug=smoke")
    if top in ("run_dir", "model", "aggregate", "aggregate_model", "aggregate_out", "allow_mixed"):
        return EVALUATE
    return ()


def _matches(pattern: str, key: str) -> bool:
    a, b = pattern.split("."), key.split(".")
    return len(a) == len(b) and all(x in ("*", y) for x, y in zip(a, b, strict=True))


def _concrete(pattern: str, cfg: DictConfig) -> str:
    """A real key for a pattern: one the config holds, else each * replaced by an existing name (or x)."""
    if "*" not in pattern:
        return pattern
    for e in v.entries(cfg):
        if _matches(pattern, e.key):
            return e.key
    parts, node = [], cfg
    for part in pattern.split("."):
        if part == "*":
            part = next(iter(node), "x") if isinstance(node, DictConfig) else "x"
        parts.append(str(part))
        inside = isinstance(node, DictConfig) and part in node and not OmegaConf.is_interpolation(node, part)
        node = node[part] if inside else None
    return ".".join(parts)


_MISSING = object()


def _patched_validation_error(cfg: DictConfig, key: str, value) -> ConfigError | None:
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
        v.validate_config(cfg)
    except ConfigError as err:
        return err
    finally:
        with open_dict(node):
            if old is _MISSING:
                del node[name]
            else:
                node[name] = old
    return None


TEXT = st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=1, max_size=8)
NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])

# Check rules have no structure to draw from: their invalid values are listed here (a new Check needs a line).
CHECK_INVALID = {
    v.DEVICES: [0, -2, 1.5, "gpu", "", [], [-1], True],
    v.COMPRESSOR["schedule"]: [[], [[4]], [[4, 5]], [[-2, 8]], "8", [[None, "8"]], [[1.5, 8]], 3],
    v.CORPUS["files"]: [3, [], [1], True, [["a.txt"]]],
}


def _invalid(rule: v.Rule, cfg: DictConfig) -> st.SearchStrategy:
    """Values ``rule`` must reject: wrong type, out of range, not an allowed value."""
    s = [] if rule.nullable else [st.none()]
    if isinstance(rule, v.Int):
        s += [TEXT, st.booleans(), st.floats().filter(lambda x: not float(x).is_integer()), st.just([1])]
        if rule.min is not None:
            s.append(st.integers(max_value=rule.min - 1))
        if rule.max is not None:
            s.append(st.integers(min_value=rule.max + 1))
    elif isinstance(rule, v.Float):
        s += [TEXT, st.booleans(), NON_FINITE, st.just([0.5])]
        if rule.gt is not None:
            s.append(st.floats(max_value=rule.gt, allow_nan=False, allow_infinity=False))
        if rule.ge is not None:
            s.append(st.floats(max_value=rule.ge, exclude_max=True, allow_nan=False, allow_infinity=False))
        if rule.lt is not None:
            s.append(st.floats(min_value=rule.lt, allow_nan=False, allow_infinity=False))
        if rule.le is not None:
            s.append(st.floats(min_value=rule.le, exclude_min=True, allow_nan=False, allow_infinity=False))
    elif isinstance(rule, v.Bool):
        s += [TEXT, st.integers(), st.floats(allow_nan=False)]
    elif isinstance(rule, v.Choice):
        s += [TEXT.filter(lambda x: x not in rule.options), st.integers().filter(lambda x: x not in rule.options),
              st.just([rule.options[0]])]
        if not any(isinstance(o, bool) for o in rule.options):
            s.append(st.booleans())
    elif isinstance(rule, v.Str):
        s += [st.lists(TEXT, min_size=1, max_size=3), st.booleans()]
    elif isinstance(rule, v.ListOf):
        s += [TEXT, st.integers(), _invalid(rule.item, cfg).map(lambda x: [x])]
        if rule.min_len:
            s.append(st.just([]))
    elif isinstance(rule, v.OneOrList):  # one value or a non-empty list: a bad value alone or in a list
        scalar = _invalid(rule.item, cfg).filter(lambda x: not isinstance(x, list))
        s += [scalar, scalar.map(lambda x: [x]), st.just([])]
    elif isinstance(rule, v.Key):
        names = set(rule._names(cfg))
        s += [TEXT.filter(lambda x: x not in names), st.integers()]
    elif isinstance(rule, v.Keys):
        s += [TEXT, st.integers(), st.just([1])]
    elif isinstance(rule, v.Check):
        s.append(st.sampled_from(CHECK_INVALID[rule]))
    else:
        raise AssertionError(f"no invalid values for {type(rule).__name__}: extend _invalid")
    return st.one_of(s)


_KEYS: dict[str, str] = {}


@pytest.mark.parametrize("pattern", sorted(v.RULES))
@settings(max_examples=2, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_invalid_values_fail_naming_the_key(composed, pattern, data):
    """Each key of the table, in a composed config: the error names exactly that key, in well under 20 s."""
    cfg = composed(_base(pattern))
    key = _KEYS.setdefault(pattern, _concrete(pattern, cfg))
    assert v.rule_for(key) is v.RULES[pattern], f"{key} is checked by another rule than {pattern}"
    value = data.draw(_invalid(v.RULES[pattern], cfg), label="invalid value")
    start = time.perf_counter()
    err = _patched_validation_error(cfg, key, value)
    assert err is not None, f"{key}={value!r} was accepted"
    assert err.key == key, f"{key}={value!r}: the error names {err.key}: {err}"
    assert time.perf_counter() - start < 20


_RULES = sorted({r: p for p, r in v.RULES.items()}.items(), key=lambda rp: rp[1])  # each distinct rule once


@pytest.mark.parametrize("rule,pattern", _RULES, ids=[p for _, p in _RULES])
@settings(max_examples=40, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_each_rule_rejects_invalid_values(composed, rule, pattern, data):
    """The same property without a config around it, so cheap enough for many values per rule."""
    cfg = composed(_base(pattern))
    value = data.draw(_invalid(rule, cfg), label="invalid value")
    with pytest.raises(ConfigError, match=r"^\[some.key\] must be "):
        rule.check("some.key", value, cfg)
