"""Who is calling: CLI -> card map, black list, throttling of wrong entries,
hot-dial keys, smart-dial DIDs, PINs and card status. SQL only; no call is touched.

Everything lives in PostgreSQL, never in the process, so a limit or a black
list holds across calls and across every cardd sharing the database.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import errors
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from cardd.billing.ledger import _CARD_SQL, Card, _card
from cardd.billing.pins import HMAC_SCHEME, PLAIN_PREFIX, hash_pin, needs_rehash
from cardd.billing.repository import Repository, database_errors, query
from cardd.digits import is_digits
from cardd.errors import CardNotFound, IdentityError
from cardd.money import money

log = logging.getLogger(__name__)

#: A CLI cardd will store (map, blacklist): digits, optionally after a +.
VALID_CLI = re.compile(r"^\+?[0-9]{1,32}$")


def is_registrable_cli(cli: str | None, min_length: int) -> bool:
    """Whether a CLI may be stored as a trusted CLI: digits only (a leading + allowed),
    at least `min_length` digits. Anonymous, withheld and non-numeric CLIs never are."""
    if not cli or not VALID_CLI.match(cli):
        return False
    return len(cli.lstrip("+")) >= max(1, min_length)


# --- CLI map -------------------------------------------------------------------


@database_errors
def card_id_for_cli(pool: ConnectionPool, cli: str) -> int | None:
    if not cli or not VALID_CLI.match(cli):
        return None
    with pool.connection() as conn:
        row = conn.execute("SELECT account_id FROM calling_card_cli_map WHERE cli = %s", (cli,)).fetchone()
    return int(row[0]) if row else None


@database_errors
def map_cli(pool: ConnectionPool, cli: str, card_id: int, *, replace: bool = False) -> bool:
    """Map a CLI to a card. True when the CLI now maps to this card; False when it
    already belongs to another card (and replace is False)."""
    if not VALID_CLI.match(cli or ""):
        raise IdentityError(f"a CLI is digits (optionally after +), got {cli!r}")
    conflict = "DO UPDATE SET account_id = EXCLUDED.account_id, created_at = now()" if replace else "DO NOTHING"
    try:
        with pool.connection() as conn, conn.transaction():
            conn.execute(
                f"INSERT INTO calling_card_cli_map (cli, account_id) VALUES (%s, %s) ON CONFLICT (cli) {conflict}",
                (cli, card_id),
            )
            row = conn.execute("SELECT account_id FROM calling_card_cli_map WHERE cli = %s", (cli,)).fetchone()
    except errors.ForeignKeyViolation:
        raise CardNotFound(f"no card with id {card_id}") from None
    return row is not None and int(row[0]) == card_id


@database_errors
def unmap_cli(pool: ConnectionPool, cli: str) -> bool:
    with pool.connection() as conn, conn.transaction():
        row = conn.execute("DELETE FROM calling_card_cli_map WHERE cli = %s RETURNING cli", (cli,)).fetchone()
    return row is not None


@database_errors
def cli_map(pool: ConnectionPool, card_id: int | None = None) -> list[tuple[str, str]]:
    """(cli, card number) pairs, of one card or of all."""
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT m.cli, a.username FROM calling_card_cli_map m JOIN accounts a ON a.id = m.account_id"
            " WHERE %s::bigint IS NULL OR m.account_id = %s ORDER BY a.username, m.cli",
            (card_id, card_id),
        ).fetchall()
    return [(r[0], r[1]) for r in rows]


# --- black list ------------------------------------------------------------------


@dataclass(frozen=True)
class BlacklistEntry:
    cli: str
    failed_attempts: int
    blocked: bool
    blocked_at: datetime | None
    reason: str | None
    updated_at: datetime


@database_errors
def is_blacklisted(pool: ConnectionPool, cli: str) -> bool:
    if not cli:
        return False
    with pool.connection() as conn:
        row = conn.execute("SELECT blocked FROM blacklist WHERE cli = %s", (cli,)).fetchone()
    return bool(row and row[0])


@database_errors
def record_wrong_card(pool: ConnectionPool, cli: str, attempts: int) -> bool:
    """Count one wrong card number from `cli` (in a row); True when this one blacklists it.

    One upsert, so two calls from the same CLI count both their failures."""
    with pool.connection() as conn, conn.transaction():
        row = conn.execute(
            "INSERT INTO blacklist (cli, failed_attempts) VALUES (%s, 1)"
            " ON CONFLICT (cli) DO UPDATE SET failed_attempts = blacklist.failed_attempts + 1,"
            "                                 updated_at = now()"
            " RETURNING failed_attempts, blocked",
            (cli,),
        ).fetchone()
        assert row is not None
        count, blocked = row
        if blocked or count < attempts:
            return False
        conn.execute(
            "UPDATE blacklist SET blocked = true, blocked_at = now(), reason = %s WHERE cli = %s",
            (f"{count} wrong card numbers in a row", cli),
        )
    log.warning("CLI %s blacklisted after %d wrong card numbers in a row", cli, count)
    return True


@database_errors
def reset_wrong_cards(pool: ConnectionPool, cli: str) -> None:
    """A card was entered right: the run of wrong ones is broken (a blacklisting stays)."""
    with pool.connection() as conn, conn.transaction():
        conn.execute("DELETE FROM blacklist WHERE cli = %s AND NOT blocked", (cli,))


@database_errors
def blacklist_entries(pool: ConnectionPool, *, blocked_only: bool = True) -> list[BlacklistEntry]:
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT cli, failed_attempts, blocked, blocked_at, reason, updated_at FROM blacklist"
            " WHERE blocked OR NOT %s ORDER BY cli",
            (blocked_only,),
        ).fetchall()
    return [BlacklistEntry(*r) for r in rows]


@database_errors
def blacklist_add(pool: ConnectionPool, cli: str, reason: str = "added by the operator") -> None:
    with pool.connection() as conn, conn.transaction():
        conn.execute(
            "INSERT INTO blacklist (cli, blocked, blocked_at, reason) VALUES (%s, true, now(), %s)"
            " ON CONFLICT (cli) DO UPDATE SET blocked = true, blocked_at = now(), reason = EXCLUDED.reason,"
            "                                 updated_at = now()",
            (cli, reason),
        )


@database_errors
def blacklist_remove(pool: ConnectionPool, cli: str) -> bool:
    with pool.connection() as conn, conn.transaction():
        row = conn.execute("DELETE FROM blacklist WHERE cli = %s RETURNING cli", (cli,)).fetchone()
    return row is not None


# --- throttling --------------------------------------------------------------------
#
# Every attempt at a secret (a PIN, a card number under use_word_pin, a voucher
# number) passes the throttle's buckets (scope, key: per CLI, per card, ...)
# under an advisory lock per bucket: the bucket's failures inside the window are
# counted AFTER the locks are taken, a full bucket refuses the attempt, and a
# failure is recorded in every bucket before the locks are released. So however
# many calls race on one card or CLI, at most `limit` wrong attempts per window
# are ever acted upon (answered, or let through), and a right one never counts.
# Counting after the check and outside any lock let 60 parallel calls try 53 PINs
# against a limit of 5 (issue 12).
#
# Two ways through the same locks (they exclude each other, and take the locks in
# one order, so they never deadlock):
# - `verdict`, when the evaluation is pure (a PIN: one HMAC against a hash already
#   read, constant time, microseconds): the caller evaluates first and sends the
#   result; one statement (schema/012, cardd_throttle_verdict) locks, counts, and
#   refuses or records, in one round trip. A refused attempt's result is discarded
#   unread: a throttled caller learns nothing from it, the right PIN included.
# - `gate`, when the evaluation needs the database (a voucher's redeem, an API key's
#   row): it runs inside the gate's transaction, under the locks, only when no
#   bucket is full. BEGIN, the locks, the counts, COMMIT (+ the failure's insert).

#: Rows older than this can never count again (the longest window allowed).
PRUNE_AFTER_S = 86400
#: Advisory-lock class of throttle buckets (the two-int form; the migration lock uses the one-bigint form).
_LOCK_CLASS = 0x7468  # "th"


@dataclass(frozen=True)
class Limits:
    """How many attempts each bucket may take inside window_s (cardd.yaml daemon options)."""

    window_s: int
    per_cli: int
    per_card: int
    service: int | None = None  # top-ups: all callers together


def pin_limits(daemon: Any) -> Limits:
    return Limits(daemon.pin_throttle_window, daemon.pin_failures_per_cli, daemon.pin_failures_per_card)


def topup_limits(daemon: Any) -> Limits:
    return Limits(
        daemon.topup_throttle_window,
        daemon.topup_failures_per_cli,
        daemon.topup_failures_per_card,
        daemon.topup_failures_service,
    )


@dataclass(frozen=True)
class Gated:
    """What the throttle said: refused by a full bucket (the attempt not acted upon: gate did not
    evaluate it, verdict discarded its result), or the evaluation's result (and gate's value, or
    verdict's card)."""

    refused_by: str | None = None
    ok: bool = False
    value: Any = None

    @property
    def allowed(self) -> bool:
        return self.refused_by is None


