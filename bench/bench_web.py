"""The web console's pages at scale: `cardd api` serving the dashboard, card searches, a card page and CDR
searches over a database of many cards and CDRs (seeded as bench/bench_api.py seeds it).

    python bench/bench_web.py [--dsn DSN] [--cards 1000000] [--cdrs 10000000] [--requests 200]
        [--without-console-indexes]

An operator signs in through the login form (CSRF token and cookie, as a browser does), then one client on a
keep-alive connection asks for each kind of page, one request at a time; latencies (client side, HTTP and
HTML rendering included) are printed as p50 / p95 / p99 / max. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_api import CARD_BASE, free_port, percentiles, seed  # noqa: E402
from bench.common import machine  # noqa: E402
from cardd.db import EmbeddedServer  # noqa: E402


class Site:
    """One keep-alive connection with the console's session cookie."""

    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port)
        self.cookie = ""

    def request(self, method: str, path: str, body: str | None = None) -> tuple[int, str]:
        headers = {"Cookie": self.cookie} if self.cookie else {}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        text = response.read().decode()
        set_cookie = response.getheader("Set-Cookie")
        if set_cookie:
            self.cookie = set_cookie.split(";", 1)[0]
        return response.status, text

    def sign_in(self, key: str) -> None:
        _, page = self.request("GET", "/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        status, _ = self.request("POST", "/login", urllib.parse.urlencode({"csrf_token": token, "key": key}))
        if status != 302:
            raise SystemExit(f"sign-in refused: {status}")


#: schema/010_console_indexes.sql: the destination-prefix CDR search, cards by status, the dashboard's 24 h scan.
CONSOLE_INDEXES = ("cdrs_translated_cld_idx", "accounts_status_idx", "cdrs_ended_figures_idx")


def run(dsn: str, args: argparse.Namespace, workdir: Path) -> None:
    port = free_port()
    config = workdir / "cardd.yaml"
    config.write_text(f'daemon:\n  dsn: "{dsn}"\n  data_dir: {workdir}\napi:\n  listen: 127.0.0.1:{port}\n')
    env = dict(os.environ, PYTHONPATH=str(REPO))
    migrated = subprocess.run(
        [sys.executable, "-m", "cardd", "-c", str(config), "db", "migrate"], env=env, capture_output=True, text=True
    )
    if migrated.returncode != 0:
        raise SystemExit(f"cardd db migrate failed:\n{migrated.stderr}")
    if args.without_console_indexes:  # the "before" of schema/010, for a same-machine comparison
        import psycopg

        with psycopg.connect(dsn, autocommit=True) as conn:
            for index in CONSOLE_INDEXES:
                conn.execute(f"DROP INDEX {index}")
    key = subprocess.run(
        [sys.executable, "-m", "cardd", "-c", str(config), "apikey", "add", "bench", "--role", "admin"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    with open(workdir / "api.log", "w") as log:  # the child keeps its own copy of the descriptor
        api = subprocess.Popen(
            [sys.executable, "-m", "cardd", "-c", str(config), "api"], env=env, stderr=log, stdout=subprocess.DEVNULL
        )
    try:
        deadline = time.monotonic() + 60
        while "API listening" not in (workdir / "api.log").read_text():
            if api.poll() is not None or time.monotonic() > deadline:
                raise SystemExit((workdir / "api.log").read_text())
            time.sleep(0.1)
        site = Site(port)
        site.sign_in(key)
        started = time.perf_counter()
        status, _ = site.request("GET", "/")
        print(
            f"{'dashboard, first load':26s} {(time.perf_counter() - started) * 1000:6.1f} ms"
            "  (the CDR scan; later loads reuse its figures for 20 s)",
            flush=True,
        )
        rng = random.Random(7)
        card = lambda: CARD_BASE + rng.randrange(args.cards)  # noqa: E731
        kinds = {
            "dashboard": lambda: "/",
            "cards, first page": lambda: "/cards",
            "cards by number prefix": lambda: f"/cards?number={str(card())[:7]}",
            "cards of a customer": lambda: f"/cards?customer=customer+{1 + rng.randrange(100)}",
            "cards, status blocked": lambda: "/cards?status=blocked",
            "card page": lambda: f"/cards/{card()}",
            "CDRs, newest 50": lambda: "/cdrs",
            "CDRs of a card": lambda: f"/cdrs?card={card()}",
            "CDRs by destination": lambda: f"/cdrs?destination=44207{rng.randrange(100):02d}",
            "reservations": lambda: "/reservations",
        }
        for name, path_of in kinds.items():
            samples = []
            warm = min(20, args.requests)
            for i in range(args.requests + warm):
                started = time.perf_counter()
                status, body = site.request("GET", path_of())
                if status != 200:
                    raise SystemExit(f"{name}: {status} {body[:300]!r}")
                if i >= warm:
                    samples.append(time.perf_counter() - started)
            print(f"{name:26s} {percentiles(samples)}", flush=True)
    finally:
        api.terminate()
        api.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="an empty database to seed (default: embedded PostgreSQL in a temp dir)")
    parser.add_argument("--cards", type=int, default=1_000_000)
    parser.add_argument("--cdrs", type=int, default=10_000_000)
    parser.add_argument("--requests", type=int, default=200, help="per kind of page")
    parser.add_argument(
        "--without-console-indexes",
        action="store_true",
        help="drop schema/010's indexes after migrating: the figures before them",
    )
    args = parser.parse_args()
    print(f"bench_web: {args.cards:,} cards, {args.cdrs:,} CDRs; {machine()}")
    with tempfile.TemporaryDirectory(prefix="cardd-bench-web-") as tmp:
        server = None
        dsn = args.dsn
        if not dsn:
            server = EmbeddedServer(Path(tmp) / "pg").start()
            dsn = server.uri("postgres")
        try:
            print(f"seeded in {seed(dsn, args.cards, args.cdrs):.0f} s", flush=True)
            run(dsn, args, Path(tmp))
        finally:
            if server is not None:
                server.stop()


if __name__ == "__main__":
    main()
