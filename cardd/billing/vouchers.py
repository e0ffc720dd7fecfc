"""Balance transfers: voucher -> card (top-up) and card -> card, each one transaction.

A voucher is claimed by one conditional UPDATE (`... WHERE status = 'unused'
... RETURNING`), never by a read followed by a write: when many callers type
the same voucher at once, PostgreSQL serialises them on the voucher's row, the
first UPDATE wins and the others see a row that no longer matches. Only when
the UPDATE claims nothing do we read the voucher, to tell the caller why.
The credit is a ledger row in the same transaction (the trigger moves the
balance), so a claimed voucher and its credit commit or roll back together.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from psycopg import errors
from psycopg_pool import ConnectionPool

from cardd.billing.repository import Repository, database_errors, query
from cardd.errors import CardBlocked, CardNotFound, InsufficientFunds, TransferError
from cardd.money import check_currency, money

log = logging.getLogger(__name__)

# Why a redemption did not credit the card. The caller hears one prompt for all
# of them (cardd.ivr.topup: a refusal must not say which numbers exist); the
# operator's log and cardd_auth_failures_total keep the reason.
OK = "ok"
UNKNOWN = "unknown"
USED = "used"
EXPIRED = "expired"
WRONG_CURRENCY = "wrong_currency"


@dataclass(frozen=True)
class Redemption:
    outcome: str  # OK, UNKNOWN, USED, EXPIRED or WRONG_CURRENCY
    amount: Decimal | None = None  # credited (OK only)
    currency: str | None = None
    balance: Decimal | None = None  # the card's balance after the credit (OK only)
    voucher_id: int | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == OK


@dataclass(frozen=True)
class Transfer:
    amount: Decimal
    currency: str
    from_balance: Decimal
    to_balance: Decimal


@database_errors
def redeem(pool: ConnectionPool, number: str, card_id: int) -> Redemption:
    """Move a voucher's value to a card, once. Safe under any number of simultaneous tries."""
    with pool.connection() as conn, conn.transaction():
        return redeem_in(conn, number, card_id)


def redeem_in(conn: Any, number: str, card_id: int) -> Redemption:
    """redeem inside the caller's transaction (the top-up throttle's gate holds
    it, so the claim, the credit and a failure's count commit together)."""
    # The currency test is part of the claim: a voucher in another currency
    # stays unused (the caller may own a card it fits).
    row = conn.execute(
        "UPDATE vouchers v SET status = 'used', used_by = a.id, used_at = now()"
        "  FROM accounts a"
        " WHERE v.number = %s AND v.status = 'unused'"
        "   AND (v.expires_at IS NULL OR v.expires_at > now())"
        "   AND a.id = %s AND a.currency = v.currency"
        " RETURNING v.id, v.amount, v.currency",
        (number, card_id),
    ).fetchone()
    if row is None:
        return Redemption(_why_not(conn, number, card_id))
    voucher_id, amount, currency = row
    credited = conn.execute(
        "INSERT INTO ledger (account_id, amount, kind, voucher_id, reference)"
        " VALUES (%s, %s, 'topup', %s, %s) RETURNING balance_after",
        (card_id, amount, voucher_id, f"voucher {number[-4:]}"),
    ).fetchone()
    assert credited is not None
    log.info("voucher %s redeemed: %s %s to card id %s", voucher_id, amount, currency.strip(), card_id)
    return Redemption(OK, money(amount), currency.strip(), money(credited[0]), voucher_id)


def _why_not(conn: Any, number: str, card_id: int) -> str:
    row = conn.execute(
        "SELECT v.status, v.expires_at IS NOT NULL AND v.expires_at <= now(),"
        "       v.currency <> (SELECT currency FROM accounts WHERE id = %s)"
        "  FROM vouchers v WHERE v.number = %s",
        (card_id, number),
    ).fetchone()
    if row is None:
        return UNKNOWN
    status, expired, other_currency = row
    if status == "used":
        return USED
    if status != "unused":
        return UNKNOWN  # voided by the operator: as good as never issued
    if expired:
        return EXPIRED
    if other_currency:
        return WRONG_CURRENCY
    # Unused, current and in the card's currency, yet not claimed: it was
    # claimed between our UPDATE and this read by someone else.
    return USED


