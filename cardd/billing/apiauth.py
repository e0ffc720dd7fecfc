"""Who is calling the HTTP API: API keys (operators, resellers, read-only) and card-holder sessions.

An API key is 'cardd_<key_id>_<secret>': key_id (12 hex digits) finds the row and may be
logged; only the SHA-256 of the secret is stored. The secret is 256 random bits, so a
fast hash loses nothing (there is nothing to guess offline) and checking a request costs
microseconds. A card holder signs in with card number + PIN through the IVR's throttle
(identity.gate, the same card buckets as the phone, the caller's address in place of the
CLI) and gets a session token 'cs_<secret>' whose SHA-256 is stored with an expiry.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from cardd.billing import identity, operator, pins
from cardd.billing.identity import Limits
from cardd.billing.repository import database_errors
from cardd.digits import is_digits
from cardd.errors import ApiKeyError, SignInRefused

log = logging.getLogger(__name__)

ROLES = ("admin", "reseller", "readonly")
KEY_PREFIX = "cardd_"
SESSION_PREFIX = "cs_"
_KEY = re.compile(r"cardd_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_SESSION = re.compile(r"cs_([A-Za-z0-9_-]{43})")


@dataclass(frozen=True)
class Principal:
    """The caller of one request. kind 'key' (role admin/reseller/readonly) or 'card' (a card holder)."""

    kind: str
    role: str
    name: str  # key name, or the card number
    key_id: str | None = None
    owner: str | None = None  # a reseller's owner name
    card_id: int | None = None

    @property
    def ident(self) -> str:
        """Stable id for idempotency records and audit lines; never a secret."""
        return f"key:{self.key_id}" if self.kind == "key" else f"card:{self.card_id}"


@dataclass(frozen=True)
class KeyRow:
    key_id: str
    name: str
    role: str
    owner: str | None
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("ascii")).hexdigest()


@database_errors
def create_key(pool: ConnectionPool, name: str, role: str, *, who: str, owner: str | None = None) -> str:
    """A new key; returns the full key text, which is never stored nor shown again."""
    if role not in ROLES:
        raise ApiKeyError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if not name.strip():
        raise ApiKeyError("a key needs a name")
    if (role == "reseller") != bool(owner):
        raise ApiKeyError(
            "a reseller key needs --owner NAME (the reseller its customers belong to); other roles take none"
        )
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    with pool.connection() as conn, conn.transaction():
        conn.execute(
            "INSERT INTO api_keys (key_id, secret_hash, name, role, owner) VALUES (%s, %s, %s, %s, %s)",
            (key_id, _sha256(secret), name, role, owner or None),
        )
        operator.audit(
            conn,
            who,
            "apikey add",
            {"key_id": key_id, "name": name, "role": role, "owner": owner},
            detail=f"API key {key_id} ({name}, {role}) created",
        )
    log.info("API key %s (%s, %s) created", key_id, name, role)
    return f"{KEY_PREFIX}{key_id}_{secret}"


@database_errors
def list_keys(pool: ConnectionPool) -> list[KeyRow]:
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT key_id, name, role, owner, created_at, revoked_at, last_used_at FROM api_keys ORDER BY id"
        ).fetchall()
    return [KeyRow(*r) for r in rows]


@database_errors
def revoke_key(pool: ConnectionPool, key_id: str, *, who: str) -> None:
    """Revoke a key by its key_id (or the full key text); it stops working at once."""
    match = _KEY.fullmatch(key_id)
    wanted = match.group(1) if match else key_id
    with pool.connection() as conn, conn.transaction():
        row = conn.execute(
            "UPDATE api_keys SET revoked_at = now() WHERE key_id = %s AND revoked_at IS NULL RETURNING id", (wanted,)
        ).fetchone()
        if row is None:
            raise ApiKeyError(f"no active API key {wanted!r}")
        operator.audit(conn, who, "apikey revoke", {"key_id": wanted}, detail=f"API key {wanted} revoked")
    log.info("API key %s revoked", wanted)


@database_errors
def authenticate(pool: ConnectionPool, token: str) -> Principal | None:
    """The principal of a bearer token (API key or session), or None when it is no valid one."""
    key = _KEY.fullmatch(token)
    if key:
        return _key_principal(pool, key.group(1), key.group(2))
    session = _SESSION.fullmatch(token)
    if session:
        return _session_principal(pool, session.group(1))
    return None


def _key_principal(pool: ConnectionPool, key_id: str, secret: str) -> Principal | None:
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT secret_hash, name, role, owner, last_used_at IS NULL OR last_used_at < now() - interval '1 minute'"
            "  FROM api_keys WHERE key_id = %s AND revoked_at IS NULL",
            (key_id,),
        ).fetchone()
        if row is None or not hmac.compare_digest(row[0], _sha256(secret)):
            return None
        if row[4]:
            # To the minute: a write (and its WAL flush) on every request would cost more than the read.
            conn.execute("UPDATE api_keys SET last_used_at = now() WHERE key_id = %s", (key_id,))
    return Principal("key", row[2], row[1], key_id=key_id, owner=row[3])


def _session_principal(pool: ConnectionPool, secret: str) -> Principal | None:
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT s.account_id, a.username FROM card_sessions s JOIN accounts a ON a.id = s.account_id"
            " WHERE s.token_hash = %s AND s.expires_at > now()",
            (_sha256(secret),),
        ).fetchone()
    if row is None:
        return None
    return Principal("card", "cardholder", row[1], card_id=int(row[0]))


@dataclass(frozen=True)
class Session:
    token: str
    card_id: int
    expires_at: datetime


@database_errors
def sign_in(pool: ConnectionPool, limits: Limits, number: str, pin: str, *, peer: str, lifetime_s: int) -> Session:
    """Card number + PIN -> a session, under the IVR's race-free throttle: the card's bucket is
    the one the phone uses (wrong PINs from both count together), the peer address stands in
    for the CLI. A number that is no card gets a decoy check and a bucket of its own, and the
    same refusal as a wrong PIN: the API never tells a guesser which numbers are cards."""
    card_row = None
    if is_digits(number) and len(number) <= 32:
        with pool.connection() as conn:
            card_row = conn.execute(
                "SELECT id, pin_hash FROM accounts WHERE username = %s AND status <> 'closed'", (number,)
            ).fetchone()
    card_id = int(card_row[0]) if card_row else None
    stored = card_row[1] if card_row else None
    buckets = [("cli", f"api:{peer}", limits.per_cli)]
    buckets.append(
        ("card", str(card_id), limits.per_card)
        if card_id is not None
        else ("card", "number:" + number[:40], limits.per_card)
    )

    def check(conn: Any) -> tuple[bool, None]:
        if card_id is None:
            pins.decoy_check(pin)
            return False, None
        # The empty PIN never signs in over the network: a card without a PIN has nothing to prove.
        return bool(pin) and pins.check_pin(pin, stored), None

    gated = identity.gate(pool, buckets, limits.window_s, check)
    if not gated.allowed:
        raise SignInRefused("too many failed sign-ins; try again later", throttled=True)
    if not gated.ok:
        raise SignInRefused("wrong card number or PIN")
    assert card_id is not None
    identity.rehash_if_legacy(pool, card_id, stored, pin)
    secret = secrets.token_urlsafe(32)
    with pool.connection() as conn, conn.transaction():
        conn.execute("DELETE FROM card_sessions WHERE expires_at < now()")
        row = conn.execute(
            "INSERT INTO card_sessions (token_hash, account_id, expires_at)"
            " VALUES (%s, %s, now() + make_interval(secs => %s)) RETURNING expires_at",
            (_sha256(secret), card_id, lifetime_s),
        ).fetchone()
    assert row is not None
    return Session(SESSION_PREFIX + secret, card_id, row[0])


@database_errors
def sign_out(pool: ConnectionPool, token: str) -> None:
    session = _SESSION.fullmatch(token)
    if session:
        with pool.connection() as conn, conn.transaction():
            conn.execute("DELETE FROM card_sessions WHERE token_hash = %s", (_sha256(session.group(1)),))


def end_sessions(conn: psycopg.Connection[Any], card_id: int) -> int:
    """End every session of a card (its PIN changed), in the caller's transaction."""
    return conn.execute("DELETE FROM card_sessions WHERE account_id = %s", (card_id,)).rowcount


# SignInRefused (cardd.errors) is re-exported: the web console catches apiauth.SignInRefused.
__all__ = [
    "KeyRow",
    "Principal",
    "ROLES",
    "Session",
    "SignInRefused",
    "authenticate",
    "create_key",
    "end_sessions",
    "list_keys",
    "revoke_key",
    "sign_in",
    "sign_out",
]
