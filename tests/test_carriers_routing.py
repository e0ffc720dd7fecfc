"""Route selection's SQL pricing is the tariff arithmetic: the first minute that orders
the carriers (routing.FIRST_MINUTE_SQL, computed in PostgreSQL) equals
rating.call_cost(rate, 60) for every rate, edge cases and random ones."""

from __future__ import annotations

import random
from decimal import Decimal

from cardd.billing import carriers
from cardd.billing.rating import Rate, call_cost
from cardd.billing.routing import FIRST_MINUTE_S, FIRST_MINUTE_SQL, may_fail_over

EDGES = [
    # price_1, interval_1, price_n, interval_n, connect_fee, free_seconds, grace
    ("0.031", 1, "0.031", 1, "0", 0, 0),
    ("0.06", 30, "0.06", 6, "0.10", 0, 0),
    ("0.03", 60, "0.03", 60, "0", 0, 0),
    ("0.07", 61, "0.07", 1, "0", 0, 0),  # first interval longer than a minute
    ("0.01", 7, "0.02", 7, "0", 0, 0),  # 60 s is not a whole number of intervals
    ("0.01", 60, "0.01", 60, "0.05", 60, 0),  # the whole minute free: the connect fee alone
    ("0.01", 60, "0.01", 60, "0.05", 75, 0),
    ("0.50", 60, "0.50", 60, "1", 0, 60),  # the minute inside the grace period: free
    ("0.50", 60, "0.50", 60, "1", 0, 59),
    ("0.00001", 1, "0.00001", 1, "0", 0, 0),  # a fraction of the smallest unit: rounded up
    ("0.00007", 13, "0.00011", 17, "0.00003", 11, 5),
    ("0", 60, "0", 60, "0", 0, 0),
    ("9999.99999", 3600, "9999.99999", 3600, "99.99999", 0, 0),
]


def random_rates(n: int, rng: random.Random) -> list[tuple]:
    out = []
    for _ in range(n):
        out.append(
            (
                f"{rng.randint(0, 200000) / 100000:.5f}",
                rng.choice((1, 6, 15, 30, 45, 60, 61, 90)),
                f"{rng.randint(0, 200000) / 100000:.5f}",
                rng.choice((1, 6, 7, 30, 60, 61)),
                f"{rng.randint(0, 20000) / 100000:.5f}",
                rng.choice((0, 0, 0, 10, 59, 60, 61)),
                rng.choice((0, 0, 0, 3, 59, 60, 61)),
            )
        )
    return out


def test_sql_first_minute_equals_the_tariff_arithmetic(database):
    rates = EDGES + random_rates(2000, random.Random(7))
    carriers.create_carrier(database.pool, "x", currency="USD", gateways=["sofia/gateway/x/{number}"])
    with database.pool.connection() as conn:
        with conn.cursor().copy(
            "COPY carrier_rates (carrier_id, prefix, price_1, interval_1, price_n, interval_n,"
            " connect_fee, free_seconds, grace) FROM STDIN"
        ) as copy:
            for i, r in enumerate(rates):
                copy.write_row((1, str(i), *r))
        got = dict(
            conn.execute(f"SELECT prefix::int, {FIRST_MINUTE_SQL.format(d='r')} FROM carrier_rates r").fetchall()
        )
    for i, (p1, i1, pn, i_n, fee, free, grace) in enumerate(rates):
        rate = Rate(
            prefix=str(i),
            price_1=Decimal(p1),
            interval_1=i1,
            price_n=Decimal(pn),
            interval_n=i_n,
            connect_fee=Decimal(fee),
            free_seconds=free,
            grace=grace,
        )
        assert got[i] == call_cost(rate, FIRST_MINUTE_S), (rates[i], got[i])


def test_only_carrier_side_causes_fail_over():
    for cause in (
        "NORMAL_TEMPORARY_FAILURE",
        "GATEWAY_DOWN",
        "NO_ROUTE_DESTINATION",
        "RECOVERY_ON_TIMER_EXPIRE",
        "NORMAL_CIRCUIT_CONGESTION",
        "SERVICE_UNAVAILABLE",
    ):
        assert may_fail_over(cause), cause
    for cause in (
        "USER_BUSY",
        "NO_ANSWER",
        "NO_USER_RESPONSE",
        "CALL_REJECTED",
        "UNALLOCATED_NUMBER",
        "ORIGINATOR_CANCEL",
        "NORMAL_CLEARING",
        "ALLOTTED_TIMEOUT",
        "UNKNOWN",
        "",
    ):
        assert not may_fail_over(cause), cause
