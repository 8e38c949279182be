from dataclasses import dataclass, field
from typing import Literal

import pytest

from alignlab.core.config import apply_overrides, from_dict, to_dict, valid_keys
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
