"""What an operator needs to fix things: close a reservation by hand, customers and
service plans, a card's details and history, guarded adjustments, the audit.

Every write here is one transaction that also appends its `operator_audit` row
(schema/004_operator_audit.sql): who did it, when, what and with which
arguments. Money still moves only through the ledger: closing a reservation
runs Ledger.settle (its arithmetic, its idempotency) inside the operator's
transaction, so the settlement, its CDR, its ledger row and the audit line
commit together or not at all.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import psycopg
from psycopg import errors
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from cardd.billing import catalog, identity, vouchers
from cardd.billing.ledger import Cdr, Ledger, LedgerEntry
from cardd.billing.pins import PLAIN_PREFIX, hash_pin
from cardd.billing.repository import database_errors
from cardd.digits import is_digits
from cardd.errors import CardImportRefused, CatalogError, OperatorError
from cardd.money import format_money, money

log = logging.getLogger(__name__)

#: hangup_cause of the CDR of a reservation an operator closed by hand
SETTLED_CAUSE = "OPERATOR_SETTLED"
RELEASED_CAUSE = "OPERATOR_RELEASED"


class _OneConnection:
    """Pool-shaped access to one open connection, so Ledger's methods run inside the
    operator's transaction (their own conn.transaction() becomes a savepoint)."""

    def __init__(self, conn: psycopg.Connection[Any]):
        self._conn = conn

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        yield self._conn


def _in_transaction(conn: psycopg.Connection[Any]) -> ConnectionPool:
    """The operator's open connection where the billing functions take a pool: cast, because
    _OneConnection offers only the connection() they use, not the whole ConnectionPool."""
    return cast(ConnectionPool, _OneConnection(conn))


def audit(
    conn: psycopg.Connection[Any],
    who: str,
    action: str,
    args: dict[str, Any],
    *,
    account_id: int | None = None,
    b_uuid: uuid.UUID | None = None,
    detail: str = "",
) -> None:
    """Append one audit line in the caller's transaction."""
    if not who:
        raise OperatorError("who did it must be known (--by NAME)")
    conn.execute(
        "INSERT INTO operator_audit (who, action, args, account_id, b_uuid, detail) VALUES (%s, %s, %s, %s, %s, %s)",
        (who, action, Jsonb({k: _jsonable(v) for k, v in args.items()}), account_id, b_uuid, detail),
    )
    log.info("operator %s: %s %s", who, action, detail)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (Decimal, uuid.UUID, datetime)):
        return str(value)
    return value


def _utc(value: datetime) -> str:
    return f"{value.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


# --- closing a reservation by hand -------------------------------------------------


@dataclass(frozen=True)
class Closure:
    card: str
    currency: str
    cdr: Cdr
    balance: Decimal


