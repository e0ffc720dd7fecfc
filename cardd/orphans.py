"""The orphan rule: reservations whose call cardd lost track of.

A reservation stays open when cardd sent a bridge and never saw its outcome:
cardd died (SIGKILL, power loss) or its socket was closed mid-bridge
(SIGTERM past the grace time). FreeSWITCH goes on with the call, bounded by
the B leg's own sched_hangup (ESL captures 16, fact 27), and nobody is left
to bill it. This module does, by DESIGN.md "Decisions":

- a reservation belongs to the cardd process that granted it (cardd.nodes):
  while that process lives, nobody else settles it, from a CDR or otherwise;
- the candidates are the open reservations of dead processes, and this
  process's own whose A leg is no longer one of its calls (socket cut) once
  past their expiry (granted duration + reservation_margin); reservations from
  before schema 006 (no process recorded) as before: at start, then expired;
- a candidate is only settled when the FreeSWITCH box that carries it
  (its switchname, recorded at grant) is the one this cardd can ask
  (`daemon.inbound_esl`, which must answer `api switchname` with that name):
  the boxes of other cardds are left to them;
- a candidate whose B leg FreeSWITCH's own CDR has reached us (cardd.cdr_http)
  is settled from it, billmsec as FreeSWITCH measured it, once the box says the
  B leg is gone (a CDR for a leg still up is forged or early: refused);
- otherwise a gone B leg is settled on an estimate bounded by what cardd
  recorded (Ledger._estimated_seconds: never dialled, not answered, answered
  at T), marked `estimated`; the real CDR later corrects it;
- when FreeSWITCH cannot be asked, nothing is settled: money is never released
  or charged on a guess.

Settlements go through the journal, so a database outage in the middle costs
nothing either. Every step is idempotent by B-leg UUID: the call's own
settlement, a CDR and this check may race in any order and the card is still
charged once.
"""

from __future__ import annotations

import logging
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import gevent

from cardd.billing.journal import SettlementJournal
from cardd.billing.ledger import Ledger, OpenReservation
from cardd.cdr_http import CdrRecord, CdrStore
from cardd.errors import DatabaseUnavailable, InboundEslError
from cardd.esl.inbound import InboundEsl
from cardd.nodes import NodeRegistry

log = logging.getLogger(__name__)


@dataclass
class PassReport:
    """What one reconciliation pass did (also the figures the tests check)."""

    candidates: int = 0
    from_cdr: int = 0
    estimated: int = 0
    still_up: int = 0
    unknown: int = 0  # FreeSWITCH could not be asked: left open
    journalled: int = 0
    other_node: int = 0  # held by a live cardd process: left to it
    other_box: int = 0  # on a FreeSWITCH box this cardd cannot ask: left open
    settled: list[str] = field(default_factory=list)


class _Box:
    """The FreeSWITCH boxes this cardd can ask, for the length of one pass (or
    one CDR): `daemon.inbound_esl` (whose switchname is learnt by asking it) and
    `daemon.inbound_esl_boxes` (switchname -> address, the name checked on
    connect: a box that answers to another name is not asked). Connected on
    first use."""

    def __init__(self, owner: OrphanReconciler):
        self.owner = owner
        self.conns: dict[tuple[str, int], InboundEsl] = {}
        self.broken: set[tuple[str, int]] = set()
        self.failed = False  # the last box wanted could not be asked

    def exists(self, b_uuid: str, switchname: str | None) -> bool | None:
        """Whether the B leg is up on its box; None when that box cannot be asked
        (`failed` tells a broken box from one this cardd does not know)."""
        esl = self._esl(switchname)
        if esl is None:
            return None
        try:
            return esl.uuid_exists(b_uuid)
        except InboundEslError as exc:
            log.warning("orphan check of B %s: %s", b_uuid, exc)
            address = esl.address
            esl.close()
            self.conns.pop(address, None)
            self.broken.add(address)
            self.failed = True
            return None

    def _esl(self, switchname: str | None) -> InboundEsl | None:
        owner = self.owner
        self.failed = False
        named = switchname is not None and switchname in owner.boxes
        address = owner.boxes[switchname] if switchname is not None and named else owner.esl_address
        if address in self.broken:
            self.failed = True
            return None
        esl = self.conns.get(address)
        if esl is None:
            esl = self._connect(address, switchname if named else None)
            if esl is None:
                self.failed = True
                return None
            self.conns[address] = esl
        if not named and switchname is not None and switchname != owner.box_name:
            return None  # another box, and not one configured: its own cardd's
        return esl

    def _connect(self, address: tuple[str, int], expected: str | None) -> InboundEsl | None:
        owner = self.owner
        esl = InboundEsl(address, owner.esl_password, timeout=owner.esl_timeout)
        try:
            esl.connect()
            name = esl.switchname()
        except InboundEslError as exc:
            log.warning("orphan check: %s; reservations stay open until FreeSWITCH answers", exc)
            esl.close()
            self.broken.add(address)
            return None
        if expected is not None:
            if name != expected:
                log.error(
                    "orphan check: FreeSWITCH at %s:%d calls itself %r, daemon.inbound_esl_boxes says %r: not asked",
                    *address,
                    name,
                    expected,
                )
                esl.close()
                self.broken.add(address)
                return None
            return esl
        if owner.box_name is None:
            log.info("orphan check: FreeSWITCH at %s:%d is %r", *address, name)
        elif owner.box_name != name:
            log.warning(
                "orphan check: FreeSWITCH at %s:%d now calls itself %r (was %r)", *address, name, owner.box_name
            )
        owner.box_name = name
        return esl

    def close(self) -> None:
        for esl in self.conns.values():
            esl.close()
        self.conns.clear()


