"""The orphan rule (cardd.orphans) and FreeSWITCH's CDRs over HTTP (cardd.cdr_http).

The crash test: cardd is killed while calls are bridged (its call greenlets
die without settling, its sockets close: capture 16). The simulated
FreeSWITCH goes on; each B leg's sched_hangup or the callee ends its call, and
mod_json_cdr's POSTs fail while cardd is down. A new cardd on the same
database reconciles: calls gone with no CDR are settled at the reserved amount
(estimated) and corrected when their CDR is re-posted; a call still up is
left alone and settled from its CDR when it ends. Nothing stays open, nothing
is charged twice.
"""

from __future__ import annotations

import base64
import json
import math
import socket
import time
import uuid
from decimal import Decimal as D
from urllib.parse import quote

import gevent
import gevent.event
import pytest

from cardd.billing.journal import SettlementJournal
from cardd.billing.ledger import Ledger
from cardd.cdr_http import BadCdr, CdrEndpoint, CdrStore, parse_body
from cardd.daemon import Daemon
from cardd.metrics import Metrics
from cardd.orphans import InboundEsl, InboundEslError, OrphanReconciler
from cardd.sim import Callee, Caller, Switch
from cardd.sim.cdr import JsonCdrPoster
from tests.callfixtures import Cardd, make_settings
from tests.dbfixtures import create_demo_data

UK_MOBILE = "447700900123"  # 0.06/min, 30 s then 6 s, connect fee 0.10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def grant(ledger: Ledger, card_id: int, **kw):
    args = dict(
        a_uuid=uuid.uuid4(),
        b_uuid=uuid.uuid4(),
        destination=UK_MOBILE,
        cli="15555550100",
        ignore_connect_fee=False,
        max_call_duration=120,
        min_call_duration=0,
        margin_s=0,
    )
    args.update(kw)
    return ledger.grant(card_id, **args)


def cdr_doc(leg: str, billmsec: int, cause: str = "NORMAL_CLEARING", **extra) -> dict:
    variables = {"uuid": leg, "billmsec": str(billmsec), "hangup_cause": cause}
    variables.update(extra)
    return {"core-uuid": str(uuid.uuid4()), "variables": variables}


# -- parsing mod_json_cdr bodies ------------------------------------------------------


@pytest.mark.parametrize("encode", ["false", "true", "base64"])
def test_cdr_bodies_in_every_mod_json_cdr_encoding_give_the_same_record(encode):
    leg = str(uuid.uuid4())
    doc = cdr_doc(leg, 31_020, "ALLOTTED_TIMEOUT", answer_uepoch="1700000000123456", end_uepoch="1700000031143456")
    data = json.dumps(doc)
    body = {
        "false": data.encode(),
        "true": ("cdr=" + quote(data, safe="")).encode(),
        "base64": ("cdr=" + base64.b64encode(data.encode()).decode()).encode(),
    }[encode]
    record = parse_body(body)
    assert (record.uuid, record.billmsec, record.hangup_cause) == (leg, 31_020, "ALLOTTED_TIMEOUT")
    assert record.answered_at is not None and record.ended_at is not None


def test_url_encoded_values_are_decoded():
    leg = str(uuid.uuid4())
    doc = {"variables": {"uuid": quote(leg), "billmsec": "6000", "hangup_cause": "NORMAL%5FCLEARING"}}
    assert parse_body(json.dumps(doc).encode()).hangup_cause == "NORMAL_CLEARING"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'{"variables": []}',
        b'{"variables": {"uuid": "x"}}',
        json.dumps({"variables": {"uuid": str(uuid.uuid4()), "billmsec": "-5"}}).encode(),
        json.dumps({"variables": {"uuid": str(uuid.uuid4()), "billmsec": "1e9"}}).encode(),
        json.dumps({"variables": {"uuid": str(uuid.uuid4()), "billmsec": "9" * 40}}).encode(),
        json.dumps({"variables": {"uuid": str(uuid.uuid4()), "hangup_cause": "x'; DROP TABLE cdrs;--"}}).encode(),
        b"cdr=",
        b"cdr=%%%",
        b"\xff\xfe\x00",
    ],
)
def test_malformed_cdr_bodies_are_refused(body):
    with pytest.raises(BadCdr):
        parse_body(body)