@database_errors
def close_reservation(
    pool: ConnectionPool,
    b_uuid: uuid.UUID,
    *,
    billed_seconds: int | None,
    who: str,
    reason: str = "",
    force: bool = False,
) -> Closure:
    """Settle an open reservation with the given billed seconds, or (billed_seconds None)
    release it at no charge. Refuses a reservation that is not open: never charged twice.
    Refuses one not yet expired unless force: its call may still be up, and closing it
    would let the call's own settlement find it settled and bill nothing.

    The operator's figure is final: the CDR is not marked estimated, so a FreeSWITCH
    CDR arriving later is taken as a repeat and charges nothing. The CDR is answered
    when cardd recorded the answer (else when granted) and ended billed seconds
    later: the best known when FreeSWITCH could not tell."""
    action = "reservations release" if billed_seconds is None else "reservations settle"
    with pool.connection() as conn, conn.transaction():
        head = conn.execute("SELECT account_id FROM reservations WHERE b_uuid = %s", (b_uuid,)).fetchone()
        if head is None:
            raise OperatorError(f"no reservation {b_uuid}")
        # The settlement's lock order: account, then reservation.
        acct = conn.execute("SELECT username, currency FROM accounts WHERE id = %s FOR UPDATE", (head[0],)).fetchone()
        assert acct is not None
        res = conn.execute(
            "SELECT status, settled_at, duration_s, coalesce(answered_at, created_at), expires_at, expires_at > now()"
            "  FROM reservations WHERE b_uuid = %s FOR UPDATE",
            (b_uuid,),
        ).fetchone()
        assert res is not None
        status, settled_at, granted, answered_at, expires_at, live = res
        ledger = Ledger(_in_transaction(conn))
        if status != "open":
            done = ledger.cdr(b_uuid)
            what = (
                (
                    f": {done.billed_seconds} s, {format_money(done.cost, done.currency)}"
                    + (" (estimated)" if done.estimated else "")
                    + f", {done.hangup_cause}"
                )
                if done
                else ""
            )
            raise OperatorError(
                f"reservation {b_uuid} was already settled at {_utc(settled_at)}{what}; nothing charged"
            )
        if live and not force:
            raise OperatorError(
                f"reservation {b_uuid} has not expired (until {_utc(expires_at)}): its call may"
                " still be up; give --force if you know it has ended"
            )
        seconds = billed_seconds or 0
        if seconds > granted:
            raise OperatorError(f"reservation {b_uuid} granted {granted} s; cannot bill {seconds} s")
        cdr = ledger.settle(
            b_uuid,
            billmsec=seconds * 1000,
            hangup_cause=SETTLED_CAUSE if billed_seconds is not None else RELEASED_CAUSE,
            answered_at=answered_at if seconds else None,
            ended_at=answered_at + timedelta(seconds=seconds),
            estimated=False,
        )
        detail = (
            "released: nothing charged"
            if billed_seconds is None
            else f"settled at {cdr.billed_seconds} s: {format_money(cdr.cost, cdr.currency)}"
        )
        if reason:
            detail += f" ({reason})"
        if cdr.cost == 0:
            # No 'call' row for a free call: this zero row shows the card's history what happened.
            conn.execute(
                "INSERT INTO ledger (account_id, amount, kind, b_uuid, reference) VALUES (%s, 0, 'release', %s, %s)",
                (head[0], b_uuid, f"reservation {detail} by {who}"),
            )
        audit(
            conn,
            who,
            action,
            {"b_uuid": b_uuid, "billed_seconds": billed_seconds, "reason": reason, "force": force},
            account_id=head[0],
            b_uuid=b_uuid,
            detail=detail,
        )
        balance = conn.execute("SELECT balance FROM accounts WHERE id = %s", (head[0],)).fetchone()
        assert balance is not None
    return Closure(card=acct[0], currency=acct[1].strip(), cdr=cdr, balance=money(balance[0]))


# --- guarded adjustments ---------------------------------------------------------------


@database_errors
def adjust_card(
    pool: ConnectionPool, number: str, amount: Decimal, *, who: str, reference: str, allow_negative: bool = False
) -> Decimal:
    """Credit or debit a card as an 'adjustment' ledger row; returns the new balance.

    A debit that would leave the balance, or the credit open calls may still
    spend, below zero is refused unless allow_negative says it is meant."""
    value = money(amount)
    if value == 0:
        raise OperatorError("an adjustment of 0 changes nothing")
    with pool.connection() as conn, conn.transaction():
        row = conn.execute(
            "SELECT a.id, a.currency, a.balance, coalesce((SELECT sum(amount) FROM reservations r"
            "       WHERE r.account_id = a.id AND r.status = 'open'), 0)"
            "  FROM accounts a WHERE a.username = %s FOR UPDATE OF a",
            (number,),
        ).fetchone()
        if row is None:
            raise OperatorError(f"no card {number!r}")
        card_id, currency, balance, reserved = row[0], row[1].strip(), money(row[2]), money(row[3])
        after = balance + value
        if value < 0 and after - reserved < 0 and not allow_negative:
            held = f" ({format_money(reserved, currency)} held by open calls)" if reserved else ""
            raise OperatorError(
                f"card {number}: {format_money(value, currency)} would take the balance from"
                f" {format_money(balance, currency)} to {format_money(after, currency)}{held};"
                " give --allow-negative if that is meant"
            )
        new_balance = Ledger(_in_transaction(conn)).adjust(card_id, value, reference=reference)
        audit(
            conn,
            who,
            "card adjust",
            {"card": number, "amount": value, "reference": reference, "allow_negative": allow_negative},
            account_id=card_id,
            detail=f"{format_money(value, currency)}: balance {format_money(new_balance)}",
        )
    return new_balance


