"""What the HTTP API reads and records that the rest of billing had no function for:
keyset pages of cards, CDRs, reservations, ledger rows, vouchers, customers and rates
(filtered, and scoped to a reseller's customers), ownership checks, idempotent
money requests and audited writes.

Pages are keyset pages on the table's id (`after` = the last id of the previous page):
each costs one index range scan however deep the client pages, and rows inserted
meanwhile neither repeat nor shift a page.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import IO, Any, Generic, TypeVar

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from cardd.billing import catalog, identity, operator, vouchers
from cardd.billing.ledger import _CDR_COLUMNS, Cdr, LedgerEntry, _cdr, find_rate
from cardd.billing.rate_import import ImportProgress, ImportResult, import_rates
from cardd.billing.rating import Rate
from cardd.billing.repository import database_errors
from cardd.errors import IdempotencyConflict
from cardd.errors import NotVisible as NotVisible  # re-exported: the web console raises apistore.NotVisible
from cardd.money import money

T = TypeVar("T")

MAX_PAGE = 500


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_after: int | None  # the id to continue after; None: this was the last page


def encode_cursor(after: int | None) -> str | None:
    return None if after is None else base64.urlsafe_b64encode(f"v1:{after}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    """The id a cursor continues after; ValueError for anything not made by encode_cursor."""
    if not cursor:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("not a cursor this API gave out") from None
    version, _, number = text.partition(":")
    if version != "v1" or not number.isascii() or not number.isdigit() or len(number) > 18:
        raise ValueError("not a cursor this API gave out")
    return int(number)


def _page(rows: list[Any], limit: int, key: Callable[[Any], int]) -> tuple[list[Any], int | None]:
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (key(rows[-1]) if more and rows else None)


class _Where:
    def __init__(self) -> None:
        self.parts: list[str] = ["true"]
        self.params: list[Any] = []

    def add(self, sql: str, *params: Any) -> None:
        self.parts.append(sql)
        self.params.extend(params)

    @property
    def sql(self) -> str:
        return " AND ".join(self.parts)


# --- ownership ------------------------------------------------------------------------


def _owner_clause(where: _Where, owner: str | None, customer_col: str) -> None:
    if owner is not None:
        where.add(f"{customer_col} IN (SELECT id FROM customers WHERE owner = %s)", owner)


@database_errors
def card_id_visible(pool: ConnectionPool, number: str, owner: str | None) -> int:
    """The id of card `number` when the caller may see it (owner None: every card)."""
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT a.id, c.owner FROM accounts a LEFT JOIN customers c ON c.id = a.customer_id WHERE a.username = %s",
            (number,),
        ).fetchone()
    if row is None or (owner is not None and row[1] != owner):
        raise NotVisible(f"no card {number}")
    return int(row[0])


@database_errors
def customer_visible(pool: ConnectionPool, name: str, owner: str | None) -> int:
    with pool.connection() as conn:
        row = conn.execute("SELECT id, owner FROM customers WHERE name = %s", (name,)).fetchone()
    if row is None or (owner is not None and row[1] != owner):
        raise NotVisible(f"no customer {name}")
    return int(row[0])


def set_customer_owner(conn: psycopg.Connection[Any], customer_id: int, owner: str | None) -> None:
    conn.execute("UPDATE customers SET owner = %s WHERE id = %s", (owner, customer_id))


# --- cards ------------------------------------------------------------------------


@dataclass(frozen=True)
class CardRow:
    summary: catalog.CardSummary
    expires_at: datetime | None
    created_at: datetime


@database_errors
def cards_page(
    pool: ConnectionPool,
    *,
    owner: str | None = None,
    status: str | None = None,
    customer: str | None = None,
    tariff: str | None = None,
    number_prefix: str | None = None,
    balance_below: Decimal | None = None,
    after: int | None = None,
    limit: int = 100,
) -> Page[CardRow]:
    where = _Where()
    _owner_clause(where, owner, "a.customer_id")
    if status is not None:
        where.add("a.status = %s", status)
    if customer is not None:
        where.add("c.name = %s", customer)
    if tariff is not None:
        where.add("t.name = %s", tariff)
    if number_prefix:
        where.add("a.username LIKE %s", number_prefix + "%")
    if balance_below is not None:
        where.add("a.balance < %s", money(balance_below))
    if after is not None:
        where.add("a.id > %s", after)
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT a.id, a.username, a.balance,"
            "       a.balance - coalesce((SELECT sum(amount) FROM reservations r WHERE r.account_id = a.id"
            "                             AND r.status = 'open'), 0),"
            "       a.currency, a.status, t.name,"
            "       (SELECT count(*) FROM reservations r WHERE r.account_id = a.id AND r.status = 'open'),"
            "       c.name, p.name, a.expires_at, a.created_at"
            "  FROM accounts a JOIN tariffs t ON t.id = a.tariff_id"
            "  LEFT JOIN customers c ON c.id = a.customer_id LEFT JOIN service_plans p ON p.id = a.service_plan_id"
            f" WHERE {where.sql} ORDER BY a.id LIMIT %s",
            (*where.params, limit + 1),
        ).fetchall()
    rows, next_after = _page(rows, limit, lambda r: r[0])
    return Page(
        [
            CardRow(
                catalog.CardSummary(
                    int(r[0]), r[1], money(r[2]), money(r[3]), r[4].strip(), r[5], r[6], int(r[7]), r[8], r[9]
                ),
                r[10],
                r[11],
            )
            for r in rows
        ],
        next_after,
    )


@database_errors
def card_row(pool: ConnectionPool, card_id: int) -> CardRow:
    with pool.connection() as conn:
        number = conn.execute("SELECT username FROM accounts WHERE id = %s", (card_id,)).fetchone()
    if number is None:
        raise NotVisible(f"no card id {card_id}")
    page = cards_page(pool, number_prefix=None, after=card_id - 1, limit=1)
    assert page.items and page.items[0].summary.id == card_id
    return page.items[0]


@database_errors
def ledger_page(pool: ConnectionPool, card_id: int, *, after: int | None = None, limit: int = 100) -> Page[LedgerEntry]:
    """A card's ledger rows, newest first (after = continue below this id)."""
    with pool.connection() as conn:
        rows = (
            conn.cursor(row_factory=dict_row)
            .execute(
                "SELECT id, account_id, amount, kind, b_uuid, reference, balance_after, created_at FROM ledger"
                " WHERE account_id = %s AND (%s::bigint IS NULL OR id < %s) ORDER BY id DESC LIMIT %s",
                (card_id, after, after, limit + 1),
            )
            .fetchall()
        )
    rows, next_after = _page(rows, limit, lambda r: r["id"])
    return Page([LedgerEntry(**r) for r in rows], next_after)


