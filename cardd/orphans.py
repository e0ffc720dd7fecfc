"""The orphan rule: reservations whose call cardd lost track of.

A reservation stays open when cardd sent a bridge and never saw its outcome:
cardd died (SIGKILL, power loss) or its socket was closed mid-bridge
(SIGTERM past the grace time). FreeSWITCH goes on with the call, bounded by
the B leg's own sched_hangup (ESL captures 16, fact 27), and nobody is left
to bill it. This module does, by DESIGN.md "Decisions":

- at start, every open reservation whose A leg is not a live call of this
  process is a candidate; later, every `interval` seconds, the candidates are
  those past their expiry (granted duration + reservation_margin);
- a candidate whose B leg FreeSWITCH's own CDR has reached us (cardd.cdr_http)
  is settled from it, billmsec as FreeSWITCH measured it;
- otherwise cardd asks FreeSWITCH over the inbound Event Socket
  (`api uuid_exists <B>`): a live B leg is left alone (asked again later);
  a gone one is settled at the reserved amount, the whole granted duration,
  with the CDR marked `estimated`; when the real CDR arrives later the ledger
  corrects it with one refund;
- when FreeSWITCH cannot be asked, nothing is settled without a CDR: money
  is never released or charged on a guess.

Settlements go through the journal, so a database outage in the middle costs
nothing either. Every step is idempotent by B-leg UUID: the call's own
settlement, a CDR and this check may race in any order and the card is still
charged once.
"""

from __future__ import annotations

import logging
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

import gevent
from gevent import socket

from cardd.billing.journal import SettlementJournal
from cardd.billing.ledger import Ledger, OpenReservation
from cardd.cdr_http import CdrRecord, CdrStore
from cardd.errors import DatabaseUnavailable, ESLTimeout, ProtocolError
from cardd.esl.protocol import Frame, FrameParser, encode_command

log = logging.getLogger(__name__)


class InboundEslError(Exception):
    """FreeSWITCH's inbound Event Socket could not be used."""


class InboundEsl:
    """A minimal inbound Event Socket client: auth, api, exit.

    It subscribes to nothing, so every frame it reads is the reply to its own
    last command (framing: cardd.esl.protocol)."""

    def __init__(self, address: tuple[str, int], password: str, *, timeout: float = 5.0):
        self.address = address
        self.password = password
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._parser = FrameParser()

    def __enter__(self) -> "InboundEsl":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def connect(self) -> None:
        try:
            self._sock = socket.create_connection(self.address, timeout=self.timeout)
        except OSError as exc:
            raise InboundEslError(f"cannot reach FreeSWITCH at {self.address[0]}:{self.address[1]}: "
                                  f"{exc}") from None
        hello = self._read()
        if hello.content_type != "auth/request":
            raise InboundEslError(f"expected auth/request, got {hello.content_type!r}")
        reply = self._command(f"auth {self.password}")
        if not (reply.reply_text or "").startswith("+OK"):
            raise InboundEslError("FreeSWITCH refused the inbound ESL password")

    def api(self, command: str) -> str:
        frame = self._command(f"api {command}")
        if frame.content_type != "api/response":
            raise InboundEslError(f"expected api/response, got {frame.content_type!r}")
        return frame.body.decode("utf-8", errors="replace")

    def uuid_exists(self, leg_uuid: str) -> bool:
        answer = self.api(f"uuid_exists {leg_uuid}").strip()
        if answer not in ("true", "false"):
            raise InboundEslError(f"uuid_exists answered {answer[:60]!r}")
        return answer == "true"

    def close(self) -> None:
        if self._sock is None:
            return
        try:
            self._sock.sendall(encode_command("exit"))
        except OSError:
            pass
        try:
            self._sock.close()
        except OSError:
            pass
        self._sock = None

    def _command(self, text: str) -> Frame:
        if self._sock is None:
            raise InboundEslError("not connected")
        try:
            self._sock.sendall(encode_command(text))
        except OSError as exc:
            raise InboundEslError(f"inbound ESL write failed: {exc}") from None
        return self._read()

    def _read(self) -> Frame:
        assert self._sock is not None
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                frame = self._parser.next_frame()
            except ProtocolError as exc:
                raise InboundEslError(f"malformed inbound ESL frame: {exc}") from None
            if frame is not None:
                if frame.content_type == "text/disconnect-notice":
                    raise InboundEslError("FreeSWITCH closed the inbound connection")
                return frame
            left = deadline - time.monotonic()
            if left <= 0:
                raise InboundEslError("inbound ESL reply timed out")
            self._sock.settimeout(left)
            try:
                data = self._sock.recv(65536)
            except (OSError, ESLTimeout) as exc:
                raise InboundEslError(f"inbound ESL read failed: {exc}") from None
            if not data:
                raise InboundEslError("FreeSWITCH closed the inbound connection")
            self._parser.feed(data)


