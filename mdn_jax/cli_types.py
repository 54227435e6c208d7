"""The `mdn-jax` command's argument types: argparse `type=` parsers that turn a flag's text into
a checked value or one `argparse.ArgumentTypeError` line.

The checks are the config's own (`mdn_jax.config`), so a flag accepts exactly what the library does.
"""

from __future__ import annotations

import argparse

from mdn_jax import config as cfg


def number(convert, *, allow_zero: bool):
    """An argparse type: `convert` (int or float) of a positive (or non-negative) finite value."""
    words = ("a non-negative " if allow_zero else "a positive ") + (
        "integer" if convert is int else "number"
    )

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {words}, got {text!r}") from None
        if not cfg.is_positive(value, allow_zero=allow_zero):
            raise argparse.ArgumentTypeError(f"expected {words}, got {text}")
        return value

    return parse


def rate(text: str) -> float:
    """An argparse type: a float in [0, 1) (a dropout rate), checked by the config's validator."""
    try:
        value = float(text)
        cfg.unit_rate("rate", value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    return value


def short(number: float) -> str:
    """A number as a person writes it in help text: 0.001 as 1e-3, 10.0 as 10."""
    mantissa, exponent = f"{number:e}".split("e")
    if -3 < int(exponent) < 3:
        return f"{number:g}"
    return f"{float(mantissa):g}e{int(exponent)}"


positive_int = number(int, allow_zero=False)
non_negative_int = number(int, allow_zero=True)
positive_float = number(float, allow_zero=False)
non_negative_float = number(float, allow_zero=True)


def _adam_b2(text: str) -> float:
    value = positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text}")
    return value


def size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("×", "x").split("x")
    try:
        if len(parts) > 2:
            raise ValueError(text)
        height, width = (int(p) for p in parts) if len(parts) == 2 else (int(parts[0]),) * 2
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 128x128, got {text!r}") from None
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"expected positive HxW such as 128x128, got {text!r}")
    return height, width


def listed(parse):
    """An argparse type: one value as `parse` reads it, or comma-separated values (one per
    ensemble member) as a tuple of them."""

    def parse_list(text: str):
        if "," not in text:
            return parse(text)
        return tuple(parse(part.strip()) for part in text.split(","))

    return parse_list


def trunks(text: str) -> tuple[int, ...] | tuple[tuple[int, ...], ...]:
    """--hidden: one trunk's comma-separated widths, or several trunks (one per ensemble member)
    separated by '/', such as 100,100/200,200."""
    if "/" not in text:
        return hidden(text)
    return tuple(hidden(part) for part in text.split("/"))


def hidden(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated widths such as 100,100,50, got {text!r}"
        ) from None
    if not widths or any(w < 1 for w in widths):
        raise argparse.ArgumentTypeError(
            f"expected positive comma-separated widths such as 100,100,50, got {text!r}"
        )
    return widths
