"""Operator writes: tariffs, rates, cards. Used by `cardd` admin commands and test fixtures.

Each function is one short transaction on a pooled connection. Balances are
only ever moved by ledger rows (the schema's trigger applies them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import errors
from psycopg_pool import ConnectionPool

from cardd.billing.pins import hash_pin
from cardd.errors import CatalogError
from cardd.money import check_currency, money

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CardSummary:
    id: int
    username: str
    balance: Decimal
    available: Decimal
    currency: str
    status: str
    tariff: str
    open_reservations: int
    customer: str | None = None
    plan: str | None = None


def create_tariff(pool: ConnectionPool, name: str, currency: str) -> int:
    check_currency(currency)
    try:
        with pool.connection() as conn, conn.transaction():
            row = conn.execute(
                "INSERT INTO tariffs (name, currency) VALUES (%s, %s) RETURNING id", (name, currency)
            ).fetchone()
    except errors.UniqueViolation:
        raise CatalogError(f"tariff {name!r} already exists") from None
    except errors.CheckViolation as exc:
        raise CatalogError(f"bad tariff: {exc.diag.message_primary}") from None
    assert row is not None
    return int(row[0])


def tariff_id(conn: psycopg.Connection[Any], name: str) -> tuple[int, str]:
    row = conn.execute("SELECT id, currency FROM tariffs WHERE name = %s", (name,)).fetchone()
    if row is None:
        raise CatalogError(f"unknown tariff {name!r}")
    return int(row[0]), str(row[1])


def add_rate(
    pool: ConnectionPool,
    tariff: str,
    prefix: str,
    *,
    price_1: Decimal | str,
    interval_1: int,
    price_n: Decimal | str,
    interval_n: int,
    connect_fee: Decimal | str = "0",
    free_seconds: int = 0,
    grace: int = 0,
    forbidden: bool = False,
    replace: bool = False,
) -> int:
    """Add (or with replace=True, update) the rate of `prefix` in a tariff. Returns the rate id."""
    values = {
        "prefix": prefix,
        "price_1": money(price_1),
        "interval_1": interval_1,
        "price_n": money(price_n),
        "interval_n": interval_n,
        "connect_fee": money(connect_fee),
        "free_seconds": free_seconds,
        "grace": grace,
        "forbidden": forbidden,
    }
    conflict = (
        "ON CONFLICT (tariff_id, prefix) DO UPDATE SET price_1 = EXCLUDED.price_1,"
        " interval_1 = EXCLUDED.interval_1, price_n = EXCLUDED.price_n, interval_n = EXCLUDED.interval_n,"
        " connect_fee = EXCLUDED.connect_fee, free_seconds = EXCLUDED.free_seconds,"
        " grace = EXCLUDED.grace, forbidden = EXCLUDED.forbidden"
        if replace
        else ""
    )
    try:
        with pool.connection() as conn, conn.transaction():
            tid, _ = tariff_id(conn, tariff)
            row = conn.execute(
                "INSERT INTO rates (tariff_id, prefix, price_1, interval_1, price_n, interval_n,"
                " connect_fee, free_seconds, grace, forbidden) VALUES (%(tariff_id)s, %(prefix)s,"
                " %(price_1)s, %(interval_1)s, %(price_n)s, %(interval_n)s, %(connect_fee)s,"
                " %(free_seconds)s, %(grace)s, %(forbidden)s) " + conflict + " RETURNING id",
                {"tariff_id": tid, **values},
            ).fetchone()
    except errors.UniqueViolation:
        raise CatalogError(f"tariff {tariff!r} already has a rate for prefix {prefix!r}") from None
    except errors.CheckViolation as exc:
        raise CatalogError(f"bad rate for prefix {prefix!r}: {exc.diag.constraint_name}") from None
    assert row is not None
    return int(row[0])


def create_card(
    pool: ConnectionPool,
    number: str,
    *,
    tariff: str,
    currency: str,
    pin: str = "",
    balance: Decimal | str = "0",
    authname: str | None = None,
    status: str = "active",
    max_concurrent_calls: int | None = None,
    expires_at: datetime | None = None,
    service_plan_id: int | None = None,
    customer_id: int | None = None,
    customer: str | None = None,
    plan: str | None = None,
    allow_negative: bool = True,
) -> int:
    """Create a card; its starting balance is an 'initial' ledger row. Returns the account id.

    customer and plan name them (customer_id / service_plan_id give ids);
    allow_negative=False refuses a negative starting balance."""
    check_currency(currency)
    amount = money(balance)
    if amount < 0 and not allow_negative:
        raise CatalogError(f"a starting balance of {amount} is negative")
    pin_hash = hash_pin(pin) if pin else None
    try:
        with pool.connection() as conn, conn.transaction():
            tid, tariff_currency = tariff_id(conn, tariff)
            if customer is not None:
                customer_id = named_id(conn, "customers", "customer", customer)
            if plan is not None:
                service_plan_id = named_id(conn, "service_plans", "service plan", plan)
            if tariff_currency != currency:
                raise CatalogError(f"tariff {tariff!r} is in {tariff_currency}; a {currency} card cannot use it")
            row = conn.execute(
                "INSERT INTO accounts (username, authname, pin_hash, currency, status, tariff_id,"
                " max_concurrent_calls, expires_at, service_plan_id, customer_id)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (
                    number,
                    authname,
                    pin_hash,
                    currency,
                    status,
                    tid,
                    max_concurrent_calls,
                    expires_at,
                    service_plan_id,
                    customer_id,
                ),
            ).fetchone()
            assert row is not None
            account_id = int(row[0])
            if amount != 0:
                conn.execute(
                    "INSERT INTO ledger (account_id, amount, kind, reference) VALUES (%s, %s, 'initial', %s)",
                    (account_id, amount, "card created"),
                )
    except errors.UniqueViolation as exc:
        what = "VoIP login" if "authname" in (exc.diag.constraint_name or "") else "card number"
        raise CatalogError(f"{what} already exists: {authname if what == 'VoIP login' else number}") from None
    except errors.CheckViolation as exc:
        raise CatalogError(f"bad card {number!r}: {exc.diag.constraint_name}") from None
    log.info("card %s created (%s %s)", number, amount, currency)
    return account_id


def named_id(conn: psycopg.Connection[Any], table: str, what: str, name: str) -> int:
    """The id of a customer, service plan or tariff by name; CatalogError names an unknown one."""
    assert table in ("customers", "service_plans", "tariffs")
    row = conn.execute(f"SELECT id FROM {table} WHERE name = %s", (name,)).fetchone()
    if row is None:
        raise CatalogError(f"unknown {what} {name!r}")
    return int(row[0])


def list_cards(
    pool: ConnectionPool,
    *,
    limit: int = 1000,
    status: str | None = None,
    customer: str | None = None,
    tariff: str | None = None,
    balance_below: Decimal | None = None,
) -> list[CardSummary]:
    """Cards by number, filtered; an unknown customer or tariff is a CatalogError, not an empty list."""
    where: list[str] = ["true"]
    params: list[object] = []
    with pool.connection() as conn:
        if status is not None:
            where.append("a.status = %s")
            params.append(status)
        if customer is not None:
            where.append("a.customer_id = %s")
            params.append(named_id(conn, "customers", "customer", customer))
        if tariff is not None:
            where.append("a.tariff_id = %s")
            params.append(named_id(conn, "tariffs", "tariff", tariff))
        if balance_below is not None:
            where.append("a.balance < %s")
            params.append(money(balance_below))
        rows = conn.execute(
            "SELECT a.id, a.username, a.balance,"
            "       a.balance - coalesce(r.reserved, 0), a.currency, a.status, t.name, coalesce(r.n, 0),"
            "       c.name, p.name"
            "  FROM accounts a JOIN tariffs t ON t.id = a.tariff_id"
            "  LEFT JOIN customers c ON c.id = a.customer_id LEFT JOIN service_plans p ON p.id = a.service_plan_id"
            "  LEFT JOIN (SELECT account_id, sum(amount) AS reserved, count(*) AS n FROM reservations"
            "              WHERE status = 'open' GROUP BY account_id) r ON r.account_id = a.id"
            f" WHERE {' AND '.join(where)} ORDER BY a.username LIMIT %s",
            (*params, limit),
        ).fetchall()
    return [CardSummary(int(r[0]), r[1], r[2], r[3], r[4].strip(), r[5], r[6], int(r[7]), r[8], r[9]) for r in rows]


def delete_tariff(pool: ConnectionPool, name: str) -> int:
    """Delete a tariff and its rates; refused while any card uses it. Returns how many rates went with it."""
    with pool.connection() as conn, conn.transaction():
        tid, _ = tariff_id(conn, name)
        # The row lock makes a card created meanwhile on this tariff wait (its foreign key check
        # takes a share lock on the row), so the count below cannot go stale before the delete.
        conn.execute("SELECT 1 FROM tariffs WHERE id = %s FOR UPDATE", (tid,))
        row = conn.execute("SELECT count(*) FROM accounts WHERE tariff_id = %s", (tid,)).fetchone()
        assert row is not None
        if row[0]:
            raise CatalogError(f"tariff {name!r} is used by {row[0]} card(s): move them to another tariff first")
        rates = conn.execute("DELETE FROM rates WHERE tariff_id = %s", (tid,)).rowcount
        conn.execute("DELETE FROM tariffs WHERE id = %s", (tid,))
    log.info("tariff %s deleted with %s rates", name, rates)
    return rates


def rename_tariff(pool: ConnectionPool, name: str, new_name: str) -> None:
    """Rename a tariff; its cards and rates follow (they hold its id)."""
    if not new_name:
        raise CatalogError("a tariff needs a name")
    try:
        with pool.connection() as conn, conn.transaction():
            tid, _ = tariff_id(conn, name)
            conn.execute("UPDATE tariffs SET name = %s WHERE id = %s", (new_name, tid))
    except errors.UniqueViolation:
        raise CatalogError(f"tariff {new_name!r} already exists") from None
    log.info("tariff %s renamed %s", name, new_name)
