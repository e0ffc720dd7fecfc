"""Vouchers and card-to-card transfers (cardd/billing/vouchers.py): each a single
transaction; a voucher is claimed by one conditional UPDATE, so it is redeemed
once however many callers type it at the same moment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import gevent
import gevent.event
import pytest

from cardd.billing import catalog, vouchers
from cardd.errors import InsufficientFunds


def add_voucher(pool, number, amount="5", currency="USD", *, expires_at=None, status="unused"):
    with pool.connection() as conn:
        conn.execute(
            "INSERT INTO vouchers (number, amount, currency, expires_at) VALUES (%s, %s, %s, %s)",
            (number, Decimal(amount), currency, expires_at),
        )
        if status == "void":
            conn.execute("UPDATE vouchers SET status = 'void' WHERE number = %s", (number,))


def ledger_sum(pool, card_id) -> Decimal:
    with pool.connection() as conn:
        return conn.execute("SELECT coalesce(sum(amount), 0) FROM ledger WHERE account_id = %s", (card_id,)).fetchone()[
            0
        ]


def test_redeeming_a_voucher_credits_the_card_through_one_ledger_row(database, demo_data, ledger):
    add_voucher(database.pool, "9000000001", "5.50")
    result = vouchers.redeem(database.pool, "9000000001", demo_data.card_id)
    assert result.ok and result.amount == Decimal("5.50000") and result.balance == Decimal("15.50000")
    card = ledger.get_card(demo_data.card_id)
    assert card.balance == Decimal("15.50000") == ledger_sum(database.pool, demo_data.card_id)
    (topup,) = [e for e in ledger.ledger_entries(demo_data.card_id) if e.kind == "topup"]
    assert topup.amount == Decimal("5.50000")
    with database.pool.connection() as conn:
        status, used_by = conn.execute("SELECT status, used_by FROM vouchers WHERE number = '9000000001'").fetchone()
    assert (status, used_by) == ("used", demo_data.card_id)


def test_each_unusable_voucher_says_why(database, demo_data):
    pool = database.pool
    past = datetime.now(UTC) - timedelta(days=1)
    add_voucher(pool, "9000000002")
    vouchers.redeem(pool, "9000000002", demo_data.card_id)
    add_voucher(pool, "9000000003", expires_at=past)
    add_voucher(pool, "9000000004", currency="EUR")
    add_voucher(pool, "9000000005", status="void")
    outcomes = [
        vouchers.redeem(pool, n, demo_data.card_id).outcome
        for n in ("9000000002", "9000000003", "9000000004", "9000000005", "9999999999")
    ]
    assert outcomes == [vouchers.USED, vouchers.EXPIRED, vouchers.WRONG_CURRENCY, vouchers.UNKNOWN, vouchers.UNKNOWN]
    # an other-currency voucher stays unused for a card it fits
    with pool.connection() as conn:
        assert conn.execute("SELECT status FROM vouchers WHERE number = '9000000004'").fetchone()[0] == "unused"


def test_twenty_simultaneous_redemptions_of_one_voucher_credit_exactly_once(database, demo_data, ledger):
    pool = database.pool
    add_voucher(pool, "9000000010", "7")
    cards = [
        catalog.create_card(pool, f"77700000{i:02d}", tariff=demo_data.tariff, currency="USD", balance="1")
        for i in range(20)
    ]
    go = gevent.event.Event()

    def attempt(card_id):
        go.wait()
        return vouchers.redeem(pool, "9000000010", card_id)

    workers = [gevent.spawn(attempt, cid) for cid in cards]
    gevent.sleep(0.05)
    go.set()
    results = [w.get(timeout=30) for w in workers]
    winners = [cid for cid, r in zip(cards, results) if r.ok]
    assert len(winners) == 1
    assert sorted(r.outcome for r in results if not r.ok) == [vouchers.USED] * 19
    balances = {cid: ledger.get_card(cid).balance for cid in cards}
    assert balances[winners[0]] == Decimal("8.00000")
    assert sum(balances.values()) == Decimal("27.00000")
    with pool.connection() as conn:
        assert conn.execute("SELECT count(*) FROM ledger WHERE kind = 'topup'").fetchone()[0] == 1


def test_generated_vouchers_are_unique_random_numbers_of_the_asked_length(database):
    numbers = vouchers.generate(database.pool, 50, amount="10", currency="USD", length=12, batch="b1")
    assert len(set(numbers)) == 50 and all(len(n) == 12 and n.isdigit() for n in numbers)
    rows = vouchers.list_vouchers(database.pool, batch="b1")
    assert {r.number for r in rows} == set(numbers)
    assert {(r.amount, r.currency, r.status) for r in rows} == {(Decimal("10.00000"), "USD", "unused")}


@pytest.mark.parametrize(
    "kwargs", [dict(amount="0", length=10), dict(amount="-1", length=10), dict(amount="5", length=4)]
)
def test_voucher_generation_refuses_bad_amounts_and_guessable_lengths(database, kwargs):
    with pytest.raises(ValueError):
        vouchers.generate(database.pool, 1, currency="USD", **kwargs)


def test_card_to_card_transfer_moves_money_in_one_transaction(database, demo_data, ledger):
    pool = database.pool
    other = catalog.create_card(pool, "5551110000", tariff=demo_data.tariff, currency="USD", balance="1")
    moved = vouchers.transfer(pool, demo_data.card_id, other, "2.5")
    assert (moved.from_balance, moved.to_balance) == (Decimal("7.50000"), Decimal("3.50000"))
    assert ledger.get_card(other).balance == ledger_sum(pool, other) == Decimal("3.50000")
    kinds = [e.kind for e in ledger.ledger_entries(demo_data.card_id)]
    assert kinds[-1] == "transfer_out"


def test_transfer_cannot_take_more_than_the_available_credit_or_cross_currencies(database, demo_data, ledger):
    pool = database.pool
    other = catalog.create_card(pool, "5551110001", tariff=demo_data.tariff, currency="USD")
    with pytest.raises(InsufficientFunds):
        vouchers.transfer(pool, demo_data.card_id, other, "10.00001")
    catalog.create_tariff(pool, "eur", "EUR")
    euro = catalog.create_card(pool, "5551110002", tariff="eur", currency="EUR")
    with pytest.raises(vouchers.TransferError):
        vouchers.transfer(pool, demo_data.card_id, euro, "1")
    with pytest.raises(vouchers.TransferError):
        vouchers.transfer(pool, demo_data.card_id, demo_data.card_id, "1")
    assert ledger.get_card(demo_data.card_id).balance == Decimal("10.00000")
