"""`cardd api` at scale: card show and CDR lists over HTTP against a database of many cards and CDRs.

    python bench/bench_api.py [--dsn DSN] [--cards 1000000] [--cdrs 10000000] [--requests 2000]

Without --dsn it runs an embedded PostgreSQL in a temporary directory and seeds it with SQL
(generate_series): `cards` cards of 100 customers (each with an 'initial' ledger row, applied by
the ledger trigger like any other) and `cdrs` CDRs spread over them and over the last 30 days.
Then a real `cardd api` process serves it and one client on a keep-alive connection asks, one
request at a time, for random cards and CDR pages; the latencies (client side, HTTP included)
are printed as p50 / p95 / p99 / max per kind of request. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402

from bench.common import machine  # noqa: E402
from cardd.db import EmbeddedServer, migrate_conn  # noqa: E402

CARD_BASE = 3_000_000_000


def seed(dsn: str, cards: int, cdrs: int) -> float:
    started = time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate_conn(conn)
        conn.execute("INSERT INTO tariffs (name, currency) VALUES ('bench', 'USD')")
        conn.execute(
            "INSERT INTO customers (name, owner) SELECT 'customer ' || i,"
            " CASE WHEN i % 2 = 0 THEN 'reseller ' || (i % 10) END FROM generate_series(1, 100) i"
        )
        conn.execute(
            "INSERT INTO accounts (username, currency, tariff_id, customer_id)"
            " SELECT (%s + i)::text, 'USD', (SELECT id FROM tariffs), 1 + i %% 100 FROM generate_series(0, %s) i",
            (CARD_BASE, cards - 1),
        )
        conn.execute(
            "INSERT INTO ledger (account_id, amount, kind, reference) SELECT id, 100, 'initial', 'bench' FROM accounts"
        )
        # A bulk load: the CDRs' secondary indexes are dropped and built again afterwards (a sort
        # each, instead of 10 million random inserts into the UUID indexes), with the same definitions.
        indexes = [
            r[0]
            for r in conn.execute(
                "SELECT indexdef FROM pg_indexes WHERE tablename = 'cdrs' AND indexname NOT IN ('cdrs_pkey',"
                " 'cdrs_b_uuid_key')"
            ).fetchall()
        ]
        for name in [
            r[0]
            for r in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'cdrs' AND indexname NOT IN ('cdrs_pkey',"
                " 'cdrs_b_uuid_key')"
            ).fetchall()
        ]:
            conn.execute(f'DROP INDEX "{name}"')
        conn.execute("ALTER TABLE cdrs DROP CONSTRAINT cdrs_b_uuid_key")
        # CDRs in chunks: one statement of 10 million rows would hold its whole transaction.
        chunk = 1_000_000
        for start in range(0, cdrs, chunk):
            n = min(chunk, cdrs - start)
            conn.execute(
                "INSERT INTO cdrs (b_uuid, a_uuid, account_id, customer_id, username, currency, cli, cld,"
                " translated_cld, rate_prefix, started_at, answered_at, ended_at, granted_seconds, billed_seconds,"
                " cost, hangup_cause)"
                " SELECT gen_random_uuid(), gen_random_uuid(), a, 1 + (a - 1) %% 100, (%s + a - 1)::text, 'USD',"
                "        '15551234567',"
                "        '44' || (2071000000 + g %% 1000000)::text, '44' || (2071000000 + g %% 1000000)::text, '44',"
                "        t, t + interval '5 s', t + interval '5 s' + (g %% 600) * interval '1 s', 3600, g %% 600,"
                "        round((g %% 600) * 0.001, 5),"
                "        CASE WHEN g %% 10 = 0 THEN 'USER_BUSY' ELSE 'NORMAL_CLEARING' END"
                "   FROM (SELECT g, 1 + (g * 7919) %% %s AS a,"
                "                now() - interval '30 days' + g * (interval '30 days' / %s) AS t"
                "           FROM generate_series(%s::bigint, %s::bigint) g) s",
                (CARD_BASE, cards, cdrs, start, start + n - 1),
            )
            print(f"  {start + n:,} CDRs", file=sys.stderr, flush=True)
        conn.execute("ALTER TABLE cdrs ADD CONSTRAINT cdrs_b_uuid_key UNIQUE (b_uuid)")
        for definition in indexes:
            conn.execute(definition)
        conn.execute("VACUUM ANALYZE")
    return time.monotonic() - started


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    q = statistics.quantiles(ordered, n=100)
    return (
        f"p50 {q[49] * 1000:6.1f} ms  p95 {q[94] * 1000:6.1f} ms  p99 {q[98] * 1000:6.1f} ms"
        f"  max {ordered[-1] * 1000:6.1f} ms  ({len(ordered)} requests)"
    )


def run(dsn: str, args: argparse.Namespace, workdir: Path) -> None:
    port = free_port()
    config = workdir / "cardd.yaml"
    config.write_text(f'daemon:\n  dsn: "{dsn}"\n  data_dir: {workdir}\napi:\n  listen: 127.0.0.1:{port}\n')
    env = dict(os.environ, PYTHONPATH=str(REPO))
    subprocess.run(
        [sys.executable, "-m", "cardd", "-c", str(config), "db", "migrate"], env=env, check=True, capture_output=True
    )  # creates the PIN key file cardd api reads
    key = subprocess.run(
        [sys.executable, "-m", "cardd", "-c", str(config), "apikey", "add", "bench", "--role", "admin"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # 'reseller 2' owns 10 of the 100 customers: a tenth of the cards and CDRs.
    reseller = subprocess.run(
        [
            sys.executable,
            "-m",
            "cardd",
            "-c",
            str(config),
            "apikey",
            "add",
            "bench reseller",
            "--role",
            "reseller",
            "--owner",
            "reseller 2",
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    log = open(workdir / "api.log", "w")  # noqa: SIM115 (the API process writes it until the finally below)
    api = subprocess.Popen(
        [sys.executable, "-m", "cardd", "-c", str(config), "api"], env=env, stderr=log, stdout=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while "API listening" not in (workdir / "api.log").read_text():
            if api.poll() is not None or time.monotonic() > deadline:
                raise SystemExit((workdir / "api.log").read_text())
            time.sleep(0.1)
        conn = http.client.HTTPConnection("127.0.0.1", port)
        headers = {"Authorization": f"Bearer {key}"}
        rng = random.Random(11)
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3 * 86400))
        kinds = {
            "card show": lambda: f"/api/v1/cards/{CARD_BASE + rng.randrange(args.cards)}",
            "CDRs of a card": lambda: f"/api/v1/cdrs?card={CARD_BASE + rng.randrange(args.cards)}&limit=50",
            "CDRs, newest 100": lambda: "/api/v1/cdrs?limit=100",
            "CDRs since 3 days, by cause": lambda: f"/api/v1/cdrs?from={since}&cause=USER_BUSY&limit=100",
            "CDRs of a customer": lambda: f"/api/v1/cdrs?customer=customer%20{1 + rng.randrange(100)}&limit=100",
            "CDRs as a reseller": lambda: "/api/v1/cdrs?limit=100",
            "card show as a reseller": lambda: f"/api/v1/cards/{CARD_BASE + 1 + 10 * rng.randrange(args.cards // 10)}",
        }
        for name, path_of in kinds.items():
            samples = []
            who = {"Authorization": f"Bearer {reseller}"} if "reseller" in name else headers
            for i in range(args.requests + 50):
                started = time.perf_counter()
                conn.request("GET", path_of(), headers=who)
                response = conn.getresponse()
                body = response.read()
                if response.status != 200:
                    raise SystemExit(f"{name}: {response.status} {body[:300]!r}")
                if i >= 50:  # the first 50 warm the caches
                    samples.append(time.perf_counter() - started)
            print(f"{name:28s} {percentiles(samples)}")
        json.loads(body)
    finally:
        api.terminate()
        api.wait(30)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="an empty database to seed (default: embedded PostgreSQL in a temp dir)")
    parser.add_argument("--cards", type=int, default=1_000_000)
    parser.add_argument("--cdrs", type=int, default=10_000_000)
    parser.add_argument("--requests", type=int, default=2000, help="per kind of request")
    args = parser.parse_args()
    print(f"bench_api: {args.cards:,} cards, {args.cdrs:,} CDRs; {machine()}")
    with tempfile.TemporaryDirectory(prefix="cardd-bench-api-") as tmp:
        server = None
        dsn = args.dsn
        if not dsn:
            server = EmbeddedServer(Path(tmp) / "pg").start()
            dsn = server.uri("postgres")
        try:
            print(f"seeded in {seed(dsn, args.cards, args.cdrs):.0f} s")
            run(dsn, args, Path(tmp))
        finally:
            if server is not None:
                server.stop()


if __name__ == "__main__":
    main()