# --- cards: every write audited -----------------------------------------------------------------


@database_errors
def add_card(pool: ConnectionPool, number: str, *, who: str, **card: Any) -> int:
    """catalog.create_card, audited; `card` holds its keywords (the PIN is never recorded)."""
    with pool.connection() as conn, conn.transaction():
        card_id = catalog.create_card(_in_transaction(conn), number, **card)
        shown = {k: v for k, v in card.items() if k != "pin" and v is not None}
        audit(
            conn,
            who,
            "card add",
            {"card": number, **shown, "pin": "set" if card.get("pin") else "none"},
            account_id=card_id,
            detail=f"card {number} created, balance {money(card.get('balance') or 0)}",
        )
    return card_id


@database_errors
def transfer_credit(
    pool: ConnectionPool, from_number: str, to_number: str, amount: Decimal, *, who: str
) -> vouchers.Transfer:
    """vouchers.transfer between two cards by number, audited on both cards."""
    with pool.connection() as conn, conn.transaction():
        ids = dict(_card_ids(conn, [from_number, to_number]))
        done = vouchers.transfer(
            _in_transaction(conn), ids[from_number], ids[to_number], amount, reference="operator transfer"
        )
        args = {"from": from_number, "to": to_number, "amount": money(amount)}
        moved = format_money(done.amount, done.currency)
        audit(conn, who, "card transfer", args, account_id=ids[from_number], detail=f"{moved} to card {to_number}")
        audit(conn, who, "card transfer", args, account_id=ids[to_number], detail=f"{moved} from card {from_number}")
    return done


@database_errors
def set_card_status(pool: ConnectionPool, number: str, status: str, *, who: str) -> None:
    with pool.connection() as conn, conn.transaction():
        [(_, card_id)] = _card_ids(conn, [number])
        identity.set_status(_in_transaction(conn), number, status)
        audit(
            conn,
            who,
            f"card {'block' if status == 'blocked' else 'unblock'}",
            {"card": number},
            account_id=card_id,
            detail=f"card {number}: {status}",
        )


@database_errors
def set_card_pin(pool: ConnectionPool, number: str, pin: str, *, who: str) -> None:
    """identity.set_pin, audited; the audit says whether a PIN was set, never which."""
    with pool.connection() as conn, conn.transaction():
        [(_, card_id)] = _card_ids(conn, [number])
        identity.set_pin(_in_transaction(conn), card_id, pin)
        audit(
            conn,
            who,
            "card set-pin",
            {"card": number, "pin": "set" if pin else "cleared"},
            account_id=card_id,
            detail=f"card {number}: PIN {'set' if pin else 'cleared'}",
        )


# --- customers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CustomerRow:
    id: int
    name: str
    cards: int
    balance: dict[str, Decimal]  # currency -> sum of the cards' balances
    created_at: datetime


def _customer_id(conn: psycopg.Connection[Any], name: str) -> int:
    row = conn.execute("SELECT id FROM customers WHERE name = %s", (name,)).fetchone()
    if row is None:
        raise OperatorError(f"unknown customer {name!r}")
    return int(row[0])


