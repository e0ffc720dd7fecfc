"""The local settlement journal: what cardd owes the database while it is away.

A call that ends while PostgreSQL is unreachable must still be billed
(DESIGN.md "Decisions"): its settlement is appended to a local file, one JSON
object per line, flushed and fsync'd before settle() returns, and replayed
when the database is back. Replaying is safe any number of times because
Ledger.settle is idempotent by B-leg UUID, so "exactly once" holds even when
cardd dies halfway through a replay.

The file is append-only while cardd runs; a replay removes the entries it
settled by rewriting the file atomically (write a temporary file, fsync,
rename, fsync the directory). A torn last line (a crash in the middle of a
write) is skipped with a warning: its settlement had not been acknowledged,
so the call's reservation stays open and the orphan rule settles it.

When the journal cannot be written either (a full disk, a read-only or lost
filesystem), the settlement is held in memory, logged at ERROR with its
figures and the cause, and retried (database first, then the journal) by the
background loop. While anything is held, `accepting` is False: the daemon
refuses new calls ("service unavailable"), so no more money rides on memory
alone than the calls already up.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import gevent
import gevent.lock

from cardd.billing.ledger import Cdr, Ledger
from cardd.errors import DatabaseUnavailable, ReservationNotFound

log = logging.getLogger(__name__)

JOURNAL_NAME = "settlement-journal.jsonl"
REJECTED_SUFFIX = ".rejected"


@dataclass(frozen=True)
class Entry:
    """One journalled settlement: the arguments of Ledger.settle, made durable."""

    id: str
    b_uuid: str
    billmsec: int | None
    hangup_cause: str
    answered_at: datetime | None
    ended_at: datetime
    estimated: bool
    journalled_at: datetime

    def to_json(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "b_uuid": self.b_uuid,
                "billmsec": self.billmsec,
                "hangup_cause": self.hangup_cause,
                "answered_at": self.answered_at.isoformat() if self.answered_at else None,
                "ended_at": self.ended_at.isoformat(),
                "estimated": self.estimated,
                "journalled_at": self.journalled_at.isoformat(),
            },
            ensure_ascii=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, line: str) -> Entry:
        d = json.loads(line)
        billmsec = d.get("billmsec")
        return cls(
            id=str(d["id"]),
            b_uuid=str(uuidlib.UUID(str(d["b_uuid"]))),
            billmsec=None if billmsec is None else int(billmsec),
            hangup_cause=str(d.get("hangup_cause") or ""),
            answered_at=datetime.fromisoformat(d["answered_at"]) if d.get("answered_at") else None,
            ended_at=datetime.fromisoformat(d["ended_at"]),
            estimated=bool(d.get("estimated")),
            journalled_at=datetime.fromisoformat(d["journalled_at"]),
        )


def _now() -> datetime:
    return datetime.now(UTC)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class SettlementJournal:
    """Settle through the ledger, or journal the settlement when the database is down.

    `on_journalled` / `on_replayed` let the daemon count both in its metrics.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        ledger: Ledger,
        *,
        on_journalled: Callable[[], None] | None = None,
        on_replayed: Callable[[int], None] | None = None,
        on_write_error: Callable[[OSError], None] | None = None,
    ):
        self.path = Path(path)
        self.ledger = ledger
        self._on_journalled = on_journalled
        self._on_replayed = on_replayed
        self._on_write_error = on_write_error
        # Settlements neither the database nor the journal could take, oldest first.
        self._held: list[Entry] = []
        self._retrying = gevent.lock.Semaphore()
        # One writer at a time: appends from call greenlets and the replay's
        # rewrite must not interleave. A gevent lock (the daemon is
        # monkey-patched), plus a thread lock for callers outside gevent's hub.
        self._glock = gevent.lock.RLock()
        self._tlock = threading.RLock()
        self._replaying = gevent.lock.Semaphore()
        self._loop: gevent.Greenlet | None = None

    # -- settling -------------------------------------------------------------

    def settle(
        self,
        b_uuid: uuidlib.UUID | str,
        *,
        billmsec: int | None,
        hangup_cause: str,
        answered_at: datetime | None = None,
        ended_at: datetime | None = None,
        estimated: bool = False,
    ) -> Cdr | None:
        """Ledger.settle, or None when the database is unreachable and the
        settlement was journalled (durably) for replay."""
        # The end time is taken now, not at replay, so the CDR says when the
        # call really ended.
        ended = ended_at or _now()
        try:
            return self.ledger.settle(
                b_uuid,
                billmsec=billmsec,
                hangup_cause=hangup_cause,
                answered_at=answered_at,
                ended_at=ended,
                estimated=estimated,
            )
        except DatabaseUnavailable as exc:
            entry = Entry(
                id=uuidlib.uuid4().hex,
                b_uuid=str(uuidlib.UUID(str(b_uuid))),
                billmsec=billmsec,
                hangup_cause=hangup_cause or "",
                answered_at=answered_at,
                ended_at=ended,
                estimated=estimated,
                journalled_at=_now(),
            )
            try:
                self._append(entry)
            except OSError as write_exc:
                self._hold(entry, exc, write_exc)
                return None
            log.warning("settle b=%s: database unavailable (%s); journalled to %s", entry.b_uuid, exc, self.path)
            if self._on_journalled is not None:
                self._on_journalled()
            return None

    # -- neither the database nor the journal ---------------------------------------

    @property
    def accepting(self) -> bool:
        """False while a settlement is held in memory only: no new calls then."""
        return not self._held

    @property
    def held_count(self) -> int:
        return len(self._held)

    def _hold(self, entry: Entry, db_exc: Exception, write_exc: OSError) -> None:
        with self._glock, self._tlock:
            self._held.append(entry)
            held = len(self._held)
        # The figures go into the log line: if cardd dies before the database or
        # the disk is back, this line is what is left of the call.
        log.error(
            "settle b=%s: database unavailable (%s) AND journal %s not writable (%s): "
            "settlement held in memory (%d held), new calls refused until the database "
            "or the journal takes it; entry %s",
            entry.b_uuid,
            db_exc,
            self.path,
            _why(write_exc),
            held,
            entry.to_json(),
        )
        if self._on_write_error is not None:
            self._on_write_error(write_exc)

    def retry_held(self) -> int:
        """Give the held settlements to the database, else to the journal; returns
        how many left memory. The rest stay held, in order."""
        if not self._held or not self._retrying.acquire(blocking=False):
            return 0
        try:
            gone: set[str] = set()
            db_down = False  # found down in this pass: the rest go straight to the journal
            for entry in list(self._held):
                try:
                    if db_down:
                        raise DatabaseUnavailable("database unavailable earlier in this pass")
                    self.ledger.settle(
                        entry.b_uuid,
                        billmsec=entry.billmsec,
                        hangup_cause=entry.hangup_cause,
                        answered_at=entry.answered_at,
                        ended_at=entry.ended_at,
                        estimated=entry.estimated,
                    )
                    log.info("held settlement b=%s applied to the database", entry.b_uuid)
                except DatabaseUnavailable:
                    db_down = True
                    try:
                        self._append(entry)
                    except OSError as write_exc:
                        log.warning(
                            "%d settlement(s) still held in memory: database unavailable, journal %s not writable (%s)",
                            len(self._held) - len(gone),
                            self.path,
                            _why(write_exc),
                        )
                        if self._on_write_error is not None:
                            self._on_write_error(write_exc)
                        break
                    log.info("held settlement b=%s journalled to %s", entry.b_uuid, self.path)
                    if self._on_journalled is not None:
                        self._on_journalled()
                except Exception:
                    # Not an outage: the reservation stays open for the orphan rule.
                    log.exception(
                        "held settlement b=%s refused by the database; dropped from "
                        "memory, its reservation stays open: %s",
                        entry.b_uuid,
                        entry.to_json(),
                    )
                gone.add(entry.id)
            with self._glock, self._tlock:
                self._held = [e for e in self._held if e.id not in gone]
                if not self._held and gone:
                    log.warning("no settlement held in memory any more: new calls accepted again")
            return len(gone)
        finally:
            self._retrying.release()

    def _append(self, entry: Entry) -> None:
        data = (entry.to_json() + "\n").encode("ascii")
        with self._glock, self._tlock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            created = not self.path.exists()
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    # A torn line from a crash mid-write: end it, so this entry
                    # starts on a line of its own.
                    data = b"\n" + data
                try:
                    view = memoryview(data)
                    while view:
                        n = os.write(fd, view)
                        view = view[n:]
                    os.fsync(fd)
                except OSError:
                    # A full disk can take half a line: take it back, the
                    # caller keeps the whole entry.
                    try:
                        os.ftruncate(fd, size)
                    except OSError:
                        pass
                    raise
            finally:
                os.close(fd)
            if created:
                _fsync_dir(self.path.parent)

    # -- reading --------------------------------------------------------------

    def pending(self) -> list[Entry]:
        """The journalled settlements not yet replayed, oldest first."""
        with self._glock, self._tlock:
            return self._read()[0]

    def _read(self) -> tuple[list[Entry], list[str]]:
        """Entries, and the lines that are not entries (a torn last line after a
        crash mid-write; anything else an operator must look at)."""
        try:
            text = self.path.read_bytes().decode("ascii", errors="replace")
        except FileNotFoundError:
            return [], []
        entries: list[Entry] = []
        bad: list[str] = []
        for line in text.split("\n"):
            if not line.strip():
                continue
            try:
                entries.append(Entry.from_json(line))
            except (ValueError, KeyError, TypeError):
                bad.append(line)
        return entries, bad

    def _reject_raw(self, line: str, why: str) -> None:
        rejected = self.path.with_name(self.path.name + REJECTED_SUFFIX)
        record = json.dumps({"why": why, "line": line, "at": _now().isoformat()}, ensure_ascii=True)
        with open(rejected, "a", encoding="ascii") as f:
            f.write(record + "\n")
            f.flush()
            os.fsync(f.fileno())

    # -- replaying ------------------------------------------------------------

    def replay(self) -> int:
        """Settle every journalled entry the database accepts, in order; returns
        how many were settled. Stops at the first DatabaseUnavailable (the rest
        wait for the next replay). Entries whose reservation is unknown to this
        database are moved to `<journal>.rejected` for the operator."""
        if not self._replaying.acquire(blocking=False):
            return 0  # a replay is already running; it will see every entry
        try:
            snapshot = self.pending()
            if not snapshot:
                return 0
            done: set[str] = set()
            rejected: list[tuple[Entry, str]] = []
            for entry in snapshot:
                try:
                    self.ledger.settle(
                        entry.b_uuid,
                        billmsec=entry.billmsec,
                        hangup_cause=entry.hangup_cause,
                        answered_at=entry.answered_at,
                        ended_at=entry.ended_at,
                        estimated=entry.estimated,
                    )
                except DatabaseUnavailable as exc:
                    log.info("journal replay paused: database still unavailable (%s)", exc)
                    break
                except ReservationNotFound:
                    rejected.append((entry, "no such reservation in this database"))
                except Exception as exc:
                    # A permanent error (bad data, a schema mismatch) must not
                    # block every later entry: set aside for the operator.
                    log.exception("journal entry b=%s failed", entry.b_uuid)
                    rejected.append((entry, f"settle failed: {exc.__class__.__name__}: {exc}"))
                done.add(entry.id)
            if done:
                self._remove(done, rejected)
            settled = len(done) - len(rejected)
            if settled:
                log.info("journal replay: %d settlement(s) applied, %d left", settled, len(snapshot) - len(done))
                if self._on_replayed is not None:
                    self._on_replayed(settled)
            return settled
        finally:
            self._replaying.release()

    def _remove(self, ids: set[str], rejected: list[tuple[Entry, str]]) -> None:
        with self._glock, self._tlock:
            for entry, why in rejected:
                log.error(
                    "journal entry b=%s rejected: %s (kept in %s%s)", entry.b_uuid, why, self.path.name, REJECTED_SUFFIX
                )
                self._reject_raw(entry.to_json(), why)
            # Re-read under the lock: entries appended during the replay stay.
            entries, bad = self._read()
            for line in bad:
                # Never silently dropped: a torn write (its settlement was not
                # acknowledged, the orphan rule covers the call) or damage.
                log.warning("journal %s: unreadable line moved to %s%s", self.path, self.path.name, REJECTED_SUFFIX)
                self._reject_raw(line, "unreadable line")
            keep = [e for e in entries if e.id not in ids]
            if not keep:
                try:
                    self.path.unlink()
                except FileNotFoundError:
                    pass
                _fsync_dir(self.path.parent)
                return
            tmp = self.path.with_name(self.path.name + ".tmp")
            with open(tmp, "w", encoding="ascii") as f:
                f.write("".join(e.to_json() + "\n" for e in keep))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            _fsync_dir(self.path.parent)

    # -- background -------------------------------------------------------------

    def start(self, interval: float = 5.0) -> None:
        """Replay now and then every `interval` seconds while entries remain."""
        if self._loop is None:
            self._loop = gevent.spawn(self._run, interval)
            self._loop.name = "settlement-journal"

    def _run(self, interval: float) -> None:
        while True:
            try:
                if self._held:
                    self.retry_held()
                if self.path.exists():
                    self.replay()
            except Exception:
                # The loop must outlive any one bad replay; the entries stay.
                log.exception("journal replay failed")
            gevent.sleep(interval)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.kill(block=True, timeout=5)
            self._loop = None
        if self._held:
            self.retry_held()  # a last chance
        for entry in self._held:
            log.error(
                "stopping with settlement b=%s held in memory only (neither the database nor "
                "%s took it): settle it by hand from these figures: %s",
                entry.b_uuid,
                self.path,
                entry.to_json(),
            )


def _why(exc: OSError) -> str:
    """`ENOSPC No space left on device`: the errno's name and text."""
    name = errno.errorcode.get(exc.errno or 0, "")
    return f"{name} {exc.strerror}".strip() if exc.strerror else f"{name} {exc}".strip()


def journal_path(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / JOURNAL_NAME