@database_errors
def transfer(
    pool: ConnectionPool, from_card_id: int, to_card_id: int, amount: Decimal | str, *, reference: str = ""
) -> Transfer:
    """Move `amount` from one card to another of the same currency, in one transaction.

    The source may spend only its available credit (balance minus open
    reservations), so a transfer can never take money a live call has reserved.
    """
    value = money(amount)
    if value <= 0:
        raise TransferError(f"a transfer moves a positive amount, not {value}")
    if from_card_id == to_card_id:
        raise TransferError("a card cannot transfer to itself")
    with pool.connection() as conn, conn.transaction():
        # Both rows locked in id order: two opposite transfers cannot deadlock.
        rows = conn.execute(
            "SELECT id, currency, status FROM accounts WHERE id = ANY(%s) ORDER BY id FOR UPDATE",
            ([from_card_id, to_card_id],),
        ).fetchall()
        found = {r[0]: (r[1].strip(), r[2]) for r in rows}
        for cid in (from_card_id, to_card_id):
            if cid not in found:
                raise CardNotFound(f"no card with id {cid}")
            if found[cid][1] in ("blocked", "closed"):
                raise CardBlocked(f"card id {cid} is {found[cid][1]}")
        if found[from_card_id][0] != found[to_card_id][0]:
            raise TransferError(f"cards are in {found[from_card_id][0]} and {found[to_card_id][0]}")
        available = conn.execute(
            "SELECT a.balance - coalesce((SELECT sum(amount) FROM reservations r"
            "                             WHERE r.account_id = a.id AND r.status = 'open'), 0)"
            "  FROM accounts a WHERE a.id = %s",
            (from_card_id,),
        ).fetchone()
        assert available is not None
        if available[0] < value:
            raise InsufficientFunds(f"card id {from_card_id} has {money(available[0])} available, not {value}")
        out_row = conn.execute(
            "INSERT INTO ledger (account_id, amount, kind, reference) VALUES (%s, %s, 'transfer_out', %s)"
            " RETURNING balance_after",
            (from_card_id, -value, reference or f"to card id {to_card_id}"),
        ).fetchone()
        in_row = conn.execute(
            "INSERT INTO ledger (account_id, amount, kind, reference) VALUES (%s, %s, 'transfer_in', %s)"
            " RETURNING balance_after",
            (to_card_id, value, reference or f"from card id {from_card_id}"),
        ).fetchone()
        assert out_row is not None and in_row is not None
    currency = found[from_card_id][0]
    log.info("transfer %s %s from card id %s to card id %s", value, currency, from_card_id, to_card_id)
    return Transfer(value, currency, money(out_row[0]), money(in_row[0]))


def random_number(length: int) -> str:
    """A cryptographically random number of exactly `length` digits (leading zeros kept)."""
    if length < 1:
        raise ValueError("a number has at least one digit")
    return f"{secrets.randbelow(10**length):0{length}d}"


#: The guessing bound: at most one valid voucher per NUMBERS_PER_VOUCHER numbers of
#: its length, counting the unused vouchers already out there. A guess then wins
#: with probability at most 1 in a million, and the top-up throttle bounds the
#: guesses (README "Security": with the default service-wide limit, 2,400 failed
#: top-ups a day, one stolen voucher expected in about 400 days at the bound).
NUMBERS_PER_VOUCHER = 1_000_000
#: The shortest length `generate` picks by itself (10 = the default topup_card_length).
DEFAULT_MIN_LENGTH = 10
MAX_LENGTH = 32
_GENERATE_LOCK = (0x7668, 1)  # "vh": one generate at a time, so two cannot both fill the space


def capacity(length: int) -> int:
    """How many unused vouchers `length` digits may hold within the bound."""
    return int(10**length) // NUMBERS_PER_VOUCHER  # int ** int is typed Any (a negative power is a float)


def unused_of_length(conn: Any, length: int) -> int:
    """Unused, unexpired vouchers whose numbers have `length` digits: what a guesser can hit."""
    row = conn.execute(
        "SELECT count(*) FROM vouchers WHERE status = 'unused' AND length(number) = %s"
        "   AND (expires_at IS NULL OR expires_at > now())",
        (length,),
    ).fetchone()
    return int(row[0]) if row else 0