# --- CDRs -------------------------------------------------------------------------


@database_errors
def cdrs_page(
    pool: ConnectionPool,
    *,
    owner: str | None = None,
    card_id: int | None = None,
    customer_id: int | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    destination_prefix: str | None = None,
    cause: str | None = None,
    after: int | None = None,
    limit: int = 100,
) -> Page[tuple[int, Cdr]]:
    """CDRs newest first, filtered by card, customer, end time [start, end), destination prefix, cause."""
    where = _Where()
    # A CDR's customer is the one its card had when the call was billed (schema/008).
    if owner is not None:
        where.add("customer_id = ANY(ARRAY(SELECT id FROM customers WHERE owner = %s))", owner)
    if card_id is not None:
        where.add("account_id = %s", card_id)
    if customer_id is not None:
        where.add("customer_id = %s", customer_id)
    if start is not None:
        where.add("ended_at >= %s", start)
    if end is not None:
        where.add("ended_at < %s", end)
    if destination_prefix:
        where.add("translated_cld LIKE %s", destination_prefix + "%")
    if cause:
        where.add("hangup_cause = %s", cause)
    if after is not None:
        where.add("id < %s", after)
    with pool.connection() as conn:
        rows = (
            conn.cursor(row_factory=dict_row)
            .execute(
                f"SELECT id, {_CDR_COLUMNS} FROM cdrs WHERE {where.sql} ORDER BY id DESC LIMIT %s",
                (*where.params, limit + 1),
            )
            .fetchall()
        )
    rows, next_after = _page(rows, limit, lambda r: r["id"])
    return Page([(int(r.pop("id")), _cdr(r)) for r in rows], next_after)