def throttle_key_for_cli(cli: str | None) -> str:
    """Callers without a usable CLI share one bucket: hiding the CLI must not
    lift the limit (the cost is that they can lock each other out for a while)."""
    return cli if cli and VALID_CLI.match(cli) else "anonymous"


def pin_buckets(
    limits: Limits, *, cli: str | None, card_id: int | None = None, number: str | None = None
) -> list[tuple[str, str, int]]:
    """The buckets of one PIN attempt: the CLI's, and the card's. A number that is
    no card gets a bucket of its own (keyed by the digits), so it locks exactly
    like a card: a lock-out never tells a guesser that a number is a card."""
    buckets = [("cli", throttle_key_for_cli(cli), limits.per_cli)]
    if card_id is not None:
        buckets.append(("card", str(card_id), limits.per_card))
    elif number:
        buckets.append(("card", "number:" + number, limits.per_card))
    return buckets


def topup_buckets(limits: Limits, *, cli: str | None, card_id: int) -> list[tuple[str, str, int]]:
    buckets = [("topup_cli", throttle_key_for_cli(cli), limits.per_cli), ("topup_card", str(card_id), limits.per_card)]
    if limits.service is not None:
        buckets.append(("topup_service", "all", limits.service))
    return buckets


@database_errors
def gate(
    pool: ConnectionPool,
    buckets: list[tuple[str, str, int]],
    window_s: int,
    evaluate: Callable[[Any], tuple[bool, Any]],
) -> Gated:
    """Evaluate one attempt under the buckets' locks unless a bucket is full.
    `evaluate(conn)` runs inside the gate's transaction (it must use that
    connection, never take another from the pool: every gate waiting on a lock
    holds one) and returns (ok, value); a failure is counted in every bucket.
    Round trips: BEGIN, the locks, the counts, COMMIT (+ one insert on a failure)."""
    ordered = sorted(set(buckets))  # one lock order for every caller: no deadlocks
    scopes, keys = [b[0] for b in ordered], [b[1] for b in ordered]
    with pool.connection() as conn, conn.transaction():
        conn.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(k)) FROM unnest(%s::text[]) AS k",
            (_LOCK_CLASS, [f"{scope}:{key}" for scope, key in zip(scopes, keys)]),
        )
        # A statement after the locks: under READ COMMITTED it sees every
        # failure committed by whoever held them before us.
        counts = _counts(conn, scopes, keys, window_s)
        for (scope, _, limit), count in zip(ordered, counts):
            if count >= limit:
                return Gated(refused_by=scope)
        ok, value = evaluate(conn)
        if not ok:
            # The failure and the pruning of rows no window can count again, in one statement.
            conn.execute(
                "WITH failed AS (INSERT INTO auth_failures (scope, key, at)"
                "                SELECT s, k, clock_timestamp() FROM unnest(%s::text[], %s::text[]) AS u(s, k))"
                " DELETE FROM auth_failures WHERE at < now() - make_interval(secs => %s)",
                (scopes, keys, PRUNE_AFTER_S),
            )
    return Gated(ok=ok, value=value)


