"""Logging setup: one line per record, as key=value text or as JSON.

`daemon.log_format` in cardd.yaml chooses:

- text: `time=... level=INFO logger=cardd.server call_uuid=... msg="..."`
  (logfmt: values with spaces, quotes or `=` are quoted, `"` and `\\` and
  newlines escaped); a traceback follows on its own lines, for people.
- json: one JSON object per line, built with json.dumps (so quotes, newlines
  and control characters in a message can never break the line), with the
  fields time, level, logger, msg, call_uuid (when the record carries one)
  and exc (a traceback, when there is one).

Every line of a call carries its UUID, one way: the greenlet that runs a
call sets it in a context variable (`call_context()`, done by cardd.server
for each call's connection; each greenlet has its own), and the
`CallUuidFilter` on the handler copies it onto each record as `call_uuid`,
whoever logs (the IVR, the ledger, the hooks). Messages carry no UUID text.
Code that logs about a call from another greenlet (the ESL socket reader)
names it with `extra={"call_uuid": uuid}`; the filter keeps that.

Logs go to stderr: stdout belongs to commands' output (`cardd cdr export`
writes CSV there), and systemd sends both to the journal.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import IO, Any

_NEEDS_QUOTES = re.compile(r'[\s"=\\]')

FORMATS = ("text", "json")

_current_call: ContextVar[str | None] = ContextVar("cardd_call_uuid", default=None)


@contextlib.contextmanager
def call_context(call_uuid: str | None) -> Iterator[None]:
    """Lines logged inside (in this greenlet) carry `call_uuid`."""
    token = _current_call.set(call_uuid)
    try:
        yield
    finally:
        _current_call.reset(token)


def current_call() -> str | None:
    """The UUID of the call this greenlet runs, if any."""
    return _current_call.get()


class CallUuidFilter(logging.Filter):
    """Puts the call UUID of the logging greenlet on each record (`call_uuid`),
    unless the record names one itself (extra=). Filters run in the greenlet
    that logs, so the context is the call's own."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "call_uuid", None) is None:
            record.call_uuid = _current_call.get()
        return True


def iso_time(created: float) -> str:
    """UTC, millisecond precision: 2026-11-23T22:51:01.123Z."""
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def record_call_uuid(record: logging.LogRecord) -> str | None:
    """The call UUID a record carries (set by CallUuidFilter, or given as extra=)."""
    found = getattr(record, "call_uuid", None)
    return str(found) if found else None


def logfmt_value(value: str) -> str:
    """A logfmt value: bare when it is one plain word, else quoted with escapes."""
    if value and not _NEEDS_QUOTES.search(value):
        return value
    escaped = (
        value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    )
    return f'"{escaped}"'


class TextFormatter(logging.Formatter):
    """key=value lines (logfmt), the message last."""

    def format(self, record: logging.LogRecord) -> str:
        call_uuid, message = record_call_uuid(record), record.getMessage()
        parts = [f"time={iso_time(record.created)}", f"level={record.levelname}", f"logger={logfmt_value(record.name)}"]
        if call_uuid:
            parts.append(f"call_uuid={logfmt_value(call_uuid)}")
        parts.append(f"msg={logfmt_value(message)}")
        line = " ".join(parts)
        extra = self._exception_text(record)
        return f"{line}\n{extra}" if extra else line

    def _exception_text(self, record: logging.LogRecord) -> str:
        text = ""
        if record.exc_info:
            text = self.formatException(record.exc_info)
        elif record.exc_text:
            text = record.exc_text
        if record.stack_info:
            text = f"{text}\n{self.formatStack(record.stack_info)}" if text else self.formatStack(record.stack_info)
        return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, msg, call_uuid, exc."""

    def format(self, record: logging.LogRecord) -> str:
        call_uuid, message = record_call_uuid(record), record.getMessage()
        obj: dict[str, Any] = {
            "time": iso_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": message,
        }
        if call_uuid:
            obj["call_uuid"] = call_uuid
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            obj["exc"] = record.exc_text
        if record.stack_info:
            obj["stack"] = self.formatStack(record.stack_info)
        # default=str: a record must always produce a line, whatever it holds.
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str)


def formatter_for(fmt: str) -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter()
    if fmt == "text":
        return TextFormatter()
    raise ValueError(f"log format is one of {', '.join(FORMATS)}, got {fmt!r}")


def setup_logging(level: str = "info", fmt: str = "text", stream: IO[str] | None = None) -> logging.Handler:
    """Send every log record to `stream` (default stderr) in the chosen format.

    Replaces the root logger's handlers (like basicConfig(force=True)), so it
    may be called again, e.g. by tests. Returns the handler it installed.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter_for(fmt))
    handler.addFilter(CallUuidFilter())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    return handler
