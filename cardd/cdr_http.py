"""FreeSWITCH's own CDRs, received over HTTP from mod_json_cdr.

When cardd dies mid-call it never sees the B leg's CHANNEL_HANGUP_COMPLETE,
so it cannot know what to bill. FreeSWITCH still writes a CDR for every leg
and mod_json_cdr POSTs it here (freeswitch-conf/autoload_configs/
json_cdr.conf.xml). The orphan rule (cardd.orphans) settles from it, or
corrects an estimated settlement with it.

Accepted bodies, as mod_json_cdr's `encode` setting makes them: raw JSON
(`false`), `cdr=<url-encoded JSON>` (`true`) and `cdr=<base64 JSON>`
(`base64`); values inside may be url-encoded (`encode-values`, the module's
default). Everything in a CDR is untrusted input: only the B-leg UUID (a
UUID), billmsec (an integer), the hangup cause (a short token) and two
microsecond timestamps are taken, each checked.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import uuid as uuidlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, unquote

from gevent.pywsgi import WSGIServer

from cardd.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024          # a B leg's JSON CDR is a few KB
_CAUSE = re.compile(r"^[A-Z0-9_]{1,64}$")


class BadCdr(ValueError):
    """The body is not a usable mod_json_cdr document."""


@dataclass(frozen=True)
class CdrRecord:
    """What the orphan rule needs from one leg's CDR."""

    uuid: str
    billmsec: int
    hangup_cause: str
    answered_at: datetime | None
    ended_at: datetime | None
    received_at: datetime


def _value(variables: dict[str, Any], name: str) -> str:
    raw = variables.get(name)
    if raw is None:
        return ""
    text = str(raw)
    return unquote(text) if "%" in text else text


def _epoch_us(text: str) -> datetime | None:
    if not text.isdigit():
        return None
    us = int(text)
    if us <= 0:
        return None
    try:
        return datetime.fromtimestamp(us / 1_000_000, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


def parse_body(body: bytes, content_type: str = "") -> CdrRecord:
    """A mod_json_cdr POST body -> CdrRecord, or BadCdr."""
    text = body.strip()
    if not text.startswith(b"{"):
        # encode=true / base64: a form with one field, cdr.
        try:
            form = parse_qs(text.decode("ascii"), strict_parsing=False)
        except UnicodeDecodeError:
            raise BadCdr("body is neither JSON nor a form") from None
        field = (form.get("cdr") or [""])[0].strip()
        if not field:
            raise BadCdr("no cdr field in the form")
        if field.startswith("{"):
            text = field.encode("utf-8")
        else:
            try:
                text = base64.b64decode(field, validate=False)
            except (binascii.Error, ValueError):
                raise BadCdr("cdr field is neither JSON nor base64") from None
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadCdr(f"not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("variables"), dict):
        raise BadCdr("no variables object")
    variables = doc["variables"]
    try:
        leg = str(uuidlib.UUID(_value(variables, "uuid")))
    except ValueError:
        raise BadCdr("variables.uuid is not a UUID") from None
    billmsec_text = _value(variables, "billmsec") or "0"
    if not billmsec_text.isdigit() or len(billmsec_text) > 12:
        raise BadCdr(f"billmsec is not a count of milliseconds: {billmsec_text[:20]!r}")
    cause = _value(variables, "hangup_cause") or "NORMAL_CLEARING"
    if not _CAUSE.match(cause):
        raise BadCdr(f"hangup_cause is not a cause name: {cause[:40]!r}")
    billmsec = int(billmsec_text)
    return CdrRecord(
        uuid=leg, billmsec=billmsec, hangup_cause=cause,
        answered_at=_epoch_us(_value(variables, "answer_uepoch")) if billmsec else None,
        ended_at=_epoch_us(_value(variables, "end_uepoch")),
        received_at=datetime.now(timezone.utc))


class CdrStore:
    """The CDRs received, by leg UUID, until the orphan rule has used them.

    Bounded: the oldest records go first when it is full (by then their
    reservations were settled long ago, or were settled estimated, which an
    operator sees on the CDR)."""

    def __init__(self, limit: int = 100_000):
        self.limit = limit
        self._records: OrderedDict[str, CdrRecord] = OrderedDict()
        self.applied: set[str] = set()

    def add(self, record: CdrRecord) -> None:
        self._records[record.uuid] = record
        self._records.move_to_end(record.uuid)
        while len(self._records) > self.limit:
            old, _ = self._records.popitem(last=False)
            self.applied.discard(old)

    def get(self, leg_uuid: str) -> CdrRecord | None:
        return self._records.get(str(leg_uuid))

    def mark_applied(self, leg_uuid: str) -> None:
        self.applied.add(str(leg_uuid))

    def unapplied(self) -> list[CdrRecord]:
        return [r for u, r in self._records.items() if u not in self.applied]

    def __len__(self) -> int:
        return len(self._records)


class CdrEndpoint:
    """The HTTP listener. `on_cdr(record)` runs for each accepted CDR before
    the 200 reply, so FreeSWITCH retries when cardd could not take it."""

    def __init__(self, listen: tuple[str, int], store: CdrStore,
                 on_cdr: Callable[[CdrRecord], None] | None = None,
                 on_bad: Callable[[], None] | None = None):
        self.store = store
        self.on_cdr = on_cdr
        self.on_bad = on_bad
        self.received = 0
        self._server = WSGIServer(listen, self.app, log=None, error_log=log)

    @property
    def address(self) -> tuple[str, int]:
        return self._server.address[:2]

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop(timeout=2)

    def app(self, environ, start_response):
        method = environ.get("REQUEST_METHOD", "")
        if method == "GET":
            return _reply(start_response, "200 OK", b"cardd CDR endpoint\n")
        if method != "POST":
            return _reply(start_response, "405 Method Not Allowed", b"POST a CDR\n")
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self._bad()
            return _reply(start_response, "413 Payload Too Large", b"too large\n")
        body = environ["wsgi.input"].read(length) if length else b""
        try:
            record = parse_body(body, environ.get("CONTENT_TYPE", ""))
        except BadCdr as exc:
            self._bad()
            log.warning("CDR refused: %s", exc)
            # 4xx: retrying the same body would not help.
            return _reply(start_response, "400 Bad Request", f"{exc}\n".encode("ascii", "replace"))
        self.received += 1
        self.store.add(record)
        if self.on_cdr is not None:
            try:
                self.on_cdr(record)
            except DatabaseUnavailable as exc:
                # 503: mod_json_cdr retries, then keeps it in its err-log-dir,
                # which outlives this process; the store has it meanwhile.
                log.warning("CDR %s kept for later: %s", record.uuid, exc)
                return _reply(start_response, "503 Service Unavailable", b"database unavailable\n")
            except Exception:
                # Kept in the store; the periodic orphan pass applies it later.
                log.exception("CDR %s stored, not applied yet", record.uuid)
        return _reply(start_response, "200 OK", b"OK\n")

    def _bad(self) -> None:
        if self.on_bad is not None:
            self.on_bad()


def _reply(start_response, status: str, body: bytes):
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