@database_errors
def verdict(
    pool: ConnectionPool,
    buckets: list[tuple[str, str, int]],
    window_s: int,
    ok: bool,
    *,
    card_id: int | None = None,
) -> Gated:
    """The throttle's verdict on an attempt already evaluated (`ok`) by a pure function
    (a PIN's HMAC: constant time, no database): refused when a bucket is full (nothing is
    recorded, and the result is discarded: a refused Gated says ok=False and carries no
    card, whatever `ok` was), else a failure is recorded in every bucket when not ok. The
    same locks and counts as gate, in one statement in autocommit (schema/012,
    cardd_throttle_verdict): one round trip, atomic.

    With card_id, an allowed right attempt also gets that card back as `value`, read by
    the same statement with its available credit (Card.available), so the caller need
    not read it again; None when the card is gone."""
    ordered = sorted(set(buckets))  # the function sorts too; the same order as gate's
    args = (
        [b[0] for b in ordered],
        [b[1] for b in ordered],
        [b[2] for b in ordered],
        window_s,
        ok,
        _LOCK_CLASS,
        PRUNE_AFTER_S,
    )
    with pool.connection() as conn:
        if card_id is None:
            row = conn.execute(
                "SELECT cardd_throttle_verdict(%s::text[], %s::text[], %s::int[], %s, %s, %s, %s)", args
            ).fetchone()
            assert row is not None
            # Refused: the attempt's result is discarded here already (ok=False, as gate's refusal).
            return Gated(refused_by=row[0]) if row[0] is not None else Gated(ok=ok)
        # The card is read after the function returned, in the statement's snapshot (taken
        # as it began): as fresh as a read of its own just before it would be.
        found = (
            conn.cursor(row_factory=dict_row)
            .execute(
                "SELECT v.refused_by, card.*,"
                "       card.balance - coalesce((SELECT sum(r.amount) FROM reservations r"
                "                                 WHERE r.account_id = card.id AND r.status = 'open'), 0)"
                "         AS available"
                "  FROM cardd_throttle_verdict(%s::text[], %s::text[], %s::int[], %s, %s, %s, %s) AS v(refused_by)"
                f" LEFT JOIN LATERAL ({_CARD_SQL} WHERE a.id = %s AND %s) AS card"
                "        ON v.refused_by IS NULL",
                (*args, card_id, ok),
            )
            .fetchone()
        )
    assert found is not None
    refused_by = found.pop("refused_by")
    if refused_by is not None:
        return Gated(refused_by=refused_by)
    if found["id"] is None:
        return Gated(ok=ok)
    return Gated(ok=ok, value=_card({**found, "available": money(found["available"])}))


