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

A property named twice in one object (``{"birthDate": .., "birthDate": ..}``) is an error (json.html), not "last
one wins": :class:`DuplicateProperty`. It never takes the compact route (orjson keeps one of the two, so what it
writes back differs), and the standard library route sees every object's pairs (``object_pairs_hook``); only when
one repeats is the document read again to name where (:func:`_locate`).
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


class DuplicateProperty(orjson.JSONDecodeError):
    """A JSON object with the same property twice; ``expression``: the FHIRPath of that property."""

    def __init__(self, name: str, expression: str) -> None:
        super().__init__(f"The JSON property '{name}' occurs more than once in the same object", "", 0)
        self.name = name
        self.expression = expression

    def __str__(self) -> str:
        return str(self.msg)


class _Repeated(Exception):
    """Raised by :func:`_pairs` on the parsing route: no position yet (see :func:`_locate`)."""


class _Marked(dict[str, Any]):
    """An object in which ``repeated`` occurs twice (only built by :func:`_locate`)."""

    repeated = ""


def _pairs(pairs: list[tuple[str, Any]], _dict: Any = dict, _len: Any = len) -> dict[str, Any]:
    """``object_pairs_hook`` of the precise route (builtins bound as locals: it runs for every object)."""
    obj: dict[str, Any] = _dict(pairs)
    if _len(obj) != _len(pairs):
        raise _Repeated
    return obj


def _mark(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    marked, seen = _Marked(obj), set()
    for key, _ in pairs:
        if key in seen:
            marked.repeated = key
            break
        seen.add(key)
    return marked


def _locate(text: str) -> DuplicateProperty:
    """The first repeated property in document order, with its FHIRPath (``Bundle.entry[0].resource.gender``).

    Reads the whole document again: an error further on (bad syntax, nesting) is raised as such."""
    root = json.loads(text, object_pairs_hook=_mark, parse_float=FhirDecimal, parse_int=_integer,
                      parse_constant=_constant)
    rt = root.get("resourceType") if isinstance(root, dict) else None
    stack: list[tuple[Any, str]] = [(root, rt if isinstance(rt, str) else "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, _Marked):
            name = node.repeated
            return DuplicateProperty(name, f"{path}.{name.lstrip('_')}" if path else name.lstrip("_"))
        if isinstance(node, dict):
            stack.extend((v, f"{path}.{k.lstrip('_')}" if path else k.lstrip("_")) for k, v in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend((v, f"{path}[{i}]") for i, v in reversed(list(enumerate(node))))
    raise AssertionError("a repeated property was reported but not found")  # pragma: no cover


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

    Errors are ``orjson.JSONDecodeError`` whichever route was taken (:class:`DuplicateProperty` for a property
    named twice in one object).
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
        text = data.decode("utf-8")
        try:
            return json.loads(text, parse_float=FhirDecimal, parse_int=_integer, parse_constant=_constant,
                              object_pairs_hook=_pairs)
        except _Repeated:
            raise _locate(text) from None  # or the document's other defect, met further on
    except DuplicateProperty:
        raise
    except json.JSONDecodeError as exc:
        raise orjson.JSONDecodeError(exc.msg, exc.doc, exc.pos) from exc
    except (ValueError, RecursionError) as exc:  # bad UTF-8, NaN/Infinity, absurd nesting
        raise orjson.JSONDecodeError(str(exc), "", 0) from exc
