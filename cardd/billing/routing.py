"""Least-cost routing: which carrier and gateway a call attempt goes out on.

The grant (cardd.billing.ledger) reads the route candidates in the same
snapshot that rates the card, and writes the route on the reservation with
cardd_reserve (schema 011), which counts the carrier's open reservations under
a row lock on the carrier, so two cardd processes cannot both take its last
channel: a full carrier sends the grant to the next candidate. A carrier
disabled or a deck replaced after that snapshot is seen by the next grant,
never half-way.

The order: every carrier whose deck has a prefix of the number (its longest
prefix), by the buy price of the first minute (the cost of a 60 s call under
the deck, cardd.billing.rating.call_cost), ties by priority (lower first) then
name; each carrier's gateways in their order. Left out: disabled carriers,
carriers in another currency than the card (no exchange rates: margin would
mean nothing), a longest prefix marked forbidden, carriers dearer for the
first minute than the sell rate (unless allow_loss), and carriers at their
channel limit.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg

from cardd.billing.rating import Rate, call_cost
from cardd.errors import NoRoute

FIRST_MINUTE_S = 60

# Hangup causes that say the carrier (or its gateway, or the network behind
# it) failed, not the callee: the next route may succeed. Anything else
# (USER_BUSY, NO_ANSWER, CALL_REJECTED, UNALLOCATED_NUMBER, the caller's own
# hangup or `##`) is the call's answer and is never retried elsewhere.
CARRIER_FAILURES = frozenset(
    {
        "NORMAL_TEMPORARY_FAILURE",
        "DESTINATION_OUT_OF_ORDER",
        "NETWORK_OUT_OF_ORDER",
        "RECOVERY_ON_TIMER_EXPIRE",
        "GATEWAY_DOWN",
        "INVALID_GATEWAY",
        "NO_ROUTE_DESTINATION",
        "NO_ROUTE_TRANSIT_NET",
        "SWITCH_CONGESTION",
        "NORMAL_CIRCUIT_CONGESTION",
        "REQUESTED_CHAN_UNAVAIL",
        "SERVICE_UNAVAILABLE",
        "BEARERCAPABILITY_NOTAVAIL",
        "FACILITY_REJECTED",
        "FACILITY_NOT_SUBSCRIBED",
        "OUTGOING_CALL_BARRED",
        "INCOMPATIBLE_DESTINATION",
        "CHAN_NOT_IMPLEMENTED",
        "EXCHANGE_ROUTING_ERROR",
        "INTERWORKING",
        "PROTOCOL_ERROR",
    }
)


def may_fail_over(cause: str) -> bool:
    """True when a failed attempt's cause lets the next carrier try."""
    return cause in CARRIER_FAILURES


@dataclass(frozen=True)
class Route:
    carrier_id: int
    carrier: str
    gateway: str  # the dial-string template, {number} not yet filled
    gateway_index: int
    buy: Rate  # the carrier's longest-prefix buy rate
    first_minute: Decimal  # buy cost of a 60 s call: the sort key
    alternatives: int  # routes after this one when it was chosen

    @property
    def key(self) -> tuple[int, int]:
        return (self.carrier_id, self.gateway_index)


# The first minute's buy price of a deck row: rating.call_cost(rate, 60) written in SQL so
# that a hundred carriers are priced and sorted where their rows are (Python's Fractions
# cost 16 us a row: 1.6 ms of a 2 ms budget). Exact, as call_cost is: every term is a
# numeric(18,5) times whole seconds; the one division, by 60, is done on the total in
# units of 0.00001 and rounded up, which is ceil_money(). S = the first minute after the
# free seconds; no charge inside the grace period. tests/test_carriers_routing.py holds
# it equal to call_cost over edge cases and random rates.
FIRST_MINUTE_SQL = """
    CASE WHEN {d}.grace >= 60 THEN 0::numeric
    ELSE div((({d}.connect_fee * 60
               + CASE WHEN {d}.free_seconds < 60 THEN {d}.price_1 * {d}.interval_1 ELSE 0 END
               + CASE WHEN 60 - {d}.free_seconds > {d}.interval_1
                      THEN {d}.price_n * {d}.interval_n
                           * ((60 - {d}.free_seconds - {d}.interval_1 + {d}.interval_n - 1) / {d}.interval_n)
                      ELSE 0 END) * 100000 + 59), 60) / 100000.0
    END"""