def _counts(conn: Any, scopes: list[str], keys: list[str], window_s: int) -> list[int]:
    """Each bucket's rows inside the window, in the buckets' order, in one statement."""
    rows = conn.execute(
        "SELECT b.i, count(f.id) FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS b(scope, key, i)"
        "  LEFT JOIN auth_failures f ON f.scope = b.scope AND f.key = b.key"
        "        AND f.at > clock_timestamp() - make_interval(secs => %s)"
        " GROUP BY b.i ORDER BY b.i",
        (scopes, keys, window_s),
    ).fetchall()
    return [int(r[1]) for r in rows]


@database_errors
def record_failure(pool: ConnectionPool, *, cli: str | None, card_id: int | None = None) -> None:
    """One wrong entry that evaluated no secret (a malformed or short number):
    counted against the CLI and, when given, the card."""
    with pool.connection() as conn, conn.transaction():
        conn.execute(
            "INSERT INTO auth_failures (scope, key, at) VALUES ('cli', %s, clock_timestamp())",
            (throttle_key_for_cli(cli),),
        )
        if card_id is not None:
            conn.execute(
                "INSERT INTO auth_failures (scope, key, at) VALUES ('card', %s, clock_timestamp())", (str(card_id),)
            )
        _prune(conn)


def _prune(conn: Any) -> None:
    # Keep the table small: what is older than any window can never count again.
    conn.execute("DELETE FROM auth_failures WHERE at < now() - make_interval(secs => %s)", (PRUNE_AFTER_S,))


@database_errors
def is_full(pool: ConnectionPool, buckets: list[tuple[str, str, int]], window_s: int) -> bool:
    """True when one of the buckets is at its limit (one round trip). A courtesy
    before asking for a secret (a locked-out caller is not made to type it);
    the guarantee is gate's or verdict's (card_for_pin: the same, riding on a
    card's look-up)."""
    with pool.connection() as conn:
        counts = _counts(conn, [b[0] for b in buckets], [b[1] for b in buckets], window_s)
    return any(count >= limit for (_, _, limit), count in zip(buckets, counts))


def throttled(
    pool: ConnectionPool,
    limits: Limits,
    *,
    cli: str | None = None,
    card_id: int | None = None,
    number: str | None = None,
) -> bool:
    """is_full for the PIN buckets of a CLI and a card (or a number that is no card);
    cli=None leaves the CLI's bucket out."""
    buckets = pin_buckets(limits, cli=cli, card_id=card_id, number=number)
    return is_full(pool, buckets if cli is not None else buckets[1:], limits.window_s)


