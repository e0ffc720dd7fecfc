"""Issue 14: a caller's identification in three round trips, with issue 12's guarantee intact.

A PIN is checked in Python (an HMAC: pure, constant time) and the throttle's verdict on it is
one statement (schema/012, cardd.billing.identity.verdict): the same advisory locks as gate,
the counts after them, a refusal that records nothing (and whose PIN result is discarded), a
failure recorded in every bucket before the locks are released. The card number's look-up
carries the courtesy count of its PIN buckets (identity.card_for_pin), and the verdict brings
the card back with its available credit, which the minimum-balance check and the balance said
after identification use.

Demo card (tests/dbfixtures.py): 1234567890, PIN 4321, 10.00 USD."""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from decimal import Decimal

import gevent
import psycopg
import pytest

from cardd import speech
from cardd.billing import catalog, identity
from cardd.billing.identity import Identity
from cardd.billing.ledger import Ledger
from cardd.db import Database
from cardd.metrics import Metrics
from cardd.sim import Callee, Caller

LIMITS = identity.Limits(window_s=900, per_cli=10, per_card=5)
UK_MOBILE = "447700900123"


def failures(pool, scope: str | None = None, key: str | None = None) -> int:
    with pool.connection() as conn:
        return conn.execute(
            "SELECT count(*) FROM auth_failures"
            " WHERE (%s::text IS NULL OR scope = %s) AND (%s::text IS NULL OR key = %s)",
            (scope, scope, key, key),
        ).fetchone()[0]


def fill(pool, scope: str, key: str, n: int) -> None:
    with pool.connection() as conn:
        conn.execute(
            "INSERT INTO auth_failures (scope, key, at) SELECT %s, %s, clock_timestamp() FROM generate_series(1, %s)",
            (scope, key, n),
        )


def open_reservation(ledger: Ledger, card_id: int) -> Decimal:
    """Another call of the card in progress, an hour to a UK mobile: its reservation (3.70) held.
    Returns the amount held."""
    grant = ledger.grant(
        card_id, a_uuid=uuid.uuid4(), b_uuid=uuid.uuid4(), destination=UK_MOBILE, max_call_duration=3600
    )
    assert grant.reserved > 0
    return grant.reserved


# -- the statement ------------------------------------------------------------------------------


def test_sixty_racing_wrong_pins_through_two_pools_are_acted_on_at_most_the_card_limit(database, dsn, demo_data):
    with Database(dsn, pool_size=10) as other_process:
        pools = [database.pool, other_process.pool]

        def attempt(i: int) -> bool:
            buckets = identity.pin_buckets(LIMITS, cli=f"1555000{i:04d}", card_id=demo_data.card_id)
            return identity.verdict(pools[i % 2], buckets, LIMITS.window_s, False).allowed

        racers = [gevent.spawn(attempt, i) for i in range(60)]
        gevent.joinall(racers, raise_error=True)
    assert sum(g.value for g in racers) == LIMITS.per_card
    assert failures(database.pool, "card") == LIMITS.per_card


def test_gate_and_verdict_racing_on_one_card_share_its_limit_and_never_deadlock(database, dsn, demo_data):
    """Both take the same locks in the same order: a card guessed through both at once (and
    CLIs shared between the racers, so each attempt holds two locks) still yields the limit."""
    acted_on = []

    def wrong(conn):
        acted_on.append("gate")
        return False, None

    with Database(dsn, pool_size=10) as other_process:
        pools = [database.pool, other_process.pool]

        def attempt(i: int) -> bool:
            buckets = identity.pin_buckets(LIMITS, cli=f"155500{i % 7:05d}", card_id=demo_data.card_id)
            if i % 2:
                return identity.gate(pools[i % 2], buckets, LIMITS.window_s, wrong).allowed
            gated = identity.verdict(pools[i % 2], list(reversed(buckets)), LIMITS.window_s, False)
            if gated.allowed:
                acted_on.append("verdict")
            return gated.allowed

        racers = [gevent.spawn(attempt, i) for i in range(60)]
        gevent.joinall(racers, raise_error=True, timeout=60)
    assert all(g.ready() for g in racers)
    assert sum(g.value for g in racers) == LIMITS.per_card == len(acted_on)
    assert failures(database.pool, "card") == LIMITS.per_card