@database_errors
def add_customer(pool: ConnectionPool, name: str, *, who: str) -> int:
    if not name.strip():
        raise OperatorError("a customer needs a name")
    try:
        with pool.connection() as conn, conn.transaction():
            row = conn.execute("INSERT INTO customers (name) VALUES (%s) RETURNING id", (name,)).fetchone()
            assert row is not None
            audit(conn, who, "customer add", {"name": name}, detail=f"customer {name} created")
    except errors.UniqueViolation:
        raise OperatorError(f"customer {name!r} already exists") from None
    return int(row[0])


@database_errors
def list_customers(pool: ConnectionPool, name: str | None = None) -> list[CustomerRow]:
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT c.id, c.name, c.created_at, a.currency, count(a.id), coalesce(sum(a.balance), 0)"
            "  FROM customers c LEFT JOIN accounts a ON a.customer_id = c.id"
            " WHERE %s::text IS NULL OR c.name = %s"
            " GROUP BY c.id, a.currency ORDER BY c.name, a.currency",
            (name, name),
        ).fetchall()
    found: dict[int, tuple[str, datetime, list[int], dict[str, Decimal]]] = {}
    for cid, cname, created, currency, n, total in rows:
        _, _, cards, balance = found.setdefault(cid, (cname, created, [0], {}))
        if currency is not None:  # a customer without cards has one row of NULLs
            cards[0] += int(n)
            balance[currency.strip()] = money(total)
    out = [CustomerRow(cid, e[0], e[2][0], e[3], e[1]) for cid, e in found.items()]
    if name is not None and not out:
        raise OperatorError(f"unknown customer {name!r}")
    return out


@database_errors
def rename_customer(pool: ConnectionPool, old: str, new: str, *, who: str) -> None:
    if not new.strip():
        raise OperatorError("a customer needs a name")
    try:
        with pool.connection() as conn, conn.transaction():
            cid = _customer_id(conn, old)
            conn.execute("UPDATE customers SET name = %s WHERE id = %s", (new, cid))
            audit(conn, who, "customer rename", {"name": old, "new_name": new}, detail=f"{old} -> {new}")
    except errors.UniqueViolation:
        raise OperatorError(f"customer {new!r} already exists") from None


@database_errors
def delete_customer(pool: ConnectionPool, name: str, *, who: str) -> None:
    """Delete a customer no card belongs to."""
    with pool.connection() as conn, conn.transaction():
        cid = _customer_id(conn, name)
        n = conn.execute("SELECT count(*) FROM accounts WHERE customer_id = %s", (cid,)).fetchone()
        if n and n[0]:
            raise OperatorError(f"customer {name!r} still has {n[0]} card(s); unassign them first")
        conn.execute("DELETE FROM customers WHERE id = %s", (cid,))
        audit(conn, who, "customer delete", {"name": name}, detail=f"customer {name} deleted")


@database_errors
def assign_customer(pool: ConnectionPool, numbers: list[str], name: str | None, *, who: str) -> int:
    """Make `name` (None: nobody) the customer of the cards; all or none. Returns the count."""
    with pool.connection() as conn, conn.transaction():
        cid = _customer_id(conn, name) if name is not None else None
        for number, card_id in _card_ids(conn, numbers):
            conn.execute("UPDATE accounts SET customer_id = %s WHERE id = %s", (cid, card_id))
            audit(
                conn,
                who,
                "customer assign" if name is not None else "customer unassign",
                {"card": number, "customer": name},
                account_id=card_id,
                detail=f"card {number} -> customer {name}" if name else f"card {number}: no customer",
            )
    return len(numbers)


def _card_ids(conn: psycopg.Connection[Any], numbers: list[str]) -> list[tuple[str, int]]:
    found = dict(conn.execute("SELECT username, id FROM accounts WHERE username = ANY(%s)", (numbers,)).fetchall())
    missing = [n for n in numbers if n not in found]
    if missing:
        raise OperatorError(f"no card {', '.join(missing)}")
    return [(n, int(found[n])) for n in numbers]