@database_errors
def card_for_pin(
    pool: ConnectionPool, number: str, limits: Limits, *, cli: str | None, by_authname: bool = False
) -> tuple[Card | None, bool]:
    """The card a number names (by card number, or by VoIP login with by_authname) and
    whether its PIN buckets are full, in one statement: `throttled` for the CLI and the
    card, the courtesy before the PIN is asked, riding on the look-up. The card comes
    with its available credit (Card.available) as read then. The card's bucket
    is the card's own when it has a PIN, else the number's (`number:<digits>`): a number
    that is no card, or a card without a PIN, is asked for a PIN as if no card
    (cardd.ivr.identify._number_and_pin), and locks exactly like one. cli=None leaves
    the CLI's bucket out, as with throttled."""
    column = "a.authname" if by_authname else "a.username"
    with pool.connection() as conn:
        row = (
            conn.cursor(row_factory=dict_row)
            .execute(
                f"WITH card AS ({_CARD_SQL} WHERE {column} = %(number)s),"
                "     buckets AS ("
                "       SELECT 'cli' AS scope, %(cli_key)s::text AS key, %(per_cli)s::int AS lim WHERE %(with_cli)s"
                "       UNION ALL"
                "       SELECT 'card', coalesce((SELECT c.id::text FROM card c WHERE c.pin_hash IS NOT NULL),"
                "                               'number:' || %(number)s), %(per_card)s::int)"
                " SELECT card.*,"
                "        card.balance - coalesce((SELECT sum(r.amount) FROM reservations r"
                "                                  WHERE r.account_id = card.id AND r.status = 'open'), 0)"
                "          AS available,"
                "        EXISTS (SELECT 1 FROM buckets b"
                "                         WHERE (SELECT count(*) FROM auth_failures f"
                "                                 WHERE f.scope = b.scope AND f.key = b.key"
                "                                   AND f.at > clock_timestamp() - make_interval(secs => %(window)s))"
                "                               >= b.lim) AS pin_throttled"
                "   FROM (SELECT) AS one LEFT JOIN card ON true",
                {
                    "number": number,
                    "cli_key": throttle_key_for_cli(cli),
                    "per_cli": limits.per_cli,
                    "with_cli": cli is not None,
                    "per_card": limits.per_card,
                    "window": limits.window_s,
                },
            )
            .fetchone()
        )
    assert row is not None
    full = bool(row.pop("pin_throttled"))
    if row["id"] is None:
        return None, full
    return _card({**row, "available": money(row["available"])}), full


# --- PINs and card status ------------------------------------------------------------


@database_errors
def rehash_if_legacy(pool: ConnectionPool, card_id: int, stored: str | None, pin: str) -> None:
    """After a right PIN: a legacy stored form (scrypt, or plain from an import)
    becomes HMAC. The UPDATE only replaces the form that was checked, so a PIN
    changed meanwhile stays."""
    if not pin or not needs_rehash(stored):
        return
    with pool.connection() as conn, conn.transaction():
        row = conn.execute(
            "UPDATE accounts SET pin_hash = %s WHERE id = %s AND pin_hash = %s RETURNING id",
            (hash_pin(pin), card_id, stored),
        ).fetchone()
    if row is not None:
        log.info("card id %s: PIN rehashed from %s to %s", card_id, (stored or "").split("$")[0], HMAC_SCHEME)


@database_errors
def set_pin(pool: ConnectionPool, card_id: int, pin: str) -> None:
    """Store a new PIN, salted and hashed ('' = no PIN)."""
    if pin and not is_digits(pin):
        raise IdentityError("a PIN is digits only")
    with pool.connection() as conn, conn.transaction():
        row = conn.execute(
            "UPDATE accounts SET pin_hash = %s WHERE id = %s RETURNING id", (hash_pin(pin) if pin else None, card_id)
        ).fetchone()
    if row is None:
        raise CardNotFound(f"no card with id {card_id}")


@database_errors
def hash_plain_pins(pool: ConnectionPool, *, batch: int = 500) -> int:
    """Hash every imported plain PIN; returns how many were hashed."""
    done = 0
    while True:
        with pool.connection() as conn, conn.transaction():
            rows = conn.execute(
                "SELECT id, pin_hash FROM accounts WHERE pin_hash LIKE 'plain$%%' LIMIT %s FOR UPDATE SKIP LOCKED",
                (batch,),
            ).fetchall()
            for cid, stored in rows:
                pin = stored[len(PLAIN_PREFIX) :]
                conn.execute("UPDATE accounts SET pin_hash = %s WHERE id = %s", (hash_pin(pin) if pin else None, cid))
        done += len(rows)
        if len(rows) < batch:
            return done