# --- reservations ------------------------------------------------------------------


@dataclass(frozen=True)
class ReservationRow:
    seq: int
    b_uuid: uuid.UUID
    card: str
    amount: Decimal
    currency: str
    duration_s: int
    cld: str
    created_at: datetime
    expires_at: datetime
    expired: bool
    switchname: str | None
    bridge_sent_at: datetime | None
    answered_at: datetime | None


@database_errors
def reservations_page(
    pool: ConnectionPool,
    *,
    owner: str | None = None,
    card_id: int | None = None,
    expired_only: bool = False,
    after: int | None = None,
    limit: int = 100,
) -> Page[ReservationRow]:
    """Open reservations, oldest first. Reservations have no serial id: the page key is
    created_at's microseconds since the epoch (ties share a page boundary's fate; b_uuid
    breaks them inside a page)."""
    where = _Where()
    where.add("r.status = 'open'")
    _owner_clause(where, owner, "a.customer_id")
    if card_id is not None:
        where.add("r.account_id = %s", card_id)
    if expired_only:
        where.add("r.expires_at <= now()")
    seq = "(extract(epoch FROM r.created_at) * 1000000)::bigint"
    if after is not None:
        where.add(f"{seq} > %s", after)
    with pool.connection() as conn:
        rows = conn.execute(
            f"SELECT {seq}, r.b_uuid, a.username, r.amount, a.currency, r.duration_s, r.cld, r.created_at,"
            "       r.expires_at, r.expires_at <= now(), r.switchname, r.bridge_sent_at, r.answered_at"
            "  FROM reservations r JOIN accounts a ON a.id = r.account_id"
            f" WHERE {where.sql} ORDER BY 1, r.b_uuid LIMIT %s",
            (*where.params, limit + 1),
        ).fetchall()
    rows, next_after = _page(rows, limit, lambda r: r[0])
    return Page([ReservationRow(int(r[0]), r[1], r[2], money(r[3]), r[4].strip(), *r[5:]) for r in rows], next_after)


@database_errors
def reservation_visible(pool: ConnectionPool, b_uuid: uuid.UUID, owner: str | None) -> None:
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT c.owner FROM reservations r JOIN accounts a ON a.id = r.account_id"
            " LEFT JOIN customers c ON c.id = a.customer_id WHERE r.b_uuid = %s",
            (b_uuid,),
        ).fetchone()
    if row is None or (owner is not None and row[0] != owner):
        raise NotVisible(f"no reservation {b_uuid}")


# --- catalogue: tariffs, rates, vouchers, customers -----------------------------------


@dataclass(frozen=True)
class TariffRow:
    id: int
    name: str
    currency: str
    rates: int


@database_errors
def tariffs_page(pool: ConnectionPool, *, after: int | None = None, limit: int = 100) -> Page[TariffRow]:
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT t.id, t.name, t.currency, (SELECT count(*) FROM rates r WHERE r.tariff_id = t.id)"
            "  FROM tariffs t WHERE (%s::bigint IS NULL OR t.id > %s) ORDER BY t.id LIMIT %s",
            (after, after, limit + 1),
        ).fetchall()
    rows, next_after = _page(rows, limit, lambda r: r[0])
    return Page([TariffRow(int(r[0]), r[1], r[2].strip(), int(r[3])) for r in rows], next_after)


@database_errors
def tariff_of_card(pool: ConnectionPool, card_id: int) -> str:
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT t.name FROM accounts a JOIN tariffs t ON t.id = a.tariff_id WHERE a.id = %s", (card_id,)
        ).fetchone()
    if row is None:
        raise NotVisible(f"no card id {card_id}")
    return str(row[0])


@dataclass(frozen=True)
class RateRow:
    id: int
    prefix: str
    price_1: Decimal
    interval_1: int
    price_n: Decimal
    interval_n: int
    connect_fee: Decimal
    free_seconds: int
    grace: int
    forbidden: bool


