"""FHIR decimals that keep their exact digits through JSON and XML (json.html#decimal, datatypes.html#decimal).

A FHIR ``decimal`` carries its precision: ``1.50`` is not ``1.5``, ``1e2`` stays ``1e2`` and an
18+ digit value keeps every digit. orjson (like any binary-float parser) loses that, so:

- :class:`FhirDecimal` is a ``float`` that remembers the text it was written with. Being a
  float, everything that reads numbers (validator, search extraction, FHIRPath, comparisons)
  keeps working unchanged; :func:`dumps` writes its text back verbatim (``orjson.Fragment``).
  orjson refuses to serialise it without :func:`default`, so a forgotten call site fails loudly
  rather than silently rounding.
- :func:`loads` is orjson, then two gates decide whether the precise route is needed: when
  orjson writes the parsed document back byte for byte (compact JSON, as machines send it)
  every number kept its digits; otherwise one regex scan looks for a number that might not
  round-trip (a fraction, an exponent, 19+ digits, ``-0``). Only then is the document parsed
  again by the standard library with a ``parse_float`` hook. ``bench/decimals.py`` measures
  each route as a ratio to plain ``orjson.loads``.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

# a JSON number token right after a key, an array start or a comma, with a fraction, an exponent,
# 19+ digits, or -0; inside strings it can match too (a false positive costs the precise route, never a digit)
_RISKY = re.compile(rb'(?:"\s*:|[\[,])\s*(?:-?[0-9]+(?:[.eE]|[0-9]{18})|-0(?![0-9]))')
_INT64 = 2**63


class FhirDecimal(float):
    """A float with the exact lexical form it was read from (``text``), written back as such."""

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> FhirDecimal:
        value = float.__new__(cls, text)
        if not math.isfinite(value):
            raise ValueError(f"'{text}' is not a finite decimal")
        value.text = text
        return value

    def __reduce__(self) -> tuple[type[FhirDecimal], tuple[str]]:
        return FhirDecimal, (self.text,)

    def __repr__(self) -> str:
        return self.text

    __str__ = __repr__


def default(value: Any) -> Any:
    """orjson ``default``: a :class:`FhirDecimal` is written with its own digits."""
    if isinstance(value, FhirDecimal):
        return orjson.Fragment(value.text)
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def dumps(value: Any, option: int = 0) -> bytes:
    """``orjson.dumps`` that writes decimals exactly."""
    return orjson.dumps(value, default=default, option=option)


def _integer(text: str) -> int | FhirDecimal:
    number = int(text)
    return number if -_INT64 <= number < _INT64 and text != "-0" else FhirDecimal(text)


def _constant(text: str) -> Any:
    raise ValueError(f"{text} is not valid JSON")


def needs_precise(raw: bytes | str) -> bool:
    """Whether ``raw`` may hold a number orjson would not give back digit for digit."""
    return _RISKY.search(raw.encode() if isinstance(raw, str) else raw) is not None


def loads(raw: bytes | bytearray | memoryview | str) -> Any:
    """Parse JSON; numbers with a fraction or exponent become :class:`FhirDecimal` when any may not round-trip.

    Errors are ``orjson.JSONDecodeError`` whichever route was taken.
    """
    data = bytes(raw) if isinstance(raw, bytearray | memoryview) else raw
    parsed = orjson.loads(data)  # also the validation of the precise route: orjson's strictness (UTF-8,
    # surrogates, NaN, depth) whichever route answers
    try:
        same = isinstance(data, bytes) and orjson.dumps(parsed) == data
    except TypeError:  # nested deeper than orjson writes (255) though not than it reads: the caller's depth check
        same = False
    if same:
        return parsed  # compact JSON orjson writes back byte for byte: every number kept its digits
    if not needs_precise(data):
        return parsed
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return json.loads(text, parse_float=FhirDecimal, parse_int=_integer, parse_constant=_constant)
    except json.JSONDecodeError as exc:
        raise orjson.JSONDecodeError(exc.msg, exc.doc, exc.pos) from exc
    except (ValueError, RecursionError) as exc:  # bad UTF-8, NaN/Infinity, absurd nesting
        raise orjson.JSONDecodeError(str(exc), "", 0) from exc