class OrphanReconciler:
    """Applies the orphan rule; `start()` runs it at once and then periodically."""

    def __init__(
        self,
        ledger: Ledger,
        journal: SettlementJournal,
        *,
        esl_address: tuple[str, int],
        esl_password: str,
        live_a_uuids: Callable[[], set[str]],
        store: CdrStore | None = None,
        interval: float = 60.0,
        esl_timeout: float = 5.0,
        on_settled: Callable[[str], None] | None = None,
        nodes: NodeRegistry | None = None,
        on_refused: Callable[[str], None] | None = None,
        boxes: dict[str, tuple[str, int]] | None = None,
    ):
        """on_settled(how): how is "cdr" or "estimated" (metrics); on_refused(why):
        a CDR not applied ("call_up": its B leg is still up). nodes: this
        process's registry (None: every reservation is this process's, as
        before schema 006). boxes: more FreeSWITCH boxes, by switchname."""
        self.ledger = ledger
        self.journal = journal
        self.esl_address = esl_address
        self.esl_password = esl_password
        self.live_a_uuids = live_a_uuids
        self.store = store if store is not None else CdrStore()
        self.interval = interval
        self.esl_timeout = esl_timeout
        self.on_settled = on_settled
        self.on_refused = on_refused
        self.nodes = nodes
        self.node = nodes.node if nodes is not None else None
        self.box_name: str | None = None  # learnt from the box (api switchname)
        self.boxes = dict(boxes or {})
        self._loop: gevent.Greenlet | None = None
        self._busy: set[str] = set()
        self.passes = 0
        self.last: PassReport | None = None

    # -- whose is it ------------------------------------------------------------------

    def _dead_nodes(self, reservations) -> set[str]:
        if self.nodes is None:
            return set()
        return self.nodes.dead({r.node for r in reservations if r.node})

    def _is_candidate(
        self, res, *, startup: bool, live: set[str], dead: set[str], now: datetime, report: PassReport
    ) -> bool:
        if res.node is not None and res.node != self.node:
            if res.node in dead:
                return True
            report.other_node += 1  # its process is alive and settles it
            return False
        if str(res.a_uuid) in live:
            return False
        return startup or res.expires_at <= now

    # -- one pass ------------------------------------------------------------------

    def run_once(self, *, startup: bool = False) -> PassReport:
        """Settle what the rule says can be settled now. DatabaseUnavailable
        propagates (nothing to do until the database is back)."""
        report = PassReport()
        box = _Box(self)
        try:
            self._apply_stored_cdrs(report, box)
            now = datetime.now(UTC)
            snapshot = self.ledger.open_reservations()
            dead = self._dead_nodes(snapshot)
            # Read after the snapshot: a call granted before the query registered
            # its A leg before its grant, so it cannot be mistaken for an orphan.
            live = {str(u) for u in self.live_a_uuids()}
            # A settlement waiting in the journal is the call's own, real one: the
            # replay applies it; estimating it first would only add a refund.
            journalled = {e.b_uuid for e in self.journal.pending()}
            candidates = [
                r
                for r in snapshot
                if str(r.b_uuid) not in journalled
                and self._is_candidate(r, startup=startup, live=live, dead=dead, now=now, report=report)
            ]
            report.candidates = len(candidates)
            for res in candidates:
                self._reconcile(res, box, report)
        finally:
            box.close()
        self.passes += 1
        self.last = report
        if report.from_cdr or report.estimated or report.unknown or report.other_box:
            log.info(
                "orphan pass: %d candidate(s), %d settled from CDRs, %d estimated, %d still up, "
                "%d unknown, %d on another FreeSWITCH, %d held by live cardd processes",
                report.candidates,
                report.from_cdr,
                report.estimated,
                report.still_up,
                report.unknown,
                report.other_box,
                report.other_node,
            )
        return report

    def _reconcile(self, res: OpenReservation, box: _Box, report: PassReport) -> None:
        b = str(res.b_uuid)
        up = box.exists(b, res.switchname)
        if up is None:
            if box.failed:
                report.unknown += 1
            else:
                report.other_box += 1
                log.info(
                    "orphan B %s is on FreeSWITCH %r; this cardd asks %r only: left open",
                    b,
                    res.switchname,
                    self.box_name,
                )
            return
        if up:
            report.still_up += 1
            log.info(
                "orphan check: B %s still up in FreeSWITCH (reservation expires %s)", b, res.expires_at.isoformat()
            )
            return
        record = self.store.get(b)
        if record is not None:
            self._settle_from_cdr(record, report)
            return
        self._settle_estimated(res, report)

    def _settle_estimated(self, res: OpenReservation, report: PassReport) -> None:
        b = str(res.b_uuid)
        cdr = self.journal.settle(b, billmsec=None, hangup_cause="ORPHAN_ESTIMATED", estimated=True)
        if cdr is not None and cdr.hangup_cause not in ("ORPHAN_ESTIMATED", "NOT_DIALLED"):
            # Settled meanwhile from its own figures (the call's end, or its CDR).
            return
        if cdr is not None:
            log.warning(
                "orphan B %s (card %s, %s): gone from FreeSWITCH, no CDR; settled at %s for %d of %d s (%s)",
                b,
                res.account_id,
                res.cld,
                cdr.cost,
                cdr.billed_seconds,
                res.duration_s,
                "never dialled" if cdr.hangup_cause == "NOT_DIALLED" else "estimated",
            )
        self._count(b, cdr is None, report, "estimated")
        report.estimated += 1

    def _settle_from_cdr(self, record: CdrRecord, report: PassReport) -> None:
        # The endpoint's greenlet and a pass may hold the same CDR at once:
        # one applies it (settle is idempotent anyway; this keeps the counts true).
        if record.uuid in self._busy or record.uuid in self.store.applied:
            return
        self._busy.add(record.uuid)
        try:
            cdr = self.journal.settle(
                record.uuid,
                billmsec=record.billmsec,
                hangup_cause=record.hangup_cause,
                answered_at=record.answered_at,
                ended_at=record.ended_at,
            )
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

    def on_cdr(self, record: CdrRecord, report: PassReport | None = None, box: _Box | None = None) -> str:
        """A CDR arrived: settle its reservation when the call is over and nobody
        else holds it, or correct an estimate, or compare it with the settlement
        already made. Returns what was done; "call up" means refused (its B leg
        is still up in FreeSWITCH: forged, or early) and forgotten."""
        report = report or PassReport()
        if self.store.get(record.uuid) is not record:
            self.store.add(record)  # kept until used (the endpoint stores it already)
        state = self._reservation_state(record.uuid)
        if state is None:
            # An A leg, or a call that is not cardd's: nothing to bill.
            self.store.mark_applied(record.uuid)
            return "ignored"
        a_uuid, status, node, switchname = state
        if status == "open":
            if node is not None and node != self.node and node not in self._dead_from(node):
                # Another live cardd process holds the call: it settles it from its own
                # figures; the CDR stays here and is compared with them afterwards.
                return "live"
            if (node is None or node == self.node) and a_uuid in {str(u) for u in self.live_a_uuids()}:
                # The call's own greenlet settles it from the same figures.
                return "live"
            own_box = box is None
            box = box or _Box(self)
            try:
                up = box.exists(record.uuid, switchname)
            finally:
                if own_box:
                    box.close()
            if up:
                self.store.discard(record.uuid)
                log.warning(
                    "CDR for B %s refused: that leg is still up in FreeSWITCH (billmsec %d claimed)",
                    record.uuid,
                    record.billmsec,
                )
                if self.on_refused is not None:
                    self.on_refused("call_up")
                return "call up"
            self._settle_from_cdr(record, report)
            return "settled"
        cdr = self.ledger.cdr(record.uuid)
        if cdr is not None and cdr.estimated:
            self._settle_from_cdr(record, report)
            return "corrected"
        # Settled already from other figures: settling again charges nothing, and
        # a difference is counted and logged by the ledger (on_disagreement).
        self.journal.settle(
            record.uuid,
            billmsec=record.billmsec,
            hangup_cause=record.hangup_cause,
            answered_at=record.answered_at,
            ended_at=record.ended_at,
        )
        self.store.mark_applied(record.uuid)
        return "already settled"

    def _dead_from(self, node: str) -> set[str]:
        return self.nodes.dead([node]) if self.nodes is not None else set()

    def _apply_stored_cdrs(self, report: PassReport, box: _Box) -> None:
        for record in self.store.unapplied():
            self.on_cdr(record, report, box)

    def _reservation_state(self, leg_uuid: str) -> tuple[str, str, str | None, str | None] | None:
        """(A-leg UUID, status, node, switchname) of the reservation of this B leg, or None."""
        try:
            with self.ledger.pool.connection() as conn:
                row = conn.execute(
                    "SELECT a_uuid, status, node, switchname FROM reservations WHERE b_uuid = %s",
                    (uuidlib.UUID(str(leg_uuid)),),
                ).fetchone()
        except Exception as exc:
            # psycopg's OperationalError or the pool's timeout: the database is away.
            if exc.__class__.__module__.startswith(("psycopg", "psycopg_pool")):
                raise DatabaseUnavailable(f"database unavailable: {exc}") from exc
            raise
        return (str(row[0]), str(row[1]), row[2], row[3]) if row else None

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
