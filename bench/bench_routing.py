"""Route selection (least-cost routing) at 100 carriers x 100,000 prefixes each: p50 / p99 per call
against the 2 ms target.

    PYTHONPATH=. python bench/bench_routing.py [--dsn DSN] [--carriers 100] [--prefixes 100000]
                                               [--lookups 5000]

Without --dsn it runs an embedded PostgreSQL in a temporary directory. Figures are
printed, never asserted. What is timed is cardd's own selection as the grant runs it
(cardd.billing.ledger.Ledger.grant): cardd.billing.routing.route_candidates, every
carrier's longest prefix for the number (`prefix = ANY(<every prefix>)` on
carrier_rates' prefix index, DISTINCT ON carrier), the first-minute buy price of each
in SQL, the sort; then route_at, the first route as a Route. A carrier's channel limit
is checked by the grant's write (cardd_reserve, schema/011, under the carrier's row
lock), timed with the grant in bench_settle and bench_flows, not here.

The decks: a pool of prefixes shaped like real price lists (bench_rating.make_prefixes:
2 to 9 digits, so short country codes sit under longer ranges), each carrier taking
about 80% of the pool (decks overlap, as real ones do) at its own random prices; one
carrier in ten has a channel limit. The decks are generated inside PostgreSQL (INSERT
... SELECT), indexes built afterwards: loading 10 million rows through `carrier rates
import` is bench_rate_import's business, not this one's.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg
from bench_rating import make_prefixes, percentile

from cardd.billing.rating import Rate
from cardd.billing.routing import route_at, route_candidates
from cardd.db import EmbeddedServer, migrate_conn

TARGET_S = 0.002
# A sell rate no buy price reaches: every candidate stays in the route.
SELL = Rate(prefix="", price_1=Decimal("10"), interval_1=60, price_n=Decimal("10"), interval_n=60)


def load(conn: psycopg.Connection, carriers: int, pool: list[str]) -> tuple[int, float]:
    """The carriers and their decks; returns (rows, seconds)."""
    t0 = time.perf_counter()
    with conn.transaction():
        conn.execute(
            "INSERT INTO carriers (name, currency, gateways, priority, channel_limit)"
            " SELECT 'c' || i, 'USD', ARRAY['sofia/gateway/c' || i || '/{number}'], i %% 7,"
            "        CASE WHEN i %% 10 = 0 THEN 1000 END FROM generate_series(1, %s) i",
            (carriers,),
        )
        conn.execute("CREATE TEMP TABLE pool (prefix text NOT NULL) ON COMMIT DROP")
        with conn.cursor().copy("COPY pool (prefix) FROM STDIN") as copy:
            for p in pool:
                copy.write_row((p,))
        conn.execute("ALTER TABLE carrier_rates DROP CONSTRAINT carrier_rates_pkey")
        conn.execute("DROP INDEX carrier_rates_prefix_idx")
        # About 80% of the pool per carrier, prices 0.00500 to 0.05500 per minute.
        conn.execute(
            "INSERT INTO carrier_rates (carrier_id, prefix, price_1, interval_1, price_n, interval_n)"
            " SELECT c.id, p.prefix, round((0.005 + random() * 0.05)::numeric, 5), 60,"
            "        round((0.005 + random() * 0.05)::numeric, 5), 60"
            "   FROM carriers c CROSS JOIN pool p WHERE hashtext(p.prefix || '/' || c.id) % 5 <> 0"
        )
        conn.execute("ALTER TABLE carrier_rates ADD PRIMARY KEY (carrier_id, prefix)")
        conn.execute("CREATE INDEX carrier_rates_prefix_idx ON carrier_rates (prefix)")
    conn.execute("VACUUM ANALYZE carrier_rates")
    rows = conn.execute("SELECT count(*) FROM carrier_rates").fetchone()[0]
    return rows, time.perf_counter() - t0


def time_routes(conn: psycopg.Connection, numbers: list[str]) -> tuple[list[float], list[float], int, int]:
    """(wall seconds per selection, this process's CPU seconds per selection, routed,
    alternatives summed), on an autocommit connection as the grant's."""
    samples, cpu, routed, alternatives = [], [], 0, 0
    for number in numbers:
        c0, t0 = time.thread_time(), time.perf_counter()
        ahead = route_candidates(conn, number, SELL, "USD")
        route = route_at(ahead, 0) if ahead else None  # none: no deck has a prefix for it
        samples.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
        if route is not None:
            routed += 1
            alternatives += route.alternatives
    return samples, cpu, routed, alternatives


