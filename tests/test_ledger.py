"""Ledger against the real embedded PostgreSQL: grant, settle, CDRs, concurrency."""

import uuid
from decimal import Decimal as D

import gevent
import pytest

from cardd.billing import catalog
from cardd.billing.ledger import Ledger, ReservationNotFound
from cardd.billing.pins import hash_pin
from cardd.errors import (
    CardBlocked,
    CardExpired,
    ForbiddenDestination,
    InsufficientFunds,
    NoRate,
    TooManyCalls,
)
from tests.dbfixtures import create_demo_data, wait_until_serving


def grant(ledger, card_id, destination="4412345678", **kw):
    kw.setdefault("a_uuid", uuid.uuid4())
    kw.setdefault("b_uuid", uuid.uuid4())
    kw.setdefault("cli", "15550001")
    return ledger.grant(card_id, destination=destination, **kw)


def ledger_sum(database, card_id):
    with database.pool.connection() as conn:
        bal, total = conn.execute(
            "SELECT a.balance, coalesce(sum(l.amount), 0) FROM accounts a LEFT JOIN ledger l"
            " ON l.account_id = a.id WHERE a.id = %s GROUP BY a.balance",
            (card_id,),
        ).fetchone()
    return bal, total


def test_find_card_by_number_and_authname(ledger, database, demo_data):
    card = ledger.find_card(demo_data.card_number)
    assert card is not None and card.id == demo_data.card_id
    assert card.balance == D("10.00000") and card.currency == "USD" and card.status == "active"
    assert ledger.find_card("999") is None
    assert ledger.find_card(demo_data.card_number, by_authname=True) is None
    assert "pin_hash" not in repr(card) and "hmac" not in repr(card)


def test_verify_pin_accepts_only_the_right_pin(ledger, demo_data):
    card = ledger.find_card(demo_data.card_number)
    assert ledger.verify_pin(card, "4321")
    assert not ledger.verify_pin(card, "4322")
    assert not ledger.verify_pin(card, "")
    assert card.pin_hash.startswith("hmac-sha256$")
    assert hash_pin("4321") != hash_pin("4321")  # salted


def test_empty_pin_card_verifies_only_the_empty_pin(ledger, database, demo_data):
    catalog.create_card(database.pool, "555", tariff="demo", currency="USD", pin="", balance="1")
    card = ledger.find_card("555")
    assert not card.has_pin
    assert ledger.verify_pin(card, "")
    assert not ledger.verify_pin(card, "1")


def test_grant_uses_longest_prefix_and_reserves_the_max_cost(ledger, demo_data):
    g = grant(ledger, demo_data.card_id, "442071234567")
    # 4420: 0.03/min per 60 s; 10.00 buys 333 minutes -> capped at 3600 s, costing 1.80
    assert g.rate.prefix == "4420"
    assert g.duration_s == 3600
    assert g.reserved == D("1.80000")
    assert ledger.available_credit(demo_data.card_id) == D("8.20000")


def test_grant_spec_example_duration_from_available_credit(ledger, database, demo_data):
    ledger.adjust(demo_data.card_id, "-9.00", reference="test: leave 1.00")
    g = grant(ledger, demo_data.card_id, "4412345678")
    # the spec's worked example: C = 1.00 -> 900 s, reserved cost(900) = 1.00000
    assert (g.rate.prefix, g.duration_s, g.reserved, g.available) == ("44", 900, D("1.00000"), D("1.00000"))
    # a second call sees 0 available: nothing left
    with pytest.raises(InsufficientFunds):
        grant(ledger, demo_data.card_id, "4412345678")


def test_grant_refuses_forbidden_unknown_and_below_minimum(ledger, demo_data):
    with pytest.raises(ForbiddenDestination):
        grant(ledger, demo_data.card_id, "449012345")
    with pytest.raises(NoRate):
        grant(ledger, demo_data.card_id, "8612345")
    ledger.adjust(demo_data.card_id, "-9.90")  # 0.10 left: fee 0.10 + first 0.03 does not fit
    with pytest.raises(InsufficientFunds):
        grant(ledger, demo_data.card_id, "4412345678")
    assert ledger.open_reservations(demo_data.card_id) == []


