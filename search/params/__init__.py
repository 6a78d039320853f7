"""One module per search-parameter type, each owning both its index fields and its queries."""

from __future__ import annotations

from typing import cast

from search.params import composite, date, reference, string, token, uri
from search.params.base import ParamType

HANDLERS: dict[str, ParamType] = {
    "string": cast(ParamType, string),
    "token": cast(ParamType, token),
    "reference": cast(ParamType, reference),
    "date": cast(ParamType, date),
    "uri": cast(ParamType, uri),
    "composite": cast(ParamType, composite),
}


def handler_for(param_type: str) -> ParamType | None:
    """The module handling ``param_type`` (``None`` for number, quantity, composite, special)."""
    return HANDLERS.get(param_type)
