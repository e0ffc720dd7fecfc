"""Longest-prefix rate lookup at 10k, 100k and 1,000,000 prefixes: p50 / p99 per lookup.

    python bench/bench_rating.py [--dsn DSN] [--sizes 10000,100000,1000000] [--lookups 5000]

Without --dsn it runs an embedded PostgreSQL in a temporary directory. Figures
are printed, never asserted. The lookup is cardd's own (cardd.billing.ledger.find_rate):
`prefix = ANY(<every prefix of the number>)` on the (tariff_id, prefix) btree,
longest first. For contrast, the naive `number LIKE prefix || '%'` scan is timed
on the smallest size only (it reads every rate of the tariff).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

from bench.common import machine
from cardd.billing.ledger import find_rate
from cardd.db import EmbeddedServer, migrate_conn


def make_prefixes(n: int, rng: random.Random) -> list[str]:
    """n distinct prefixes shaped like real tariffs: country codes, then longer area/mobile ranges."""
    found: set[str] = set()
    while len(found) < n:
        length = rng.choice((2, 3, 4, 5, 6, 6, 7, 7, 8, 8, 9))
        found.add(str(rng.randint(1, 9)) + "".join(rng.choice("0123456789") for _ in range(length - 1)))
    return sorted(found)


def load(conn: psycopg.Connection, name: str, prefixes: list[str]) -> int:
    with conn.transaction():
        tid = conn.execute("INSERT INTO tariffs (name, currency) VALUES (%s, 'USD') RETURNING id", (name,)).fetchone()[
            0
        ]
        with conn.cursor().copy(
            "COPY rates (tariff_id, prefix, price_1, interval_1, price_n, interval_n) FROM STDIN"
        ) as copy:
            for p in prefixes:
                copy.write_row((tid, p, "0.05000", 60, "0.05000", 60))
    conn.execute("ANALYZE rates")
    return tid


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def time_lookups(conn, tid: int, numbers: list[str], naive: bool = False) -> tuple[list[float], int]:
    samples, hits = [], 0
    for number in numbers:
        t0 = time.perf_counter()
        if naive:
            row = conn.execute(
                "SELECT prefix FROM rates WHERE tariff_id = %s AND %s LIKE prefix || '%%'"
                " ORDER BY length(prefix) DESC LIMIT 1",
                (tid, number),
            ).fetchone()
            hit = row is not None
        else:
            hit = find_rate(conn, tid, number) is not None
        samples.append(time.perf_counter() - t0)
        hits += hit
    return samples, hits


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dsn", default="", help="a database to use (default: embedded, temporary)")
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--lookups", type=int, default=5000)
    args = ap.parse_args()
    rng = random.Random(42)

    server = None
    # The embedded server's data directory (~0.4 GB at 1M prefixes) goes with the run.
    tmp = tempfile.TemporaryDirectory(prefix="cardd-bench-rating-")
    if args.dsn:
        dsn = args.dsn
    else:
        server = EmbeddedServer(Path(tmp.name) / "pg").start()
        dsn = server.uri()
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            migrate_conn(conn)
            figures: list[str] = []
            print(f"{'prefixes':>10} {'p50 µs':>8} {'p99 µs':>8} {'mean µs':>8} {'hit %':>6}  query")
            for i, size in enumerate(int(s) for s in args.sizes.split(",")):
                prefixes = make_prefixes(size, rng)
                t0 = time.perf_counter()
                tid = load(conn, f"bench_{size}_{rng.random()}", prefixes)
                load_s = time.perf_counter() - t0
                # Numbers in full E.164 length; most start with a loaded prefix, some with none.
                numbers = []
                for _ in range(args.lookups):
                    base = rng.choice(prefixes) if rng.random() < 0.9 else str(rng.randint(1, 9))
                    numbers.append(base + "".join(rng.choice("0123456789") for _ in range(12 - len(base))))
                time_lookups(conn, tid, numbers[:200])  # warm the cache and the plan
                samples, hits = time_lookups(conn, tid, numbers)
                print(
                    f"{size:>10} {percentile(samples, 0.5) * 1e6:>8.0f} {percentile(samples, 0.99) * 1e6:>8.0f}"
                    f" {statistics.fmean(samples) * 1e6:>8.0f} {100 * hits / len(numbers):>6.1f}"
                    f"  = ANY(prefixes)   (loaded in {load_s:.1f} s)"
                )
                figures.append(
                    f"FIGURE rate lookup at {size:,} prefixes: p50 {percentile(samples, 0.5) * 1e3:.2f} ms, "
                    f"p99 {percentile(samples, 0.99) * 1e3:.2f} ms (target p99 < 1 ms at 1,000,000)"
                )
                if i == 0:
                    samples, _ = time_lookups(conn, tid, numbers[:500], naive=True)
                    print(
                        f"{size:>10} {percentile(samples, 0.5) * 1e6:>8.0f} {percentile(samples, 0.99) * 1e6:>8.0f}"
                        f" {statistics.fmean(samples) * 1e6:>8.0f} {'':>6}  naive LIKE scan (contrast)"
                    )
            plan = conn.execute(
                "EXPLAIN SELECT id FROM rates WHERE tariff_id = %s AND prefix = ANY(%s)"
                " ORDER BY length(prefix) DESC LIMIT 1",
                (tid, [numbers[0][:k] for k in range(13)]),
            ).fetchall()
            print("plan at the largest size:")
            for (line,) in plan:
                print("   ", line)
            print(f"machine: {machine()}")
            print("\n".join(figures))
    finally:
        if server is not None:
            server.stop()
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