def test_grant_enforces_the_per_card_call_limit(ledger, database, demo_data):
    with database.pool.connection() as conn:
        conn.execute("UPDATE accounts SET max_concurrent_calls = 2 WHERE id = %s", (demo_data.card_id,))
    first = grant(ledger, demo_data.card_id)
    grant(ledger, demo_data.card_id)
    with pytest.raises(TooManyCalls):
        grant(ledger, demo_data.card_id)
    ledger.settle(first.b_uuid, billmsec=None, hangup_cause="NO_ANSWER")
    grant(ledger, demo_data.card_id)


def test_grant_refuses_blocked_and_expired_cards(ledger, database, demo_data):
    with database.pool.connection() as conn:
        conn.execute("UPDATE accounts SET status = 'blocked' WHERE id = %s", (demo_data.card_id,))
    with pytest.raises(CardBlocked):
        grant(ledger, demo_data.card_id)
    with database.pool.connection() as conn:
        conn.execute(
            "UPDATE accounts SET status = 'active', expires_at = now() - interval '1 s' WHERE id = %s",
            (demo_data.card_id,),
        )
    with pytest.raises(CardExpired):
        grant(ledger, demo_data.card_id)


def test_new_card_is_activated_on_first_grant(ledger, database, demo_data):
    with database.pool.connection() as conn:
        conn.execute("UPDATE accounts SET status = 'new', valid_days = 30 WHERE id = %s", (demo_data.card_id,))
    grant(ledger, demo_data.card_id)
    card = ledger.get_card(demo_data.card_id)
    assert card.status == "active" and card.expires_at is not None


def test_settle_bills_the_spec_example_and_writes_the_cdr(ledger, database, demo_data):
    g = grant(
        ledger,
        demo_data.card_id,
        "4412345678",
        translated_destination="4412345678",
        cli="0201234",
        translated_cli="44201234",
    )
    cdr = ledger.settle(g.b_uuid, billmsec=30_400, hangup_cause="NORMAL_CLEARING")
    # ceil(30.4) = 31 s -> 0.10 + 0.03 + 0.006 = 0.13600
    assert (cdr.billed_seconds, cdr.cost) == (31, D("0.13600"))
    assert (cdr.cli, cdr.translated_cli, cdr.cld, cdr.rate_prefix) == ("0201234", "44201234", "4412345678", "44")
    assert cdr.hangup_cause == "NORMAL_CLEARING" and not cdr.estimated and cdr.answered_at is not None
    assert ledger.get_card(demo_data.card_id).balance == D("9.86400")
    assert ledger.available_credit(demo_data.card_id) == D("9.86400")
    assert ledger.cdrs_for(demo_data.card_id) == [cdr]


def test_settling_twice_charges_once(ledger, database, demo_data):
    g = grant(ledger, demo_data.card_id)
    first = ledger.settle(g.b_uuid, billmsec=61_000, hangup_cause="NORMAL_CLEARING")
    again = ledger.settle(g.b_uuid, billmsec=999_000, hangup_cause="NORMAL_CLEARING")
    assert again == first
    assert len(ledger.cdrs_for(demo_data.card_id)) == 1
    calls = [e for e in ledger.ledger_entries(demo_data.card_id) if e.kind == "call"]
    assert len(calls) == 1 and calls[0].amount == -first.cost


def test_billed_seconds_never_exceed_the_grant(ledger, database, demo_data):
    ledger.adjust(demo_data.card_id, "-9.00")
    g = grant(ledger, demo_data.card_id, "4412345678")
    assert g.duration_s == 900
    # sched_hangup overshot by 0.7 s: billed 900, not 901
    cdr = ledger.settle(g.b_uuid, billmsec=900_700, hangup_cause="ALLOTTED_TIMEOUT")
    assert (cdr.billed_seconds, cdr.cost) == (900, D("1.00000"))
    assert ledger.get_card(demo_data.card_id).balance == D("0.00000")


def test_unanswered_attempt_writes_a_zero_cost_cdr(ledger, demo_data):
    g = grant(ledger, demo_data.card_id)
    cdr = ledger.settle(g.b_uuid, billmsec=None, hangup_cause="USER_BUSY")
    assert (cdr.billed_seconds, cdr.cost, cdr.answered_at) == (0, D("0.00000"), None)
    assert ledger.get_card(demo_data.card_id).balance == D("10.00000")
    assert ledger.open_reservations(demo_data.card_id) == []


