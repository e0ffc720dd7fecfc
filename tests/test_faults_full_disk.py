"""Fault: PostgreSQL down AND the disk full while a call is bridged (cardd in-process, simulated calls).

The call's settlement cannot go to the database nor to the journal: cardd keeps it in memory, says so
(cardd_settlements_held, cardd_journal_write_errors_total, one ERROR line naming ENOSPC), refuses new
calls with "service unavailable" and, once the database is back, settles it and serves calls again."""

from __future__ import annotations

import time
from decimal import Decimal as D

import gevent
import pytest

from cardd.daemon import Daemon
from cardd.db import Database
from cardd.metrics import Metrics
from cardd.sim import Callee, Switch
from tests.callfixtures import Cardd, make_settings
from tests.dbfixtures import create_demo_data
from tests.test_faults_database import UK_MOBILE, BridgeGate, card_caller
from tests.test_journal import FullDisk, assert_money_invariant


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        gevent.sleep(0.1)


@pytest.fixture(params=["refusing_writes", "tmpfs"])
def full_disk_outage(request, private_pg_server, tmp_path, monkeypatch):
    disk = FullDisk(request.param, tmp_path, monkeypatch)
    db = Database(private_pg_server.dsn, pool_timeout=2.0)
    db.migrate()
    demo = create_demo_data(db.pool)
    daemon = Daemon(make_settings(data_dir=str(disk.path)), database=db, metrics=Metrics(), serve_metrics=False)
    daemon.start()
    try:
        yield Cardd(daemon), demo, private_pg_server, disk
    finally:
        daemon.stop()
        db.close()
        disk.close()


def test_database_down_and_disk_full_the_call_is_held_in_memory_new_calls_refused_until_the_database_is_back(
    full_disk_outage, caplog
):
    cardd, demo, server, disk = full_disk_outage
    daemon = cardd.daemon
    ledger = daemon.journal.ledger
    switch = Switch()
    gate = BridgeGate(switch)
    held_call = cardd.dial(card_caller(demo, UK_MOBILE, hangup_after_talk=31), Callee(talk=None), switch)
    assert gate.bridged.wait(60), "the call was never bridged"
    server.stop()
    try:
        disk.fill()
        gate.release()
        t = held_call.wait(60)
        assert t.bridges[0].answered and t.hangup_cause == "NORMAL_CLEARING"
        wait_for(lambda: cardd.metric("cardd_settlements_held") == 1)
        assert cardd.metric("cardd_journal_write_errors_total") >= 1
        assert daemon.journal.pending() == []
        errors = [
            r.getMessage() for r in caplog.records if r.levelname == "ERROR" and "held in memory" in r.getMessage()
        ]
        assert errors and "ENOSPC" in errors[0] and t.bridges[0].b_uuid in errors[0]
        # A new caller is told the service is unavailable; nothing is reserved for them.
        refused = cardd.dial(card_caller(demo, UK_MOBILE), Callee(talk=5), Switch()).wait(60)
        assert refused.bridges == []
        assert cardd.heard(refused)[-2:] == ["service_unavailable", "goodbye"]
        assert cardd.metric("cardd_calls_total", outcome="not_accepting") == 1
    finally:
        server.start()
    # The disk is still full: the background retry gives the held settlement to the database.
    wait_for(lambda: cardd.metric("cardd_settlements_held") == 0)
    assert daemon.journal.accepting
    cdr = ledger.cdr(t.bridges[0].b_uuid)
    assert (cdr.billed_seconds, cdr.cost, cdr.estimated) == (31, D("0.13600"), False)
    # Calls are accepted again and billed as usual.
    after = cardd.dial(card_caller(demo, UK_MOBILE, hangup_after_talk=31), Callee(talk=None), Switch()).wait(90)
    assert after.bridges and after.bridges[0].answered
    assert ledger.get_card(demo.card_id).balance == D("10.00000") - D("0.13600") - D("0.13600")
    assert_money_invariant(ledger, demo.card_id, D("10.00000"))
