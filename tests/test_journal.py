"""The local settlement journal (cardd.billing.journal): a settlement made while
the database is unreachable is kept on disk and applied exactly once when the
database is back."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import time
import uuid
from decimal import Decimal as D

import pytest

from cardd.billing.journal import REJECTED_SUFFIX, SettlementJournal
from cardd.billing.ledger import Ledger
from cardd.db import Database
from tests.dbfixtures import create_demo_data


def grant(ledger: Ledger, card_id: int, **kw):
    args = dict(
        a_uuid=uuid.uuid4(),
        b_uuid=uuid.uuid4(),
        destination="447700900123",
        cli="15555550100",
        ignore_connect_fee=False,
        max_call_duration=3600,
        min_call_duration=0,
        margin_s=120,
    )
    args.update(kw)
    return ledger.grant(card_id, **args)


def replay_until_empty(journal: SettlementJournal, timeout: float = 30.0) -> int:
    """Replay as the background loop does: the pool needs a moment to reconnect
    after the server is back, and replays until the journal is empty."""
    deadline = time.monotonic() + timeout
    applied = 0
    while journal.pending() and time.monotonic() < deadline:
        applied += journal.replay()
        if journal.pending():
            time.sleep(0.2)
    return applied


@pytest.fixture
def journal(tmp_path, ledger):
    return SettlementJournal(tmp_path / "journal.jsonl", ledger)


def test_settle_with_the_database_up_goes_straight_to_the_ledger(journal, ledger, demo_data):
    g = grant(ledger, demo_data.card_id)
    cdr = journal.settle(g.b_uuid, billmsec=31_000, hangup_cause="NORMAL_CLEARING")
    assert cdr is not None and cdr.cost == D("0.13600")
    assert not journal.path.exists()
    assert journal.pending() == []


@pytest.fixture
def private_db(private_pg_server):
    db = Database(private_pg_server.dsn, pool_timeout=1.0)
    db.migrate()
    yield db
    db.close()


def test_a_settlement_while_the_database_is_down_is_journalled_and_replayed_exactly_once(
    private_pg_server, private_db, tmp_path
):
    demo = create_demo_data(private_db.pool)
    ledger = Ledger(private_db.pool)
    journal = SettlementJournal(tmp_path / "journal.jsonl", ledger)
    g1, g2 = grant(ledger, demo.card_id), grant(ledger, demo.card_id)
    private_pg_server.stop()
    try:
        assert journal.settle(g1.b_uuid, billmsec=31_000, hangup_cause="NORMAL_CLEARING") is None
        assert journal.settle(g2.b_uuid, billmsec=0, hangup_cause="USER_BUSY") is None
        lines = journal.path.read_text().splitlines()
        assert [json.loads(x)["b_uuid"] for x in lines] == [str(g1.b_uuid), str(g2.b_uuid)]
        # Still down: the replay applies nothing and keeps both.
        assert journal.replay() == 0
        assert len(journal.pending()) == 2
    finally:
        private_pg_server.start()
    assert replay_until_empty(journal) == 2
    assert not journal.path.exists()
    assert journal.replay() == 0
    # 31 s at the worked-example rate; the busy attempt costs nothing.
    assert ledger.get_card(demo.card_id).balance == D("10.00000") - D("0.13600")
    assert ledger.cdr(g1.b_uuid).cost == D("0.13600")
    assert ledger.cdr(g2.b_uuid).cost == D("0")
    assert ledger.open_reservations(demo.card_id) == []
    calls = [e for e in ledger.ledger_entries(demo.card_id) if e.kind == "call"]
    assert len(calls) == 1


def test_a_replay_repeated_after_a_crash_charges_nothing_more(ledger, demo_data, tmp_path):
    """cardd died after settling but before it rewrote the journal: the same
    entries are replayed again at the next start, and nothing changes."""
    g = grant(ledger, demo_data.card_id)
    journal = SettlementJournal(tmp_path / "j.jsonl", ledger)
    journal.settle(g.b_uuid, billmsec=31_000, hangup_cause="NORMAL_CLEARING")
    before = ledger.get_card(demo_data.card_id).balance
    from cardd.billing.journal import Entry, _now

    for n in "ab":
        journal._append(
            Entry(
                id=n * 32,
                b_uuid=str(g.b_uuid),
                billmsec=31_000,
                hangup_cause="NORMAL_CLEARING",
                answered_at=None,
                ended_at=_now(),
                estimated=False,
                journalled_at=_now(),
            )
        )
    assert journal.replay() == 2
    assert ledger.get_card(demo_data.card_id).balance == before
    assert len([e for e in ledger.ledger_entries(demo_data.card_id) if e.kind == "call"]) == 1


def test_a_torn_last_line_is_set_aside_and_the_next_entry_still_counts(ledger, demo_data, tmp_path):
    g = grant(ledger, demo_data.card_id)
    path = tmp_path / "j.jsonl"
    path.write_text('{"id": "torn", "b_uuid": "')  # a crash in the middle of a write
    journal = SettlementJournal(path, ledger)
    from cardd.billing.journal import Entry, _now

    journal._append(
        Entry(
            id="b" * 32,
            b_uuid=str(g.b_uuid),
            billmsec=6_000,
            hangup_cause="NORMAL_CLEARING",
            answered_at=None,
            ended_at=_now(),
            estimated=False,
            journalled_at=_now(),
        )
    )
    assert [e.b_uuid for e in journal.pending()] == [str(g.b_uuid)]
    assert journal.replay() == 1
    assert ledger.cdr(g.b_uuid).billed_seconds == 6
    rejected = path.with_name(path.name + REJECTED_SUFFIX).read_text()
    assert '"torn' in rejected or "torn" in rejected
    assert not path.exists()


def test_an_entry_for_an_unknown_reservation_is_kept_aside_not_dropped(ledger, demo_data, tmp_path):
    journal = SettlementJournal(tmp_path / "j.jsonl", ledger)
    from cardd.billing.journal import Entry, _now

    stranger = str(uuid.uuid4())
    journal._append(
        Entry(
            id="c" * 32,
            b_uuid=stranger,
            billmsec=1_000,
            hangup_cause="NORMAL_CLEARING",
            answered_at=None,
            ended_at=_now(),
            estimated=False,
            journalled_at=_now(),
        )
    )
    assert journal.replay() == 0
    assert journal.pending() == []
    rejected = (tmp_path / ("j.jsonl" + REJECTED_SUFFIX)).read_text()
    assert stranger in rejected and "no such reservation" in rejected


def test_an_estimated_and_a_real_settlement_journalled_together_end_at_the_real_cost(ledger, demo_data, tmp_path):
    """The orphan rule journalled an estimate, then the real CDR came, both
    while the database was away: replayed in order, the card pays the real cost."""
    g = grant(ledger, demo_data.card_id, max_call_duration=600)
    journal = SettlementJournal(tmp_path / "j.jsonl", ledger)
    from cardd.billing.journal import Entry, _now

    for i, (ms, est) in enumerate(((None, True), (31_000, False))):
        journal._append(
            Entry(
                id=str(i) * 32,
                b_uuid=str(g.b_uuid),
                billmsec=ms,
                hangup_cause="X",
                answered_at=None,
                ended_at=_now(),
                estimated=est,
                journalled_at=_now(),
            )
        )
    assert journal.replay() == 2
    cdr = ledger.cdr(g.b_uuid)
    assert (cdr.cost, cdr.estimated) == (D("0.13600"), False)
    assert ledger.get_card(demo_data.card_id).balance == D("10.00000") - D("0.13600")


def test_an_entry_the_database_refuses_for_good_is_set_aside_and_the_rest_still_replay(ledger, demo_data, tmp_path):
    g1, g2 = grant(ledger, demo_data.card_id), grant(ledger, demo_data.card_id)
    journal = SettlementJournal(tmp_path / "j.jsonl", ledger)
    from cardd.billing.journal import Entry, _now

    # PostgreSQL text cannot hold NUL: a permanent error, not an outage.
    journal._append(
        Entry(
            id="d" * 32,
            b_uuid=str(g1.b_uuid),
            billmsec=6_000,
            hangup_cause="BAD\x00CAUSE",
            answered_at=None,
            ended_at=_now(),
            estimated=False,
            journalled_at=_now(),
        )
    )
    journal._append(
        Entry(
            id="e" * 32,
            b_uuid=str(g2.b_uuid),
            billmsec=31_000,
            hangup_cause="NORMAL_CLEARING",
            answered_at=None,
            ended_at=_now(),
            estimated=False,
            journalled_at=_now(),
        )
    )
    assert journal.replay() == 1
    assert journal.pending() == []
    assert ledger.cdr(g2.b_uuid).cost == D("0.13600")
    assert "settle failed" in (tmp_path / ("j.jsonl" + REJECTED_SUFFIX)).read_text()
    # g1 stays reserved: the orphan rule (or an operator) settles it; nothing was lost.
    assert [r.b_uuid for r in ledger.open_reservations(demo_data.card_id)] == [g1.b_uuid]


# -- a full disk: neither the database nor the journal takes the settlement --------------------


class FullDisk:
    """A directory whose filesystem can be filled and freed: a real 256 KB tmpfs when this process may
    mount one, else a journal whose writes fail with ENOSPC as a full disk's do (the journal module's
    `os.write` only; nothing else in the process is touched)."""

    def __init__(self, kind: str, root, monkeypatch):
        self.kind = kind
        self.path = root / "disk"
        self.path.mkdir()
        self._full = False
        if kind == "tmpfs":
            if os.geteuid() != 0 or shutil.which("mount") is None:
                pytest.skip("mounting a tmpfs needs root (the refusing-writes variant runs instead)")
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(self.path)],
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        else:
            import cardd.billing.journal as journal_module

            disk = self

            class RefusingOs:
                def __getattr__(self, name):
                    return getattr(os, name)

                @staticmethod
                def write(fd, data):
                    if disk._full:
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                    return os.write(fd, data)

            monkeypatch.setattr(journal_module, "os", RefusingOs())

    def fill(self) -> None:
        self._full = True
        if self.kind == "tmpfs":
            fd = os.open(self.path / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                while True:
                    os.write(fd, b"\0" * 4096)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
            finally:
                os.close(fd)

    def free(self) -> None:
        self._full = False
        if self.kind == "tmpfs":
            (self.path / "filler").unlink()

    def close(self) -> None:
        if self.kind == "tmpfs":
            subprocess.run(["umount", "-l", str(self.path)], check=False)


@pytest.fixture(params=["refusing_writes", "tmpfs"])
def full_disk(request, tmp_path, monkeypatch):
    disk = FullDisk(request.param, tmp_path, monkeypatch)
    yield disk
    disk.close()


def assert_money_invariant(ledger: Ledger, card_id: int, initial: D) -> None:
    """initial balance - CDR costs = balance; nothing left open; never negative; one call row per CDR."""
    cdrs = ledger.cdrs_for(card_id)
    card = ledger.get_card(card_id)
    assert card.balance == initial - sum((c.cost for c in cdrs), D("0"))
    assert card.balance >= 0
    assert ledger.open_reservations(card_id) == []
    calls = [e for e in ledger.ledger_entries(card_id) if e.kind == "call"]
    assert len(calls) == len([c for c in cdrs if c.cost])


def test_database_down_and_disk_full_the_settlement_is_held_in_memory_then_journalled_when_space_returns(
    private_pg_server, private_db, full_disk, caplog
):
    demo = create_demo_data(private_db.pool)
    ledger = Ledger(private_db.pool)
    write_errors: list[OSError] = []
    journal = SettlementJournal(full_disk.path / "journal.jsonl", ledger, on_write_error=write_errors.append)
    g = grant(ledger, demo.card_id)
    private_pg_server.stop()
    try:
        full_disk.fill()
        assert journal.accepting
        assert journal.settle(g.b_uuid, billmsec=31_000, hangup_cause="NORMAL_CLEARING") is None
        # Held, counted, and said: the cause and the call's figures are in one ERROR line.
        assert journal.held_count == 1 and not journal.accepting
        assert write_errors and write_errors[0].errno == errno.ENOSPC
        (line,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert "ENOSPC" in line and "No space left on device" in line and str(g.b_uuid) in line
        assert '"billmsec":31000' in line
        assert journal.pending() == []  # nothing, not even half a line, on the full disk
        # Still both away: nothing moves, nothing is lost.
        assert journal.retry_held() == 0 and journal.held_count == 1
        full_disk.free()
        assert journal.retry_held() == 1
        assert journal.accepting
        assert [e.b_uuid for e in journal.pending()] == [str(g.b_uuid)]
    finally:
        private_pg_server.start()
    assert replay_until_empty(journal) == 1
    assert ledger.cdr(g.b_uuid).cost == D("0.13600")
    assert_money_invariant(ledger, demo.card_id, D("10.00000"))


def test_database_down_and_disk_full_the_held_settlement_goes_to_the_database_when_it_returns_first(
    private_pg_server, private_db, full_disk
):
    demo = create_demo_data(private_db.pool)
    ledger = Ledger(private_db.pool)
    journal = SettlementJournal(full_disk.path / "journal.jsonl", ledger)
    g1, g2 = grant(ledger, demo.card_id), grant(ledger, demo.card_id)
    private_pg_server.stop()
    try:
        full_disk.fill()
        assert journal.settle(g1.b_uuid, billmsec=31_000, hangup_cause="NORMAL_CLEARING") is None
        assert journal.settle(g2.b_uuid, billmsec=0, hangup_cause="USER_BUSY") is None
        assert journal.held_count == 2
    finally:
        private_pg_server.start()
    # The disk is still full; the database takes both (the pool needs a moment to reconnect).
    deadline = time.monotonic() + 30
    while journal.held_count and time.monotonic() < deadline:
        journal.retry_held()
        if journal.held_count:
            time.sleep(0.2)
    assert journal.held_count == 0 and journal.accepting
    assert journal.pending() == []
    assert (ledger.cdr(g1.b_uuid).cost, ledger.cdr(g2.b_uuid).cost) == (D("0.13600"), D("0"))
    # Retried again (a second loop pass, a restart's replay): charged once.
    assert journal.retry_held() == 0
    assert_money_invariant(ledger, demo.card_id, D("10.00000"))


def test_held_settlements_go_to_the_journal_in_order_asking_a_down_database_once_per_pass(tmp_path, monkeypatch):
    """Each ask of a down database costs a pool timeout: one per retry pass, not one per held settlement."""
    from cardd.errors import DatabaseUnavailable

    class DownLedger:
        asked = 0

        def settle(self, *args, **kwargs):
            DownLedger.asked += 1
            raise DatabaseUnavailable("connection refused")

    disk = FullDisk("refusing_writes", tmp_path, monkeypatch)
    journal = SettlementJournal(disk.path / "journal.jsonl", DownLedger())
    legs = [str(uuid.uuid4()) for _ in range(3)]
    disk.fill()
    for b in legs:
        assert journal.settle(b, billmsec=6_000, hangup_cause="NORMAL_CLEARING") is None
    assert journal.held_count == 3 and not journal.accepting
    DownLedger.asked = 0
    assert journal.retry_held() == 0
    assert DownLedger.asked == 1
    disk.free()
    DownLedger.asked = 0
    assert journal.retry_held() == 3
    assert DownLedger.asked == 1
    assert journal.accepting and [e.b_uuid for e in journal.pending()] == legs
