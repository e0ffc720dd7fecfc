"""Issue 12 section 4: vouchers cannot be guessed.

The attack: `voucher generate 10000 --length 6` was accepted (1 % of the space
valid); 150 calls from 150 caller IDs, 3 guesses each, stole 2 vouchers; only
"unknown" outcomes counted, per CLI only, and the used/expired/other-currency
prompts told a guesser which numbers exist. Now: the generator keeps at most one
valid number per million of a length's space; top-up numbers are looked up inside
a gate that counts failures per card, per CLI and service-wide; every failure
counts; every refusal sounds the same. Money is checked after each attack.

Demo card (tests/dbfixtures.py): 1234567890, PIN 4321, 10.00 USD."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import gevent

from cardd import cli
from cardd.billing import catalog, identity, vouchers
from cardd.sim import Caller
from tests.moneycheck import assert_money_holds, snapshot_balances
from tests.test_vouchers import add_voucher


def config(tmp_path, dsn: str) -> str:
    path = tmp_path / "cardd.yaml"
    path.write_text(f'daemon:\n  dsn: "{dsn}"\n  data_dir: {tmp_path / "var"}\n')
    return str(path)


def unused(pool, length: int) -> int:
    with pool.connection() as conn:
        return vouchers.unused_of_length(conn, length)


def test_generate_refuses_a_density_that_makes_guessing_cheap(tmp_path, database, dsn, capsys):
    yaml_path = config(tmp_path, dsn)
    assert (
        cli.main(
            ["-c", yaml_path, "voucher", "generate", "10000", "--length", "6", "--amount", "5", "--currency", "USD"]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("cardd: 10000 more vouchers of 6 digits") and "at most 1 " in err
    assert unused(database.pool, 6) == 0
    # the vouchers already out there count: one 6-digit voucher fills 6 digits
    assert (
        cli.main(["-c", yaml_path, "voucher", "generate", "1", "--length", "6", "--amount", "5", "--currency", "USD"])
        == 0
    )
    assert (
        cli.main(["-c", yaml_path, "voucher", "generate", "1", "--length", "6", "--amount", "5", "--currency", "USD"])
        == 2
    )
    assert "(1 unused already)" in capsys.readouterr().err


def test_generate_defaults_to_the_shortest_length_that_meets_the_bound(database):
    numbers = vouchers.generate(database.pool, 3, amount="5", currency="USD", max_length=12)
    assert {len(n) for n in numbers} == {10}
    # 10 digits hold 10,000 unused vouchers; past that the default grows a digit
    with database.pool.connection() as conn:
        conn.execute(
            "INSERT INTO vouchers (number, amount, currency)"
            " SELECT lpad(i::text, 10, '0'), 1, 'USD' FROM generate_series(1, 9997) i"
        )
    assert unused(database.pool, 10) == vouchers.capacity(10)
    assert {len(n) for n in vouchers.generate(database.pool, 1, amount="5", currency="USD", max_length=12)} == {11}


def test_generate_refuses_numbers_longer_than_callers_may_type(database):
    import pytest

    with pytest.raises(ValueError, match="topup_card_length 10"):
        vouchers.generate(database.pool, 1, amount="5", currency="USD", length=12, max_length=10)


def test_sixty_racing_top_up_guesses_on_one_card_get_at_most_the_card_limit_evaluated(database, demo_data):
    limits = identity.Limits(window_s=3600, per_cli=5, per_card=5, service=100)

    def guess(i: int) -> bool:
        buckets = identity.topup_buckets(limits, cli=f"1555400{i:04d}", card_id=demo_data.card_id)
        return identity.gate(database.pool, buckets, limits.window_s, lambda conn: (False, None)).allowed

    racers = [gevent.spawn(guess, i) for i in range(60)]
    gevent.joinall(racers, raise_error=True)
    assert sum(g.value for g in racers) == limits.per_card


def test_parallel_guessers_with_many_cards_and_clis_are_held_by_the_service_wide_limit(cardd_with, database, demo_data):
    """60 callers, 60 cards, 60 CLIs, guessing at once: only topup_failures_service
    numbers are looked up; then a real voucher number (a lucky guess) is refused
    too, and stays unused."""
    cardd = cardd_with(database, topup_failures_service=20)
    pool = database.pool
    numbers = [f"77700000{i:02d}" for i in range(60)]
    for n in numbers:
        catalog.create_card(pool, n, tariff=demo_data.tariff, currency="USD", pin="1111", balance="1")
    add_voucher(pool, "9000000031", "5")
    before = snapshot_balances(pool)
    calls = [
        cardd.dial(
            Caller(
                cli=f"1555500{i:04d}", destination="cc.topup", digits=[n + "#", "1111#", f"81{i:08d}#"], type_after=6
            )
        )
        for i, n in enumerate(numbers)
    ]
    heard = [cardd.heard(c.wait(120)) for c in calls]
    assert sum(h.count("voucher_unknown") for h in heard) <= 20
    with pool.connection() as conn:
        counted = conn.execute("SELECT count(*) FROM auth_failures WHERE scope = 'topup_service'").fetchone()[0]
    assert counted == 20
    t = cardd.call(
        Caller(
            cli="15556000001",
            destination="cc.topup",
            digits=[demo_data.card_number + "#", demo_data.pin + "#", "9000000031#"],
            type_after=6,
        )
    )
    assert "topup_successful" not in cardd.heard(t) and "too_many_attempts" in cardd.heard(t)
    assert vouchers.list_vouchers(pool)[0].status == "unused"
    assert_money_holds(pool, before)


def test_every_failed_outcome_counts_and_sounds_the_same(cardd_with, database, demo_data, ledger):
    """Used, expired, voided, other-currency and unknown numbers each count
    against the card and all get the one prompt; at the limit even a good
    voucher is not looked up."""
    cardd = cardd_with(database, topup_failures_per_card=4, topup_failures_per_cli=100)
    pool = database.pool
    other = catalog.create_card(pool, "5550009999", tariff=demo_data.tariff, currency="USD")
    before = snapshot_balances(pool)
    add_voucher(pool, "9000000041")
    assert vouchers.redeem(pool, "9000000041", other).ok  # used by someone else, for real
    add_voucher(pool, "9000000042", expires_at=datetime.now(UTC) - timedelta(days=1))
    add_voucher(pool, "9000000043", currency="EUR")
    add_voucher(pool, "9000000044")
    vouchers.void(pool, "9000000044")
    add_voucher(pool, "9000000045", "2")
    heard = []
    for i, number in enumerate(["9000000041", "9000000042", "9000000043", "9000000044", "9000000045"]):
        t = cardd.call(
            Caller(
                cli=f"155570000{i}",
                destination="cc.topup",
                digits=[demo_data.card_number + "#", demo_data.pin + "#", number + "#"],
                type_after=6,
            )
        )
        heard.append(cardd.heard(t))
    refusals = [[p for p in h if p.startswith("voucher_") or p == "too_many_attempts"] for h in heard]
    assert refusals[:3] == [["voucher_unknown"]] * 3
    assert refusals[3] == ["voucher_unknown", "too_many_attempts"]  # the 4th failure fills the card's bucket
    assert refusals[4] == ["too_many_attempts"]  # so a good voucher is not looked up
    assert ledger.get_card(demo_data.card_id).balance == before[demo_data.card_id]
    assert_money_holds(pool, before)