@dataclass
class PassReport:
    """What one reconciliation pass did (also the figures the tests check)."""

    candidates: int = 0
    from_cdr: int = 0
    estimated: int = 0
    still_up: int = 0
    unknown: int = 0          # FreeSWITCH could not be asked: left open
    journalled: int = 0
    settled: list[str] = field(default_factory=list)


class OrphanReconciler:
    """Applies the orphan rule; `start()` runs it at once and then periodically."""

    def __init__(self, ledger: Ledger, journal: SettlementJournal, *,
                 esl_address: tuple[str, int], esl_password: str,
                 live_a_uuids: Callable[[], set[str]], store: CdrStore | None = None,
                 interval: float = 60.0, esl_timeout: float = 5.0,
                 on_settled: Callable[[str], None] | None = None):
        """on_settled(how): how is "cdr" or "estimated" (metrics)."""
        self.ledger = ledger
        self.journal = journal
        self.esl_address = esl_address
        self.esl_password = esl_password
        self.live_a_uuids = live_a_uuids
        self.store = store if store is not None else CdrStore()
        self.interval = interval
        self.esl_timeout = esl_timeout
        self.on_settled = on_settled
        self._loop: gevent.Greenlet | None = None
        self._busy: set[str] = set()
        self.passes = 0
        self.last: PassReport | None = None

    # -- one pass ------------------------------------------------------------------

    def run_once(self, *, startup: bool = False) -> PassReport:
        """Settle what the rule says can be settled now. DatabaseUnavailable
        propagates (nothing to do until the database is back)."""
        report = PassReport()
        self._apply_stored_cdrs(report)
        now = datetime.now(timezone.utc)
        snapshot = self.ledger.open_reservations(expired_only=not startup)
        # Read after the snapshot: a call granted before the query registered
        # its A leg before its grant, so it cannot be mistaken for an orphan.
        live = {str(u) for u in self.live_a_uuids()}
        # A settlement waiting in the journal is the call's own, real one: the
        # replay applies it; estimating it first would only add a refund.
        journalled = {e.b_uuid for e in self.journal.pending()}
        candidates = [r for r in snapshot
                      if str(r.a_uuid) not in live and str(r.b_uuid) not in journalled]
        report.candidates = len(candidates)
        esl: InboundEsl | None = None
        esl_failed = False
        try:
            for res in candidates:
                b = str(res.b_uuid)
                record = self.store.get(b)
                if record is not None:
                    self._settle_from_cdr(record, report)
                    continue
                if esl is None and not esl_failed:
                    try:
                        esl = InboundEsl(self.esl_address, self.esl_password, timeout=self.esl_timeout)
                        esl.connect()
                    except InboundEslError as exc:
                        log.warning("orphan check: %s; %d reservation(s) stay open until FreeSWITCH "
                                    "answers or their CDR arrives", exc, len(candidates))
                        esl, esl_failed = None, True
                if esl is None:
                    report.unknown += 1
                    continue
                try:
                    up = esl.uuid_exists(b)
                except InboundEslError as exc:
                    log.warning("orphan check of B %s: %s", b, exc)
                    esl.close()
                    esl, esl_failed = None, True
                    report.unknown += 1
                    continue
                if up:
                    report.still_up += 1
                    log.info("orphan check: B %s still up in FreeSWITCH (reservation expires %s)",
                             b, res.expires_at.isoformat())
                    continue
                self._settle_estimated(res, now, report)
        finally:
            if esl is not None:
                esl.close()
        self.passes += 1
        self.last = report
        if report.from_cdr or report.estimated or report.unknown:
            log.info("orphan pass: %d candidate(s), %d settled from CDRs, %d estimated, %d still up, "
                     "%d unknown", report.candidates, report.from_cdr, report.estimated,
                     report.still_up, report.unknown)
        return report

    def _settle_estimated(self, res: OpenReservation, now: datetime, report: PassReport) -> None:
        b = str(res.b_uuid)
        record = self.store.get(b)
        if record is not None:
            # Its CDR came while FreeSWITCH was being asked.
            self._settle_from_cdr(record, report)
            return
        cdr = self.journal.settle(b, billmsec=None, hangup_cause="ORPHAN_ESTIMATED", estimated=True)
        if cdr is not None and not cdr.estimated:
            # Settled meanwhile from its own figures (the call's end, or its CDR).
            return
        log.warning("orphan B %s (card %s, %s): gone from FreeSWITCH, no CDR; settled at the "
                    "reserved %s for %d s, marked estimated", b, res.account_id, res.cld,
                    res.amount, res.duration_s)
        self._count(b, cdr is None, report, "estimated")
        report.estimated += 1

    def _settle_from_cdr(self, record: CdrRecord, report: PassReport) -> None:
        # The endpoint's greenlet and a pass may hold the same CDR at once:
        # one applies it (settle is idempotent anyway; this keeps the counts true).
        if record.uuid in self._busy or record.uuid in self.store.applied:
            return
        self._busy.add(record.uuid)
        try:
            cdr = self.journal.settle(record.uuid, billmsec=record.billmsec,
                                      hangup_cause=record.hangup_cause,
                                      answered_at=record.answered_at, ended_at=record.ended_at)
            self.store.mark_applied(record.uuid)
        finally:
            self._busy.discard(record.uuid)
        self._count(record.uuid, cdr is None, report, "cdr")
        report.from_cdr += 1

    def _count(self, b: str, journalled: bool, report: PassReport, how: str) -> None:
        report.settled.append(b)
        if journalled:
            report.journalled += 1
        if self.on_settled is not None:
            self.on_settled(how)

    # -- CDRs ----------------------------------------------------------------------

    def on_cdr(self, record: CdrRecord, report: PassReport | None = None) -> str:
        """A CDR arrived: settle its reservation when the call is ours and over,
        or correct an estimated settlement. Returns what was done."""
        report = report or PassReport()
        if self.store.get(record.uuid) is not record:
            self.store.add(record)   # kept until used (the endpoint stores it already)
        state = self._reservation_state(record.uuid)
        if state is None:
            # An A leg, or a call that is not cardd's: nothing to bill.
            self.store.mark_applied(record.uuid)
            return "ignored"
        a_uuid, status = state
        if status == "open":
            if a_uuid in {str(u) for u in self.live_a_uuids()}:
                # The call's own greenlet settles it from the same figures.
                return "live"
            self._settle_from_cdr(record, report)
            return "settled"
        cdr = self.ledger.cdr(record.uuid)
        if cdr is not None and cdr.estimated:
            self._settle_from_cdr(record, report)
            return "corrected"
        self.store.mark_applied(record.uuid)
        return "already settled"

    def _apply_stored_cdrs(self, report: PassReport) -> None:
        for record in self.store.unapplied():
            self.on_cdr(record, report)

    def _reservation_state(self, leg_uuid: str) -> tuple[str, str] | None:
        """(A-leg UUID, status) of the reservation of this B leg, or None."""
        try:
            with self.ledger.pool.connection() as conn:
                row = conn.execute("SELECT a_uuid, status FROM reservations WHERE b_uuid = %s",
                                   (uuidlib.UUID(str(leg_uuid)),)).fetchone()
        except Exception as exc:
            # psycopg's OperationalError or the pool's timeout: the database is away.
            if exc.__class__.__module__.startswith(("psycopg", "psycopg_pool")):
                raise DatabaseUnavailable(f"database unavailable: {exc}") from exc
            raise
        return (str(row[0]), str(row[1])) if row else None

    # -- background ------------------------------------------------------------------

    def start(self) -> None:
        if self._loop is None:
            self._loop = gevent.spawn(self._run)
            self._loop.name = "orphan-reconciler"

    def _run(self) -> None:
        startup = True
        while True:
            try:
                self.run_once(startup=startup)
                startup = False
            except DatabaseUnavailable as exc:
                # The start-up pass is retried until it has run once.
                log.warning("orphan check skipped: %s", exc)
            except Exception:
                log.exception("orphan check failed")
                startup = False
            gevent.sleep(self.interval)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.kill(block=True, timeout=5)
            self._loop = None