def test_the_endpoint_answers_400_to_garbage_and_413_to_huge_bodies():
    store = CdrStore()
    endpoint = CdrEndpoint(("127.0.0.1", 0), store)
    endpoint.start()
    try:
        import http.client

        host, port = endpoint.address

        def post(body: bytes) -> int:
            conn = http.client.HTTPConnection(host, port, timeout=5)
            conn.request("POST", "/cdr", body=body, headers={"Content-Type": "application/json"})
            status = conn.getresponse().status
            conn.close()
            return status

        assert post(b"{nope") == 400
        assert post(b"x" * (2 * 1024 * 1024)) == 413
        assert post(json.dumps(cdr_doc(str(uuid.uuid4()), 0)).encode()) == 200
        assert len(store) == 1
    finally:
        endpoint.stop()


def test_the_endpoint_answers_503_while_the_database_is_away_so_freeswitch_retries():
    from cardd.errors import DatabaseUnavailable

    def away(record):
        raise DatabaseUnavailable("database unavailable: test")

    store = CdrStore()
    endpoint = CdrEndpoint(("127.0.0.1", 0), store, on_cdr=away)
    endpoint.start()
    try:
        import http.client

        conn = http.client.HTTPConnection(*endpoint.address, timeout=5)
        leg = str(uuid.uuid4())
        conn.request("POST", "/cdr", body=json.dumps(cdr_doc(leg, 1000)).encode())
        assert conn.getresponse().status == 503
        conn.close()
        assert store.get(leg) is not None  # and kept for the next orphan pass
    finally:
        endpoint.stop()


# -- the rule, one piece at a time ------------------------------------------------------


@pytest.fixture
def rig(ledger, demo_data, tmp_path):
    switch = Switch()
    inbound = switch.listen_inbound()
    journal = SettlementJournal(tmp_path / "j.jsonl", ledger)
    live: set[str] = set()
    reconciler = OrphanReconciler(
        ledger, journal, esl_address=inbound.address, esl_password="ClueCon", live_a_uuids=lambda: live
    )
    yield reconciler, ledger, demo_data, live
    inbound.stop()


def test_inbound_esl_client_authenticates_and_asks_uuid_exists():
    switch = Switch()
    inbound = switch.listen_inbound(password="s3cret")
    try:
        with InboundEsl(inbound.address, "s3cret") as esl:
            assert esl.uuid_exists(str(uuid.uuid4())) is False
        with pytest.raises(InboundEslError):
            InboundEsl(inbound.address, "wrong").connect()
    finally:
        inbound.stop()


def test_a_gone_call_without_a_cdr_is_settled_estimated_then_corrected_by_its_cdr(rig):
    reconciler, ledger, demo, _ = rig
    g = grant(ledger, demo.card_id)
    report = reconciler.run_once(startup=True)
    assert (report.estimated, report.from_cdr) == (1, 0)
    cdr = ledger.cdr(g.b_uuid)
    assert cdr.estimated and cdr.billed_seconds == 120 and cdr.cost == g.reserved
    assert ledger.get_card(demo.card_id).balance == D("10.00000") - g.reserved
    # The real CDR arrives: 31 s. One refund, the CDR is no longer estimated.
    assert reconciler.on_cdr(parse_body(json.dumps(cdr_doc(str(g.b_uuid), 31_000)).encode())) == "corrected"
    cdr = ledger.cdr(g.b_uuid)
    assert (cdr.estimated, cdr.billed_seconds, cdr.cost) == (False, 31, D("0.13600"))
    assert ledger.get_card(demo.card_id).balance == D("10.00000") - D("0.13600")
    # The same CDR again: nothing more.
    assert reconciler.on_cdr(parse_body(json.dumps(cdr_doc(str(g.b_uuid), 31_000)).encode())) == "already settled"
    assert ledger.get_card(demo.card_id).balance == D("10.00000") - D("0.13600")


def test_a_gone_call_whose_cdr_came_first_is_settled_from_it(rig):
    reconciler, ledger, demo, live = rig
    g = grant(ledger, demo.card_id)
    live.add(str(g.a_uuid))
    # While its call is live the CDR is only kept (the call settles itself) ...
    assert reconciler.on_cdr(parse_body(json.dumps(cdr_doc(str(g.b_uuid), 6_000)).encode())) == "live"
    assert ledger.open_reservations(demo.card_id) != []
    # ... and used by the next pass once the call is no longer live.
    live.clear()
    report = reconciler.run_once(startup=True)
    assert (report.from_cdr, report.estimated) == (1, 0)
    assert ledger.cdr(g.b_uuid).billed_seconds == 6