def test_estimated_settlement_bills_the_granted_duration(ledger, demo_data):
    g = grant(ledger, demo_data.card_id, "12125550000", max_call_duration=120)
    cdr = ledger.settle(g.b_uuid, billmsec=None, hangup_cause="ORPHAN", estimated=True)
    # 1: 0.60 for the first 60 s, then 0.01/s: 120 s -> 0.60 + 60 * 0.01 = 1.20
    assert (cdr.billed_seconds, cdr.cost, cdr.estimated) == (120, D("1.20000"), True)
    assert cdr.cost == g.reserved


def test_settle_of_an_unknown_call_is_an_error(ledger, demo_data):
    with pytest.raises(ReservationNotFound):
        ledger.settle(uuid.uuid4(), billmsec=1000, hangup_cause="NORMAL_CLEARING")


def test_service_plan_seconds_are_used_first_and_consumed(ledger, database, demo_data):
    with database.pool.connection() as conn:
        plan_id = conn.execute("INSERT INTO service_plans (name) VALUES ('p') RETURNING id").fetchone()[0]
        conn.execute("INSERT INTO service_plan_minutes VALUES (%s, '44', 2)", (plan_id,))
        conn.execute("UPDATE accounts SET service_plan_id = %s WHERE id = %s", (plan_id, demo_data.card_id))
    ledger.adjust(demo_data.card_id, "-9.00")
    g = grant(ledger, demo_data.card_id, "4412345678")
    # 900 s from 1.00 + 120 plan seconds
    assert (g.duration_s, g.plan_seconds, g.reserved) == (1020, 120, D("1.00000"))
    cdr = ledger.settle(g.b_uuid, billmsec=151_000, hangup_cause="NORMAL_CLEARING")
    # 151 - 120 = 31 s rated as a 31 s call: 0.13600
    assert (cdr.plan_seconds_used, cdr.cost) == (120, D("0.13600"))
    g2 = grant(ledger, demo_data.card_id, "4412345678")
    assert g2.plan_seconds == 0


def test_balance_always_equals_the_sum_of_its_ledger(ledger, database, demo_data):
    for ms in (0, 1, 30_000, 31_000, 600_000):
        g = grant(ledger, demo_data.card_id)
        ledger.settle(g.b_uuid, billmsec=ms, hangup_cause="NORMAL_CLEARING")
    ledger.adjust(demo_data.card_id, "5", kind="topup")
    balance, total = ledger_sum(database, demo_data.card_id)
    assert balance == total
    entries = ledger.ledger_entries(demo_data.card_id)
    assert entries[-1].balance_after == balance


def test_ledger_rows_cannot_be_edited(ledger, database, demo_data):
    import psycopg

    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        with database.pool.connection() as conn:
            conn.execute("UPDATE ledger SET amount = 1000")


def _grant_and_settle(ledger, card_id, talk_ms, results, errors):
    try:
        g = ledger.grant(
            card_id,
            a_uuid=uuid.uuid4(),
            b_uuid=uuid.uuid4(),
            destination="4412345678",
            cli="1",
            min_call_duration=10,
            max_call_duration=120,
        )
    except InsufficientFunds:
        results.append(None)
        return
    except Exception as exc:  # surfaced by the test
        errors.append(exc)
        return
    # talk past the grant on purpose: the bill must still stop at the grant
    cdr = ledger.settle(g.b_uuid, billmsec=min(talk_ms, g.duration_s * 1000 + 900), hangup_cause="X")
    results.append((g, cdr))


def test_fifty_concurrent_calls_on_one_card_never_overspend(database, ledger):
    # 120 s calls reserve 0.10 + 0.03 + 15 * 0.006 = 0.22 each: about 13 fit at once in 3.00,
    # so grants race each other for the last of the credit while others settle.
    demo = create_demo_data(database.pool, balance="3.00")
    results: list = []
    errors: list = []
    talks = [(i * 7919) % 130_000 + 1000 for i in range(50)]
    jobs = [gevent.spawn(_grant_and_settle, ledger, demo.card_id, t, results, errors) for t in talks]
    gevent.joinall(jobs, raise_error=True)
    assert errors == []
    assert len(results) == 50
    done = [r for r in results if r is not None]
    assert done, "some calls must have been granted"
    charged = sum((cdr.cost for _, cdr in done), D(0))
    for g, cdr in done:
        assert cdr.cost <= g.reserved <= g.available  # every call got a duration it could pay for
    balance, total = ledger_sum(database, demo.card_id)
    assert charged <= D("3.00")
    assert balance == D("3.00") - charged == total
    assert balance >= 0
    assert ledger.open_reservations(demo.card_id) == []


