"""Least-cost routing through `cardd serve` (in-process) and the FreeSWITCH
simulator: which carrier gateway each bridge went to, what the callee's answer
did to the next carrier, what the CDRs say the call cost the business.

Sell side: the demo tariff (tests/dbfixtures.py): 44 = 0.06/min, 30 s then 6 s,
connect fee 0.10 (a 31 s call sells for 0.13600; its first minute for 0.16000);
4420 = 0.03/min per minute. A callee who talks 30 s leaves billmsec 30020, as on the
real switch: 31 billed seconds. Buy side, three carriers for 44:

    cheap  0.031/min per second   first minute 0.03100   (and 4420 at 0.05/min)
    mid    0.035/min per minute   first minute 0.03500
    dear   0.045/min per minute   first minute 0.04500
"""

from __future__ import annotations

import io
import uuid
from decimal import Decimal

import pytest

from cardd.billing import carriers
from cardd.billing.ledger import Ledger
from cardd.billing.rate_import import CARRIER_DECK, import_rates
from cardd.errors import NoRoute
from cardd.sim import Callee
from tests.dbfixtures import create_demo_data
from tests.test_flow_calls import LONDON, UK_MOBILE, balance, bridge_args, card_caller, dial_vars

DECKS = {
    "cheap": "prefix,price_1,interval_1,price_n,interval_n\n44,0.031,1,0.031,1\n4420,0.05,60,0.05,60\n",
    "mid": "prefix,price_1,interval_1,price_n,interval_n\n44,0.035,60,0.035,60\n",
    "dear": "prefix,price_1,interval_1,price_n,interval_n\n44,0.045,60,0.045,60\n",
}


def gateway(name: str, number: str = UK_MOBILE, n: int = 1) -> str:
    return f"sofia/gateway/{name}{'' if n == 1 else n}/{number}"


def add_carriers(
    pool,
    *,
    limits: dict[str, int] | None = None,
    gateways: dict[str, int] | None = None,
    priority: dict[str, int] | None = None,
) -> None:
    """The three carriers of the module docstring (dear first, so insertion order is not price order)."""
    for name in ("dear", "mid", "cheap"):
        count = (gateways or {}).get(name, 1)
        carriers.create_carrier(
            pool,
            name,
            currency="USD",
            gateways=[f"sofia/gateway/{name}{'' if i == 1 else i}/{{number}}" for i in range(1, count + 1)],
            priority=(priority or {}).get(name, 100),
            channel_limit=(limits or {}).get(name),
        )
        import_rates(pool, name, io.StringIO(DECKS[name]), deck=CARRIER_DECK)


def endpoints(transcript) -> list[str]:
    return [dial[dial.index("}") + 1 :] for dial in bridge_args(transcript)]


def cdrs_by_time(ledger, card_id):
    return list(reversed(ledger.cdrs_for(card_id)))


@pytest.fixture
def routed(database, demo_data):
    add_carriers(database.pool)
    return demo_data


def test_cheapest_carrier_carries_the_call_and_the_cdr_has_its_buy_cost_and_margin(cardd, routed, ledger):
    t = cardd.call(card_caller(routed, UK_MOBILE + "#"), {gateway("cheap"): Callee(talk=30)})
    assert endpoints(t) == [gateway("cheap")]
    # The card's grant bounds the call, whatever the carrier: 10.00 caps at max_call_duration.
    assert dial_vars(bridge_args(t)[0])["execute_on_answer_1"] == "'sched_hangup +3600 ALLOTTED_TIMEOUT'"
    (cdr,) = ledger.cdrs_for(routed.card_id)
    assert (cdr.carrier, cdr.gateway) == ("cheap", "sofia/gateway/cheap/{number}")
    # sell: 0.10 + 0.06*30/60 + 0.06*6/60 = 0.136; buy: 31 * 0.031/60 = 0.0160166... -> 0.01602
    assert (cdr.billed_seconds, cdr.cost, cdr.buy_cost, cdr.margin) == (
        31,
        Decimal("0.13600"),
        Decimal("0.01602"),
        Decimal("0.11998"),
    )
    assert balance(ledger, routed) == Decimal("9.86400")
    assert cardd.metric("cardd_carrier_attempts_total", carrier="cheap") == 1
    assert cardd.metric("cardd_carrier_answers_total", carrier="cheap") == 1
    assert cardd.metric("cardd_carrier_talk_seconds_total", carrier="cheap") == 31
    assert cardd.metric("cardd_carrier_buy_cost_total", carrier="cheap", currency="USD") == pytest.approx(0.01602)
    assert cardd.metric("cardd_carrier_margin", carrier="cheap", currency="USD") == pytest.approx(0.11998)


