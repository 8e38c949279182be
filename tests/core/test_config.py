from dataclasses import dataclass, field
from typing import Literal

import pytest

from alignlab.core.config import (
    ConfigError,
    apply_overrides,
    describe,
    from_dict,
    param,
    to_dict,
    valid_keys,
    validate,
)
from alignlab.core.errors import AlignlabError


@dataclass
class Inner:
    width: int = 4
    act: Literal["relu", "gelu"] = "relu"


@dataclass
class Cfg:
    lr: float = 1e-3
    steps: int = 10
    name: str = "x"
    flag: bool = False
    horizons: tuple[int, ...] = (1, 2)
    maybe: float | None = None
    inner: Inner = field(default_factory=Inner)

    def validate(self):
        if self.steps < 0:
            raise ValueError("steps must be >= 0")


def test_overrides_are_typed():
    cfg = apply_overrides(
        Cfg(),
        [
            "lr=1e-2",
            "steps=5",
            "name=abc",
            "flag=true",
            "horizons=[3,4,5]",
            "inner.width=8",
            "inner.act=gelu",
            "maybe=0.5",
        ],
    )
    assert cfg.lr == 0.01 and isinstance(cfg.lr, float)
    assert cfg.steps == 5 and cfg.name == "abc" and cfg.flag is True
    assert cfg.horizons == (3, 4, 5)
    assert cfg.inner == Inner(8, "gelu")
    assert cfg.maybe == 0.5
    assert apply_overrides(Cfg(), ["maybe=null"]).maybe is None
    assert apply_overrides(Cfg(), ["lr=2"]).lr == 2.0  # an int is a fine float


def test_unknown_key_lists_valid_keys_and_suggests():
    with pytest.raises(AlignlabError) as e:
        apply_overrides(Cfg(), ["step=3"])
    msg = str(e.value)
    assert "Unknown config key 'step'" in msg and "Did you mean: steps" in msg
    for k in valid_keys(Cfg()):
        assert k in msg
    assert "inner.width" in msg


@pytest.mark.parametrize(
    "item, expected",
    [
        ("steps=abc", "expected int"),
        ("steps=1.5", "expected int"),
        ("flag=3", "expected bool"),
        ("lr=fast", "expected a finite float"),
        ("lr=nan", "expected a finite float"),
        ("lr=inf", "expected a finite float"),
        ("horizons=[1,x]", "expected a list of int"),
        ("inner.act=tanh", "one of 'relu', 'gelu'"),
    ],
)
def test_wrong_type_names_expected_type(item, expected):
    with pytest.raises(AlignlabError, match=expected):
        apply_overrides(Cfg(), [item])


def test_malformed_and_group_and_validate_errors():
    with pytest.raises(AlignlabError, match="expected key=value"):
        apply_overrides(Cfg(), ["steps"])
    with pytest.raises(AlignlabError, match="is a group"):
        apply_overrides(Cfg(), ["inner=3"])
    with pytest.raises(AlignlabError, match="steps must be >= 0"):
        apply_overrides(Cfg(), ["steps=-1"])


def test_round_trip_through_dict():
    cfg = apply_overrides(Cfg(), ["horizons=[7]", "inner.width=2"])
    assert from_dict(Cfg, to_dict(cfg)) == cfg
    with pytest.raises(AlignlabError, match="Unknown config keys"):
        from_dict(Cfg, {**to_dict(cfg), "bogus": 1})


# ---- declarative fields ----------------------------------------------------------------------


@dataclass
class Loop:
    steps: int = param(100, ge=1, help="gradient steps")
    warmup: int = param(10, ge=0, help="warmup steps")

    def validate(self):
        if self.warmup >= self.steps:
            raise ConfigError("warmup", f"must be < steps ({self.steps}), got {self.warmup}")


@dataclass
class Declared:
    gamma: float = param(0.9, gt=0, lt=1, help="discount")
    methods: tuple[str, ...] = param(
        ("a", "b"), choices=("a", "b", "c"), nonempty=True, distinct=True, help="methods"
    )
    widths: tuple[int, ...] = param((8, 16), ge=1, help="widths")
    top_k: int | None = param(None, ge=1, help="optional")
    loop: Loop = param(factory=Loop, help="the loop")


def test_declared_constraints_name_the_dotted_key_and_the_valid_range():
    validate(Declared())
    with pytest.raises(
        AlignlabError, match=r"^Invalid config: gamma must be in \(0, 1\), got 1.0$"
    ):
        apply_overrides(Declared(), ["gamma=1.0"])
    with pytest.raises(AlignlabError, match=r"methods must be .*one of a, b, c, got \['a', 'x'\]"):
        apply_overrides(Declared(), ["methods=[a,x]"])
    with pytest.raises(AlignlabError, match=r"methods must be non-empty, no repeats"):
        apply_overrides(Declared(), ["methods=[a,a]"])
    with pytest.raises(AlignlabError, match=r"widths must be >= 1, got \[8, 0\]"):
        apply_overrides(Declared(), ["widths=[8,0]"])
    with pytest.raises(AlignlabError, match=r"loop.steps must be >= 1, got 0"):
        apply_overrides(Declared(), ["loop.steps=0"])
    assert apply_overrides(Declared(), ["top_k=3"]).top_k == 3  # None passes, 3 >= 1 too


def test_every_violation_in_one_error_and_cross_field_rules_only_on_valid_fields():
    with pytest.raises(AlignlabError) as info:
        apply_overrides(Declared(), ["gamma=2.0", "widths=[0]", "loop.steps=0"])
    text = str(info.value)
    assert text.startswith("Invalid config (3 problems):")
    for key in ("gamma must", "widths must", "loop.steps must"):
        assert key in text
    assert "loop.warmup" not in text  # the cross-field rule waits for valid fields
    with pytest.raises(AlignlabError, match=r"^Invalid config: loop.warmup must be < steps \(5\)"):
        apply_overrides(Declared(), ["loop.steps=5"])


def test_a_field_without_help_is_refused():
    with pytest.raises(ValueError, match="help"):
        param(1, help=" ")


def test_describe_lists_fields_values_per_preset_constraints_and_help():
    rows = describe({"smoke": Declared(gamma=0.5), "quick": Declared()})
    by_key = {r["key"]: r for r in rows}
    assert by_key["gamma"]["values"] == {"smoke": 0.5, "quick": 0.9}
    assert by_key["gamma"]["constraint"] == "in (0, 1)"
    assert by_key["methods"]["constraint"] == "non-empty, no repeats, one of a, b, c"
    assert by_key["loop"]["group"] and by_key["loop"]["help"] == "the loop"
    assert by_key["loop.steps"]["help"] == "gradient steps"
    assert by_key["top_k"]["type"] == "int or null"