def test_nothing_is_settled_on_a_guess_when_freeswitch_cannot_be_asked(ledger, demo_data, tmp_path):
    journal = SettlementJournal(tmp_path / "j.jsonl", ledger)
    reconciler = OrphanReconciler(
        ledger, journal, esl_address=("127.0.0.1", free_port()), esl_password="ClueCon", live_a_uuids=set
    )
    g = grant(ledger, demo_data.card_id)
    report = reconciler.run_once(startup=True)
    assert (report.unknown, report.estimated) == (1, 0)
    assert [r.b_uuid for r in ledger.open_reservations(demo_data.card_id)] == [g.b_uuid]


def test_periodic_passes_only_look_at_expired_reservations(rig):
    reconciler, ledger, demo, _ = rig
    grant(ledger, demo.card_id, margin_s=3600)
    assert reconciler.run_once(startup=False).candidates == 0
    assert reconciler.run_once(startup=True).estimated == 1


# -- the crash ----------------------------------------------------------------------------


class Gate:
    """Stops a call's virtual clock once it is bridged, until released."""

    def __init__(self, switch: Switch):
        self.switch = switch
        self.bridged: dict[str, gevent.event.Event] = {}
        self.release_of: dict[str, gevent.event.Event] = {}
        switch.inbound.append(self)

    def offer(self, name, headers) -> None:
        if name != "CHANNEL_BRIDGE":
            return
        a = dict(headers).get("Unique-ID", "")
        found = self.switch.find(a)
        if found is None or found[0].a.uuid != a or a in self.bridged:
            return
        self.bridged[a] = gevent.event.Event()
        self.release_of[a] = gevent.event.Event()

        def hold() -> None:
            self.bridged[a].set()
            self.release_of[a].wait()

        found[0].clock.call_later(0.5, hold)

    def release(self, a_uuids) -> None:
        for a in a_uuids:
            self.release_of[a].set()


def kill(daemon: Daemon) -> None:
    """What SIGKILL leaves behind, in-process: the listener and every call's
    greenlet gone without a settlement, the background loops dead, the
    process's heartbeat row left to go stale."""
    daemon.server._server.close()
    gevent.killall(list(daemon.server.active), block=True, timeout=5)
    for part in (daemon.reconciler, daemon.cdr_endpoint):
        if part is not None:
            part.stop()
    daemon.journal.stop()
    daemon.nodes.stop(forget=False)
    # The reservation-gauge loop dies with the process too; left running, it
    # outlives the test database and logs "Database not started" forever.
    daemon._gauges.kill()
    daemon._gauges = None


def wait_dead(pool, node: str) -> None:
    """Until the other processes see `node` as dead (its heartbeat stale)."""
    from cardd.nodes import NodeRegistry

    observer = NodeRegistry(pool)
    deadline = time.monotonic() + 30
    while node not in observer.dead([node]):
        assert time.monotonic() < deadline, f"node {node} still alive"
        gevent.sleep(0.05)


CRED = "freeswitch:s3cret-cdr"


YAML = "calling_card:\n  max_call_duration: 120\n"


