"""Who is calling: CLI -> card map, black list, throttling of wrong entries,
hot-dial keys, smart-dial DIDs, PINs and card status. SQL only; no call is touched.

Everything lives in PostgreSQL, never in the process, so a limit or a black
list holds across calls and across every cardd sharing the database.
"""

from __future__ import annotations

import hmac
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from psycopg import errors
from psycopg_pool import ConnectionPool

from cardd.billing.ledger import _database_errors
from cardd.billing.pins import hash_pin
from cardd.errors import CardNotFound, CarddError

log = logging.getLogger(__name__)

#: A CLI cardd will store (map, blacklist): digits, optionally after a +.
VALID_CLI = re.compile(r"^\+?[0-9]{1,32}$")
#: Imported plain PINs carry this prefix in pin_hash until they are hashed.
PLAIN_PREFIX = "plain$"

#: Throttling of wrong card-number and PIN entries (sliding window, in PostgreSQL).
THROTTLE_WINDOW_S = 900
#: Wrong entries (card numbers or PINs) from one CLI inside the window before it must wait.
THROTTLE_PER_CLI = 10
#: Wrong PINs for one card inside the window before the card refuses PIN entry for a while.
THROTTLE_PER_CARD = 5


class IdentityError(CarddError):
    """An operator write about identities was refused (bad CLI, unknown card, duplicate)."""


def is_registrable_cli(cli: str | None, min_length: int) -> bool:
    """Whether a CLI may be stored as a trusted CLI: digits only (a leading + allowed),
    at least `min_length` digits. Anonymous, withheld and non-numeric CLIs never are."""
    if not cli or not VALID_CLI.match(cli):
        return False
    return len(cli.lstrip("+")) >= max(1, min_length)


# --- CLI map -------------------------------------------------------------------

@_database_errors
def card_id_for_cli(pool: ConnectionPool, cli: str) -> int | None:
    if not cli or not VALID_CLI.match(cli):
        return None
    with pool.connection() as conn:
        row = conn.execute("SELECT account_id FROM calling_card_cli_map WHERE cli = %s", (cli,)).fetchone()
    return int(row[0]) if row else None


@_database_errors
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


@_database_errors
def unmap_cli(pool: ConnectionPool, cli: str) -> bool:
    with pool.connection() as conn, conn.transaction():
        row = conn.execute("DELETE FROM calling_card_cli_map WHERE cli = %s RETURNING cli", (cli,)).fetchone()
    return row is not None


@_database_errors
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


@_database_errors
def is_blacklisted(pool: ConnectionPool, cli: str) -> bool:
    if not cli:
        return False
    with pool.connection() as conn:
        row = conn.execute("SELECT blocked FROM blacklist WHERE cli = %s", (cli,)).fetchone()
    return bool(row and row[0])


@_database_errors
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


@_database_errors
def reset_wrong_cards(pool: ConnectionPool, cli: str) -> None:
    """A card was entered right: the run of wrong ones is broken (a blacklisting stays)."""
    with pool.connection() as conn, conn.transaction():
        conn.execute("DELETE FROM blacklist WHERE cli = %s AND NOT blocked", (cli,))


@_database_errors
def blacklist_entries(pool: ConnectionPool, *, blocked_only: bool = True) -> list[BlacklistEntry]:
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT cli, failed_attempts, blocked, blocked_at, reason, updated_at FROM blacklist"
            " WHERE blocked OR NOT %s ORDER BY cli",
            (blocked_only,),
        ).fetchall()
    return [BlacklistEntry(*r) for r in rows]


@_database_errors
def blacklist_add(pool: ConnectionPool, cli: str, reason: str = "added by the operator") -> None:
    with pool.connection() as conn, conn.transaction():
        conn.execute(
            "INSERT INTO blacklist (cli, blocked, blocked_at, reason) VALUES (%s, true, now(), %s)"
            " ON CONFLICT (cli) DO UPDATE SET blocked = true, blocked_at = now(), reason = EXCLUDED.reason,"
            "                                 updated_at = now()",
            (cli, reason),
        )


@_database_errors
def blacklist_remove(pool: ConnectionPool, cli: str) -> bool:
    with pool.connection() as conn, conn.transaction():
        row = conn.execute("DELETE FROM blacklist WHERE cli = %s RETURNING cli", (cli,)).fetchone()
    return row is not None


# --- throttling --------------------------------------------------------------------

def throttle_key_for_cli(cli: str | None) -> str:
    """Callers without a usable CLI share one bucket: hiding the CLI must not
    lift the limit (the cost is that they can lock each other out for a while)."""
    return cli if cli and VALID_CLI.match(cli) else "anonymous"


@_database_errors
def record_failure(pool: ConnectionPool, *, cli: str | None, card_id: int | None = None) -> None:
    """One wrong entry: counted against the CLI and, for a wrong PIN, the card."""
    with pool.connection() as conn, conn.transaction():
        conn.execute("INSERT INTO auth_failures (scope, key) VALUES ('cli', %s)", (throttle_key_for_cli(cli),))
        if card_id is not None:
            conn.execute("INSERT INTO auth_failures (scope, key) VALUES ('card', %s)", (str(card_id),))
        # Keep the table small: what is older than the window can never count again.
        conn.execute("DELETE FROM auth_failures WHERE at < now() - make_interval(secs => %s)",
                     (THROTTLE_WINDOW_S,))