# --- service plans ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    id: int
    name: str
    suspended: bool
    minutes_plan: bool
    minutes: dict[str, int]  # prefix -> free minutes
    cards: int


def _plan_id(conn: psycopg.Connection[Any], name: str) -> int:
    row = conn.execute("SELECT id FROM service_plans WHERE name = %s", (name,)).fetchone()
    if row is None:
        raise OperatorError(f"unknown service plan {name!r}")
    return int(row[0])


@database_errors
def add_plan(
    pool: ConnectionPool, name: str, *, who: str, minutes_plan: bool = False, minutes: dict[str, int] | None = None
) -> int:
    if not name.strip():
        raise OperatorError("a service plan needs a name")
    try:
        with pool.connection() as conn, conn.transaction():
            row = conn.execute(
                "INSERT INTO service_plans (name, minutes_plan) VALUES (%s, %s) RETURNING id", (name, minutes_plan)
            ).fetchone()
            assert row is not None
            for prefix, count in (minutes or {}).items():
                conn.execute(
                    "INSERT INTO service_plan_minutes (plan_id, prefix, minutes) VALUES (%s, %s, %s)",
                    (row[0], prefix, count),
                )
            audit(
                conn,
                who,
                "plan add",
                {"name": name, "minutes_plan": minutes_plan, "minutes": minutes or {}},
                detail=f"plan {name} created",
            )
    except errors.UniqueViolation:
        raise OperatorError(f"service plan {name!r} already exists") from None
    return int(row[0])


@database_errors
def list_plans(pool: ConnectionPool, name: str | None = None) -> list[Plan]:
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT p.id, p.name, p.suspended, p.minutes_plan,"
            "       (SELECT count(*) FROM accounts a WHERE a.service_plan_id = p.id)"
            "  FROM service_plans p WHERE %s::text IS NULL OR p.name = %s ORDER BY p.name",
            (name, name),
        ).fetchall()
        minutes: dict[int, dict[str, int]] = {}
        for plan_id, prefix, count in conn.execute(
            "SELECT plan_id, prefix, minutes FROM service_plan_minutes ORDER BY plan_id, prefix"
        ):
            minutes.setdefault(plan_id, {})[prefix] = count
    if name is not None and not rows:
        raise OperatorError(f"unknown service plan {name!r}")
    return [Plan(r[0], r[1], r[2], r[3], minutes.get(r[0], {}), int(r[4])) for r in rows]


@database_errors
def update_plan(
    pool: ConnectionPool,
    name: str,
    *,
    who: str,
    new_name: str | None = None,
    suspended: bool | None = None,
    minutes_plan: bool | None = None,
    set_minutes: dict[str, int] | None = None,
    remove_prefixes: list[str] | None = None,
) -> None:
    """Change a plan: rename, suspend/resume, minutes-plan flag, free minutes per prefix."""
    args = {
        "name": name,
        "new_name": new_name,
        "suspended": suspended,
        "minutes_plan": minutes_plan,
        "set_minutes": set_minutes or {},
        "remove_prefixes": remove_prefixes or [],
    }
    try:
        with pool.connection() as conn, conn.transaction():
            pid = _plan_id(conn, name)
            if new_name is not None:
                conn.execute("UPDATE service_plans SET name = %s WHERE id = %s", (new_name, pid))
            if suspended is not None:
                conn.execute("UPDATE service_plans SET suspended = %s WHERE id = %s", (suspended, pid))
            if minutes_plan is not None:
                conn.execute("UPDATE service_plans SET minutes_plan = %s WHERE id = %s", (minutes_plan, pid))
            for prefix, count in (set_minutes or {}).items():
                conn.execute(
                    "INSERT INTO service_plan_minutes (plan_id, prefix, minutes) VALUES (%s, %s, %s)"
                    " ON CONFLICT (plan_id, prefix) DO UPDATE SET minutes = EXCLUDED.minutes",
                    (pid, prefix, count),
                )
            for prefix in remove_prefixes or []:
                gone = conn.execute(
                    "DELETE FROM service_plan_minutes WHERE plan_id = %s AND prefix = %s", (pid, prefix)
                ).rowcount
                if not gone:
                    raise OperatorError(f"service plan {name!r} has no minutes for prefix {prefix!r}")
            audit(conn, who, "plan update", args, detail=f"plan {name} changed")
    except errors.UniqueViolation:
        raise OperatorError(f"service plan {new_name!r} already exists") from None