def test_cardd_killed_mid_bridge_every_reservation_is_settled_once_after_restart(database, tmp_path):
    demo = create_demo_data(database.pool, balance="10.00000")
    ledger = Ledger(database.pool)
    switch = Switch()
    inbound = switch.listen_inbound()
    cdr_port = free_port()
    poster = JsonCdrPoster(switch, f"http://127.0.0.1:{cdr_port}/cdr", retries=0, cred=CRED)
    gate = Gate(switch)
    settings = make_settings(
        YAML,
        tmp_path=tmp_path,
        data_dir=str(tmp_path / "var"),
        cdr_listen=f"127.0.0.1:{cdr_port}",
        inbound_esl=f"127.0.0.1:{inbound.address[1]}",
        cdr_credentials=CRED,
        node_heartbeat_interval=0.2,
    )
    began = time.monotonic()

    def start() -> Cardd:
        d = Daemon(settings, database=database, metrics=Metrics(), serve_metrics=False, serve_cdr=True)
        d.start()
        return Cardd(d)

    first = start()
    # Per group, 3 calls: (g1) end while cardd is dead, CDR re-posted later;
    # (g2) end at their sched_hangup while cardd is dead, CDR never delivered;
    # (g3) still up when cardd restarts.
    groups = {"g1": Callee(talk=45), "g2": Callee(talk=None), "g3": Callee(talk=45)}
    calls = {
        name: [
            first.dial(
                Caller(
                    cli="15555550100",
                    destination="cc",
                    digits=[demo.card_number + "#", demo.pin + "#", UK_MOBILE + "#"],
                    type_after=6,
                ),
                callee,
                switch,
            )
            for _ in range(3)
        ]
        for name, callee in groups.items()
    }
    a_of = {name: [c.a_uuid for c in cs] for name, cs in calls.items()}
    deadline = time.monotonic() + 60
    while len(gate.bridged) < 9 and time.monotonic() < deadline:
        gevent.sleep(0.05)
    for ev in gate.bridged.values():
        assert ev.wait(30)
    assert len(ledger.open_reservations(demo.card_id)) == 9

    first_node = first.daemon.nodes.node
    kill(first.daemon)
    # FreeSWITCH goes on: g1 and g2 end while nobody listens for their CDRs.
    gate.release(a_of["g1"] + a_of["g2"])
    ended = {name: [c.wait(60) for c in calls[name]] for name in ("g1", "g2")}
    poster.wait(60)
    b_of = {name: [t.bridges[0].b_uuid for t in ts] for name, ts in ended.items()}
    assert all(t.bridges[0].b_hangup_cause == "ALLOTTED_TIMEOUT" for t in ended["g2"])  # capture 16
    assert {d["variables"]["uuid"] for d in poster.failed} >= set(b_of["g1"] + b_of["g2"])
    assert len(ledger.open_reservations(demo.card_id)) == 9  # nobody settled anything

    wait_dead(database.pool, first_node)
    second = start()
    deadline = time.monotonic() + 30
    while second.daemon.reconciler.passes < 1 and time.monotonic() < deadline:
        gevent.sleep(0.05)
    report = second.daemon.reconciler.last
    assert (report.estimated, report.still_up, report.from_cdr) == (6, 3, 0)
    # g1's CDRs are re-posted (the operator replays mod_json_cdr's err-log-dir).
    for doc in [d for d in poster.failed if d["variables"]["uuid"] in b_of["g1"]]:
        assert poster.post(doc) == 200
    # g3 ends now; its CDRs reach the new cardd and settle it.
    gate.release(a_of["g3"])
    ended["g3"] = [c.wait(60) for c in calls["g3"]]
    b_of["g3"] = [t.bridges[0].b_uuid for t in ended["g3"]]
    deadline = time.monotonic() + 30
    while ledger.open_reservations(demo.card_id) and time.monotonic() < deadline:
        gevent.sleep(0.05)
    try:
        assert ledger.open_reservations(demo.card_id) == []  # 0 lost
        cdrs = {str(c.b_uuid): c for c in ledger.cdrs_for(demo.card_id, limit=100)}
        assert len(cdrs) == 9
        for name, ts in ended.items():
            for t in ts:
                c = cdrs[t.bridges[0].b_uuid]
                real = min(math.ceil(t.bridges[0].billmsec / 1000), 120)
                if name == "g2":
                    # Bounded by what cardd knew: the (wall-clock) time since B answered,
                    # not the 120 s grant (the simulator's clock is virtual).
                    assert c.estimated and c.billed_seconds <= math.ceil(time.monotonic() - began) < 120
                else:
                    assert not c.estimated and c.billed_seconds == real
        entries = ledger.ledger_entries(demo.card_id)
        for b, c in cdrs.items():  # 0 charged twice: each call's rows sum to its CDR
            assert -sum((e.amount for e in entries if str(e.b_uuid) == b), D(0)) == c.cost
        charged = sum((c.cost for c in cdrs.values()), D(0))
        debited = -sum((e.amount for e in entries if e.b_uuid is not None), D(0))
        assert charged == debited
        assert ledger.get_card(demo.card_id).balance == D("10.00000") - charged
        assert_money_holds(ledger, demo.card_id, D("10.00000"))
        assert second.metric("cardd_orphans_settled_total", how="estimated") == 6
        assert second.metric("cardd_orphans_settled_total", how="cdr") == 6
        # g1's estimates were below the real CDRs (the time since the answer, in wall
        # time): each correction charged the rest and was counted.
        assert second.metric("cardd_settlement_disagreements_total", kind="estimate_below_real") == 3
    finally:
        second.daemon.stop()
        poster.close()
        inbound.stop()