def _pick_length(conn: Any, count: int, length: int | None, max_length: int) -> int:
    """The asked length, checked against the bound; or the shortest that meets it."""
    if length is not None:
        if length > max_length:
            raise ValueError(
                f"vouchers of {length} digits are longer than callers may type (topup_card_length {max_length})"
            )
        existing = unused_of_length(conn, length)
        if existing + count > capacity(length):
            raise ValueError(
                f"{count} more vouchers of {length} digits ({existing} unused already) would make numbers"
                f" easy to guess: at most {capacity(length)} (one per {NUMBERS_PER_VOUCHER:,} numbers);"
                " use more digits"
            )
        return length
    for candidate in range(min(DEFAULT_MIN_LENGTH, max_length), max_length + 1):
        if unused_of_length(conn, candidate) + count <= capacity(candidate):
            return candidate
    raise ValueError(
        f"{count} vouchers do not fit the guessing bound within {max_length} digits"
        " (topup_card_length): raise topup_card_length or generate fewer"
    )


@database_errors
def generate(
    pool: ConnectionPool,
    count: int,
    *,
    amount: Decimal | str,
    currency: str,
    length: int | None = None,
    max_length: int = MAX_LENGTH,
    expires_at: datetime | None = None,
    batch: str = "",
) -> list[str]:
    """Create `count` unused vouchers with random numbers; returns the numbers.

    `length` digits, or (None) the shortest length from DEFAULT_MIN_LENGTH up to
    `max_length` that keeps at most one unused voucher per NUMBERS_PER_VOUCHER
    numbers; an asked length that breaks that bound is refused. A number that
    collides with an existing voucher is drawn again (ON CONFLICT DO NOTHING),
    so the batch is always exactly `count` new vouchers.
    """
    value = money(amount)
    if value <= 0:
        raise ValueError(f"a voucher is worth a positive amount, not {value}")
    check_currency(currency)
    if count < 1:
        raise ValueError("generate at least one voucher")
    numbers: list[str] = []
    with pool.connection() as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", _GENERATE_LOCK)
        length = _pick_length(conn, count, length, max_length)
        while len(numbers) < count:
            number = random_number(length)
            try:
                row = conn.execute(
                    "INSERT INTO vouchers (number, amount, currency, expires_at, batch)"
                    " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (number) DO NOTHING RETURNING id",
                    (number, value, currency, expires_at, batch),
                ).fetchone()
            except errors.CheckViolation as exc:
                raise ValueError(f"bad voucher: {exc.diag.constraint_name}") from None
            if row is not None:
                numbers.append(number)
    log.info("%d vouchers of %s %s, %d digits, generated (batch %r)", count, value, currency, length, batch)
    return numbers


@dataclass(frozen=True)
class VoucherRow:
    number: str
    amount: Decimal
    currency: str
    status: str
    used_by: str | None
    used_at: datetime | None
    expires_at: datetime | None
    batch: str


@database_errors
def list_vouchers(pool: ConnectionPool, *, batch: str | None = None, limit: int = 1000) -> list[VoucherRow]:
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT v.number, v.amount, v.currency, v.status, a.username, v.used_at, v.expires_at, v.batch"
            "  FROM vouchers v LEFT JOIN accounts a ON a.id = v.used_by"
            " WHERE %s::text IS NULL OR v.batch = %s ORDER BY v.id LIMIT %s",
            (batch, batch, limit),
        ).fetchall()
    return [VoucherRow(r[0], money(r[1]), r[2].strip(), r[3], r[4], r[5], r[6], r[7]) for r in rows]


@database_errors
def void(pool: ConnectionPool, number: str) -> bool:
    """Withdraw an unused voucher; False when there is no unused voucher of that number."""
    with pool.connection() as conn, conn.transaction():
        row = conn.execute(
            "UPDATE vouchers SET status = 'void' WHERE number = %s AND status = 'unused' RETURNING id",
            (number,),
        ).fetchone()
    return row is not None


# --- the repository the IVR holds -----------------------------------------------------------


class Vouchers(Repository):
    """Vouchers, for a call: redemption timed as cardd_db_query_seconds{op=<method>}. Operator commands and the
    HTTP API call the functions above."""

    @query
    def redeem(self, number: str, card_id: int) -> Redemption:
        return redeem(self.pool, number, card_id)

    @query
    def redeem_in(self, conn: Any, number: str, card_id: int) -> Redemption:
        """redeem_in on the caller's connection (the top-up throttle's gate): timed on its own."""
        return redeem_in(conn, number, card_id)
