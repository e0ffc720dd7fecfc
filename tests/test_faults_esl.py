"""Faults on the Event Socket: a peer that says nothing, and a call's socket
cut mid-bridge while cardd itself stays up. Only the call concerned is
affected; its money is settled from FreeSWITCH's CDR."""

from __future__ import annotations

import socket
import time
from decimal import Decimal as D

import gevent
import pytest

from cardd.sim import Callee, Caller, Switch
from cardd.sim.cdr import JsonCdrPoster
from tests.test_orphans import Gate, free_port

UK_MOBILE = "447700900123"


def card_caller(demo, number: str, **kw) -> Caller:
    return Caller(
        cli="15555550100",
        destination="cc.noredial",
        digits=[demo.card_number + "#", demo.pin + "#", number + "#"],
        type_after=6,
        **kw,
    )


def test_a_silent_peer_is_dropped_after_the_reply_timeout(cardd_with, database, demo_data):
    running = cardd_with(database, esl_reply_timeout=1)
    host, port = running.address
    with socket.create_connection((host, port), timeout=10) as s:
        s.settimeout(60)  # a deadline: a peer never dropped fails on socket.timeout
        data = s.recv(65536)  # cardd's `connect`
        assert data.startswith(b"connect")
        while s.recv(65536):  # ... then nothing more until it gives up
            pass
    deadline = time.monotonic() + 60
    while running.metric("cardd_calls_active") and time.monotonic() < deadline:
        gevent.sleep(0.05)
    assert running.metric("cardd_calls_active") == 0


def test_a_socket_cut_mid_bridge_leaves_the_call_up_and_it_is_settled_from_its_cdr(
    cardd_with, database, demo_data, ledger
):
    switch = Switch()
    inbound = switch.listen_inbound()
    cdr_port = free_port()
    running = cardd_with(database, cdr_listen=f"127.0.0.1:{cdr_port}", inbound_esl=f"127.0.0.1:{inbound.address[1]}")
    # cardd_with's daemons do not serve the CDR endpoint by default (fixed port): start one here.
    from cardd.cdr_http import CdrEndpoint

    endpoint = CdrEndpoint(
        ("127.0.0.1", cdr_port), running.daemon.reconciler.store, on_cdr=running.daemon.reconciler.on_cdr
    )
    endpoint.start()
    poster = JsonCdrPoster(switch, f"http://127.0.0.1:{cdr_port}/cdr", retries=0)
    gate = Gate(switch)
    try:
        cut = running.dial(card_caller(demo_data, UK_MOBILE), Callee(talk=31), switch)
        other = running.dial(card_caller(demo_data, UK_MOBILE), Callee(talk=12), Switch())
        deadline = time.monotonic() + 60
        while cut.a_uuid not in gate.bridged:
            assert time.monotonic() < deadline
            gevent.sleep(0.05)
        assert gate.bridged[cut.a_uuid].wait(30)
        # The network between FreeSWITCH and cardd breaks for this one call.
        cut._sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + 60
        while cut.a_uuid in running.daemon.live_calls and time.monotonic() < deadline:
            gevent.sleep(0.05)
        assert cut.a_uuid not in running.daemon.live_calls
        gate.release([cut.a_uuid])
        t = cut.wait(60)
        assert t.bridges[0].answered and t.bridges[0].b_hangup_cause == "NORMAL_CLEARING"
        poster.wait(60)
        deadline = time.monotonic() + 60
        while ledger.cdr(t.bridges[0].b_uuid) is None and time.monotonic() < deadline:
            gevent.sleep(0.05)
        cdr = ledger.cdr(t.bridges[0].b_uuid)
        # billmsec as the simulator's callee ends it (BYE a few ms after 31 s)
        billed = -(-t.bridges[0].billmsec // 1000)
        assert (cdr.billed_seconds, cdr.cost, cdr.estimated) == (billed, D("0.13600"), False)
        # The other call never noticed.
        o = other.wait(60)
        assert o.bridges[0].answered
        assert ledger.cdr(o.bridges[0].b_uuid).billed_seconds == -(-o.bridges[0].billmsec // 1000)
        assert ledger.open_reservations(demo_data.card_id) == []
        assert ledger.get_card(demo_data.card_id).balance == D("10.00000") - D("0.13600") - D("0.13000")
    finally:
        endpoint.stop()
        poster.close()
        inbound.stop()


class CutAt:
    """Cuts a call's socket (FreeSWITCH side) when its Nth `app` starts."""

    def __init__(self, switch: Switch, app: str, nth: int):
        self.switch, self.app, self.nth, self.seen = switch, app, nth, 0
        self.cut = False
        switch.inbound.append(self)

    def offer(self, name, headers) -> None:
        hd = dict(headers)
        if name != "CHANNEL_EXECUTE" or hd.get("Application") != self.app or self.cut:
            return
        self.seen += 1
        if self.seen == self.nth:
            found = self.switch.find(hd.get("Unique-ID", ""))
            if found is not None:
                self.cut = True
                found[0]._sock.shutdown(socket.SHUT_RDWR)


@pytest.mark.parametrize(
    "app, nth, step",
    [
        ("answer", 1, "answer"),
        ("play_and_get_digits", 1, "card number"),
        ("play_and_get_digits", 2, "PIN"),
        ("play_and_get_digits", 3, "destination"),
        ("playback", 1, "duration announcement, after the reservation"),
    ],
)
def test_a_socket_cut_at_each_step_before_the_bridge_releases_what_was_reserved(
    cardd, demo_data, ledger, app, nth, step
):
    switch = Switch()
    cutter = CutAt(switch, app, nth)
    call = cardd.dial(card_caller(demo_data, UK_MOBILE), Callee(talk=5), switch)
    t = call.wait(60)
    assert cutter.cut, step
    assert t.bridges == []
    deadline = time.monotonic() + 60
    while cardd.metric("cardd_calls_active") and time.monotonic() < deadline:
        gevent.sleep(0.05)
    assert cardd.metric("cardd_calls_active") == 0
    assert ledger.open_reservations(demo_data.card_id) == []
    assert ledger.get_card(demo_data.card_id).balance == D("10.00000")
    for cdr in ledger.cdrs_for(demo_data.card_id):
        assert cdr.cost == 0 and cdr.hangup_cause == "NOT_DIALLED"
    # The daemon serves the next call as usual.
    ok = cardd.dial(card_caller(demo_data, UK_MOBILE), Callee(talk=5), Switch()).wait(60)
    assert ok.bridges and ok.bridges[0].answered