@database_errors
def set_status(pool: ConnectionPool, number: str, status: str) -> bool:
    """Block or unblock a card by number; False when there is no such card."""
    with pool.connection() as conn, conn.transaction():
        row = conn.execute(
            "UPDATE accounts SET status = %s WHERE username = %s RETURNING id", (status, number)
        ).fetchone()
    return row is not None


@database_errors
def customer_id(pool: ConnectionPool, customer: str) -> int | None:
    """A customer by name, or by id when the setting is a number."""
    with pool.connection() as conn:
        row = conn.execute("SELECT id FROM customers WHERE name = %s", (customer,)).fetchone()
        if row is None and is_digits(customer):
            row = conn.execute("SELECT id FROM customers WHERE id = %s", (int(customer),)).fetchone()
    return int(row[0]) if row else None


# --- hot dial ------------------------------------------------------------------------------


@database_errors
def hot_dial_get(pool: ConnectionPool, card_id: int, key: str) -> str | None:
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT destination FROM hot_dial WHERE account_id = %s AND key = %s", (card_id, key)
        ).fetchone()
    return row[0] if row else None


@database_errors
def hot_dial_set(pool: ConnectionPool, card_id: int, key: str, destination: str) -> None:
    try:
        with pool.connection() as conn, conn.transaction():
            conn.execute(
                "INSERT INTO hot_dial (account_id, key, destination) VALUES (%s, %s, %s)"
                " ON CONFLICT (account_id, key) DO UPDATE SET destination = EXCLUDED.destination",
                (card_id, key, destination),
            )
    except errors.CheckViolation:
        raise IdentityError(f"bad hot-dial key {key!r} or destination {destination!r}") from None
    except errors.ForeignKeyViolation:
        raise CardNotFound(f"no card with id {card_id}") from None


@database_errors
def hot_dial_remove(pool: ConnectionPool, card_id: int, key: str) -> bool:
    with pool.connection() as conn, conn.transaction():
        row = conn.execute(
            "DELETE FROM hot_dial WHERE account_id = %s AND key = %s RETURNING key", (card_id, key)
        ).fetchone()
    return row is not None


@database_errors
def hot_dial_list(pool: ConnectionPool, card_id: int) -> list[tuple[str, str]]:
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT key, destination FROM hot_dial WHERE account_id = %s ORDER BY key", (card_id,)
        ).fetchall()
    return [(r[0], r[1]) for r in rows]


# --- smart dial --------------------------------------------------------------------------


@dataclass(frozen=True)
class SmartDial:
    card_id: int
    destination: str


@database_errors
def smart_dial_lookup(pool: ConnectionPool, did: str, cli: str, *, exclusive: bool) -> SmartDial | None:
    """The destination of a DID for a caller whose CLI is mapped to a card.

    exclusive: the DID belongs to one account (an exclusive row), and the
    caller's CLI must be one of that account's trusted CLIs. Shared: the DID
    has a row per account and the caller's CLI picks the account."""
    if not did or not cli or not VALID_CLI.match(cli):
        return None
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT sd.account_id, sd.destination FROM smart_dial sd"
            "  JOIN calling_card_cli_map m ON m.account_id = sd.account_id"
            " WHERE sd.did = %s AND m.cli = %s AND sd.exclusive = %s",
            (did, cli, exclusive),
        ).fetchone()
    return SmartDial(int(row[0]), row[1]) if row else None


@database_errors
def smart_dial_add(pool: ConnectionPool, did: str, card_id: int, destination: str, *, exclusive: bool) -> None:
    try:
        with pool.connection() as conn, conn.transaction():
            if exclusive:
                taken = conn.execute(
                    "SELECT 1 FROM smart_dial WHERE did = %s AND account_id <> %s", (did, card_id)
                ).fetchone()
                if taken:
                    raise IdentityError(f"DID {did} is already used by another account")
            else:
                owned = conn.execute("SELECT 1 FROM smart_dial WHERE did = %s AND exclusive", (did,)).fetchone()
                if owned:
                    raise IdentityError(f"DID {did} belongs exclusively to one account")
            conn.execute(
                "INSERT INTO smart_dial (did, account_id, destination, exclusive) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (did, account_id) DO UPDATE SET destination = EXCLUDED.destination,"
                "                                             exclusive = EXCLUDED.exclusive",
                (did, card_id, destination, exclusive),
            )
    except errors.CheckViolation:
        raise IdentityError(f"bad DID {did!r} or destination {destination!r}") from None
    except errors.UniqueViolation:
        raise IdentityError(f"DID {did} belongs exclusively to one account") from None
    except errors.ForeignKeyViolation:
        raise CardNotFound(f"no card with id {card_id}") from None


