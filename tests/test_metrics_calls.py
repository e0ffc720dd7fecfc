"""Every metric the README documents moves when a call goes through cardd (in-process daemon, simulated
FreeSWITCH): a wrong PIN, then the right one, the balance, a destination, a bridge held up while the
gauges are read, a 31 s talk."""

from __future__ import annotations

import time

import gevent

from cardd.sim import Callee, Caller, Switch
from tests.callfixtures import start_cardd
from tests.dbfixtures import create_demo_data
from tests.test_faults_database import BridgeGate

UK_MOBILE = "447700900123"  # 0.06/min, 30 s then 6 s, connect fee 0.10: 31 s costs 0.136


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        gevent.sleep(0.02)


def test_a_call_moves_every_documented_metric(database):
    demo = create_demo_data(database.pool)
    cardd = start_cardd(database)
    try:
        m = cardd.metric
        # From the start, before any call: the series exist at zero.
        assert cardd.metrics.registry.get_sample_value("cardd_bridge_attempts_total", {"result": "answered"}) == 0
        assert cardd.metrics.registry.get_sample_value("cardd_revenue_total", {"currency": "USD"}) == 0
        assert cardd.metrics.registry.get_sample_value("cardd_instance_calls_active", {"cc_instance": "other"}) == 0
        assert m("cardd_call_setup_seconds_count") == 0

        switch = Switch()
        gate = BridgeGate(switch)
        caller = Caller(
            cli="15555550100",
            destination="cc",
            type_after=6,
            hangup_after_talk=31,
            digits=[demo.card_number + "#", "0000#", demo.card_number + "#", demo.pin + "#", UK_MOBILE + "#"],
        )
        started = time.monotonic()
        call = cardd.dial(caller, Callee(talk=None), switch)
        assert gate.bridged.wait(60), "the call was never bridged"
        # While it is bridged: the gauges count it.
        assert m("cardd_calls_active") == 1
        assert sum(s.value for s in cardd.metrics.instance_calls_active.collect()[0].samples) == 1
        cardd.daemon.refresh_reservation_gauges()
        assert m("cardd_open_reservations") == 1 and m("cardd_expired_reservations") == 0
        # The setup time is observed when the bridge is sent, not when the call ends.
        assert m("cardd_call_setup_seconds_count") == 1
        setup = m("cardd_call_setup_seconds_sum")
        assert 0 < setup <= time.monotonic() - started
        gate.release()
        t = call.wait(60)
        assert t.bridges and t.bridges[0].answered
        wait_for(
            lambda: sum(s.value for s in cardd.metrics.calls.collect()[0].samples if s.name == "cardd_calls_total") == 1
        )
        wait_for(lambda: m("cardd_calls_active") == 0)
        assert m("cardd_calls_total", outcome="bridged") == 1

        assert m("cardd_auth_failures_total", reason="wrong_pin") == 1
        assert m("cardd_bridge_attempts_total", result="answered") == 1
        assert m("cardd_billed_seconds_total", currency="USD") == 31
        assert abs(m("cardd_revenue_total", currency="USD") - 0.136) < 1e-9
        for step in ("greeting", "identify", "balance", "destination", "dial"):
            assert m("cardd_ivr_step_seconds_count", step=step) >= 1, step
        assert m("cardd_ivr_step_seconds_count", step="dial") == 1
        # connect -> bridge sent holds the identification and the dial step
        assert setup >= m("cardd_ivr_step_seconds_sum", step="identify") + m("cardd_ivr_step_seconds_sum", step="dial")
        assert m("cardd_call_setup_seconds_count") == 1  # once per call, at its first bridge
        for op in ("card_for_pin", "verdict", "grant", "settle"):
            assert m("cardd_db_query_seconds_count", op=op) >= 1, op
        assert m("cardd_db_errors_total", step="call") == 0
        ledger = cardd.daemon.journal.ledger
        assert ledger.get_card(demo.card_id).balance == demo.balance - ledger.cdr(t.bridges[0].b_uuid).cost
    finally:
        cardd.daemon.stop()
