"""Issue 12, section 1: a forged CDR must not make a live call free.

The attacks, each against cardd running in-process on a real database with
the simulated FreeSWITCH: an unauthenticated POST, a POST from a source not
listed, an authenticated POST for a call still up on this cardd, on another
live cardd process, and on a dead process's call still up in FreeSWITCH; a
restarted cardd next to a live one. After each: the money invariant
(initial balance + top-ups - CDR costs = final balance, no open reservation,
no negative balance).
"""

from __future__ import annotations

import base64
import http.client
import json
import math
import time
import uuid
from decimal import Decimal as D

import gevent
import pytest

from cardd.billing.journal import SettlementJournal
from cardd.billing.ledger import Ledger
from cardd.daemon import Daemon
from cardd.metrics import Metrics
from cardd.nodes import NodeRegistry
from cardd.orphans import OrphanReconciler
from cardd.sim import Callee, Caller, Switch
from cardd.sim.cdr import JsonCdrPoster
from tests.callfixtures import Cardd, make_settings
from tests.test_orphans import CRED, UK_MOBILE, Gate, assert_money_holds, free_port, grant, kill, wait_dead


def forged(b_uuid: str, billmsec: int = 0) -> bytes:
    return json.dumps({"variables": {"uuid": b_uuid, "billmsec": str(billmsec)}}).encode()


