"""Validation helpers of the core: type tests, checked conversions, read-only arrays.

A failed check raises ``ValueError`` naming the field, the value and what is
allowed: ``"{field}={value!r} is not allowed; it must be ..."``. The topology
modules word their rules without the "it" (``it=False``); each module keeps its
wording, so that a message reads the same wherever it was raised before.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = [
    "check_int",
    "check_number",
    "check_real",
    "check_rng",
    "is_finite",
    "is_int",
    "is_real",
    "read_only",
    "read_only_view",
]


def is_int(value: object) -> bool:
    """Whether ``value`` is a Python or numpy integer (a bool is not)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: object) -> bool:
    """Whether ``value`` is a Python or numpy real number (a bool is not; inf and nan are)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_finite(value: object) -> bool:
    """Whether ``value`` is a finite real number (:func:`is_real`, neither inf nor nan)."""
    return is_real(value) and math.isfinite(float(value))  # type: ignore[arg-type]


def _must(it: bool) -> str:
    return "it must be" if it else "must be"


def check_int(field: str, value: object, minimum: int, *, it: bool = True) -> int:
    """An integer ``>= minimum`` (:func:`is_int`), as ``int``.

    Args:
        field: the name the message gives the value.
        value: the value to check.
        minimum: the least value allowed.
        it: word the rule "it must be" (False: "must be").

    Raises:
        ValueError: ``value`` is no integer or is below ``minimum``.
    """
    if not is_int(value) or value < minimum:  # type: ignore[operator]
        raise ValueError(f"{field}={value!r} is not allowed; {_must(it)} an integer >= {minimum}")
    return int(value)  # type: ignore[arg-type]


def check_real(
    field: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A finite real number in an interval, as ``float``; the message names the interval.

    Args:
        field: the name the message gives the value.
        value: the value to check.
        low: the interval's lower end (None: unbounded).
        high: its upper end (None: unbounded).
        low_open: exclude ``low`` itself.
        high_open: exclude ``high`` itself.

    Raises:
        ValueError: ``value`` is no finite real number or lies outside the interval.
    """
    left = "(-inf" if low is None else f"{'(' if low_open else '['}{low:g}"
    right = "inf)" if high is None else f"{high:g}{')' if high_open else ']'}"
    allowed = f"{left}, {right}"
    if not is_finite(value):
        raise ValueError(
            f"{field}={value!r} is not allowed; it must be a finite number in {allowed}"
        )
    v = float(value)  # type: ignore[arg-type]
    too_low = low is not None and (v < low or (low_open and v == low))
    too_high = high is not None and (v > high or (high_open and v == high))
    if too_low or too_high:
        raise ValueError(f"{field}={value!r} is not allowed; it must be in {allowed}")
    return v


def check_number(
    field: str, value: object, *, minimum: float = 0.0, strict: bool = False, it: bool = True
) -> float:
    """A finite real number ``>= minimum`` (``> minimum`` if ``strict``), as ``float``;
    the message names the bound.

    Args:
        field: the name the message gives the value.
        value: the value to check; a real number is shown as a float in the message.
        minimum: the bound.
        strict: exclude ``minimum`` itself.
        it: word the rule "it must be" (False: "must be").

    Raises:
        ValueError: ``value`` is no finite real number or lies below the bound.
    """
    ok = is_real(value)
    if ok:
        value = float(value)  # type: ignore[arg-type]
        ok = math.isfinite(value) and (value > minimum if strict else value >= minimum)
    if not ok:
        rel = ">" if strict else ">="
        raise ValueError(
            f"{field}={value!r} is not allowed; {_must(it)} a finite number {rel} {minimum}"
        )
    return float(value)  # type: ignore[arg-type]


def check_rng(rng: object, *, it: bool = True) -> np.random.Generator:
    """A ``numpy.random.Generator``, the only source of randomness the core takes.

    Raises:
        ValueError: ``rng`` is anything else (a seed, ``numpy.random.RandomState``, None).
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError(
            f"rng={rng!r} is not allowed; {_must(it)} a numpy.random.Generator "
            "(e.g. numpy.random.default_rng(seed))"
        )
    return rng


def read_only(array: np.ndarray) -> np.ndarray:
    """``array`` itself, made read-only (for arrays the caller no longer writes)."""
    array.setflags(write=False)
    return array


def read_only_view(array: np.ndarray) -> np.ndarray:
    """A read-only view of ``array`` (the array itself stays writeable)."""
    view = array.view()
    view.flags.writeable = False
    return view
