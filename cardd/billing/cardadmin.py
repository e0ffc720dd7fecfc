"""Card changes the API needs as service functions: a batch of random cards (numbers and PINs
returned once, stored hashed) and a card's expiry. Each is one transaction with its audit line."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from psycopg_pool import ConnectionPool

from cardd.billing import catalog, operator
from cardd.billing.pins import hash_pin
from cardd.billing.repository import database_errors
from cardd.errors import CatalogError, OperatorError
from cardd.money import check_currency, format_money, money


@dataclass(frozen=True)
class NewCard:
    number: str
    pin: str


def _random_digits(length: int) -> str:
    """Random digits, the first never 0 (a number nobody mistypes as shorter)."""
    return str(1 + secrets.randbelow(9)) + "".join(str(secrets.randbelow(10)) for _ in range(length - 1))


@database_errors
def generate_cards(
    pool: ConnectionPool,
    count: int,
    *,
    who: str,
    tariff: str,
    currency: str,
    length: int = 10,
    pin_length: int = 4,
    balance: Decimal | str = "0",
    customer: str | None = None,
    plan: str | None = None,
    expires_at: datetime | None = None,
    valid_days: int | None = None,
    max_concurrent_calls: int | None = None,
) -> list[NewCard]:
    """`count` cards with random numbers (and PINs unless pin_length is 0), all or none, as
    `cardd card generate` makes them: a number that exists is drawn again; the batch is
    refused when the numbers would be easy to guess (more than 1 in 100 taken)."""
    check_currency(currency)
    amount = money(balance)
    if amount < 0:
        raise CatalogError(f"a starting balance of {amount} is negative")
    if length < 6:
        raise CatalogError("card numbers need at least 6 digits to be hard to guess")
    if count > 9 * 10 ** (length - 1) // 100:
        raise CatalogError(f"{count} cards of {length} digits would make numbers easy to guess")
    if expires_at is not None and valid_days is not None:
        raise CatalogError("give expires_at or valid_days, not both")
    status = "new" if valid_days else "active"
    made: list[NewCard] = []
    with pool.connection() as conn, conn.transaction():
        tid, tariff_currency = catalog.tariff_id(conn, tariff)
        if tariff_currency.strip() != currency:
            raise CatalogError(f"tariff {tariff!r} is in {tariff_currency}; {currency} cards cannot use it")
        customer_id = catalog.named_id(conn, "customers", "customer", customer) if customer else None
        plan_id = catalog.named_id(conn, "service_plans", "service plan", plan) if plan else None
        while len(made) < count:
            number = _random_digits(length)
            pin = "".join(str(secrets.randbelow(10)) for _ in range(pin_length))
            row = conn.execute(
                "INSERT INTO accounts (username, pin_hash, currency, status, tariff_id, expires_at, valid_days,"
                " max_concurrent_calls, customer_id, service_plan_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (username) DO NOTHING RETURNING id",
                (
                    number,
                    hash_pin(pin) if pin else None,
                    currency,
                    status,
                    tid,
                    expires_at,
                    valid_days,
                    max_concurrent_calls,
                    customer_id,
                    plan_id,
                ),
            ).fetchone()
            if row is None:
                continue
            if amount != 0:
                conn.execute(
                    "INSERT INTO ledger (account_id, amount, kind, reference)"
                    " VALUES (%s, %s, 'initial', 'card generated')",
                    (row[0], amount),
                )
            made.append(NewCard(number, pin))
        operator.audit(
            conn,
            who,
            "card generate",
            {
                "count": count,
                "tariff": tariff,
                "currency": currency,
                "balance": amount,
                "customer": customer,
                "plan": plan,
                "expires": expires_at,
                "valid_days": valid_days,
                "max_calls": max_concurrent_calls,
            },
            detail=f"{len(made)} cards, {format_money(amount, currency)} each",
        )
    return made


@database_errors
def set_expiry(pool: ConnectionPool, number: str, expires_at: datetime | None, *, who: str) -> None:
    """Set (None: remove) a card's expiry."""
    with pool.connection() as conn, conn.transaction():
        row = conn.execute(
            "UPDATE accounts SET expires_at = %s WHERE username = %s RETURNING id", (expires_at, number)
        ).fetchone()
        if row is None:
            raise OperatorError(f"no card {number!r}")
        operator.audit(
            conn,
            who,
            "card expiry",
            {"card": number, "expires_at": expires_at},
            account_id=row[0],
            detail=f"card {number}: expires {expires_at or 'never'}",
        )


__all__ = ["NewCard", "generate_cards", "set_expiry"]
