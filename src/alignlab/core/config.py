"""Typed configs: plain dataclasses, presets, `--set key=value` overrides with validation.

A config is a (possibly nested) dataclass whose fields carry the paper's names and defaults,
each declared with `param(default, help=..., <constraint>)`:

    @dataclass
    class LoopConfig:
        steps: int = param(5000, ge=1, help="gradient steps per unit")
        methods: tuple[str, ...] = param(("cmd2", "crl"), choices=METHODS, nonempty=True,
                                         distinct=True, help="methods to train")

The core checks every constraint (`validate`) and reports every violation in one error, each
naming its dotted key; a config's own `validate()` keeps only the rules that relate several
fields, raising `ConfigError(key, message)`. Overrides use dotted keys for nested fields
(`--set loop.steps=64`); values are parsed as YAML and checked against the field's
annotation, so a bad value produces one error naming the key, the expected type and the
value given. `describe` lists fields, per-preset defaults, constraints and help
(`alignlab show EXP`).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal, Union

import yaml

from alignlab.core.errors import AlignlabError, did_you_mean

PRESETS = ("smoke", "quick", "paper")


def field_types(cls: type) -> dict[str, Any]:
    """Resolved annotations of a dataclass type (handles `from __future__ import annotations`)."""
    return typing.get_type_hints(cls)


def valid_keys(cfg: Any, prefix: str = "") -> list[str]:
    """Every dotted key a `--set` may name, nested dataclasses expanded."""
    keys = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            keys += valid_keys(value, prefix + f.name + ".")
        else:
            keys.append(prefix + f.name)
    return keys


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        inner = type_name(args[0]) if args else "any"
        return f"a list of {inner}"
    if tp is type(None):
        return "null"
    if tp is float:
        return "a finite float"
    return getattr(tp, "__name__", str(tp))


# ---------------------------------------------------------------------------------------
# declarative fields: a default, a one-line help, and the constraint the core checks


@dataclasses.dataclass(frozen=True)
class Rule:
    """A field's constraint. Bounds and `choices` apply to a number or a string, and to every
    element of a list; `nonempty` and `distinct` to a list itself. None always passes (an
    optional setting left unset)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple | None = None
    nonempty: bool = False
    distinct: bool = False

    def describe(self) -> str:
        parts = []
        if self.nonempty:
            parts.append("non-empty")
        if self.distinct:
            parts.append("no repeats")
        lo = (">=", self.ge) if self.ge is not None else (">", self.gt)
        hi = ("<=", self.le) if self.le is not None else ("<", self.lt)
        if lo[1] is not None and hi[1] is not None:
            left = "[" if lo[0] == ">=" else "("
            right = "]" if hi[0] == "<=" else ")"
            parts.append(f"in {left}{lo[1]:g}, {hi[1]:g}{right}")
        elif lo[1] is not None:
            parts.append(f"{lo[0]} {lo[1]:g}")
        elif hi[1] is not None:
            parts.append(f"{hi[0]} {hi[1]:g}")
        if self.choices is not None:
            parts.append("one of " + ", ".join(map(str, self.choices)))
        return ", ".join(parts)

    def check(self, value: Any) -> str | None:
        """None if `value` satisfies the rule, else "must be ..., got ..."."""
        if value is None:
            return None
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        bad = isinstance(value, (list, tuple)) and (
            (self.nonempty and not items) or (self.distinct and len(set(items)) != len(items))
        )
        for v in items:
            if self.choices is not None and v not in self.choices:
                bad = True
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                bad |= self.ge is not None and not v >= self.ge
                bad |= self.gt is not None and not v > self.gt
                bad |= self.le is not None and not v <= self.le
                bad |= self.lt is not None and not v < self.lt
        if not bad:
            return None
        shown = list(value) if isinstance(value, tuple) else value
        return f"must be {self.describe()}, got {shown!r}"


def param(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    factory: Any = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: Any = None,
    nonempty: bool = False,
    distinct: bool = False,
) -> Any:
    """A config field with its help line and constraint, e.g.
    `steps: int = param(1000, ge=1, help="optimiser updates")`. `factory` builds a mutable or
    nested default (a sub-config). `validate` checks the constraint with the field's dotted
    key; `alignlab show` prints both."""
    if not help or not help.strip():
        raise ValueError("every config field needs a one-line help")
    rule = Rule(ge, gt, le, lt, tuple(choices) if choices is not None else None, nonempty, distinct)
    meta = {"help": help, "rule": rule if rule != Rule() else None}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def describe(presets: dict[str, Any], prefix: str = "") -> list[dict[str, Any]]:
    """One row per field of the preset configs (nested groups expanded): dotted key, type,
    each preset's value, the constraint and the help line."""
    first = next(iter(presets.values()))
    hints = field_types(type(first))
    rows = []
    for f in dataclasses.fields(first):
        values = {p: getattr(cfg, f.name) for p, cfg in presets.items()}
        if dataclasses.is_dataclass(values[next(iter(values))]):
            rows.append({"key": prefix + f.name, "help": f.metadata.get("help", ""), "group": True})
            rows += describe(values, prefix + f.name + ".")
            continue
        rule = f.metadata.get("rule")
        rows.append(
            {
                "key": prefix + f.name,
                "type": type_name(hints[f.name]),
                "values": {p: _plain(v) for p, v in values.items()},
                "constraint": rule.describe() if rule is not None else "",
                "help": f.metadata.get("help", ""),
                "group": False,
            }
        )
    return rows


_NO = object()