def test_busy_callee_on_the_cheapest_carrier_is_not_retried_on_the_others(cardd, routed, ledger):
    t = cardd.call(
        card_caller(routed, UK_MOBILE + "#", destination="cc.noredial"),
        {gateway("cheap"): Callee(outcome="busy"), gateway("mid"): Callee(talk=30), gateway("dear"): Callee(talk=30)},
    )
    assert endpoints(t) == [gateway("cheap")]
    assert "destination_busy" in cardd.heard(t)
    (cdr,) = ledger.cdrs_for(routed.card_id)
    assert (cdr.carrier, cdr.hangup_cause, cdr.cost, cdr.buy_cost, cdr.margin) == (
        "cheap",
        "USER_BUSY",
        Decimal("0"),
        Decimal("0"),
        Decimal("0"),
    )
    assert cardd.metric("cardd_carrier_failovers_total", carrier="cheap") == 0


def test_no_answer_on_the_cheapest_carrier_is_not_retried_either(cardd, routed, ledger):
    t = cardd.call(
        card_caller(routed, UK_MOBILE + "#", destination="cc.noredial"),
        {gateway("cheap"): Callee(outcome="no_answer"), gateway("mid"): Callee(talk=30)},
    )
    assert endpoints(t) == [gateway("cheap")]
    assert "no_answer" in cardd.heard(t)


def test_unreachable_cheapest_carrier_hands_the_call_to_the_next(cardd, routed, ledger):
    t = cardd.call(
        card_caller(routed, UK_MOBILE + "#", destination="cc.noredial"),
        {gateway("cheap"): Callee(outcome="unreachable"), gateway("mid"): Callee(talk=30)},
    )
    assert endpoints(t) == [gateway("cheap"), gateway("mid")]
    # Each attempt has its own B leg, reservation and CDR; both carry the card's own limit.
    first, second = (dial_vars(d) for d in bridge_args(t))
    assert first["origination_uuid"] != second["origination_uuid"]
    assert first["execute_on_answer_1"] == second["execute_on_answer_1"] == "'sched_hangup +3600 ALLOTTED_TIMEOUT'"
    failed, carried = cdrs_by_time(ledger, routed.card_id)
    assert (failed.carrier, failed.hangup_cause, failed.cost) == ("cheap", "NORMAL_TEMPORARY_FAILURE", Decimal("0"))
    # mid bills per minute: 31 s = one minute at 0.035; margin 0.136 - 0.035
    assert (carried.carrier, carried.cost, carried.buy_cost, carried.margin) == (
        "mid",
        Decimal("0.13600"),
        Decimal("0.03500"),
        Decimal("0.10100"),
    )
    assert balance(ledger, routed) == Decimal("9.86400")
    assert ledger.open_reservations(routed.card_id) == []
    assert "destination_busy" not in cardd.heard(t) and "call_failed" not in cardd.heard(t)
    assert cardd.metric("cardd_carrier_failovers_total", carrier="cheap") == 1
    assert cardd.metric("cardd_carrier_attempts_total", carrier="mid") == 1


def test_every_carrier_unreachable_says_the_call_failed_after_trying_each_once(cardd, routed, ledger):
    t = cardd.call(
        card_caller(routed, UK_MOBILE + "#", destination="cc.noredial"), {"*": Callee(outcome="unreachable")}
    )
    assert endpoints(t) == [gateway("cheap"), gateway("mid"), gateway("dear")]
    assert "call_failed" in cardd.heard(t)
    assert [c.carrier for c in cdrs_by_time(ledger, routed.card_id)] == ["cheap", "mid", "dear"]
    assert balance(ledger, routed) == Decimal("10.00000")
    # Answers exist at 0 for carriers that never answered: their ASR is 0, not missing.
    for name in ("cheap", "mid", "dear"):
        assert cardd.metrics.registry.get_sample_value("cardd_carrier_answers_total", {"carrier": name}) == 0.0
        assert cardd.metric("cardd_carrier_attempts_total", carrier=name) == 1


