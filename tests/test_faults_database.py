"""Fault: the database goes away while a call is bridged.

cardd runs in-process on a PostgreSQL server of the test's own
(private_pg_server), calls come from the simulator. The bridged call is held
(its virtual clock stopped) while the server is stopped, then ends: its
settlement is journalled, the caller is not cut off, a call made during the
outage ends politely, and when the server is back the background replay
settles the journalled call exactly once.
"""

from __future__ import annotations

import time
from decimal import Decimal as D

import gevent
import gevent.event
import pytest

from cardd.daemon import Daemon
from cardd.db import Database
from cardd.metrics import Metrics
from cardd.sim import Callee, Caller, Switch
from tests.callfixtures import Cardd, make_settings
from tests.dbfixtures import create_demo_data, wait_until_serving

UK_MOBILE = "447700900123"  # 0.06/min, 30 s then 6 s, connect fee 0.10


def card_caller(demo, number: str, **kw) -> Caller:
    return Caller(
        cli="15555550100",
        destination="cc",
        digits=[demo.card_number + "#", demo.pin + "#", number + "#"],
        type_after=6,
        **kw,
    )


class BridgeGate:
    """Offered every event of the switch (like an inbound ESL listener): once
    a call is bridged, that call's virtual clock stops until release()."""

    def __init__(self, switch: Switch):
        self.switch = switch
        self.bridged = gevent.event.Event()
        self._release = gevent.event.Event()
        self.held = 0
        switch.inbound.append(self)

    def offer(self, name, headers) -> None:
        if name != "CHANNEL_BRIDGE" or self.held:
            return
        found = self.switch.find(dict(headers).get("Unique-ID", ""))
        if found is not None:
            self.held += 1
            found[0].clock.call_later(0.5, self._hold)

    def _hold(self) -> None:
        self.bridged.set()
        self._release.wait()

    def release(self) -> None:
        self._release.set()


@pytest.fixture
def outage(private_pg_server, tmp_path):
    db = Database(private_pg_server.dsn, pool_timeout=2.0)
    db.migrate()
    demo = create_demo_data(db.pool)
    daemon = Daemon(make_settings(data_dir=str(tmp_path)), database=db, metrics=Metrics(), serve_metrics=False)
    daemon.start()
    try:
        yield Cardd(daemon), demo, private_pg_server
    finally:
        daemon.stop()
        if private_pg_server.dsn:
            db.close()


def test_database_lost_mid_bridge_the_call_goes_on_is_journalled_and_settled_once_when_back(outage):
    cardd, demo, server = outage
    daemon = cardd.daemon
    ledger = daemon.journal.ledger
    switch = Switch()
    gate = BridgeGate(switch)
    held = cardd.dial(card_caller(demo, UK_MOBILE, hangup_after_talk=20), Callee(talk=None), switch)
    assert gate.bridged.wait(60), "the call was never bridged"
    server.stop()
    try:
        gate.release()
        t = held.wait(60)
        # The caller talked 20 s and hung up; nothing cut the bridge.
        assert t.bridges[0].answered
        assert t.hangup_cause == "NORMAL_CLEARING"
        pending = daemon.journal.pending()
        assert [e.b_uuid for e in pending] == [t.bridges[0].b_uuid]
        assert cardd.metric("cardd_settlements_journalled_total") == 1
        # During the outage another caller is answered and let go, and cardd lives on.
        during = cardd.dial(card_caller(demo, UK_MOBILE), Callee(talk=5), Switch()).wait(90)
        assert during.bridges == []
        assert cardd.heard(during)[-2:] == ["service_unavailable", "goodbye"]
    finally:
        server.start()
        wait_until_serving(cardd.daemon.database)
    # The background replay (every 5 s) settles it once the pool reconnects.
    deadline = time.monotonic() + 60
    while daemon.journal.pending() and time.monotonic() < deadline:
        gevent.sleep(0.2)
    assert daemon.journal.pending() == []
    cdr = ledger.cdr(t.bridges[0].b_uuid)
    assert (cdr.billed_seconds, cdr.cost, cdr.estimated) == (20, D("0.13000"), False)
    assert cardd.metric("cardd_settlements_replayed_total") == 1
    # Served again as usual after the outage: 31 s costs 0.136.
    after = cardd.dial(card_caller(demo, UK_MOBILE), Callee(talk=31), Switch()).wait(90)
    assert after.bridges and after.bridges[0].answered
    card = ledger.get_card(demo.card_id)
    assert card.balance == D("10.00000") - D("0.13000") - D("0.13600")
    assert ledger.open_reservations(demo.card_id) == []
    assert len([e for e in ledger.ledger_entries(demo.card_id) if e.kind == "call"]) == 2


class StepGate:
    """Holds a call's virtual clock when its Nth play_and_get_digits starts
    (the caller's digits wait too), until release()."""

    def __init__(self, switch: Switch, nth: int):
        self.switch = switch
        self.nth = nth
        self.seen = 0
        self.reached = gevent.event.Event()
        self._release = gevent.event.Event()
        switch.inbound.append(self)

    def offer(self, name, headers) -> None:
        hd = dict(headers)
        if name != "CHANNEL_EXECUTE" or hd.get("Application") != "play_and_get_digits":
            return
        self.seen += 1
        if self.seen == self.nth:
            found = self.switch.find(hd.get("Unique-ID", ""))
            if found is not None:
                found[0].clock.call_later(0, self._hold)

    def _hold(self) -> None:
        self.reached.set()
        self._release.wait()

    def release(self) -> None:
        self._release.set()


@pytest.mark.parametrize("step, nth", [("identification", 1), ("pin check", 2), ("rating and reservation", 3)])
def test_database_lost_at_a_step_the_caller_hears_service_unavailable_and_nothing_is_reserved(outage, step, nth):
    cardd, demo, server = outage
    ledger = cardd.daemon.journal.ledger
    switch = Switch()
    gate = StepGate(switch, nth)
    call = cardd.dial(card_caller(demo, UK_MOBILE), Callee(talk=5), switch)
    assert gate.reached.wait(60), f"the call never reached the {step}"
    server.stop()
    try:
        gate.release()
        t = call.wait(90)
        assert cardd.heard(t)[-2:] == ["service_unavailable", "goodbye"], step
        assert t.bridges == []
        assert cardd.metric("cardd_db_errors_total", step="call") == 1
    finally:
        server.start()
        wait_until_serving(cardd.daemon.database)
    deadline = time.monotonic() + 60
    while True:
        try:
            open_now = ledger.open_reservations(demo.card_id)
            break
        except Exception:
            assert time.monotonic() < deadline
            gevent.sleep(0.2)
    assert open_now == [] and ledger.cdrs_for(demo.card_id) == []
    assert ledger.get_card(demo.card_id).balance == D("10.00000")
    assert daemon_journal_empty(cardd)


def daemon_journal_empty(cardd) -> bool:
    return cardd.daemon.journal.pending() == []
