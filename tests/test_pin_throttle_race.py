"""Issue 12 section 3: the PIN throttle cannot be beaten in parallel.

The attack: 60 simultaneous calls on one card from 60 caller IDs, one wrong
PIN each. Checked before the PIN and recorded after, 53 wrong PINs were
evaluated inside one window (limit 5) and a right PIN got in. Now every
attempt passes the throttle's locks: inside the gate (cardd.billing.identity.gate)
when its evaluation needs the database, or, for the IVR's PINs (issue 14), checked
first and then judged by the one-statement verdict (identity.verdict) whose refusal
discards the result. So at most the limit is acted upon however many race, and the
right PIN typed after them is refused. Money is checked after each attack. The
verdict's own races: tests/test_throttle_verdict.py.

Demo card (tests/dbfixtures.py): 1234567890, PIN 4321, 10.00 USD."""

from __future__ import annotations

import gevent

from cardd.billing import identity
from cardd.db import Database
from cardd.sim import Caller
from tests.moneycheck import assert_money_holds, snapshot_balances

LIMITS = identity.Limits(window_s=900, per_cli=10, per_card=5)


def card_rows(pool, scope: str = "card") -> int:
    with pool.connection() as conn:
        return conn.execute("SELECT count(*) FROM auth_failures WHERE scope = %s", (scope,)).fetchone()[0]


def test_sixty_racing_attempts_through_two_pools_evaluate_at_most_the_card_limit(database, dsn, demo_data):
    evaluated = []

    def wrong_pin(conn):
        evaluated.append(1)
        return False, None

    # Two pools: two cardd processes on one database.
    with Database(dsn, pool_size=10) as other_process:
        pools = [database.pool, other_process.pool]

        def attempt(i: int) -> bool:
            buckets = identity.pin_buckets(LIMITS, cli=f"1555000{i:04d}", card_id=demo_data.card_id)
            return identity.gate(pools[i % 2], buckets, LIMITS.window_s, wrong_pin).allowed

        racers = [gevent.spawn(attempt, i) for i in range(60)]
        gevent.joinall(racers, raise_error=True)
    assert sum(g.value for g in racers) == LIMITS.per_card == len(evaluated)
    assert card_rows(database.pool) == LIMITS.per_card


def test_right_attempts_never_count_however_many_race(database, demo_data):
    """Fifty right PINs at once on one card (fifty calls on one card is legal) all get in."""
    buckets = identity.pin_buckets(LIMITS, cli="15550001234", card_id=demo_data.card_id)
    racers = [
        gevent.spawn(identity.gate, database.pool, buckets, LIMITS.window_s, lambda conn: (True, None))
        for _ in range(50)
    ]
    gevent.joinall(racers, raise_error=True)
    assert all(g.value.ok for g in racers)
    assert card_rows(database.pool) == 0 and card_rows(database.pool, "cli") == 0


def test_sixty_simultaneous_wrong_pin_calls_evaluate_at_most_five_and_the_right_pin_after_is_refused(
    cardd_with, database, demo_data
):
    cardd = cardd_with(database, pin_failures_per_card=5, pin_failures_per_cli=10)
    before = snapshot_balances(database.pool)
    calls = [
        cardd.dial(Caller(cli=f"1555100{i:04d}", digits=[demo_data.card_number + "#", f"{i:04d}#"], type_after=6))
        for i in range(60)
        if f"{i:04d}" != demo_data.pin
    ]
    heard = [cardd.heard(c.wait(120)) for c in calls]
    evaluated = sum(h.count("invalid_card_or_pin") for h in heard)
    assert evaluated <= 5
    assert card_rows(database.pool) == evaluated
    assert sum(h[-2:] == ["too_many_attempts", "goodbye"] for h in heard) >= len(calls) - 5
    assert not any("you_have" in h for h in heard)
    # The IVR's PINs race through the verdict, not the gate.
    assert cardd.metric("cardd_db_query_seconds_count", op="verdict") > 0
    assert cardd.metric("cardd_db_query_seconds_count", op="gate") == 0
    # The card's owner, from a fresh CLI, with the right PIN: still locked out.
    t = cardd.call(Caller(cli="15551009999", digits=[demo_data.card_number + "#", demo_data.pin + "#"], type_after=6))
    assert "you_have" not in cardd.heard(t) and cardd.heard(t)[-2:] == ["too_many_attempts", "goodbye"]
    assert_money_holds(database.pool, before)