def test_a_carriers_gateways_are_tried_in_order_before_the_next_carrier(cardd, database, demo_data, ledger):
    add_carriers(database.pool, gateways={"cheap": 2})
    t = cardd.call(
        card_caller(demo_data, UK_MOBILE + "#", destination="cc.noredial"),
        {gateway("cheap"): Callee(outcome="unreachable"), gateway("cheap", n=2): Callee(talk=30)},
    )
    assert endpoints(t) == [gateway("cheap"), gateway("cheap", n=2)]
    _, carried = cdrs_by_time(ledger, demo_data.card_id)
    assert (carried.carrier, carried.gateway) == ("cheap", "sofia/gateway/cheap2/{number}")


def test_carrier_at_its_channel_limit_is_skipped(cardd, database, demo_data, ledger):
    add_carriers(database.pool, limits={"cheap": 1})
    # Another card's call holds cheap's one channel (an open reservation routed to it).
    other = create_demo_data(database.pool, tariff="other", card_number="5550002222")
    held = ledger.grant(other.card_id, a_uuid=uuid.uuid4(), b_uuid=uuid.uuid4(), destination=UK_MOBILE)
    assert held.route.carrier == "cheap"
    t = cardd.call(
        card_caller(demo_data, UK_MOBILE + "#", destination="cc.noredial"),
        {gateway("cheap"): Callee(talk=30), gateway("mid"): Callee(talk=30)},
    )
    assert endpoints(t) == [gateway("mid")]
    (cdr,) = ledger.cdrs_for(demo_data.card_id)
    assert cdr.carrier == "mid"
    # Once that call ends, cheap takes calls again.
    ledger.settle(held.b_uuid, billmsec=5000, hangup_cause="NORMAL_CLEARING")
    t = cardd.call(
        card_caller(demo_data, UK_MOBILE + "#", destination="cc.noredial"), {gateway("cheap"): Callee(talk=30)}
    )
    assert endpoints(t) == [gateway("cheap")]


def test_disabled_carrier_is_skipped(cardd, routed, database, ledger):
    carriers.set_enabled(database.pool, "cheap", False)
    t = cardd.call(card_caller(routed, UK_MOBILE + "#", destination="cc.noredial"), {gateway("mid"): Callee(talk=30)})
    assert endpoints(t) == [gateway("mid")]


def test_equal_first_minutes_go_to_the_lower_priority_number(cardd, database, demo_data, ledger):
    for name, priority in (("b_second", 20), ("a_first", 10)):
        carriers.create_carrier(
            database.pool, name, currency="USD", gateways=[f"sofia/gateway/{name}/{{number}}"], priority=priority
        )
        import_rates(database.pool, name, io.StringIO(DECKS["mid"]), deck=CARRIER_DECK)
    t = cardd.call(
        card_caller(demo_data, UK_MOBILE + "#", destination="cc.noredial"), {"*": Callee(outcome="unreachable")}
    )
    assert endpoints(t) == [gateway("a_first"), gateway("b_second")]


def test_destination_cheaper_to_sell_than_to_buy_is_refused(cardd, routed, ledger):
    # London sells at 0.03/min; every carrier's longest prefix for it buys dearer.
    t = cardd.call(card_caller(routed, LONDON + "#", destination="cc.noredial"), Callee(talk=30))
    assert bridge_args(t) == []
    assert "destination_unavailable" in cardd.heard(t)
    assert ledger.cdrs_for(routed.card_id) == []
    assert ledger.open_reservations(routed.card_id) == []


def test_route_at_a_loss_lets_the_cheapest_carrier_take_it_and_the_margin_is_negative(
    cardd_with, database, routed, ledger, tmp_path
):
    running = cardd_with(database, "calling_card:\n  route_at_a_loss: true\n", tmp_path=tmp_path)
    t = running.call(
        card_caller(routed, LONDON + "#", destination="cc.noredial"), {gateway("mid", LONDON): Callee(talk=30)}
    )
    # cheap's longest prefix for London is 4420 at 0.05: mid's 44 at 0.035 is cheaper.
    assert endpoints(t) == [gateway("mid", LONDON)]
    (cdr,) = ledger.cdrs_for(routed.card_id)
    assert (cdr.cost, cdr.buy_cost, cdr.margin) == (Decimal("0.03000"), Decimal("0.03500"), Decimal("-0.00500"))


