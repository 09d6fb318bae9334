"""What every config node shares: strict types, unknown keys refused, and errors that name the dotted key.

A node is a pydantic model (:class:`Node`). Its fields are the node's keys; ranges are ``Field`` bounds
(the aliases below), choices are ``Literal`` of a registry's names (:mod:`grafting.names`), rules that
relate keys are ``model_validator``\\ s that raise :class:`~grafting.errors.ConfigError` with the key.

Types are strict, as the command line is read: ``1`` is not ``true``, ``2.5`` is not an int, ``"16"`` is
not ``16``; numbers are finite. A field whose default is ``None`` but whose type has no ``| None`` may be
absent (the stage that reads it has the YAML's value) but not null.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from grafting.errors import ConfigError

Pos = Annotated[int, Field(ge=1)]
Count = Annotated[int, Field(ge=0)]
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
LR = Annotated[float, Field(gt=0)]
Decay = Annotated[float, Field(ge=0)]
Drop = Annotated[float, Field(ge=0, lt=1)]
Prob = Annotated[float, Field(ge=0, le=1)]
MIN_VOCAB = 258  # the byte-level BPE always holds 256 bytes + EOS + PAD
Vocab = Annotated[int, Field(ge=MIN_VOCAB)]


def _number_as_text(value: Any) -> Any:
    """A number given where text is expected is text (``run_name=2024``); a bool is not."""
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


Text = Annotated[str, BeforeValidator(_number_as_text)]


class Node(BaseModel):
    """One config node. ``KEY``: where it sits in the config (the errors of a direct call name
    ``KEY.<field>``); ``KEYS``: fields kept under another key (``AlignConfig.loss`` is ``loss.kind``)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)
    KEY: ClassVar[str] = ""
    KEYS: ClassVar[dict[str, str]] = {}

    @classmethod
    def of(cls, data: Mapping[str, Any], key: str | None = None):
        """The node validated from a mapping (a config node as plain data); errors name ``key.<field>``."""
        try:
            return cls.model_validate(dict(data))
        except ValidationError as err:
            raise config_error(err, data, cls.KEY if key is None else key, cls.KEYS, model=cls) from None


class Recipe(Node):
    """A node the API takes as an object (``AlignConfig(steps=-5)``): a direct call's error is a
    :class:`ConfigError` naming the key, as on the command line. ``KEY`` is absolute: a recipe sits at
    one place in the config."""

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as err:
            raise config_error(err, data, self.KEY, self.KEYS, model=type(self)) from None


class Kwargs(Node):
    """A node that also takes keys it does not list: keyword arguments of a class outside this package
    (a Lightning Trainer, a logger, a transformers config), which that class checks itself."""

    model_config = ConfigDict(extra="allow")


def show(value: Any) -> str:
    return "null" if value is None else repr(value)


def config_error(err: ValidationError, data: Any, prefix: str = "", keys: Mapping[str, str] | None = None,
                 origin: Callable[[str], str] = lambda key: key, first: Callable[[str], bool] = lambda key: True,
                 model: type[BaseModel] | None = None) -> ConfigError:
    """A :class:`ConfigError` naming the key of the first problem in ``err`` (raised validating ``data``).

    ``origin`` maps a key to the key its value was written to (interpolation); problems at keys for which
    ``first`` holds are reported before the others. Lists are leaves: an item's problem names the list.
    ``model``: the model ``data`` was validated against (an unknown key's error lists its node's keys).
    """
    found: dict[str, list[str]] = {}
    values: dict[str, Any] = {}
    for e in err.errors(include_url=False):
        cause = (e.get("ctx") or {}).get("error")
        if isinstance(cause, ConfigError):  # a rule between keys names its own key
            key, message = cause.key, str(cause).removeprefix(f"[{cause.key}] ")
        else:
            path, value = _path(data, e["loc"], e["type"])
            if path and keys and path[0] in keys:  # a field kept under another key: that key, absolute
                key = ".".join([keys[path[0]], *path[1:]])
            else:
                key = ".".join([prefix, *path] if prefix else path) or prefix or "<config>"
            message = _describe(e)
            if e["type"] == "extra_forbidden" and model is not None:
                known = _keys_at(model, path[:-1])
                if known:
                    message = f"is not a key of {'.'.join([prefix, *path[:-1]] if prefix else path[:-1]) or 'the config'} " \
                              f"(its keys: {', '.join(known)})"
            values.setdefault(origin(key), value)
        found.setdefault(origin(key), []).append(message)
    key = next((k for k in found if first(k)), next(iter(found)))
    messages = list(dict.fromkeys(found[key]))
    text = " or ".join(m.removesuffix(".") for m in messages)
    if key in values:
        text += f"; got {show(values[key])}"
    return ConfigError(key, text + ".")


def _path(data: Any, loc: Sequence[Any], kind: str) -> tuple[list[str], Any]:
    """The keys of ``loc`` found in ``data`` (a union's member tags are not), and the value there."""
    path: list[str] = []
    node = data
    for i, part in enumerate(loc):
        if isinstance(node, list):  # a list is a leaf: its items' problems are the list's
            break
        if isinstance(node, Mapping) and part in node:
            path.append(str(part))
            node = node[part]
        elif kind == "missing" and i == len(loc) - 1:
            path.append(str(part))
            node = None
    return path, node


def _node_type(tp: Any) -> Any:
    """The model or mapping type inside ``Annotated`` / ``Optional`` / a union, else None."""
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        found = [_node_type(m) for m in typing.get_args(tp)]
        return next((t for t in found if t is not None), None)
    if isinstance(tp, type) and issubclass(tp, BaseModel) or typing.get_origin(tp) is dict:
        return tp
    return None


def _keys_at(model: type[BaseModel], path: Sequence[str]) -> list[str]:
    """The keys of the node at ``path`` below ``model`` (empty when it is not a node of the schema)."""
    tp: Any = model
    for part in path:
        tp = _node_type(tp)
        if typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        elif tp is not None:
            fields = {f.alias or name: f for name, f in tp.model_fields.items()}
            if part not in fields:
                return []
            tp = fields[part].annotation
        else:
            return []
    tp = _node_type(tp)
    if not (isinstance(tp, type) and issubclass(tp, BaseModel)):
        return []
    return [f.alias or name for name, f in tp.model_fields.items()]


def _describe(e: Mapping[str, Any]) -> str:
    if e["type"] == "extra_forbidden":
        return "is not a key of this node (a typo, or a setting of another node?)"
    if e["type"] == "missing":
        return "is required"
    msg = str(e["msg"]).replace("Input should be", "must be").replace("Value error, ", "")
    return msg[0].lower() + msg[1:] if msg else msg