def test_real_cdr_corrects_an_estimated_settlement_by_a_refund_once(ledger, database, demo_data):
    g = grant(ledger, demo_data.card_id, "12125550000", max_call_duration=120)
    est = ledger.settle(g.b_uuid, billmsec=None, hangup_cause="ORPHAN", estimated=True)
    assert est.cost == D("1.20000")
    # the call really lasted 70.2 s: 0.60 + 11 * 0.01 = 0.71; refund 0.49
    real = ledger.settle(g.b_uuid, billmsec=70_200, hangup_cause="NORMAL_CLEARING")
    assert (real.billed_seconds, real.cost, real.estimated) == (71, D("0.71000"), False)
    again = ledger.settle(g.b_uuid, billmsec=70_200, hangup_cause="NORMAL_CLEARING")
    assert again == real
    kinds = [(e.kind, e.amount) for e in ledger.ledger_entries(demo_data.card_id)]
    assert kinds == [("initial", D("10.00000")), ("call", D("-1.20000")), ("refund", D("0.49000"))]
    assert ledger.get_card(demo_data.card_id).balance == D("9.29000")
    balance, total = ledger_sum(database, demo_data.card_id)
    assert balance == total


def test_a_lost_database_is_database_unavailable(private_pg_server):
    from cardd.db import Database
    from cardd.errors import DatabaseUnavailable

    db = Database(private_pg_server.dsn, pool_timeout=1.0)
    db.migrate()
    demo = create_demo_data(db.pool)
    ledger = Ledger(db.pool)
    g = grant(ledger, demo.card_id)
    private_pg_server.stop()
    try:
        with pytest.raises(DatabaseUnavailable):
            ledger.settle(g.b_uuid, billmsec=31_000, hangup_cause="NORMAL_CLEARING")
        with pytest.raises(DatabaseUnavailable):
            ledger.available_credit(demo.card_id)
        # back up: the same call settles once, as the journal replay will do it
        private_pg_server.start()
        wait_until_serving(db)
        cdr = ledger.settle(g.b_uuid, billmsec=31_000, hangup_cause="NORMAL_CLEARING")
        assert cdr.cost == D("0.13600")
    finally:
        db.close()