def test_destination_no_carrier_rates_is_unavailable_not_a_crash(cardd, routed, ledger):
    t = cardd.call(card_caller(routed, "15551234567#", destination="cc.noredial"), Callee(talk=30))
    assert bridge_args(t) == []
    assert "destination_unavailable" in cardd.heard(t)
    assert t.hangup_cause == "NORMAL_CLEARING"


def test_without_carriers_the_dial_string_template_is_dialled_as_before(cardd, demo_data, ledger):
    t = cardd.call(card_caller(demo_data, UK_MOBILE + "#"), Callee(talk=30))
    (dial,) = bridge_args(t)
    assert dial.endswith(f"sofia/external/{UK_MOBILE}@198.51.100.7:5060")
    (cdr,) = ledger.cdrs_for(demo_data.card_id)
    assert (cdr.cost, cdr.carrier, cdr.gateway, cdr.buy_cost, cdr.margin) == (
        Decimal("0.13600"),
        None,
        None,
        None,
        None,
    )


def test_a_carrier_in_another_currency_is_not_a_route(database, demo_data, ledger):
    carriers.create_carrier(database.pool, "euro", currency="EUR", gateways=["sofia/gateway/euro/{number}"])
    import_rates(database.pool, "euro", io.StringIO(DECKS["cheap"]), deck=CARRIER_DECK)
    with pytest.raises(NoRoute):
        ledger.grant(demo_data.card_id, a_uuid=uuid.uuid4(), b_uuid=uuid.uuid4(), destination=UK_MOBILE)
    assert ledger.open_reservations(demo_data.card_id) == []


def test_estimated_settlement_corrected_by_the_real_cdr_corrects_buy_cost_and_margin(routed, ledger):
    grant = ledger.grant(
        routed.card_id, a_uuid=uuid.uuid4(), b_uuid=uuid.uuid4(), destination=UK_MOBILE, max_call_duration=120
    )
    estimate = ledger.settle(grant.b_uuid, billmsec=None, hangup_cause="", estimated=True)
    assert estimate.carrier == "cheap"
    real = ledger.settle(grant.b_uuid, billmsec=31_000, hangup_cause="NORMAL_CLEARING")
    assert (real.cost, real.buy_cost, real.margin) == (Decimal("0.13600"), Decimal("0.01602"), Decimal("0.11998"))


def test_channel_limit_holds_across_two_ledgers_granting_at_once(dsn, routed, database):
    """Two cardd processes (two pools) grant at the same moment on a carrier with one
    channel left: the row lock makes the second count the first's reservation."""
    import threading

    from cardd.db import Database

    with database.pool.connection() as conn:
        conn.execute("UPDATE carriers SET channel_limit = 1 WHERE name = 'cheap'")
    others = [create_demo_data(database.pool, tariff=f"t{i}", card_number=f"55500000{i:02d}") for i in range(8)]
    dbs = [Database(dsn, pool_size=4) for _ in range(2)]
    routes: list[str] = []
    barrier = threading.Barrier(len(others))

    def grant(i: int) -> None:
        db = dbs[i % 2]
        barrier.wait()
        g = Ledger(db.pool).grant(others[i].card_id, a_uuid=uuid.uuid4(), b_uuid=uuid.uuid4(), destination=UK_MOBILE)
        routes.append(g.route.carrier)

    try:
        for db in dbs:
            db.start()
        threads = [threading.Thread(target=grant, args=(i,)) for i in range(len(others))]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        for db in dbs:
            db.close()
    assert sorted(routes) == ["cheap"] + ["mid"] * (len(others) - 1)


def test_every_carriers_counters_exist_at_zero_from_the_start(database, demo_data, cardd_with):
    """The ASR alert uses increase(): a carrier's first attempt is seen only when its
    series existed, at zero, before it (like the currencies' money counters)."""
    add_carriers(database.pool)
    cardd = cardd_with(database)
    samples = cardd.metrics.registry
    for name in ("cheap", "mid", "dear"):
        for family in (
            "cardd_carrier_attempts_total",
            "cardd_carrier_answers_total",
            "cardd_carrier_failovers_total",
            "cardd_carrier_talk_seconds_total",
        ):
            assert samples.get_sample_value(family, {"carrier": name}) == 0.0, (family, name)