def test_the_background_check_settles_a_reservation_once_it_expires(ledger, demo_data, tmp_path):
    switch = Switch()
    inbound = switch.listen_inbound()
    journal = SettlementJournal(tmp_path / "j.jsonl", ledger)
    reconciler = OrphanReconciler(
        ledger, journal, esl_address=inbound.address, esl_password="ClueCon", live_a_uuids=set, interval=0.2
    )
    try:
        reconciler.start()
        deadline = time.monotonic() + 60
        while reconciler.passes < 1 and time.monotonic() < deadline:
            gevent.sleep(0.05)
        # Granted after the start-up pass: only its expiry (brought forward to 1 s from now,
        # instead of the 10 s grant) makes it a candidate.
        g = grant(ledger, demo_data.card_id, max_call_duration=10, min_call_duration=0)
        with ledger.pool.connection() as conn:
            conn.execute(
                "UPDATE reservations SET expires_at = now() + interval '1 second' WHERE b_uuid = %s", (g.b_uuid,)
            )
        assert ledger.cdr(g.b_uuid) is None
        deadline = time.monotonic() + 60
        while ledger.cdr(g.b_uuid) is None and time.monotonic() < deadline:
            gevent.sleep(0.1)
        cdr = ledger.cdr(g.b_uuid)
        assert cdr is not None and cdr.estimated and cdr.billed_seconds == 10
    finally:
        reconciler.stop()
        inbound.stop()


def test_cardd_starts_without_its_cdr_endpoint_when_the_port_is_taken(database, tmp_path, caplog):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = make_settings(data_dir=str(tmp_path / "var"), cdr_listen=f"127.0.0.1:{port}")
        d = Daemon(settings, database=database, metrics=Metrics(), serve_metrics=False, serve_cdr=True)
        d.start()
        try:
            assert d.cdr_endpoint is None and d.server is not None
            assert any("CDR endpoint cannot listen" in r.getMessage() for r in caplog.records)
        finally:
            d.stop()


def test_a_reservation_whose_settlement_waits_in_the_journal_is_left_to_the_replay(rig, tmp_path):
    reconciler, ledger, demo, _ = rig
    g = grant(ledger, demo.card_id)
    from cardd.billing.journal import Entry, _now

    reconciler.journal._append(
        Entry(
            id="f" * 32,
            b_uuid=str(g.b_uuid),
            billmsec=31_000,
            hangup_cause="NORMAL_CLEARING",
            answered_at=None,
            ended_at=_now(),
            estimated=False,
            journalled_at=_now(),
        )
    )
    assert reconciler.run_once(startup=True).candidates == 0
    assert reconciler.journal.replay() == 1
    cdr = ledger.cdr(g.b_uuid)
    assert (cdr.estimated, cdr.cost) == (False, D("0.13600"))
    assert [e.kind for e in ledger.ledger_entries(demo.card_id)].count("refund") == 0


# -- issue 12 section 2: an estimate is bounded by what cardd knew ----------------------


def assert_money_holds(ledger: Ledger, card_id: int, initial: D) -> None:
    """initial + top-ups - CDR costs = balance; nothing open; nothing negative."""
    assert ledger.open_reservations(card_id) == []
    entries = ledger.ledger_entries(card_id)
    topups = sum((e.amount for e in entries if e.kind in ("topup", "adjustment") and e.b_uuid is None), D(0))
    costs = sum((c.cost for c in ledger.cdrs_for(card_id, limit=1000)), D(0))
    balance = ledger.get_card(card_id).balance
    assert initial + topups - costs == balance
    assert balance >= 0


def dead_node_grant(ledger: Ledger, card_id: int, **kw):
    """A reservation of a cardd process that is gone (it never beats)."""
    ledger.node = f"gone:{uuid.uuid4().hex[:6]}"
    try:
        return grant(ledger, card_id, switchname="fs1", **kw)
    finally:
        ledger.node = None