# Each carrier's longest prefix for the number (DISTINCT ON over the prefix index), the
# carriers that may take it, cheapest first minute first, ties by priority then name.
_CANDIDATES = f"""
    SELECT c.id, c.name, c.channel_limit, c.gateways, d.prefix, d.price_1, d.interval_1, d.price_n,
           d.interval_n, d.connect_fee, d.free_seconds, d.grace, d.first_minute
      FROM (SELECT DISTINCT ON (carrier_id) *, {FIRST_MINUTE_SQL.format(d="carrier_rates")} AS first_minute
              FROM carrier_rates WHERE prefix = ANY(%(prefixes)s)
             ORDER BY carrier_id, length(prefix) DESC) d
      JOIN carriers c ON c.id = d.carrier_id
     WHERE c.enabled AND NOT d.forbidden AND c.currency = %(currency)s
       AND (d.first_minute <= %(sell_minute)s OR %(allow_loss)s)
     ORDER BY d.first_minute, c.priority, c.name"""


def _prefixes(number: str) -> list[str]:
    return [number[:i] for i in range(len(number) + 1)]


def route_candidates(
    conn: psycopg.Connection[Any],
    number: str,
    sell: Rate,
    currency: str,
    *,
    allow_loss: bool = False,
    tried: Collection[tuple[int, int]] = (),
) -> list[tuple[tuple[Any, ...], int]]:
    """Every (carrier row, gateway index) that may carry `number`, in route order,
    without those in `tried`; channel limits not checked (carriers_at_limit and the
    grant's cardd_reserve do, under the carrier's row lock). Raw rows: only the
    route taken is converted (route_at)."""
    rows = conn.execute(
        _CANDIDATES,
        {
            "prefixes": _prefixes(number),
            "currency": currency,
            "allow_loss": allow_loss,
            "sell_minute": call_cost(sell, FIRST_MINUTE_S),
        },
    ).fetchall()
    return [(row, i) for row in rows for i in range(len(row[3])) if (row[0], i) not in tried]


def route_at(candidates: list[tuple[tuple[Any, ...], int]], k: int) -> Route:
    """The k-th of route_candidates as a Route."""
    row, index = candidates[k]
    cid, name, _limit, gateways, prefix, p1, i1, pn, i_n, fee, free, grace, _minute = row
    buy = Rate(
        prefix=prefix,
        price_1=p1,
        interval_1=i1,
        price_n=pn,
        interval_n=i_n,
        connect_fee=fee,
        free_seconds=free,
        grace=grace,
    )
    return Route(
        carrier_id=cid,
        carrier=name,
        gateway=gateways[index],
        gateway_index=index,
        buy=buy,
        first_minute=call_cost(buy, FIRST_MINUTE_S),
        alternatives=len(candidates) - k - 1,
    )


def no_route(number: str, *, any_candidate: bool) -> NoRoute:
    why = (
        "every route was tried or is at its channel limit"
        if any_candidate
        else "no enabled carrier in this currency rates it at or under the sell price"
    )
    return NoRoute(f"no route for {number!r}: {why}")


def carriers_at_limit(conn: psycopg.Connection[Any], ahead: list[tuple[tuple[Any, ...], int]]) -> set[int]:
    """Which of the carriers with a channel limit in `ahead` are full.

    Their rows are locked (in id order, so two grants never deadlock) before the
    open reservations are counted: a concurrent grant for the same carrier waits
    for this transaction and then counts the reservation it wrote."""
    limited = {row[0]: row[2] for row, _ in ahead if row[2] is not None}
    if not limited:
        return set()
    ids = sorted(limited)
    conn.execute("SELECT id FROM carriers WHERE id = ANY(%s) ORDER BY id FOR UPDATE", (ids,))
    counts = dict(
        conn.execute(
            "SELECT carrier_id, count(*) FROM reservations WHERE status = 'open' AND carrier_id = ANY(%s)"
            " GROUP BY carrier_id",
            (ids,),
        ).fetchall()
    )
    return {cid for cid, limit in limited.items() if counts.get(cid, 0) >= limit}


def buy_rate(reservation: Mapping[str, Any]) -> Rate | None:
    """The buy rate a reservation recorded with its route; None without a carrier."""
    if reservation["carrier_id"] is None:
        return None
    return Rate(
        prefix=reservation["buy_prefix"],
        price_1=reservation["buy_price_1"],
        interval_1=reservation["buy_interval_1"],
        price_n=reservation["buy_price_n"],
        interval_n=reservation["buy_interval_n"],
        connect_fee=reservation["buy_connect_fee"],
        free_seconds=reservation["buy_free_seconds"],
        grace=reservation["buy_grace"],
    )


def buy_and_margin(buy: Rate | None, billed: int, cost: Decimal) -> tuple[Decimal | None, Decimal | None]:
    """(buy cost, margin) of `billed` seconds at the route's buy rate, by the
    tariff arithmetic; (None, None) for a call without a carrier. The carrier
    bills every second: service-plan seconds are the card's, not the carrier's."""
    if buy is None:
        return None, None
    bought = call_cost(buy, billed)
    return bought, cost - bought