@database_errors
def rates_page(
    pool: ConnectionPool, tariff: str, *, prefix: str | None = None, after: int | None = None, limit: int = 100
) -> Page[RateRow]:
    with pool.connection() as conn:
        tid, _ = catalog.tariff_id(conn, tariff)
        rows = conn.execute(
            "SELECT id, prefix, price_1, interval_1, price_n, interval_n, connect_fee, free_seconds, grace, forbidden"
            "  FROM rates WHERE tariff_id = %s AND (%s::text IS NULL OR prefix LIKE %s)"
            "   AND (%s::bigint IS NULL OR id > %s) ORDER BY id LIMIT %s",
            (tid, prefix, (prefix or "") + "%", after, after, limit + 1),
        ).fetchall()
    rows, next_after = _page(rows, limit, lambda r: r[0])
    return Page([RateRow(*r) for r in rows], next_after)


@database_errors
def delete_rate(conn: psycopg.Connection[Any], tariff: str, prefix: str) -> bool:
    tid, _ = catalog.tariff_id(conn, tariff)
    return (
        conn.execute("DELETE FROM rates WHERE tariff_id = %s AND prefix = %s RETURNING id", (tid, prefix)).fetchone()
        is not None
    )


@dataclass(frozen=True)
class VoucherRow:
    id: int
    number: str
    amount: Decimal
    currency: str
    status: str
    used_by: str | None
    used_at: datetime | None
    expires_at: datetime | None
    batch: str
    created_at: datetime


@database_errors
def vouchers_page(
    pool: ConnectionPool,
    *,
    batch: str | None = None,
    status: str | None = None,
    after: int | None = None,
    limit: int = 100,
) -> Page[VoucherRow]:
    where = _Where()
    if batch is not None:
        where.add("v.batch = %s", batch)
    if status is not None:
        where.add("v.status = %s", status)
    if after is not None:
        where.add("v.id > %s", after)
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT v.id, v.number, v.amount, v.currency, v.status, a.username, v.used_at, v.expires_at, v.batch,"
            "       v.created_at FROM vouchers v LEFT JOIN accounts a ON a.id = v.used_by"
            f" WHERE {where.sql} ORDER BY v.id LIMIT %s",
            (*where.params, limit + 1),
        ).fetchall()
    rows, next_after = _page(rows, limit, lambda r: r[0])
    return Page([VoucherRow(int(r[0]), r[1], money(r[2]), r[3].strip(), *r[4:]) for r in rows], next_after)


@dataclass(frozen=True)
class CustomerRow:
    id: int
    name: str
    owner: str | None
    cards: int
    created_at: datetime


@database_errors
def customers_page(
    pool: ConnectionPool, *, owner: str | None = None, after: int | None = None, limit: int = 100
) -> Page[CustomerRow]:
    where = _Where()
    if owner is not None:
        where.add("c.owner = %s", owner)
    if after is not None:
        where.add("c.id > %s", after)
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT c.id, c.name, c.owner, (SELECT count(*) FROM accounts a WHERE a.customer_id = c.id),"
            f" c.created_at FROM customers c WHERE {where.sql} ORDER BY c.id LIMIT %s",
            (*where.params, limit + 1),
        ).fetchall()
    rows, next_after = _page(rows, limit, lambda r: r[0])
    return Page([CustomerRow(int(r[0]), r[1], r[2], int(r[3]), r[4]) for r in rows], next_after)


# --- writes: audited, and idempotent where money moves -------------------------------------


@contextlib.contextmanager
def transaction(pool: ConnectionPool) -> Iterator[tuple[psycopg.Connection[Any], Any]]:
    """One transaction and a pool-shaped handle on it, so service functions (catalog,
    operator, vouchers) run inside it: their own transactions become savepoints, and
    the change, its audit line and its idempotency record commit together."""
    with pool.connection() as conn, conn.transaction():
        yield conn, operator._OneConnection(conn)


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
    """One line of the operator audit (schema/004), for API changes the service layer does not audit itself."""
    operator.audit(conn, who, action, args, account_id=account_id, b_uuid=b_uuid, detail=detail)


@dataclass(frozen=True)
class StoredAnswer:
    status: int
    body: str
    content_type: str