@_database_errors
def throttled(pool: ConnectionPool, *, cli: str | None = None, card_id: int | None = None) -> bool:
    """True when the CLI (or the card) used up its wrong entries inside the window."""
    checks = []
    if cli is not None:
        checks.append(("cli", throttle_key_for_cli(cli), THROTTLE_PER_CLI))
    if card_id is not None:
        checks.append(("card", str(card_id), THROTTLE_PER_CARD))
    with pool.connection() as conn:
        for scope, key, limit in checks:
            row = conn.execute(
                "SELECT count(*) FROM auth_failures WHERE scope = %s AND key = %s"
                "   AND at > now() - make_interval(secs => %s)",
                (scope, key, THROTTLE_WINDOW_S),
            ).fetchone()
            if row is not None and row[0] >= limit:
                return True
    return False


# --- PINs and card status ------------------------------------------------------------

def check_plain_pin(pin: str, stored: str | None) -> bool:
    """An imported plain PIN ('plain$1234'), compared in constant time."""
    if stored is None or not stored.startswith(PLAIN_PREFIX):
        return False
    return hmac.compare_digest(pin.encode("utf-8"), stored[len(PLAIN_PREFIX):].encode("utf-8"))


@_database_errors
def set_pin(pool: ConnectionPool, card_id: int, pin: str) -> None:
    """Store a new PIN, salted and hashed ('' = no PIN)."""
    if pin and not pin.isdigit():
        raise IdentityError("a PIN is digits only")
    with pool.connection() as conn, conn.transaction():
        row = conn.execute("UPDATE accounts SET pin_hash = %s WHERE id = %s RETURNING id",
                           (hash_pin(pin) if pin else None, card_id)).fetchone()
    if row is None:
        raise CardNotFound(f"no card with id {card_id}")


@_database_errors
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
                pin = stored[len(PLAIN_PREFIX):]
                conn.execute("UPDATE accounts SET pin_hash = %s WHERE id = %s",
                             (hash_pin(pin) if pin else None, cid))
        done += len(rows)
        if len(rows) < batch:
            return done


@_database_errors
def set_status(pool: ConnectionPool, number: str, status: str) -> bool:
    """Block or unblock a card by number; False when there is no such card."""
    with pool.connection() as conn, conn.transaction():
        row = conn.execute("UPDATE accounts SET status = %s WHERE username = %s RETURNING id",
                           (status, number)).fetchone()
    return row is not None


@_database_errors
def customer_id(pool: ConnectionPool, customer: str) -> int | None:
    """A customer by name, or by id when the setting is a number."""
    with pool.connection() as conn:
        row = conn.execute("SELECT id FROM customers WHERE name = %s", (customer,)).fetchone()
        if row is None and customer.isdigit():
            row = conn.execute("SELECT id FROM customers WHERE id = %s", (int(customer),)).fetchone()
    return int(row[0]) if row else None


# --- hot dial ------------------------------------------------------------------------------

@_database_errors
def hot_dial_get(pool: ConnectionPool, card_id: int, key: str) -> str | None:
    with pool.connection() as conn:
        row = conn.execute("SELECT destination FROM hot_dial WHERE account_id = %s AND key = %s",
                           (card_id, key)).fetchone()
    return row[0] if row else None


@_database_errors
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


@_database_errors
def hot_dial_remove(pool: ConnectionPool, card_id: int, key: str) -> bool:
    with pool.connection() as conn, conn.transaction():
        row = conn.execute("DELETE FROM hot_dial WHERE account_id = %s AND key = %s RETURNING key",
                           (card_id, key)).fetchone()
    return row is not None


@_database_errors
def hot_dial_list(pool: ConnectionPool, card_id: int) -> list[tuple[str, str]]:
    with pool.connection() as conn:
        rows = conn.execute("SELECT key, destination FROM hot_dial WHERE account_id = %s ORDER BY key",
                            (card_id,)).fetchall()
    return [(r[0], r[1]) for r in rows]


# --- smart dial --------------------------------------------------------------------------

@dataclass(frozen=True)
class SmartDial:
    card_id: int
    destination: str


@_database_errors
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


@_database_errors
def smart_dial_add(pool: ConnectionPool, did: str, card_id: int, destination: str, *, exclusive: bool) -> None:
    try:
        with pool.connection() as conn, conn.transaction():
            if exclusive:
                taken = conn.execute("SELECT 1 FROM smart_dial WHERE did = %s AND account_id <> %s",
                                     (did, card_id)).fetchone()
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


@_database_errors
def smart_dial_remove(pool: ConnectionPool, did: str, card_id: int) -> bool:
    with pool.connection() as conn, conn.transaction():
        row = conn.execute("DELETE FROM smart_dial WHERE did = %s AND account_id = %s RETURNING id",
                           (did, card_id)).fetchone()
    return row is not None


@_database_errors
def smart_dial_list(pool: ConnectionPool) -> list[tuple[str, str, str, bool]]:
    """(did, card number, destination, exclusive) rows."""
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT sd.did, a.username, sd.destination, sd.exclusive FROM smart_dial sd"
            "  JOIN accounts a ON a.id = sd.account_id ORDER BY sd.did, a.username"
        ).fetchall()
    return [(r[0], r[1], r[2], r[3]) for r in rows]