def test_the_verdict_counts_after_its_locks_so_it_sees_what_the_holder_before_it_committed(database, dsn):
    """The count is a statement of its own inside the function, after pg_advisory_xact_lock:
    its snapshot is taken once the lock is ours. A holder that fills the bucket and commits
    while the verdict waits must be seen, although the verdict's statement began before."""
    buckets = [("card", "4242", 2)]
    with psycopg.connect(dsn) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(%s, hashtext('card:4242'))", (identity._LOCK_CLASS,))
        holder.execute(
            "INSERT INTO auth_failures (scope, key, at) VALUES ('card', '4242', now()), ('card', '4242', now())"
        )
        waiting = gevent.spawn(identity.verdict, database.pool, buckets, 900, False)
        with gevent.Timeout(10):
            while True:
                with database.pool.connection() as conn:
                    if conn.execute(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    ).fetchone()[0]:
                        break
                gevent.sleep(0.01)
        holder.commit()
    assert waiting.get(timeout=10).refused_by == "card"
    assert failures(database.pool, "card", "4242") == 2


def test_a_full_bucket_refuses_even_a_right_pin_records_nothing_and_returns_no_card(database, demo_data):
    buckets = identity.pin_buckets(LIMITS, cli="15550001234", card_id=demo_data.card_id)
    fill(database.pool, "card", str(demo_data.card_id), LIMITS.per_card)
    for ok in (True, False):
        gated = identity.verdict(database.pool, buckets, LIMITS.window_s, ok, card_id=demo_data.card_id)
        assert not gated.allowed and gated.refused_by == "card" and gated.value is None
    assert failures(database.pool, "cli") == 0 and failures(database.pool, "card") == LIMITS.per_card


def test_a_right_pin_is_never_recorded_and_brings_the_card_back_with_its_available_credit(database, demo_data):
    ledger = Ledger(database.pool)
    held = open_reservation(ledger, demo_data.card_id)
    buckets = identity.pin_buckets(LIMITS, cli="15550001234", card_id=demo_data.card_id)
    gated = identity.verdict(database.pool, buckets, LIMITS.window_s, True, card_id=demo_data.card_id)
    assert gated.allowed and gated.ok
    card = gated.value
    assert card.id == demo_data.card_id and card.pin_hash == ledger.get_card(demo_data.card_id).pin_hash
    assert card.available == demo_data.balance - held == ledger.available_credit(demo_data.card_id)
    assert failures(database.pool) == 0
    # a wrong one is recorded once per bucket and returns no card
    wrong = identity.verdict(database.pool, buckets, LIMITS.window_s, False, card_id=demo_data.card_id)
    assert wrong.allowed and not wrong.ok and wrong.value is None
    assert failures(database.pool, "cli") == 1 and failures(database.pool, "card") == 1


