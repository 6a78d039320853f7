"""Structured logs that carry the request id.

The id lives in a context variable set by :class:`.middleware.RequestContextMiddleware` for the life of the
request; a log-record factory (not a handler filter, so that every handler, pytest's included, sees it) copies
it into each record as ``request_id``. ``FHIR_LOG_FORMAT=json`` writes one JSON object per line.
"""

from __future__ import annotations

import logging
import re
import sys
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

REQUEST_ID: ContextVar[str | None] = ContextVar("fhir_request_id", default=None)
_VALID_ID = re.compile(r"[!-~]{1,128}")  # printable ASCII without spaces: safe in a header and a log line

# attributes every LogRecord has: anything else was passed as ``extra=`` and goes into the JSON line
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    # color_message: uvicorn's ANSI copy of the message; request_tag: the text format's " [id]"
    "message", "asctime", "request_id", "request_tag", "color_message"}
_installed = False


def request_id_of(header: str | None) -> str:
    """The client's ``X-Request-ID`` when it is printable ASCII of at most 128 characters, else a new UUID."""
    if header is not None and _VALID_ID.fullmatch(header):
        return header
    return str(uuid.uuid4())


def install_record_factory() -> None:
    """Give every log record a ``request_id`` attribute (None outside a request). Idempotent."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.request_id = REQUEST_ID.get()
        return record

    logging.setLogRecordFactory(factory)
    _installed = True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, the ``extra=`` fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None)
        if rid is not None:
            line["request_id"] = rid
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(request_tag)s: %(message)s"


def _with_request_id(record: logging.LogRecord) -> bool:
    """A record made without the factory (``logging.makeLogRecord``) still formats."""
    if not hasattr(record, "request_id"):
        record.request_id = None
    # " [id]" within a request; nothing outside one (a CLI command's lines carry no request)
    rid = getattr(record, "request_id", None)
    record.request_tag = f" [{rid}]" if rid is not None else ""
    return True


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is emitted, not the stream of the day it was made:
    a command run in-process (the tests call ``cli.main``) must not leave the root logger holding a stream
    that is closed later (pytest's capture), where every later record would fail to print."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure_logging(fmt: str, level: str | int) -> None:
    """Root logging for a command: JSON lines or text on stderr, every line with its request id."""
    install_record_factory()
    handler = _CurrentStderr()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(_with_request_id)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("elastic_transport").setLevel(logging.WARNING)