def test_a_number_that_is_no_card_locks_out_exactly_like_a_card(cardd_with, database, demo_data):
    """The card bucket of a number that is no card is keyed by its digits: a
    lock-out sounds the same, so it cannot tell a guesser which numbers are cards."""
    cardd = cardd_with(database, pin_failures_per_card=2, pin_failures_per_cli=100)
    heard = {}
    for number in (demo_data.card_number, "1234567899"):
        for i in range(3):
            t = cardd.call(Caller(cli=f"155520{i:05d}", digits=[number + "#", "0000#"], type_after=6))
        heard[number] = cardd.heard(t)
    assert heard[demo_data.card_number] == heard["1234567899"]
    assert heard["1234567899"][-2:] == ["too_many_attempts", "goodbye"]


def test_racing_old_pin_guesses_in_the_password_change_evaluate_at_most_the_card_limit(cardd_with, database, demo_data):
    """The old PIN of the password change passes the same throttle (its verdict):
    20 trusted-CLI callers guessing the old PIN at once have at most 2 acted upon,
    and the PIN stays."""
    cardd = cardd_with(database, pin_failures_per_card=2, pin_failures_per_cli=100)
    clis = [f"1555300{i:04d}" for i in range(20)]
    for cli in clis:
        identity.map_cli(database.pool, cli, demo_data.card_id)
    before = snapshot_balances(database.pool)
    calls = [
        cardd.dial(
            Caller(
                cli=cli,
                destination="cc.trustcli.chpassext7",
                digits=["7#", f"99{i:02d}#", "555555#", "555555#"],
                type_after=6,
            )
        )
        for i, cli in enumerate(clis)
    ]
    heard = [cardd.heard(c.wait(120)) for c in calls]
    assert sum(h.count("wrong_pin") for h in heard) <= 2
    assert card_rows(database.pool) <= 2
    assert sum("too_many_attempts" in h for h in heard) >= 18
    assert not any("pin_changed" in h for h in heard)
    assert cardd.metric("cardd_db_query_seconds_count", op="verdict") > 0
    assert cardd.metric("cardd_db_query_seconds_count", op="gate") == 0
    assert_money_holds(database.pool, before)


def test_under_use_word_pin_racing_number_guesses_from_one_cli_evaluate_at_most_its_limit(
    cardd_with, database, demo_data, tmp_path
):
    """use_word_pin: the card number alone is the secret, so it passes the same throttle (its verdict)."""
    cardd = cardd_with(database, "calling_card:\n  use_word_pin: true\n", tmp_path=tmp_path, pin_failures_per_cli=3)
    before = snapshot_balances(database.pool)
    calls = [cardd.dial(Caller(cli="15557000001", digits=[f"99999{i:05d}#"], type_after=6)) for i in range(20)]
    heard = [cardd.heard(c.wait(120)) for c in calls]
    assert sum(h.count("invalid_pin_word") for h in heard) <= 3
    assert card_rows(database.pool, "cli") <= 3
    # the real number from that CLI is refused while the bucket is full
    t = cardd.call(Caller(cli="15557000001", digits=[demo_data.card_number + "#"], type_after=6))
    assert "you_have" not in cardd.heard(t) and "too_many_attempts" in cardd.heard(t)
    assert cardd.metric("cardd_db_query_seconds_count", op="gate") == 0
    assert_money_holds(database.pool, before)