@database_errors
def idempotent(
    pool: ConnectionPool,
    principal: str,
    key: str,
    method: str,
    path: str,
    request_hash: str,
    run: Callable[[Any], StoredAnswer],
) -> tuple[StoredAnswer, bool]:
    """Run a money-moving request once per (principal, Idempotency-Key). Returns (answer,
    replayed). The first request holds an advisory lock on its key until it commits, so a
    concurrent repeat waits and then finds the stored answer. `run(pool_like)` does the work
    inside this transaction; its answer (a refusal included) is stored with it."""
    with pool.connection() as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (0x6964, f"{principal}:{key}"))
        row = conn.execute(
            "SELECT method, path, request_hash, status, body, content_type FROM api_idempotency"
            " WHERE principal = %s AND key = %s",
            (principal, key),
        ).fetchone()
        if row is not None:
            if (row[0], row[1], row[2]) != (method, path, request_hash):
                raise IdempotencyConflict(f"Idempotency-Key {key!r} was used for another request ({row[0]} {row[1]})")
            return StoredAnswer(int(row[3]), row[4], row[5]), True
        answer = run(operator._OneConnection(conn))
        conn.execute(
            "INSERT INTO api_idempotency (principal, key, method, path, request_hash, status, body, content_type)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (principal, key, method, path, request_hash, answer.status, answer.body, answer.content_type),
        )
    return answer, False


@database_errors
def lookup_rate(pool: ConnectionPool, tariff: str, number: str) -> tuple[str, Rate | None]:
    """The longest-prefix rate of `number` in a tariff: (currency, rate or None)."""
    with pool.connection() as conn:
        tid, currency = catalog.tariff_id(conn, tariff)
        return currency.strip(), find_rate(conn, tid, number)


# --- dialling: blacklist and smart dial pages; live calls per process -----------------------


def encode_text_cursor(after: str | None) -> str | None:
    return None if after is None else base64.urlsafe_b64encode(f"v1s:{after}".encode()).decode().rstrip("=")


def decode_text_cursor(cursor: str | None) -> str | None:
    if not cursor:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("not a cursor this API gave out") from None
    if not text.startswith("v1s:"):
        raise ValueError("not a cursor this API gave out")
    return text[4:]


@dataclass(frozen=True)
class BlacklistRow:
    cli: str
    failed_attempts: int
    blocked: bool
    blocked_at: datetime | None
    reason: str | None
    updated_at: datetime


@database_errors
def blacklist_page(
    pool: ConnectionPool, *, blocked_only: bool = True, after: str | None = None, limit: int = 100
) -> tuple[list[BlacklistRow], str | None]:
    """Black-listed CLIs by CLI (after = the last CLI of the previous page)."""
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT cli, failed_attempts, blocked, blocked_at, reason, updated_at FROM blacklist"
            " WHERE (blocked OR NOT %s) AND (%s::text IS NULL OR cli > %s) ORDER BY cli LIMIT %s",
            (blocked_only, after, after, limit + 1),
        ).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    return [BlacklistRow(*r) for r in rows], (rows[-1][0] if more else None)


@dataclass(frozen=True)
class SmartDialRow:
    id: int
    did: str
    card: str
    destination: str
    exclusive: bool


@database_errors
def smart_dial_page(
    pool: ConnectionPool,
    *,
    owner: str | None = None,
    card_id: int | None = None,
    after: int | None = None,
    limit: int = 100,
) -> Page[SmartDialRow]:
    where = _Where()
    _owner_clause(where, owner, "a.customer_id")
    if card_id is not None:
        where.add("s.account_id = %s", card_id)
    if after is not None:
        where.add("s.id > %s", after)
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT s.id, s.did, a.username, s.destination, s.exclusive FROM smart_dial s"
            f" JOIN accounts a ON a.id = s.account_id WHERE {where.sql} ORDER BY s.id LIMIT %s",
            (*where.params, limit + 1),
        ).fetchall()
    rows, next_after = _page(rows, limit, lambda r: r[0])
    return Page([SmartDialRow(*r) for r in rows], next_after)


@dataclass(frozen=True)
class NodeRow:
    node: str
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    alive: bool
    calls: int  # open reservations it granted: its calls up (or being set up)