def _coerce(value: Any, tp: Any) -> Any:
    """Return `value` converted to `tp`, or _NO if it does not fit."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        return value if value in typing.get_args(tp) else _NO
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            out = _coerce(value, arg)
            if out is not _NO:
                return out
        return _NO
    if origin in (list, tuple):
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]  # `--set seeds=3` means [3]
        if not isinstance(value, (list, tuple)):
            return _NO
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        inner = args[0] if args else Any
        out = [_coerce(v, inner) for v in value]
        if any(o is _NO for o in out):
            return _NO
        return tuple(out) if origin is tuple else out
    if tp is type(None):
        return None if value is None else _NO
    if tp is bool:
        return value if isinstance(value, bool) else _NO
    if tp is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _NO
    if tp is float:
        if isinstance(value, bool):
            return _NO
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                value = float(value)
            except ValueError:
                return _NO
        if isinstance(value, (int, float)) and math.isfinite(value):
            return float(value)
        return _NO  # NaN and inf are never a sensible setting
    if tp is str:
        return value if isinstance(value, str) else str(value)
    return value if isinstance(value, tp) else _NO


def parse_value(key: str, raw: str, tp: Any) -> Any:
    """Parse the text of `--set key=raw` as a value of type `tp`."""
    if tp is str:
        return raw
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    out = _coerce(value, tp)
    if out is _NO:
        raise AlignlabError(f"--set {key}={raw}: expected {type_name(tp)}, got {raw!r}.")
    return out


def split_override(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise AlignlabError(f"--set {item!r}: expected key=value.")
    key, raw = item.split("=", 1)
    return key.strip(), raw.strip()


def apply_overrides(cfg: Any, overrides: dict[str, Any] | list[str] | None) -> Any:
    """A copy of `cfg` with overrides applied and type-checked, then validated (`validate`),
    overrides or not.

    `overrides` is either a list of "key=value" strings (from the command line) or a
    dict of key -> value (already typed, or strings to parse).
    """
    if isinstance(overrides, dict):
        items = list(overrides.items())
    else:
        items = [split_override(item) for item in overrides or []]
    for key, raw in items:
        cfg = _set(cfg, key, raw, key)
    validate(cfg)
    return cfg


def _set(cfg: Any, key: str, raw: Any, full_key: str) -> Any:
    head, _, rest = key.partition(".")
    names = [f.name for f in dataclasses.fields(cfg)]
    if head not in names:
        keys = valid_keys(cfg)
        hint = did_you_mean(full_key, keys)
        raise AlignlabError(
            f"Unknown config key {full_key!r}.{hint} Valid keys: {', '.join(keys)}."
        )
    current = getattr(cfg, head)
    if rest:
        if not dataclasses.is_dataclass(current):
            raise AlignlabError(f"Config key {head!r} has no sub-keys (in {full_key!r}).")
        return dataclasses.replace(cfg, **{head: _set(current, rest, raw, full_key)})
    if dataclasses.is_dataclass(current):
        raise AlignlabError(
            f"Config key {full_key!r} is a group; set one of: "
            + ", ".join(full_key + "." + k for k in valid_keys(current))
        )
    tp = field_types(type(cfg))[head]
    value = parse_value(full_key, raw, tp) if isinstance(raw, str) else _checked(full_key, raw, tp)
    return dataclasses.replace(cfg, **{head: value})


def _checked(key: str, value: Any, tp: Any) -> Any:
    out = _coerce(value, tp)
    if out is _NO:
        raise AlignlabError(f"Config {key}: expected {type_name(tp)}, got {value!r}.")
    return out


class ConfigError(ValueError):
    """A cross-field rule broken, raised by a config's `validate()`: `key` is the field (relative
    to the config that raises it), `message` continues the sentence with what is wrong and what
    is valid: ConfigError("warmup_epochs", "must be < epochs (200), got 200")."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key} {message}")
        self.key, self.message = key, message


def validate(cfg: Any) -> None:
    """Check every field's declared constraint (`param`), nested configs included, then each
    config's own `validate()` (cross-field rules); every violation in one AlignlabError, each
    naming its dotted key."""
    problems = config_problems(cfg)
    if len(problems) == 1:
        raise AlignlabError(f"Invalid config: {problems[0]}")
    if problems:
        raise AlignlabError(
            f"Invalid config ({len(problems)} problems):\n" + "\n".join(f"  {p}" for p in problems)
        )


def config_problems(cfg: Any, prefix: str = "") -> list[str]:
    """The violations of `validate`, as "dotted.key: what is wrong" lines."""
    problems: list[str] = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            problems += config_problems(value, f"{prefix}{f.name}.")
            continue
        rule = f.metadata.get("rule")
        message = rule.check(value) if rule is not None else None
        if message:
            problems.append(f"{prefix}{f.name} {message}")
    check = getattr(cfg, "validate", None)
    if not problems and callable(check):
        try:
            check()
        except ConfigError as e:
            problems.append(f"{prefix}{e.key} {e.message}")
        except (ValueError, AlignlabError) as e:
            problems.append(f"{prefix.rstrip('.') or 'config'}: {e}")
    return problems


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain dict (tuples as lists) for YAML/JSON."""
    return _plain(dataclasses.asdict(cfg))


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a config from `to_dict` output, type-checking every field."""
    hints = field_types(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = from_dict(tp, data[f.name])
        else:
            kwargs[f.name] = _checked(f.name, data[f.name], tp)
    unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise AlignlabError(f"Unknown config keys {sorted(unknown)} for {cls.__name__}.")
    return cls(**kwargs)


def dump_yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False)