@database_errors
def delete_plan(pool: ConnectionPool, name: str, *, who: str) -> None:
    """Delete a plan no card uses."""
    with pool.connection() as conn, conn.transaction():
        pid = _plan_id(conn, name)
        n = conn.execute("SELECT count(*) FROM accounts WHERE service_plan_id = %s", (pid,)).fetchone()
        if n and n[0]:
            raise OperatorError(f"service plan {name!r} is used by {n[0]} card(s); unassign them first")
        conn.execute("DELETE FROM service_plans WHERE id = %s", (pid,))
        audit(conn, who, "plan delete", {"name": name}, detail=f"plan {name} deleted")


@database_errors
def assign_plan(pool: ConnectionPool, numbers: list[str], name: str | None, *, who: str) -> int:
    """Put the cards on plan `name` (None: off any plan); all or none. Plan seconds already
    used stay counted (usage is kept per card and prefix), so re-assigning never refills them.
    A call up keeps the plan seconds its reservation was granted."""
    with pool.connection() as conn, conn.transaction():
        pid = _plan_id(conn, name) if name is not None else None
        for number, card_id in _card_ids(conn, numbers):
            conn.execute("UPDATE accounts SET service_plan_id = %s WHERE id = %s", (pid, card_id))
            audit(
                conn,
                who,
                "plan assign" if name is not None else "plan unassign",
                {"card": number, "plan": name},
                account_id=card_id,
                detail=f"card {number} -> plan {name}" if name else f"card {number}: no plan",
            )
    return len(numbers)


# --- a card's details and history --------------------------------------------------------


@dataclass(frozen=True)
class CardDetails:
    tariff: str
    customer: str | None
    plan: str | None
    plan_suspended: bool
    minutes_plan: bool
    pin_state: str  # unset | plain-imported | hashed
    authname: str | None
    valid_days: int | None
    first_used_at: datetime | None
    language: str | None
    max_concurrent_calls: int | None
    plan_usage: list[tuple[str, int, int]]  # (prefix, used seconds, plan minutes)


def pin_state(pin_hash: str | None) -> str:
    if pin_hash is None:
        return "unset"
    if pin_hash.startswith(PLAIN_PREFIX):
        return "plain-imported"
    return "hashed"


@database_errors
def card_details(pool: ConnectionPool, card_id: int) -> CardDetails:
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT t.name, c.name, p.name, coalesce(p.suspended, false), coalesce(p.minutes_plan, false),"
            "       a.pin_hash, a.authname, a.valid_days, a.first_used_at, a.language, a.max_concurrent_calls,"
            "       a.service_plan_id"
            "  FROM accounts a JOIN tariffs t ON t.id = a.tariff_id"
            "  LEFT JOIN customers c ON c.id = a.customer_id LEFT JOIN service_plans p ON p.id = a.service_plan_id"
            " WHERE a.id = %s",
            (card_id,),
        ).fetchone()
        if row is None:
            raise OperatorError(f"no card with id {card_id}")
        usage = conn.execute(
            "SELECT m.prefix, coalesce(u.used_seconds, 0), m.minutes FROM service_plan_minutes m"
            "  LEFT JOIN account_plan_usage u ON u.account_id = %s AND u.prefix = m.prefix"
            " WHERE m.plan_id = %s ORDER BY m.prefix",
            (card_id, row[11]),
        ).fetchall()
    return CardDetails(
        tariff=row[0],
        customer=row[1],
        plan=row[2],
        plan_suspended=row[3],
        minutes_plan=row[4],
        pin_state=pin_state(row[5]),
        authname=row[6],
        valid_days=row[7],
        first_used_at=row[8],
        language=row[9],
        max_concurrent_calls=row[10],
        plan_usage=[(p, int(u), int(m)) for p, u, m in usage],
    )