def test_the_card_looked_up_for_a_pin_comes_with_the_courtesy_count_of_the_buckets_its_pin_will_use(
    database, demo_data
):
    pool = database.pool
    catalog.create_card(pool, "5550001", tariff=demo_data.tariff, currency="USD", balance="3")  # no PIN
    with pool.connection() as conn:
        conn.execute("UPDATE accounts SET authname = 'alice' WHERE id = %s", (demo_data.card_id,))
    cli = "15550001234"
    limits = identity.Limits(window_s=900, per_cli=3, per_card=2)

    card, full = identity.card_for_pin(pool, demo_data.card_number, limits, cli=cli)
    assert card is not None and card.id == demo_data.card_id and card.available == demo_data.balance and not full
    assert identity.card_for_pin(pool, "alice", limits, cli=cli, by_authname=True)[0].id == demo_data.card_id
    assert identity.card_for_pin(pool, "alice", limits, cli=cli)[0] is None
    # the card's own bucket
    fill(pool, "card", str(demo_data.card_id), 2)
    assert identity.card_for_pin(pool, demo_data.card_number, limits, cli=cli)[1]
    # a number that is no card, and a card without a PIN, count the number's bucket
    assert identity.card_for_pin(pool, "999", limits, cli=cli) == (None, False)
    fill(pool, "card", "number:999", 2)
    assert identity.card_for_pin(pool, "999", limits, cli=cli) == (None, True)
    no_pin, full = identity.card_for_pin(pool, "5550001", limits, cli=cli)
    assert no_pin is not None and not no_pin.has_pin and not full
    fill(pool, "card", "number:5550001", 2)
    assert identity.card_for_pin(pool, "5550001", limits, cli=cli)[1]
    # the CLI's bucket, unless cli is None; as throttled says, for every case
    fill(pool, "cli", cli, 3)
    assert identity.card_for_pin(pool, "777", limits, cli=cli) == (None, True)
    assert identity.card_for_pin(pool, "777", limits, cli=None) == (None, False)
    for number, card_id in (("777", None), ("999", None), (demo_data.card_number, demo_data.card_id)):
        for who in (cli, None, "15550009999"):
            expected = identity.throttled(pool, limits, cli=who, card_id=card_id, number=number)
            assert identity.card_for_pin(pool, number, limits, cli=who)[1] == expected, (number, who)


# -- through the IVR ------------------------------------------------------------------------------


def test_a_caller_whose_card_fills_up_while_the_pin_is_typed_is_refused_with_the_right_pin(
    cardd_with, database, demo_data, monkeypatch
):
    """The courtesy count said the card was free; racing guessers fill its bucket while this
    caller types the right PIN: the verdict refuses, the PIN's result is not acted upon."""
    cardd = cardd_with(database, pin_failures_per_card=3)
    looked_up = Identity.card_for_pin

    def and_the_guessers_fill_it(self, *args, **kw):
        found = looked_up(self, *args, **kw)
        assert found[1] is False
        fill(database.pool, "card", str(demo_data.card_id), 3)
        return found

    monkeypatch.setattr(Identity, "card_for_pin", and_the_guessers_fill_it)
    t = cardd.call(Caller(cli="15551002000", digits=[demo_data.card_number + "#", demo_data.pin + "#"], type_after=6))
    heard = cardd.heard(t)
    assert "enter_pin" in heard and "you_have" not in heard
    assert heard[-2:] == ["too_many_attempts", "goodbye"]
    assert cardd.metric("cardd_auth_failures_total", reason="throttled") == 1
    assert failures(database.pool, "card") == 3 and failures(database.pool, "cli") == 0


def test_the_balance_said_right_after_identification_is_the_available_credit_the_verdict_read(
    cardd_with, database, demo_data, monkeypatch
):
    """Balance minus the open reservation of another call, and a top-up made while the PIN was
    typed included: read by the verdict, not before the PIN and not by a query of its own."""
    cardd = cardd_with(database)
    ledger = Ledger(database.pool)
    held = open_reservation(ledger, demo_data.card_id)
    looked_up = Identity.card_for_pin

    def and_a_top_up_meanwhile(self, *args, **kw):
        found = looked_up(self, *args, **kw)
        ledger.adjust(demo_data.card_id, Decimal("5"), kind="adjustment", reference="test")
        return found

    monkeypatch.setattr(Identity, "card_for_pin", and_a_top_up_meanwhile)
    t = cardd.call(Caller(cli="15551003000", digits=[demo_data.card_number + "#", demo_data.pin + "#"], type_after=6))
    heard = cardd.heard(t)
    expected = demo_data.balance + 5 - held
    assert expected == ledger.available_credit(demo_data.card_id)
    said = speech.balance_ids(expected, "USD", "en")
    start = heard.index("you_have")
    assert heard[start : start + len(said)] == said
    assert cardd.metric("cardd_db_query_seconds_count", op="available_credit") == 0


