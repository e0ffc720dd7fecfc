"""Carriers: who terminates calls, through which gateways, at what buy price.

Operator writes and reads, each one short transaction. A carrier's buy-rate
deck has the shape and arithmetic of a tariff: it is imported by the same code
as `rate import` (cardd.billing.rate_import.import_rates with CARRIER_DECK) and rated by
cardd.billing.rating. Route selection is cardd.billing.routing.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors
from psycopg_pool import ConnectionPool

from cardd.errors import CatalogError
from cardd.money import check_currency

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class CarrierSummary:
    name: str
    currency: str
    gateways: tuple[str, ...]
    enabled: bool
    priority: int
    channel_limit: int | None
    rates: int  # prefixes in the buy deck
    open_calls: int  # open reservations routed to it (every cardd process)


def check_gateway(template: str) -> str:
    """A gateway is one dial-string template with {number} (and optionally {proxy});
    failover between gateways is cardd's (one per --gateway), so no `|`."""
    if "|" in template:
        raise CatalogError(f"gateway {template!r}: one gateway per --gateway, no '|'")
    if template != template.strip() or not template:
        raise CatalogError(f"gateway {template!r}: empty or surrounded by spaces")
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise CatalogError(f"gateway {template!r}: {exc}") from None
    if "number" not in names or not names <= {"number", "proxy"}:
        raise CatalogError(f"gateway {template!r}: needs {{number}} (and may use {{proxy}}), nothing else in braces")
    return template


def create_carrier(
    pool: ConnectionPool,
    name: str,
    *,
    currency: str,
    gateways: list[str],
    priority: int = 100,
    channel_limit: int | None = None,
) -> int:
    """Add an enabled carrier. Returns its id."""
    if not _NAME.fullmatch(name):
        raise CatalogError(
            f"carrier name {name!r}: letters, digits, _ . - (at most 64), starting with a letter or digit"
        )
    check_currency(currency)
    if not gateways:
        raise CatalogError(f"carrier {name!r} needs at least one --gateway")
    for gateway in gateways:
        check_gateway(gateway)
    if channel_limit is not None and channel_limit < 1:
        raise CatalogError(f"channel limit must be >= 1, got {channel_limit}")
    try:
        with pool.connection() as conn, conn.transaction():
            row = conn.execute(
                "INSERT INTO carriers (name, currency, gateways, priority, channel_limit)"
                " VALUES (%s, %s, %s, %s, %s) RETURNING id",
                (name, currency, list(gateways), priority, channel_limit),
            ).fetchone()
    except errors.UniqueViolation:
        raise CatalogError(f"carrier {name!r} already exists") from None
    assert row is not None
    return int(row[0])


def set_enabled(pool: ConnectionPool, name: str, enabled: bool) -> None:
    """Enable or disable a carrier. Calls up on it go on; new calls skip a disabled one."""
    with pool.connection() as conn, conn.transaction():
        done = conn.execute("UPDATE carriers SET enabled = %s WHERE name = %s", (enabled, name)).rowcount
    if not done:
        raise CatalogError(f"unknown carrier {name!r}")


def carrier_id(conn: psycopg.Connection[Any], name: str) -> tuple[int, str]:
    """(id, currency) of a carrier by name, for the deck import."""
    row = conn.execute("SELECT id, currency FROM carriers WHERE name = %s", (name,)).fetchone()
    if row is None:
        raise CatalogError(f"unknown carrier {name!r}")
    return int(row[0]), str(row[1])


def list_carriers(pool: ConnectionPool) -> list[CarrierSummary]:
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT c.name, c.currency, c.gateways, c.enabled, c.priority, c.channel_limit,"
            "       (SELECT count(*) FROM carrier_rates r WHERE r.carrier_id = c.id),"
            "       (SELECT count(*) FROM reservations v WHERE v.carrier_id = c.id AND v.status = 'open')"
            "  FROM carriers c ORDER BY c.priority, c.name"
        ).fetchall()
    return [
        CarrierSummary(name, currency.strip(), tuple(gateways), enabled, priority, limit, n_rates, n_open)
        for name, currency, gateways, enabled, priority, limit, n_rates, n_open in rows
    ]
