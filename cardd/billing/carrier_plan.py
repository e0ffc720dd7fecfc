"""Carriers as the operator reads them one at a time, and the route plan of a number: what
`cardd carrier route` prints and the API's /carriers answer, on the service layer.

routes_in_order() reads the route candidates as the grant does (cardd.billing.routing)
and leaves out the carriers at their channel limit, inside a transaction the caller
rolls back: the channel-limit row locks it takes are released at once and nothing is
reserved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from cardd.billing import catalog
from cardd.billing.carriers import CarrierSummary
from cardd.billing.ledger import find_rate
from cardd.billing.rating import Rate
from cardd.billing.routing import Route, carriers_at_limit, route_at, route_candidates
from cardd.errors import CatalogError

_SUMMARY = (
    "SELECT c.id, c.name, c.currency, c.gateways, c.enabled, c.priority, c.channel_limit,"
    "       (SELECT count(*) FROM carrier_rates r WHERE r.carrier_id = c.id),"
    "       (SELECT count(*) FROM reservations v WHERE v.carrier_id = c.id AND v.status = 'open')"
    "  FROM carriers c"
)


def _summary(row: tuple[Any, ...]) -> tuple[int, CarrierSummary]:
    cid, name, currency, gateways, enabled, priority, limit, n_rates, n_open = row
    return int(cid), CarrierSummary(name, currency.strip(), tuple(gateways), enabled, priority, limit, n_rates, n_open)


def carriers_after(pool: ConnectionPool, after: int | None, limit: int) -> list[tuple[int, CarrierSummary]]:
    """Up to `limit` carriers by id after `after`: (id, summary) pairs, for cursor pages."""
    with pool.connection() as conn:
        rows = conn.execute(
            _SUMMARY + " WHERE (%s::bigint IS NULL OR c.id > %s) ORDER BY c.id LIMIT %s", (after, after, limit)
        ).fetchall()
    return [_summary(r) for r in rows]


def get_carrier(pool: ConnectionPool, name: str) -> CarrierSummary:
    with pool.connection() as conn:
        row = conn.execute(_SUMMARY + " WHERE c.name = %s", (name,)).fetchone()
    if row is None:
        raise CatalogError(f"unknown carrier {name!r}")
    return _summary(row)[1]


@dataclass(frozen=True)
class RoutePlan:
    number: str
    tariff: str
    currency: str
    sell: Rate | None  # None: the tariff has no rate for the number
    routes: list[Route]  # in the order a call would try them; empty when refused or no route


def routes_in_order(
    conn: psycopg.Connection[Any], number: str, tariff: str, *, allow_loss: bool
) -> tuple[Rate | None, str, list[Route]]:
    """(sell rate, currency, every route a call would try, in order: a full carrier's are
    left out, as the grant's cardd_reserve skips them); in the caller's transaction, to be
    rolled back."""
    tid, currency = catalog.tariff_id(conn, tariff)
    sell = find_rate(conn, tid, number)
    if sell is None or sell.forbidden:
        return sell, currency, []
    ahead = route_candidates(conn, number, sell, currency, allow_loss=allow_loss)
    full = carriers_at_limit(conn, ahead)
    return sell, currency, [route_at(ahead, k) for k, (row, _) in enumerate(ahead) if row[0] not in full]


def route_plan(pool: ConnectionPool, number: str, tariff: str, *, allow_loss: bool = False) -> RoutePlan:
    """The routes a call to `number` on `tariff` would take now, reserving nothing."""
    if not number.isascii() or not number.isdigit():
        raise CatalogError(f"a number is digits only, got {number!r}")
    with pool.connection() as conn, conn.transaction(force_rollback=True):
        sell, currency, routes = routes_in_order(conn, number, tariff, allow_loss=allow_loss)
    return RoutePlan(number=number, tariff=tariff, currency=currency.strip(), sell=sell, routes=routes)