def test_the_minimum_balance_is_checked_against_the_credit_the_verdict_read(cardd_with, database, demo_data, tmp_path):
    """minimum_balance 9: the card's balance (10) passes, its available credit (10 minus another
    call's reservation of 3.70) does not."""
    cardd = cardd_with(database, "calling_card:\n  minimum_balance: 9\n", tmp_path=tmp_path)
    open_reservation(Ledger(database.pool), demo_data.card_id)
    t = cardd.call(Caller(cli="15551004000", digits=[demo_data.card_number + "#", demo_data.pin + "#"], type_after=6))
    heard = cardd.heard(t)
    assert "you_have" not in heard
    assert cardd.metric("cardd_auth_failures_total", reason="low_balance") >= 1
    assert cardd.metric("cardd_db_query_seconds_count", op="available_credit") == 0


class RoundTrips:
    """Round trips with PostgreSQL, counted where psycopg makes them (a wait generator that
    yields at least once went over the wire: bench/common.py DbCounter's method) and charged
    to the repository query that made them, in the greenlet that made them (the repositories'
    observer, Metrics.observe_query, is told each query's op as it ends)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.by_greenlet: defaultdict[object, Counter[str]] = defaultdict(Counter)
        pending: defaultdict[object, int] = defaultdict(int)
        wait, observe = psycopg.Connection.wait, Metrics.observe_query

        def counted(gen):
            try:
                waiting_on = gen.send(None)
            except StopIteration as done:
                return done.value
            pending[gevent.getcurrent()] += 1
            while True:
                ready = yield waiting_on
                try:
                    waiting_on = gen.send(ready)
                except StopIteration as done:
                    return done.value

        def counted_wait(conn, gen, *args, **kw):
            return wait(conn, counted(gen), *args, **kw)

        def observed(metrics, op, seconds):
            here = gevent.getcurrent()
            self.by_greenlet[here][op] += pending.pop(here, 0)
            return observe(metrics, op, seconds)

        monkeypatch.setattr(psycopg.Connection, "wait", counted_wait)
        monkeypatch.setattr(Metrics, "observe_query", observed)

    def of_the_call_that_ran(self, op: str) -> dict[str, int]:
        """The round trips of each query of the one greenlet (a call) that ran `op`; queries that
        sent nothing (a PIN already in HMAC form is not rehashed) left out."""
        (call,) = [ops for ops in self.by_greenlet.values() if op in ops]
        return {name: n for name, n in call.items() if n}


def test_a_card_number_and_pin_are_identified_in_three_round_trips_and_the_balance_in_none(
    cardd_with, database, demo_data, monkeypatch
):
    """The CLI's bucket before the number is asked, the card with its PIN buckets, the PIN's
    verdict (which reads the credit the balance sentence says). Undoing either merge (a look-up
    then a count; the gate's BEGIN, locks, counts and COMMIT; a read of the credit) fails here."""
    trips = RoundTrips(monkeypatch)  # before the daemon binds its observer
    cardd = cardd_with(database)
    # The caller is identified, hears the balance, then says nothing at the destination prompt.
    t = cardd.call(Caller(cli="15551005000", digits=[demo_data.card_number + "#", demo_data.pin + "#"], type_after=6))
    assert "you_have" in cardd.heard(t)
    assert trips.of_the_call_that_ran("verdict") == {"throttled": 1, "card_for_pin": 1, "verdict": 1}


def test_the_balance_said_after_a_call_is_read_afresh_not_the_one_read_at_identification(cardd, demo_data):
    """announce_balance_after_call: the credit after the call's settlement (10 - 0.136), while the card
    still carries the credit its identification read (10)."""
    caller = Caller(
        destination="cc.playbalanceaftercall",
        digits=[demo_data.card_number + "#", demo_data.pin + "#", UK_MOBILE + "#"],
        type_after=6,
    )
    t = cardd.call(caller, Callee(talk=30))  # 31 billed seconds: 0.13600
    heard = cardd.heard(t)
    first, after = speech.balance_ids(demo_data.balance, "USD", "en"), speech.balance_ids(Decimal("9.864"), "USD", "en")
    starts = [i for i, pid in enumerate(heard) if pid == "you_have"]
    assert len(starts) == 2 and len(t.bridges) == 1
    assert heard[starts[0] : starts[0] + len(first)] == first
    assert heard[starts[1] : starts[1] + len(after)] == after
    assert cardd.metric("cardd_db_query_seconds_count", op="available_credit") == 1
