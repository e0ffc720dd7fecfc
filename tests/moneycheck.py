"""The money invariant the fraud tests check after each attack (issue 12):
initial balances + top-ups - CDR costs = final balances, no open reservations,
no negative balance, and every used voucher credited exactly once."""

from __future__ import annotations

from decimal import Decimal


def assert_money_holds(pool, initial: dict[int, Decimal]) -> None:
    """`initial`: card id -> balance before the attack (snapshot_balances)."""
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT a.id, a.balance,"
            "       coalesce((SELECT sum(v.amount) FROM vouchers v WHERE v.used_by = a.id), 0),"
            "       coalesce((SELECT sum(c.cost) FROM cdrs c WHERE c.account_id = a.id), 0)"
            "  FROM accounts a ORDER BY a.id"
        ).fetchall()
        open_reservations = conn.execute("SELECT count(*) FROM reservations WHERE status = 'open'").fetchone()[0]
        credited_twice = conn.execute(
            "SELECT count(*) FROM (SELECT voucher_id FROM ledger WHERE kind = 'topup'"
            " GROUP BY voucher_id HAVING count(*) <> 1) twice"
        ).fetchone()[0]
        credits_without_use = conn.execute(
            "SELECT count(*) FROM ledger l JOIN vouchers v ON v.id = l.voucher_id"
            " WHERE l.kind = 'topup' AND (v.status <> 'used' OR v.used_by <> l.account_id)"
        ).fetchone()[0]
    assert open_reservations == 0
    assert credited_twice == 0 and credits_without_use == 0
    for card_id, balance, topups, costs in rows:
        assert balance >= 0, f"card id {card_id} is negative: {balance}"
        if card_id in initial:
            assert initial[card_id] + topups - costs == balance, (card_id, initial[card_id], topups, costs, balance)


def snapshot_balances(pool) -> dict[int, Decimal]:
    with pool.connection() as conn:
        return {r[0]: r[1] for r in conn.execute("SELECT id, balance FROM accounts").fetchall()}