def compare_import(dsn: str, rows: int, rng: random.Random) -> int:
    """A tariff's rates and a carrier's deck from one CSV, through the one import code:
    the difference is the carrier deck's second index (prefix, for route selection)."""
    import io

    from psycopg_pool import ConnectionPool

    from cardd.billing import carriers, catalog
    from cardd.billing.rate_import import CARRIER_DECK, import_rates

    lines = ["prefix,description,price_1,interval_1,price_n,interval_n,connect_fee,free_seconds,grace\n"]
    lines += [f"{p},zone,0.0{rng.randint(1000, 9999)},60,0.01000,6,0,0,0\n" for p in make_prefixes(rows, rng)]
    text = "".join(lines)
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate_conn(conn)
    with ConnectionPool(dsn, min_size=1, max_size=2, open=True) as pool:
        catalog.create_tariff(pool, "t", "USD")
        catalog.create_tariff(pool, "t2", "USD")
        carriers.create_carrier(pool, "c", currency="USD", gateways=["sofia/gateway/c/{number}"])
        # a second tariff last, so that neither kind has only the cold first run
        for name, kwargs in (("tariff t", {}), ("carrier c", {"deck": CARRIER_DECK}), ("tariff t2", {})):
            result = import_rates(pool, name.split()[1], io.StringIO(text), **kwargs)
            print(f"{name}: {result.rows:,} rows imported in {result.seconds:.1f} s")
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dsn", default="", help="an empty database to use (default: embedded, temporary)")
    ap.add_argument("--carriers", type=int, default=100)
    ap.add_argument("--prefixes", type=int, default=100_000, help="per carrier (the pool is 1.25 times this)")
    ap.add_argument("--lookups", type=int, default=5000)
    ap.add_argument(
        "--compare-import",
        type=int,
        default=0,
        metavar="ROWS",
        help="instead: import a generated deck of ROWS rows into a tariff and into a carrier"
        " (the same code, cardd.billing.rate_import.import_rates) and print both times",
    )
    args = ap.parse_args()
    rng = random.Random(17)

    server = None
    if args.dsn:
        dsn = args.dsn
    else:
        server = EmbeddedServer(Path(tempfile.mkdtemp(prefix="cardd-bench-")) / "pg").start()
        dsn = server.uri()
    try:
        if args.compare_import:
            return compare_import(dsn, args.compare_import, rng)
        with psycopg.connect(dsn, autocommit=True) as conn:
            migrate_conn(conn)
            pool = make_prefixes(args.prefixes * 5 // 4, rng)
            rows, load_s = load(conn, args.carriers, pool)
            print(
                f"{args.carriers} carriers, {rows:,} buy rates ({rows // args.carriers:,} per carrier),"
                f" generated and indexed in {load_s:.0f} s"
            )
            numbers = []
            for _ in range(args.lookups):
                base = rng.choice(pool) if rng.random() < 0.9 else str(rng.randint(1, 9))
                numbers.append(base + "".join(rng.choice("0123456789") for _ in range(12 - len(base))))
            time_routes(conn, numbers[:300])  # warm the cache and the plan
            samples, cpu, routed, alternatives = time_routes(conn, numbers)
            p50, p99 = percentile(samples, 0.5), percentile(samples, 0.99)
            print(
                f"{'lookups':>8} {'p50 ms':>7} {'p99 ms':>7} {'mean ms':>8} {'max ms':>7} {'routed %':>8}"
                f" {'routes/call':>11}"
            )
            print(
                f"{len(samples):>8} {p50 * 1e3:>7.2f} {p99 * 1e3:>7.2f} {statistics.fmean(samples) * 1e3:>8.2f}"
                f" {max(samples) * 1e3:>7.2f} {100 * routed / len(samples):>8.1f}"
                f" {1 + alternatives / max(routed, 1):>11.1f}"
            )
            print(
                f"this process's CPU per selection: p50 {percentile(cpu, 0.5) * 1e3:.2f} ms,"
                f" p99 {percentile(cpu, 0.99) * 1e3:.2f} ms (the rest of the wall time is PostgreSQL,"
                " the socket and waiting for a core)"
            )
            print(
                f"FIGURE route selection at {args.carriers} carriers x {rows // args.carriers:,} prefixes:"
                f" p99 {p99 * 1e3:.2f} ms (target < {TARGET_S * 1e3:.0f} ms)"
            )
            print(
                f"p99 {p99 * 1e3:.2f} ms against the {TARGET_S * 1e3:.0f} ms target:"
                f" {'within' if p99 <= TARGET_S else 'OVER'}; load average {os.getloadavg()[0]:.2f}"
                f" on {os.cpu_count()} cores"
            )
            number = numbers[0]
            plan = conn.execute(
                "EXPLAIN (ANALYZE, BUFFERS) SELECT DISTINCT ON (carrier_id) * FROM carrier_rates"
                " WHERE prefix = ANY(%s) ORDER BY carrier_id, length(prefix) DESC",
                ([number[:k] for k in range(len(number) + 1)],),
            ).fetchall()
            print(f"plan for {number}:")
            for (line,) in plan:
                print("   ", line)
    finally:
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