@database_errors
def card_history(pool: ConnectionPool, card_id: int, *, limit: int | None = None) -> list[LedgerEntry]:
    """The card's ledger rows, oldest first (the last `limit` of them); balance_after is the running balance."""
    entries = Ledger(pool).ledger_entries(card_id)
    return entries[-limit:] if limit else entries


@dataclass(frozen=True)
class AuditLine:
    at: datetime
    who: str
    action: str
    args: dict[str, Any]
    card: str | None
    b_uuid: uuid.UUID | None
    detail: str


@database_errors
def audit_lines(pool: ConnectionPool, *, card: str | None = None, limit: int = 100) -> list[AuditLine]:
    """The newest audit lines (of one card), oldest first."""
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT * FROM (SELECT o.id, o.at, o.who, o.action, o.args, a.username, o.b_uuid, o.detail"
            "  FROM operator_audit o LEFT JOIN accounts a ON a.id = o.account_id"
            " WHERE %s::text IS NULL OR a.username = %s ORDER BY o.id DESC LIMIT %s) x ORDER BY id",
            (card, card, limit),
        ).fetchall()
    return [AuditLine(*r[1:]) for r in rows]


# --- card import -----------------------------------------------------------------------------

CARD_COLUMNS = ("number", "pin", "balance", "expires")


@dataclass(frozen=True)
class _CardRow:
    line: int
    number: str
    pin: str
    balance: Decimal
    expires: datetime | None


def _card_header(first: list[str]) -> list[str]:
    names = [c.strip().lower() for c in first]
    if "number" not in names:
        shown = ",".join(first)[:60]
        if any(is_digits(n) for n in names):  # a card, not a header: importing it as one would lose it
            raise CardImportRefused(
                [
                    (
                        1,
                        f"no header row: the first line must name the columns"
                        f" ({','.join(CARD_COLUMNS)}; number required), got {shown!r}",
                    )
                ],
                0,
            )
        raise CardImportRefused(
            [(1, f"the header has no 'number' column (known: {', '.join(CARD_COLUMNS)}), got {shown!r}")], 0
        )
    unknown = [n for n in names if n not in CARD_COLUMNS]
    if unknown:
        raise CardImportRefused([(1, f"unknown column(s) {', '.join(unknown)}; known: {', '.join(CARD_COLUMNS)}")], 0)
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise CardImportRefused([(1, f"column(s) named twice: {', '.join(twice)}")], 0)
    return names


def _card_row(
    line: int, names: list[str], cells: list[str], *, allow_negative: bool, allow_past_expiry: bool, now: datetime
) -> _CardRow:
    if len(cells) != len(names):
        raise ValueError(f"{len(cells)} columns, expected {len(names)}")
    cell = {n: c.strip() for n, c in zip(names, cells)}
    number, pin = cell["number"], cell.get("pin", "")
    if not is_digits(number) or len(number) > 32:
        raise ValueError(f"number: digits only, at most 32, got {number!r}")
    if pin and not is_digits(pin):
        raise ValueError(f"pin: digits only, got {pin!r}")
    try:
        balance = money(cell.get("balance") or "0")
    except ValueError as exc:
        raise ValueError(f"balance: {exc}") from None
    if balance < 0 and not allow_negative:
        raise ValueError(f"balance: {balance} is negative (--allow-negative if meant)")
    expires = None
    if cell.get("expires"):
        try:
            expires = datetime.fromisoformat(cell["expires"])
        except ValueError:
            raise ValueError(f"expires: not a date (YYYY-MM-DD[THH:MM]): {cell['expires']!r}") from None
        expires = expires if expires.tzinfo else expires.replace(tzinfo=UTC)
        if expires <= now and not allow_past_expiry:
            raise ValueError(f"expires: {cell['expires']} is in the past (--allow-past-expiry if meant)")
    return _CardRow(line, number, pin, balance, expires)