def post(port: int, body: bytes, cred: str | None = None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Content-Type": "application/json"}
    if cred is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(cred.encode()).decode()
    try:
        conn.request("POST", "/cdr", body=body, headers=headers)
        return conn.getresponse().status
    finally:
        conn.close()


def wait_for(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        gevent.sleep(0.05)


class Rig:
    """One simulated FreeSWITCH (inbound ESL, mod_json_cdr) and the cardd processes on it."""

    def __init__(self, database, tmp_path, **daemon):
        self.database = database
        self.ledger = Ledger(database.pool)
        self.switch = Switch()
        self.inbound = self.switch.listen_inbound()
        self.gate = Gate(self.switch)
        self.tmp_path = tmp_path
        self.daemon = dict(
            inbound_esl=f"127.0.0.1:{self.inbound.address[1]}",
            cdr_credentials=CRED,
            node_heartbeat_interval=0.2,
            orphan_check_interval=0.2,
            **daemon,
        )
        self.running: list[Daemon] = []

    def start(self, **daemon) -> tuple[Cardd, int]:
        port = free_port()
        settings = make_settings(
            "calling_card:\n  max_call_duration: 120\n",
            tmp_path=self.tmp_path,
            data_dir=str(self.tmp_path / f"var{len(self.running)}"),
            cdr_listen=f"127.0.0.1:{port}",
            **{**self.daemon, **daemon},
        )
        d = Daemon(settings, database=self.database, metrics=Metrics(), serve_metrics=False, serve_cdr=True)
        d.start()
        self.running.append(d)
        return Cardd(d), port

    def bridged_call(self, cardd: Cardd, demo, talk: float = 31):
        call = cardd.dial(
            Caller(digits=[demo.card_number + "#", demo.pin + "#", UK_MOBILE + "#"], type_after=6),
            Callee(talk=talk),
            self.switch,
        )
        wait_for(lambda: call.a_uuid in self.gate.bridged, "the call was never bridged", 60)
        assert self.gate.bridged[call.a_uuid].wait(30)
        [res] = self.ledger.open_reservations(demo.card_id)
        return call, res

    def close(self) -> None:
        for d in self.running:
            if d.server is not None and d.nodes is not None:
                d.stop()
        self.inbound.stop()


@pytest.fixture
def rig(database, tmp_path):
    r = Rig(database, tmp_path)
    yield r
    r.close()


def test_a_cdr_without_the_right_credentials_is_refused_401_and_changes_nothing(rig, demo_data):
    cardd, port = rig.start()
    call, res = rig.bridged_call(cardd, demo_data)
    b = str(res.b_uuid)
    assert post(port, forged(b)) == 401  # no credentials
    assert post(port, forged(b), cred="freeswitch:guess") == 401  # wrong password
    assert post(port, forged(b), cred=CRED + "x") == 401
    assert cardd.metric("cardd_cdr_refused_total", reason="credentials") == 3
    assert [r.b_uuid for r in rig.ledger.open_reservations(demo_data.card_id)] == [res.b_uuid]
    assert rig.ledger.cdr(b) is None
    rig.gate.release([call.a_uuid])
    t = call.wait(60)
    cdr = rig.ledger.cdr(b)
    assert (cdr.billed_seconds, cdr.cost) == (math.ceil(t.bridges[0].billmsec / 1000), D("0.13600"))
    assert_money_holds(rig.ledger, demo_data.card_id, D("10.00000"))


def test_a_cdr_from_a_source_not_listed_is_refused_403(rig, demo_data):
    cardd, port = rig.start(cdr_allowed_sources=["192.0.2.0/24"])
    call, res = rig.bridged_call(cardd, demo_data)
    assert post(port, forged(str(res.b_uuid)), cred=CRED) == 403
    assert cardd.metric("cardd_cdr_refused_total", reason="source") == 1
    assert rig.ledger.cdr(res.b_uuid) is None
    rig.gate.release([call.a_uuid])
    call.wait(60)
    assert rig.ledger.cdr(res.b_uuid).cost == D("0.13600")
    assert_money_holds(rig.ledger, demo_data.card_id, D("10.00000"))


def test_an_empty_credentials_setting_refuses_every_cdr(rig, demo_data):
    cardd, port = rig.start(cdr_credentials="")
    assert post(port, forged(str(uuid.uuid4())), cred="anything:at-all") == 401
    assert post(port, forged(str(uuid.uuid4()))) == 401


def test_an_authenticated_forged_cdr_for_a_live_call_does_not_settle_it_and_the_difference_is_counted(rig, demo_data):
    cardd, port = rig.start()
    call, res = rig.bridged_call(cardd, demo_data)
    # The attacker knows the credentials and the B leg: billmsec 0 while the call is up.
    assert post(port, forged(str(res.b_uuid)), cred=CRED) == 200
    assert [r.b_uuid for r in rig.ledger.open_reservations(demo_data.card_id)] == [res.b_uuid]
    rig.gate.release([call.a_uuid])
    t = call.wait(60)
    cdr = rig.ledger.cdr(res.b_uuid)
    assert (cdr.estimated, cdr.billed_seconds) == (False, math.ceil(t.bridges[0].billmsec / 1000))
    assert cdr.cost == D("0.13600")  # the call's own figures stand
    # The forged CDR, kept, is compared with them by the next pass: counted, not applied.
    wait_for(
        lambda: cardd.metric("cardd_settlement_disagreements_total", kind="repeat_differs") == 1,
        "the disagreement was not counted",
    )
    assert rig.ledger.cdr(res.b_uuid).cost == D("0.13600")
    assert_money_holds(rig.ledger, demo_data.card_id, D("10.00000"))


def test_a_second_cardd_never_touches_the_live_calls_of_another_and_its_cdrs_wait_for_them(rig, demo_data):
    first, _ = rig.start()
    call, res = rig.bridged_call(first, demo_data)
    second, port2 = rig.start()  # a restart of another process next to the live one
    wait_for(lambda: second.daemon.reconciler.passes >= 1, "no orphan pass")
    report = second.daemon.reconciler.last
    assert (report.estimated, report.from_cdr, report.other_node) == (0, 0, 1)
    # A forged, authenticated CDR to the second cardd: kept, not applied.
    assert post(port2, forged(str(res.b_uuid)), cred=CRED) == 200
    wait_for(lambda: second.daemon.reconciler.passes >= 3, "no later passes")
    assert [r.b_uuid for r in rig.ledger.open_reservations(demo_data.card_id)] == [res.b_uuid]
    assert rig.ledger.cdr(res.b_uuid) is None
    rig.gate.release([call.a_uuid])
    call.wait(60)
    assert rig.ledger.cdr(res.b_uuid).cost == D("0.13600")
    wait_for(
        lambda: second.metric("cardd_settlement_disagreements_total", kind="repeat_differs") == 1,
        "the second cardd did not count the forged CDR against the real settlement",
    )
    assert_money_holds(rig.ledger, demo_data.card_id, D("10.00000"))


def test_a_cdr_for_a_leg_still_up_in_freeswitch_is_refused_after_its_cardd_died(rig, demo_data, tmp_path):
    first, _ = rig.start()
    call, res = rig.bridged_call(first, demo_data)
    node = first.daemon.nodes.node
    kill(first.daemon)
    rig.running.remove(first.daemon)
    wait_dead(rig.database.pool, node)
    second, port2 = rig.start()
    wait_for(lambda: second.daemon.reconciler.passes >= 1, "no orphan pass")
    assert second.daemon.reconciler.last.still_up == 1
    # The forged CDR that refunded such a call in full: the B leg is up, so it is refused.
    assert post(port2, forged(str(res.b_uuid)), cred=CRED) == 409
    assert second.metric("cardd_cdr_refused_total", reason="call_up") == 1
    assert rig.ledger.cdr(res.b_uuid) is None
    # The call ends; FreeSWITCH's real CDR settles it.
    poster = JsonCdrPoster(rig.switch, f"http://127.0.0.1:{port2}/cdr", retries=20, delay=0.2, cred=CRED)
    try:
        rig.gate.release([call.a_uuid])
        t = call.wait(60)
        poster.wait(30)
        wait_for(lambda: rig.ledger.cdr(res.b_uuid) is not None, "the real CDR did not settle it")
    finally:
        poster.close()
    cdr = rig.ledger.cdr(res.b_uuid)
    assert (cdr.estimated, cdr.billed_seconds, cdr.cost) == (
        False,
        math.ceil(t.bridges[0].billmsec / 1000),
        D("0.13600"),
    )
    assert_money_holds(rig.ledger, demo_data.card_id, D("10.00000"))


def test_the_orphan_rule_leaves_reservations_of_another_freeswitch_box_alone(ledger, demo_data, tmp_path):
    switch = Switch(hostname="fs1")
    inbound = switch.listen_inbound()
    nodes = NodeRegistry(ledger.pool, interval=0.2)
    nodes.start()
    try:
        ledger.node = "elsewhere:1:1:dead"  # a process that never beats: dead
        theirs = grant(ledger, demo_data.card_id, switchname="fs2")
        ours = grant(ledger, demo_data.card_id, switchname="fs1")
        reconciler = OrphanReconciler(
            ledger,
            SettlementJournal(tmp_path / "j.jsonl", ledger),
            esl_address=inbound.address,
            esl_password="ClueCon",
            live_a_uuids=set,
            nodes=nodes,
        )
        report = reconciler.run_once(startup=True)
        assert (report.other_box, report.estimated) == (1, 1)
        assert reconciler.box_name == "fs1"
        assert [r.b_uuid for r in ledger.open_reservations(demo_data.card_id)] == [theirs.b_uuid]
        # Never dialled (no bridge mark): released at no cost, not a guess.
        cdr = ledger.cdr(ours.b_uuid)
        assert (cdr.cost, cdr.estimated, cdr.hangup_cause) == (D("0"), False, "NOT_DIALLED")
    finally:
        nodes.stop()
        inbound.stop()


def test_the_orphan_rule_asks_each_reservations_own_box_and_only_a_box_that_answers_to_its_name(
    ledger, demo_data, tmp_path
):
    fs1, fs2 = Switch(hostname="fs1"), Switch(hostname="fs2")
    in1, in2 = fs1.listen_inbound(), fs2.listen_inbound()
    nodes = NodeRegistry(ledger.pool, interval=0.2)
    nodes.start()
    try:
        ledger.node = "elsewhere:2:2:dead"
        on2 = grant(ledger, demo_data.card_id, switchname="fs2")
        on3 = grant(ledger, demo_data.card_id, switchname="fs3")
        journal = SettlementJournal(tmp_path / "j.jsonl", ledger)
        # fs3 is configured at fs1's address: that box says it is fs1, so it is never asked about fs3.
        reconciler = OrphanReconciler(
            ledger,
            journal,
            esl_address=in1.address,
            esl_password="ClueCon",
            live_a_uuids=set,
            nodes=nodes,
            boxes={"fs2": in2.address, "fs3": in1.address},
        )
        report = reconciler.run_once(startup=True)
        assert (report.estimated, report.unknown) == (1, 1)
        assert ledger.cdr(on2.b_uuid).hangup_cause == "NOT_DIALLED"
        assert [r.b_uuid for r in ledger.open_reservations(demo_data.card_id)] == [on3.b_uuid]
        assert_money_holds_with_open(ledger, demo_data.card_id)
    finally:
        nodes.stop()
        in1.stop()
        in2.stop()


def assert_money_holds_with_open(ledger: Ledger, card_id: int) -> None:
    """The invariant while a reservation is rightly left open: nothing charged for it."""
    costs = sum((c.cost for c in ledger.cdrs_for(card_id, limit=1000)), D(0))
    assert ledger.get_card(card_id).balance == D("10.00000") - costs >= 0


def test_a_reservation_released_by_another_cardd_before_its_bridge_is_never_dialled(rig, demo_data):
    from tests.test_faults_sigkill import SetupGate

    cardd, _ = rig.start()
    gate = SetupGate(rig.switch)
    call = cardd.dial(
        Caller(digits=[demo_data.card_number + "#", demo_data.pin + "#", UK_MOBILE + "#"], type_after=6),
        Callee(talk=31),
        rig.switch,
    )
    wait_for(lambda: call.a_uuid in gate.held and gate.held[call.a_uuid].is_set(), "not held before the bridge")
    [res] = rig.ledger.open_reservations(demo_data.card_id)
    # Another cardd took this process for dead (its heartbeat late) and released the grant.
    rig.ledger.settle(res.b_uuid, billmsec=None, hangup_cause="ORPHAN_ESTIMATED", estimated=True)
    gate.release.set()
    t = call.wait(60)
    assert t.bridges == []  # never dialled: it would have been free
    assert cardd.heard(t)[-2:] == ["call_failed", "goodbye"]
    assert rig.ledger.cdr(res.b_uuid).cost == D(0)
    assert_money_holds(rig.ledger, demo_data.card_id, D("10.00000"))
