"""Logging setup: one line per record, as key=value text or as JSON.

`daemon.log_format` in cardd.yaml chooses:

- text: `time=... level=INFO logger=cardd.server call_uuid=... msg="..."`
  (logfmt: values with spaces, quotes or `=` are quoted, `"` and `\\` and
  newlines escaped); a traceback follows on its own lines, for people.
- json: one JSON object per line, built with json.dumps (so quotes, newlines
  and control characters in a message can never break the line), with the
  fields time, level, logger, msg, call_uuid (when the record carries one)
  and exc (a traceback, when there is one).

Every line of a call carries its UUID: cardd.ivr.call.CallLog prefixes each
message with "[<uuid>] "; both formatters lift that prefix into a
`call_uuid` field. A record may also carry it as an attribute
(`log.info(..., extra={"call_uuid": u})`), and any other line logged while
a call's flow runs (the ledger's, the hooks') gets the UUID the daemon set
with `call_context()` (a context variable: each greenlet has its own).

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
from contextvars import ContextVar
from typing import IO, Any, Iterator

# The CallLog prefix. Only a UUID-shaped token is lifted, so a message that
# merely starts with something in brackets is left alone.
_CALL_PREFIX = re.compile(
    r"\[([0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})\] ?"
)
_NEEDS_QUOTES = re.compile(r'[\s"=\\]')

FORMATS = ("text", "json")

_current_call: ContextVar[str | None] = ContextVar("cardd_call_uuid", default=None)


@contextlib.contextmanager
def call_context(call_uuid: str) -> Iterator[None]:
    """Lines logged inside (in this greenlet) carry `call_uuid`."""
    token = _current_call.set(call_uuid)
    try:
        yield
    finally:
        _current_call.reset(token)


def iso_time(created: float) -> str:
    """UTC, millisecond precision: 2026-11-23T22:51:01.123Z."""
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def split_call_uuid(record: logging.LogRecord) -> tuple[str | None, str]:
    """The call UUID a record carries (attribute or CallLog prefix) and its message without the prefix."""
    message = record.getMessage()
    found = getattr(record, "call_uuid", None)
    m = _CALL_PREFIX.match(message)
    if m:
        message = message[m.end():]
        found = found or m.group(1)
    # Formatting runs in the logging greenlet, so the context is the call's own.
    found = found or _current_call.get()
    return (str(found) if found else None), message


def logfmt_value(value: str) -> str:
    """A logfmt value: bare when it is one plain word, else quoted with escapes."""
    if value and not _NEEDS_QUOTES.search(value):
        return value
    escaped = (value.replace("\\", "\\\\").replace('"', '\\"')
               .replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t"))
    return f'"{escaped}"'


class TextFormatter(logging.Formatter):
    """key=value lines (logfmt), the message last."""

    def format(self, record: logging.LogRecord) -> str:
        call_uuid, message = split_call_uuid(record)
        parts = [f"time={iso_time(record.created)}", f"level={record.levelname}",
                 f"logger={logfmt_value(record.name)}"]
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
        call_uuid, message = split_call_uuid(record)
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
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    return handler