@database_errors
def live_nodes(pool: ConnectionPool, *, owner: str | None = None) -> list[NodeRow]:
    """Every registered cardd process with its calls up now (a reseller counts only its cards' calls)."""
    scope = (
        ""
        if owner is None
        else (
            " AND r.account_id IN (SELECT a.id FROM accounts a JOIN customers c"
            " ON c.id = a.customer_id WHERE c.owner = %(owner)s)"
        )
    )
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT n.node, n.host, n.pid, n.started_at, n.heartbeat_at, n.heartbeat_at > now() - n.stale_after,"
            f"      (SELECT count(*) FROM reservations r WHERE r.node = n.node AND r.status = 'open'{scope})"
            "  FROM cardd_nodes n ORDER BY n.started_at",
            {"owner": owner},
        ).fetchall()
    return [NodeRow(r[0], r[1], int(r[2]), r[3], r[4], bool(r[5]), int(r[6])) for r in rows]


@dataclass(frozen=True)
class AuditRow:
    id: int
    at: datetime
    who: str
    action: str
    args: dict[str, Any]
    card: str | None
    b_uuid: uuid.UUID | None
    detail: str


@database_errors
def audit_page(
    pool: ConnectionPool,
    *,
    card_id: int | None = None,
    action: str | None = None,
    after: int | None = None,
    limit: int = 100,
) -> Page[AuditRow]:
    """The operator audit, newest first (after = continue below this id)."""
    where = _Where()
    if card_id is not None:
        where.add("o.account_id = %s", card_id)
    if action is not None:
        where.add("o.action = %s", action)
    if after is not None:
        where.add("o.id < %s", after)
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT o.id, o.at, o.who, o.action, o.args, a.username, o.b_uuid, o.detail"
            "  FROM operator_audit o LEFT JOIN accounts a ON a.id = o.account_id"
            f" WHERE {where.sql} ORDER BY o.id DESC LIMIT %s",
            (*where.params, limit + 1),
        ).fetchall()
    rows, next_after = _page(rows, limit, lambda r: r[0])
    return Page([AuditRow(*r) for r in rows], next_after)


# --- shared by the API's routes and the web console's forms ----------------------------------------


def import_rates_audited(
    pool: ConnectionPool,
    who: str,
    tariff: str,
    f: IO[str],
    *,
    mode: str = "merge",
    progress: ImportProgress | None = None,
    statement_timeout_s: int | None = None,
    via: str = "",
) -> ImportResult:
    """A rates CSV into a tariff through the CLI's importer, all or nothing, and its audit line, in one
    transaction. `statement_timeout_s` lifts the process's statement_timeout for this import only (a
    background import may outlast api.request_timeout). Raises ImportRefused with every bad row."""
    with transaction(pool) as (conn, one):
        if statement_timeout_s is not None:
            conn.execute(f"SET LOCAL statement_timeout = {int(statement_timeout_s) * 1000}")
        result = import_rates(one, tariff, f, mode=mode, progress=progress)
        audit(
            conn,
            who,
            "rate import",
            {"tariff": tariff, "mode": mode},
            detail=f"tariff {tariff}: {result.rows} rows, {result.inserted} new,"
            f" {result.updated} changed, {result.deleted} deleted{via}",
        )
    return result


def redeem_voucher_throttled(
    pool_like: Any, limits: identity.Limits, *, who: str, card: str, card_id: int, number: str, remote: str | None
) -> identity.Gated:
    """A card holder's voucher top-up (API or self-care page) under the IVR's top-up throttle: buckets per
    client address, per card and for the whole service; a redemption is audited with the voucher's last 4
    digits. Returns identity.gate's Gated (allowed, and the vouchers.Redemption as its value)."""
    buckets = [
        ("topup_cli", f"api:{remote or 'unknown'}", limits.per_cli),
        ("topup_card", str(card_id), limits.per_card),
    ]
    if limits.service is not None:
        buckets.append(("topup_service", "all", limits.service))

    def redeem(conn: Any) -> tuple[bool, vouchers.Redemption]:
        result = vouchers.redeem_in(conn, number, card_id)
        if result.ok:
            audit(
                conn,
                who,
                "voucher redeem",
                {"voucher": number[-4:], "card": card},
                account_id=card_id,
                detail=f"{result.amount} {result.currency} credited",
            )
        return result.ok, result

    return identity.gate(pool_like, buckets, limits.window_s, redeem)
