"""The configs' shared machinery: field validators, the field declaration and the base class.

The validators (`positive_int`, `one_of`, ...) are shared by the configs, the CLI's argument
types and the other modules; `config_field` names a field's validator in its metadata and
`BaseConfig` runs them and gives both configs one JSON round trip. `mdn_jax.config` re-exports
the validators, so `mdn_jax.config.positive_int` and the rest keep working.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

Check = Callable[[str, Any], None]  # check(field name, value): raise ValueError or return


def is_positive(value: Any, *, integer: bool = False, allow_zero: bool = False) -> bool:
    """Whether `value` is a finite number > 0 (>= 0 with allow_zero); an integer if asked.

    Python and numpy scalars count; bools do not (True is no batch size).
    """
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        return False
    if not isinstance(value, numbers.Integral) and not math.isfinite(value):
        return False  # (integers are finite; math.isfinite would overflow on huge ones)
    return bool(value >= 0 if allow_zero else value > 0)


def positive_int(name: str, value: Any) -> None:
    if not is_positive(value, integer=True):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def non_negative_int(name: str, value: Any) -> None:
    if not is_positive(value, integer=True, allow_zero=True):
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")


def positive_number(name: str, value: Any) -> None:
    if not is_positive(value):
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def positive_number_or_none(name: str, value: Any) -> None:
    if value is not None and not is_positive(value):
        raise ValueError(f"{name} must be a positive number or None, got {value!r}")


def unit_rate(name: str, value: Any) -> None:
    """A probability that can be 0 but not 1 (a dropout rate)."""
    if not is_positive(value, allow_zero=True) or value >= 1:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")


def fraction_below_one(name: str, value: Any) -> None:
    if not (is_positive(value) and value < 1):
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")


def one_of(choices: Sequence[str], *, quoted: bool = False) -> Check:
    """A check that the value is one of `choices` ("one of a, b" or, quoted, "'a' or 'b'")."""
    listed = " or ".join(map(repr, choices)) if quoted else "one of " + ", ".join(choices)

    def check(name: str, value: Any) -> None:
        if value not in choices:
            raise ValueError(f"{name} must be {listed}, got {value!r}")

    return check


def positive_widths(name: str, widths: Sequence[Any]) -> None:
    for width in widths:
        positive_int("every hidden width", width)


def config_field(default: Any, check: Check | None = None) -> Any:
    """A dataclass field with a default and the validator `BaseConfig` runs on it."""
    return dataclasses.field(default=default, metadata={"check": check} if check else {})


def plain(value: Any) -> Any:
    """numpy scalars as Python ones, so a config always serialises to JSON."""
    if isinstance(value, (bool, int, float)) or not isinstance(value, numbers.Real):
        return value  # a bool stays a bool, to be refused as one
    return int(value) if isinstance(value, numbers.Integral) else float(value)


class BaseConfig:
    """What both configs share: field validation, the JSON round trip, unknown-key errors."""

    _KIND: ClassVar[str]  # "model" or "train", for error messages
    # What a saved config without a newer field meant (`from_dict` fills it in).
    _LEGACY: ClassVar[dict[str, Any]] = {}

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            object.__setattr__(self, field.name, plain(getattr(self, field.name)))
        self.check_fields({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        self._check()

    @classmethod
    def check_fields(cls, values: dict[str, Any]) -> None:
        """Run each named field's validator on its value (a subset of the fields is fine)."""
        for field in dataclasses.fields(cls):
            if field.name in values and "check" in field.metadata:
                field.metadata["check"](field.name, values[field.name])

    def _check(self) -> None:
        """Checks across fields, after every field passed its own."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        values = {**cls._LEGACY, **values}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(
                f"{cls._KIND} config has unknown keys {sorted(unknown)}; known: {sorted(known)}"
            )
        return cls(**values)