@database_errors
def smart_dial_remove(pool: ConnectionPool, did: str, card_id: int) -> bool:
    with pool.connection() as conn, conn.transaction():
        row = conn.execute(
            "DELETE FROM smart_dial WHERE did = %s AND account_id = %s RETURNING id", (did, card_id)
        ).fetchone()
    return row is not None


@database_errors
def smart_dial_list(pool: ConnectionPool) -> list[tuple[str, str, str, bool]]:
    """(did, card number, destination, exclusive) rows."""
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT sd.did, a.username, sd.destination, sd.exclusive FROM smart_dial sd"
            "  JOIN accounts a ON a.id = sd.account_id ORDER BY sd.did, a.username"
        ).fetchall()
    return [(r[0], r[1], r[2], r[3]) for r in rows]


# --- the repository the IVR holds -----------------------------------------------------------


class Identity(Repository):
    """Who is calling, for a call: the functions above on this repository's pool, each timed as
    cardd_db_query_seconds{op=<method>}. Operator commands and the HTTP API call the functions."""

    @query
    def card_id_for_cli(self, cli: str) -> int | None:
        return card_id_for_cli(self.pool, cli)

    @query
    def map_cli(self, cli: str, card_id: int) -> bool:
        return map_cli(self.pool, cli, card_id)

    @query
    def is_blacklisted(self, cli: str) -> bool:
        return is_blacklisted(self.pool, cli)

    @query
    def record_wrong_card(self, cli: str, attempts: int) -> bool:
        return record_wrong_card(self.pool, cli, attempts)

    @query
    def reset_wrong_cards(self, cli: str) -> None:
        reset_wrong_cards(self.pool, cli)

    @query
    def gate(
        self, buckets: list[tuple[str, str, int]], window_s: int, evaluate: Callable[[Any], tuple[bool, Any]]
    ) -> Gated:
        return gate(self.pool, buckets, window_s, evaluate)

    @query
    def verdict(
        self, buckets: list[tuple[str, str, int]], window_s: int, ok: bool, *, card_id: int | None = None
    ) -> Gated:
        return verdict(self.pool, buckets, window_s, ok, card_id=card_id)

    @query
    def card_for_pin(
        self, number: str, limits: Limits, *, cli: str | None, by_authname: bool = False
    ) -> tuple[Card | None, bool]:
        return card_for_pin(self.pool, number, limits, cli=cli, by_authname=by_authname)

    @query
    def record_failure(self, *, cli: str | None, card_id: int | None = None) -> None:
        record_failure(self.pool, cli=cli, card_id=card_id)

    @query
    def is_full(self, buckets: list[tuple[str, str, int]], window_s: int) -> bool:
        return is_full(self.pool, buckets, window_s)

    @query
    def throttled(
        self, limits: Limits, *, cli: str | None = None, card_id: int | None = None, number: str | None = None
    ) -> bool:
        return throttled(self.pool, limits, cli=cli, card_id=card_id, number=number)

    @query
    def rehash_if_legacy(self, card_id: int, stored: str | None, pin: str) -> None:
        rehash_if_legacy(self.pool, card_id, stored, pin)

    @query
    def set_pin(self, card_id: int, pin: str) -> None:
        set_pin(self.pool, card_id, pin)

    @query
    def customer_id(self, customer: str) -> int | None:
        return customer_id(self.pool, customer)

    @query
    def hot_dial_get(self, card_id: int, key: str) -> str | None:
        return hot_dial_get(self.pool, card_id, key)

    @query
    def hot_dial_set(self, card_id: int, key: str, destination: str) -> None:
        hot_dial_set(self.pool, card_id, key, destination)

    @query
    def smart_dial_lookup(self, did: str, cli: str, *, exclusive: bool) -> SmartDial | None:
        return smart_dial_lookup(self.pool, did, cli, exclusive=exclusive)