@pytest.fixture
def node_rig(ledger, demo_data, tmp_path):
    from cardd.nodes import NodeRegistry

    switch = Switch(hostname="fs1")
    inbound = switch.listen_inbound()
    nodes = NodeRegistry(ledger.pool, interval=0.2)
    nodes.start()
    reconciler = OrphanReconciler(
        ledger,
        SettlementJournal(tmp_path / "j.jsonl", ledger),
        esl_address=inbound.address,
        esl_password="ClueCon",
        live_a_uuids=set,
        nodes=nodes,
    )
    yield reconciler, ledger, demo_data
    nodes.stop()
    inbound.stop()


def test_an_orphan_never_dialled_is_released_at_no_cost(node_rig):
    reconciler, ledger, demo = node_rig
    g = dead_node_grant(ledger, demo.card_id)
    assert reconciler.run_once().estimated == 1
    cdr = ledger.cdr(g.b_uuid)
    assert (cdr.cost, cdr.billed_seconds, cdr.estimated, cdr.hangup_cause) == (D(0), 0, False, "NOT_DIALLED")
    assert_money_holds(ledger, demo.card_id, D("10.00000"))


def test_an_orphan_dialled_but_never_answered_costs_nothing_until_its_cdr_says_otherwise(node_rig):
    reconciler, ledger, demo = node_rig
    g = dead_node_grant(ledger, demo.card_id)
    ledger.mark_dialled(g.b_uuid)
    reconciler.run_once()
    cdr = ledger.cdr(g.b_uuid)
    assert (cdr.cost, cdr.billed_seconds, cdr.estimated) == (D(0), 0, True)
    # Its CDR shows an answer cardd never got to record: the difference is charged, and counted.
    seen = []
    ledger.on_disagreement = lambda kind, *rest: seen.append(kind)
    reconciler.on_cdr(parse_body(json.dumps(cdr_doc(str(g.b_uuid), 31_000)).encode()))
    cdr = ledger.cdr(g.b_uuid)
    assert (cdr.cost, cdr.billed_seconds, cdr.estimated) == (D("0.13600"), 31, False)
    assert seen == ["estimate_below_real"]
    assert ledger.get_card(demo.card_id).balance == D("10.00000") - D("0.13600")
    assert_money_holds(ledger, demo.card_id, D("10.00000"))


def test_an_orphan_answered_31_s_ago_is_billed_at_most_the_time_since_not_its_grant(node_rig):
    reconciler, ledger, demo = node_rig
    g = dead_node_grant(ledger, demo.card_id)
    ledger.mark_dialled(g.b_uuid)
    ledger.mark_answered(g.b_uuid)
    with ledger.pool.connection() as conn:
        conn.execute(
            "UPDATE reservations SET answered_at = now() - interval '31 seconds' WHERE b_uuid = %s", (g.b_uuid,)
        )
    reconciler.run_once()
    cdr = ledger.cdr(g.b_uuid)
    assert cdr.estimated and 31 <= cdr.billed_seconds <= 33 < g.duration_s  # not the 120 s grant
    assert cdr.cost == D("0.13600")
    assert ledger.get_card(demo.card_id).balance == D("10.00000") - D("0.13600")
    assert_money_holds(ledger, demo.card_id, D("10.00000"))


def test_a_correction_above_an_estimate_never_takes_the_balance_below_zero(node_rig):
    reconciler, ledger, demo = node_rig
    g = dead_node_grant(ledger, demo.card_id)
    ledger.mark_dialled(g.b_uuid)
    reconciler.run_once()  # estimated at 0
    ledger.adjust(demo.card_id, "-9.95000")  # the credit is spent meanwhile: 0.05 left
    seen = []
    ledger.on_disagreement = lambda kind, *rest: seen.append(kind)
    reconciler.on_cdr(parse_body(json.dumps(cdr_doc(str(g.b_uuid), 31_000)).encode()))
    assert ledger.get_card(demo.card_id).balance == D("0.00000")
    assert ledger.cdr(g.b_uuid).cost == D("0.05000")  # what was charged, as the ledger says
    assert seen == ["estimate_below_real", "estimate_shortfall"]
    assert_money_holds(ledger, demo.card_id, D("10.00000"))
