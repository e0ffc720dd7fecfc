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

Who may post: mod_json_cdr sends HTTP basic credentials (its `cred` setting,
"user:password", with the default auth-scheme basic: curl sends them with
the first request). The endpoint compares them, in constant time, with
daemon.cdr_credentials, and may also be limited to listed source networks
(daemon.cdr_allowed_sources): a wrong source gets 403, missing or wrong
credentials 401; neither changes anything. With no credentials configured
every POST gets 401: an unauthenticated endpoint would let anyone settle
any call.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import json
import logging
import re
import uuid as uuidlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote

from cardd.digits import is_digits
from cardd.errors import BadCdr, DatabaseUnavailable
from cardd.httpd import HttpListener, Request, Response

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024  # a B leg's JSON CDR is a few KB
_CAUSE = re.compile(r"^[A-Z0-9_]{1,64}$")


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
    if not is_digits(text):
        return None
    us = int(text)
    if us <= 0:
        return None
    try:
        return datetime.fromtimestamp(us / 1_000_000, tz=UTC)
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
    if not is_digits(billmsec_text) or len(billmsec_text) > 12:
        raise BadCdr(f"billmsec is not a count of milliseconds: {billmsec_text[:20]!r}")
    cause = _value(variables, "hangup_cause") or "NORMAL_CLEARING"
    if not _CAUSE.match(cause):
        raise BadCdr(f"hangup_cause is not a cause name: {cause[:40]!r}")
    billmsec = int(billmsec_text)
    return CdrRecord(
        uuid=leg,
        billmsec=billmsec,
        hangup_cause=cause,
        answered_at=_epoch_us(_value(variables, "answer_uepoch")) if billmsec else None,
        ended_at=_epoch_us(_value(variables, "end_uepoch")),
        received_at=datetime.now(UTC),
    )


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

    def discard(self, leg_uuid: str) -> None:
        """Forget a CDR that must not be used (its leg is still up)."""
        self._records.pop(str(leg_uuid), None)

    def unapplied(self) -> list[CdrRecord]:
        return [r for u, r in self._records.items() if u not in self.applied]

    def __len__(self) -> int:
        return len(self._records)


def basic_credentials(header: str) -> str | None:
    """ "user:password" from an Authorization: Basic header, or None."""
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        return base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None


class CdrEndpoint:
    """The HTTP listener. `on_cdr(record)` runs for each accepted CDR before
    the reply, so FreeSWITCH retries when cardd could not take it.

    credentials: "user:password" the poster must send; "" refuses every POST;
    None checks nothing (in-process embedding only: the daemon always passes
    daemon.cdr_credentials). allowed_sources: networks a poster may come from
    (empty: any)."""

    def __init__(
        self,
        listen: tuple[str, int],
        store: CdrStore,
        on_cdr: Callable[[CdrRecord], str | None] | None = None,
        on_bad: Callable[[], None] | None = None,
        *,
        credentials: str | None = None,
        allowed_sources: tuple[str, ...] = (),
        read_timeout: float = 10.0,
        max_connections: int = 64,
        on_refused: Callable[[str], None] | None = None,
    ):
        self.store = store
        self.on_cdr = on_cdr
        self.on_bad = on_bad
        self.on_refused = on_refused
        self.credentials = credentials
        self.allowed = tuple(ipaddress.ip_network(n, strict=False) for n in allowed_sources)
        self.received = 0
        self._server = HttpListener(
            listen,
            self.handle,
            name="CDR endpoint",
            read_timeout=read_timeout,
            max_connections=max_connections,
            max_body=MAX_BODY,
            on_refused=on_refused,
        )

    @property
    def address(self) -> tuple[str, int]:
        return self._server.address

    @property
    def active(self) -> int:
        return self._server.active

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop(timeout=2)

    def _source_allowed(self, peer: str) -> bool:
        if not self.allowed:
            return True
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in net for net in self.allowed)

    def _authenticated(self, request: Request) -> bool:
        if self.credentials is None:
            return True
        given = basic_credentials(request.headers.get("authorization", ""))
        if not self.credentials or given is None:
            return False
        return hmac.compare_digest(given.encode("utf-8"), self.credentials.encode("utf-8"))

    def handle(self, request: Request) -> Response:
        if request.method == "GET":
            return Response(200, b"cardd CDR endpoint\n")
        if request.method != "POST":
            return Response(405, b"POST a CDR\n")
        if not self._source_allowed(request.peer):
            log.warning("CDR refused: source %s is not in daemon.cdr_allowed_sources", request.peer)
            self._refuse("source")
            return Response(403, b"source not allowed\n")
        if not self._authenticated(request):
            log.warning(
                "CDR refused: %s from %s",
                "no credentials configured (daemon.cdr_credentials)"
                if self.credentials == ""
                else "missing or wrong credentials",
                request.peer,
            )
            self._refuse("credentials")
            return Response(401, b"credentials required\n", headers=[("WWW-Authenticate", 'Basic realm="cardd CDR"')])
        try:
            record = parse_body(request.body, request.headers.get("content-type", ""))
        except BadCdr as exc:
            self._bad()
            log.warning("CDR refused: %s", exc)
            # 4xx: retrying the same body would not help.
            return Response(400, f"{exc}\n".encode("ascii", "replace"))
        self.received += 1
        self.store.add(record)
        if self.on_cdr is not None:
            try:
                done = self.on_cdr(record)
            except DatabaseUnavailable as exc:
                # 503: mod_json_cdr retries, then keeps it in its err-log-dir,
                # which outlives this process; the store has it meanwhile.
                log.warning("CDR %s kept for later: %s", record.uuid, exc)
                return Response(503, b"database unavailable\n")
            except Exception:
                # Kept in the store; the periodic orphan pass applies it later.
                log.exception("CDR %s stored, not applied yet", record.uuid)
                return Response(200, b"OK\n")
            if done == "call up":
                # Its leg is still up: forged, or sent before the channel was gone.
                # Not kept; a real CDR is re-sent by mod_json_cdr's retries.
                return Response(409, b"that leg is still up\n")
        return Response(200, b"OK\n")

    def _refuse(self, reason: str) -> None:
        if self.on_refused is not None:
            self.on_refused(reason)

    def _bad(self) -> None:
        if self.on_bad is not None:
            self.on_bad()
