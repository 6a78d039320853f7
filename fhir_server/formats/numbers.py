"""FHIR decimals that keep their exact digits through JSON and XML (json.html#decimal, datatypes.html#decimal).

A FHIR ``decimal`` carries its precision: ``1.50`` is not ``1.5``, ``1e2`` stays ``1e2`` and an
18+ digit value keeps every digit. orjson (like any binary-float parser) loses that, so:

- :class:`FhirDecimal` is a ``float`` that remembers the text it was written with. Being a
  float, everything that reads numbers (validator, search extraction, FHIRPath, comparisons)
  keeps working unchanged; :func:`dumps` writes its text back verbatim (``orjson.Fragment``).
  orjson refuses to serialise it without :func:`default`, so a forgotten call site fails loudly
  rather than silently rounding.
- :func:`loads` keeps orjson's result when orjson writes the parsed document back byte for
  byte (compact JSON on one line, as machines send it): then every number kept its digits.
  Anything else (pretty-printed JSON, or a number orjson would rewrite such as ``1.50``) is
  parsed by the standard library with ``parse_float``/``parse_int`` hooks. A regex looking
  for risky numbers first was tried and dropped: scanning costs more than that parse.
  ``bench/decimals.py`` measures both routes as ratios to plain ``orjson.loads``.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

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


def _written_back(parsed: Any, data: bytes) -> bool:
    try:
        return orjson.dumps(parsed) == data
    except TypeError:  # nested deeper than orjson writes (255) though not than it reads: the caller's depth check
        return False


def compact(data: bytes) -> tuple[bool, Any]:
    """(True, orjson's result) when ``data`` is one line orjson writes back byte for byte, else (False, None)."""
    if b"\n" in data:  # a raw newline is whitespace (in strings it is escaped): not compact
        return False, None
    parsed = orjson.loads(data)
    return (True, parsed) if _written_back(parsed, data) else (False, None)


def loads(raw: bytes | bytearray | memoryview | str) -> Any:
    """Parse JSON, numbers with their exact digits (:class:`FhirDecimal` where orjson would rewrite them).

    Errors are ``orjson.JSONDecodeError`` whichever route was taken.
    """
    try:
        data = raw.encode() if isinstance(raw, str) else bytes(raw)
    except UnicodeEncodeError as exc:  # a str holding lone surrogates
        raise orjson.JSONDecodeError(str(exc), "", 0) from exc
    done, parsed = compact(data)
    if done:
        return parsed
    if b"\\ud" in data or b"\\uD" in data:
        orjson.loads(data)  # orjson's verdict on surrogate escapes (the standard library accepts lone ones)
    try:
        return json.loads(data.decode("utf-8"), parse_float=FhirDecimal, parse_int=_integer,
                          parse_constant=_constant)
    except json.JSONDecodeError as exc:
        raise orjson.JSONDecodeError(exc.msg, exc.doc, exc.pos) from exc
    except (ValueError, RecursionError) as exc:  # bad UTF-8, NaN/Infinity, absurd nesting
        raise orjson.JSONDecodeError(str(exc), "", 0) from exc