def _statements_sent(monkeypatch):
    """Every statement and transaction command psycopg sends from now on: the pool's
    connections are in autocommit, so each one is one round trip."""
    import psycopg

    sent: list[str] = []
    execute, command = psycopg.Cursor.execute, psycopg.Connection._exec_command

    def counted_execute(self, query, *args, **kwargs):
        sent.append(str(query)[:60])
        return execute(self, query, *args, **kwargs)

    def counted_command(self, command_, *args, **kwargs):
        sent.append(str(command_)[:60])
        return command(self, command_, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", counted_execute)
    monkeypatch.setattr(psycopg.Connection, "_exec_command", counted_command)
    return sent


def test_grant_is_two_round_trips_and_its_own_settlement_one(ledger, demo_data, monkeypatch):
    sent = _statements_sent(monkeypatch)
    g = grant(ledger, demo_data.card_id, "442071234567")
    assert len(sent) == 2, sent  # the snapshot, then cardd_reserve
    sent.clear()
    cdr = ledger.settle(g.b_uuid, billmsec=31_000, hangup_cause="NORMAL_CLEARING")
    assert len(sent) == 1, sent  # cardd_settle_granted
    assert (cdr.billed_seconds, cdr.cost) == (31, D("0.03000"))  # 4420: 0.03 per started minute


def test_grant_prices_again_when_another_call_took_the_credit_meanwhile(ledger, database, demo_data, monkeypatch):
    from cardd.billing import ledger as ledger_module

    ledger.adjust(demo_data.card_id, "-9.00", reference="test: leave 1.00")
    other = Ledger(database.pool)
    priced = []
    real_price = ledger_module._price

    def racing_price(*args, **kwargs):
        price = real_price(*args, **kwargs)
        priced.append(price.available)
        if len(priced) == 1:
            # Between this grant's snapshot and its write, another call on the card takes 300 s.
            grant(other, demo_data.card_id, "4412345678", max_call_duration=300)
        return price

    monkeypatch.setattr(ledger_module, "_price", racing_price)
    g = grant(ledger, demo_data.card_id, "4412345678")
    taken = [r.amount for r in ledger.open_reservations(demo_data.card_id) if r.b_uuid != g.b_uuid]
    assert priced[0] == D("1.00000") and priced[-1] == D("1.00000") - taken[0]
    # priced again on what was left: never more than the card has
    assert g.available == D("1.00000") - taken[0] and g.reserved <= g.available
    assert sum(taken) + g.reserved <= D("1.00000")


def test_a_call_settled_by_another_process_is_not_charged_again_by_its_own_settlement(ledger, database, demo_data):
    g = grant(ledger, demo_data.card_id)
    first = Ledger(database.pool).settle(g.b_uuid, billmsec=61_000, hangup_cause="NORMAL_CLEARING")
    again = ledger.settle(g.b_uuid, billmsec=61_000, hangup_cause="NORMAL_CLEARING")
    assert again == first
    calls = [e for e in ledger.ledger_entries(demo_data.card_id) if e.kind == "call"]
    assert len(calls) == 1 and calls[0].amount == -first.cost


@pytest.mark.parametrize(
    "billmsec, cause, answered",
    [
        (30_400, "NORMAL_CLEARING", None),
        (900_700, "ALLOTTED_TIMEOUT", None),
        (0, "NO_ANSWER", None),
        (None, "USER_BUSY", None),
        (151_000, "NORMAL_CLEARING", "given"),
    ],
)
def test_a_calls_own_settlement_writes_what_the_general_path_writes(
    ledger, database, demo_data, billmsec, cause, answered
):
    """The one-statement settlement of a call this process granted and the general path
    (a CDR arriving at another process) write the same CDR and charge the same."""
    from datetime import UTC, datetime, timedelta

    ledger.adjust(demo_data.card_id, "-8.00")
    twin_id = catalog.create_card(database.pool, "555", tariff="demo", currency="USD", pin="1", balance="2")
    with database.pool.connection() as conn:
        plan_id = conn.execute("INSERT INTO service_plans (name) VALUES ('p') RETURNING id").fetchone()[0]
        conn.execute("INSERT INTO service_plan_minutes VALUES (%s, '44', 2)", (plan_id,))
        conn.execute("UPDATE accounts SET service_plan_id = %s", (plan_id,))
    ended = datetime(2026, 12, 7, 12, 0, 0, tzinfo=UTC)
    answered_at = ended - timedelta(seconds=200) if answered else None
    cdrs = []
    # Two cards alike: one settled by the process that granted it, one by another.
    for card_id, settler in ((demo_data.card_id, ledger), (twin_id, Ledger(database.pool))):
        g = grant(ledger, card_id, "4412345678", max_call_duration=900)
        cdrs.append(
            settler.settle(g.b_uuid, billmsec=billmsec, hangup_cause=cause, answered_at=answered_at, ended_at=ended)
        )
    fields = (
        "billed_seconds", "plan_seconds_used", "cost", "hangup_cause", "estimated", "granted_seconds",
        "rate_prefix", "answered_at", "ended_at", "buy_cost", "margin", "currency",
    )  # fmt: skip
    own, general = ({f: getattr(c, f) for f in fields} for c in cdrs)
    assert own == general
    for card_id in (demo_data.card_id, twin_id):
        balance, total = ledger_sum(database, card_id)
        assert balance == total == D("2.00000") - cdrs[0].cost


def test_grants_kept_for_their_settlement_are_bounded_and_the_oldest_settle_by_the_general_path(
    ledger, database, demo_data, monkeypatch
):
    from cardd.billing import ledger as ledger_module

    monkeypatch.setattr(ledger_module, "MAX_GRANTS_HELD", 2)
    grants = [grant(ledger, demo_data.card_id) for _ in range(3)]
    assert len(ledger._granted) == 2 and grants[0].b_uuid not in ledger._granted
    # The one forgotten is settled all the same, once, by the general path.
    cdrs = [ledger.settle(g.b_uuid, billmsec=61_000, hangup_cause="NORMAL_CLEARING") for g in grants]
    assert len({c.cost for c in cdrs}) == 1 and not ledger._granted
    balance, total = ledger_sum(database, demo_data.card_id)
    assert balance == total == D("10.00000") - 3 * cdrs[0].cost