@database_errors
def import_cards(
    pool: ConnectionPool,
    f: Any,
    *,
    tariff: str,
    currency: str,
    customer: str | None = None,
    plan: str | None = None,
    allow_negative: bool = False,
    allow_past_expiry: bool = False,
    who: str = "",
    source: str = "",
) -> int:
    """Import cards from CSV (a header naming number[,pin,balance,expires]), all or nothing.

    Every bad row is reported (CardImportRefused, with line numbers): a bad
    value, a number twice in the file (naming the first line), a number that is
    already a card. PINs are stored hashed. Returns the number of cards."""
    reader = csv.reader(f)
    first = next(reader, None)
    if first is None:
        raise CardImportRefused([(1, "the file is empty")], 0)
    names = _card_header(first)
    now = datetime.now(UTC)
    errors_: list[tuple[int, str]] = []
    rows: list[_CardRow] = []
    seen: dict[str, int] = {}
    read = 0
    for cells in reader:
        line = reader.line_num
        if not cells or (len(cells) == 1 and not cells[0].strip()):
            continue
        read += 1
        try:
            row = _card_row(
                line, names, cells, allow_negative=allow_negative, allow_past_expiry=allow_past_expiry, now=now
            )
        except ValueError as exc:
            errors_.append((line, str(exc)))
            continue
        if row.number in seen:
            errors_.append((line, f"card number {row.number} already on line {seen[row.number]}"))
            continue
        seen[row.number] = line
        rows.append(row)
    with pool.connection() as conn, conn.transaction():
        try:
            tid, tariff_currency = catalog.tariff_id(conn, tariff)
            if tariff_currency != currency:
                raise OperatorError(f"tariff {tariff!r} is in {tariff_currency}; {currency} cards cannot use it")
            customer_id = catalog.named_id(conn, "customers", "customer", customer) if customer else None
            plan_id = catalog.named_id(conn, "service_plans", "service plan", plan) if plan else None
        except CatalogError as exc:
            raise OperatorError(str(exc)) from None
        for (number,) in conn.execute("SELECT username FROM accounts WHERE username = ANY(%s)", (list(seen),)):
            errors_.append((seen[number], f"card number {number} already exists"))
        if errors_:
            raise CardImportRefused(sorted(errors_), read)
        if not rows:
            raise CardImportRefused([(max(reader.line_num, 1), "no cards in the file")], 0)
        for row in rows:
            try:
                new = conn.execute(
                    "INSERT INTO accounts (username, pin_hash, currency, tariff_id, expires_at, customer_id,"
                    " service_plan_id) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
                    (
                        row.number,
                        hash_pin(row.pin) if row.pin else None,
                        currency,
                        tid,
                        row.expires,
                        customer_id,
                        plan_id,
                    ),
                ).fetchone()
            except errors.UniqueViolation:  # created meanwhile by someone else
                raise CardImportRefused([(row.line, f"card number {row.number} already exists")], read) from None
            assert new is not None
            if row.balance != 0:
                conn.execute(
                    "INSERT INTO ledger (account_id, amount, kind, reference)"
                    " VALUES (%s, %s, 'initial', 'card imported')",
                    (new[0], row.balance),
                )
        total = sum((r.balance for r in rows), Decimal(0))
        audit(
            conn,
            who,
            "card import",
            {
                "file": source,
                "tariff": tariff,
                "currency": currency,
                "customer": customer,
                "plan": plan,
                "allow_negative": allow_negative,
                "allow_past_expiry": allow_past_expiry,
            },
            detail=f"{len(rows)} cards {rows[0].number}..{rows[-1].number}, balances {format_money(total, currency)}",
        )
    return len(rows)
