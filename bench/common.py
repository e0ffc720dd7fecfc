"""Shared pieces of the call benchmarks (bench_flows.py, bench_bridged.py).

The simulator (cardd.sim) runs in the benchmark's own process; each handler
under test (cardd, or a bare stock-greenswitch handler) runs in a subprocess
of its own (bench/serve.py), so its CPU time and RSS are its own and nothing
of the simulator's is counted against it. The parent talks to a handler over
its stdin/stdout, one JSON line per request.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gevent.subprocess as subprocess

REPO = Path(__file__).resolve().parent.parent
SERVE = Path(__file__).resolve().parent / "serve.py"

# The demo data's card shape: bench cards are 2000000000 + i, all with this PIN
# (each card hashed on its own: its own salt, so no two stored hashes match).
BENCH_PIN = "1234"
BENCH_CARD_BASE = 2_000_000_000
# 44 is the demo tariff's UK rate; the number is dialled through the demo proxy.
DESTINATION = "442071234567"
PROXY = "198.51.100.7:5060"


def machine() -> str:
    """The line every figure is printed with."""
    # The load average says whether something else was competing for the cores.
    return (
        f"{os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}, load {os.getloadavg()[0]:.2f}, "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC"
    )


def raise_nofile() -> tuple[int, int]:
    """Raise this process's open-file soft limit to its hard limit (children
    inherit it). Returns (soft, hard) after the change."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def card_number(i: int) -> str:
    return str(BENCH_CARD_BASE + i)


class EmbeddedPg:
    """An embedded PostgreSQL in a temporary directory, with the schema, the
    demo tariff and `cards` bench cards (so concurrent calls lock different
    account rows)."""

    def __init__(self, cards: int, *, balance: str = "1000.00000"):
        self.cards = cards
        self.balance = balance
        self._tmp = tempfile.TemporaryDirectory(prefix="cardd-bench-")
        self.dir = Path(self._tmp.name)
        self.server = None
        self.dsn = ""

    def __enter__(self) -> EmbeddedPg:
        from cardd.db import EmbeddedServer

        self.server = EmbeddedServer(self.dir / "pg").start()
        self.dsn = self.server.uri("postgres")
        self._seed()
        return self

    def __exit__(self, *exc) -> None:
        if self.server is not None:
            self.server.stop()
        self._tmp.cleanup()

    def _seed(self) -> None:
        import psycopg
        from psycopg_pool import ConnectionPool

        from cardd.billing import pins
        from cardd.billing.pins import hash_pin
        from cardd.config import load_settings
        from cardd.db import migrate_conn
        from cardd.demo import DEMO_TARIFF, ensure_demo_data

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            migrate_conn(conn)
        # The key bench/serve.py's daemon will load (default settings): PINs
        # hashed here must check there.
        pins.use_key_of(load_settings(None).daemon, create=True)
        with ConnectionPool(self.dsn, min_size=1, max_size=1, open=True) as pool:
            ensure_demo_data(pool)
        # Every card its own salted hash (cardd.billing.pins, the one PIN
        # module): a cache keyed by the stored hash cannot look perfect.
        with psycopg.connect(self.dsn) as conn, conn.transaction():
            tariff = conn.execute("SELECT id, currency FROM tariffs WHERE name = %s", (DEMO_TARIFF,)).fetchone()
            with conn.cursor().copy("COPY accounts (username, pin_hash, currency, tariff_id) FROM STDIN") as copy:
                for i in range(self.cards):
                    copy.write_row((card_number(i), hash_pin(BENCH_PIN), tariff[1], tariff[0]))
            # Balances move only through ledger rows (the trigger applies them).
            conn.execute(
                "INSERT INTO ledger (account_id, amount, kind, reference)"
                " SELECT id, %s, 'initial', 'bench' FROM accounts WHERE username::bigint >= %s",
                (self.balance, BENCH_CARD_BASE),
            )
            conn.execute("ANALYZE")

    def wal_lsn(self) -> int:
        """The server's current WAL position in bytes (pg_current_wal_lsn): the
        difference over a run is the WAL it wrote (every write, all sessions)."""
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            return int(conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint").fetchone()[0])

    def backend_cpu(self) -> float:
        """CPU seconds used so far by this PostgreSQL server's processes (the
        postmaster, whose command line names the data directory, and its
        children). Other processes that mention the directory (a client's
        DSN names its socket directory) are not PostgreSQL."""
        import psutil

        total = 0.0
        for proc in psutil.process_iter(["name", "cmdline"]):
            try:
                if not (proc.info["name"] or "").startswith("postgres"):
                    continue
                parent = proc.parent()
                if str(self.dir) in " ".join(proc.info["cmdline"] or []) or (
                    parent is not None and str(self.dir) in " ".join(parent.cmdline())
                ):
                    t = proc.cpu_times()
                    total += t.user + t.system
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return total


class DbCounter:
    """Every exchange this process has with PostgreSQL, counted where psycopg
    makes it. psycopg runs each exchange as a generator driven by
    `Connection.wait`: the generator sends, then yields to wait on the socket
    for the reply. A generator that yields at least once is one round trip;
    one that finishes without yielding sent nothing (the `commit()` of an idle
    autocommit connection that the pool's `with conn:` does on every return).
    Each `Cursor.execute` is one statement, the empty ones being the pool's
    connection checks; round trips that are neither are BEGIN/COMMIT/ROLLBACK.
    Counted, not estimated (the one undercount: the exchange in which a
    statement is prepared, once per statement and connection, rides with its
    first prepared execute). Installed once per process (install())."""

    counts = {"round_trips": 0, "statements": 0, "checks": 0}
    # With trace: how often each statement (its first words) and each
    # transaction command ran (bench/serve.py --db-trace prints it at exit).
    trace: dict[str, int] | None = None
    _installed = False

    @classmethod
    def install(cls, *, trace: bool = False) -> dict[str, int]:
        if cls._installed:
            return cls.counts
        import psycopg

        counts = cls.counts
        wait, execute, command = psycopg.Connection.wait, psycopg.Cursor.execute, psycopg.Connection._exec_command
        seen = cls.trace = {} if trace else None

        def counted(gen):
            try:
                waiting_on = gen.send(None)
            except StopIteration as done:
                return done.value  # nothing went over the wire
            counts["round_trips"] += 1
            while True:
                ready = yield waiting_on
                try:
                    waiting_on = gen.send(ready)
                except StopIteration as done:
                    return done.value

        def counted_wait(self, gen, *args, **kw):
            return wait(self, counted(gen), *args, **kw)

        def counted_execute(self, query, *args, **kw):
            counts["checks" if query == "" else "statements"] += 1
            if seen is not None:
                key = " ".join(str(query if isinstance(query, str) else query.as_string(self)).split())[:90]
                seen[key] = seen.get(key, 0) + 1
            return execute(self, query, *args, **kw)

        def traced_command(self, cmd, *args, **kw):
            key = "[tx] " + (cmd.decode() if isinstance(cmd, bytes) else str(cmd))[:60]
            seen[key] = seen.get(key, 0) + 1
            return command(self, cmd, *args, **kw)

        psycopg.Connection.wait = counted_wait
        psycopg.Cursor.execute = counted_execute
        if seen is not None:
            psycopg.Connection._exec_command = traced_command
        cls._installed = True
        return counts

    @classmethod
    def snapshot(cls) -> dict[str, int]:
        return dict(cls.counts)


@dataclass
class Usage:
    cpu: float  # user + system seconds of the handler process
    rss_kb: int  # resident set now
    maxrss_kb: int  # peak resident set
    active: int  # calls the handler holds now
    extra: dict[str, Any]


class Handler:
    """A handler under test in its own process (bench/serve.py)."""

    def __init__(
        self,
        kind: str,
        *,
        dsn: str = "",
        log_file: str = "",
        log_level: str = "info",
        extra_args: list[str] | None = None,
    ):
        args = [sys.executable, str(SERVE), kind, "--log-file", log_file or os.devnull, "--log-level", log_level]
        if dsn:
            args += ["--dsn", dsn]
        args += extra_args or []
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        self.kind = kind
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=str(REPO))
        hello = self._read()
        self.port = int(hello["port"])
        self.pid = int(hello["pid"])

    def _read(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.kind} handler exited (code {self.proc.wait()})")
        return json.loads(line)

    def request(self, op: str, **kw: Any) -> dict[str, Any]:
        self.proc.stdin.write((json.dumps({"op": op, **kw}) + "\n").encode())
        self.proc.stdin.flush()
        return self._read()

    def usage(self) -> Usage:
        r = self.request("usage")
        return Usage(r["cpu"], r["rss_kb"], r["maxrss_kb"], r["active"], r.get("extra", {}))

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.request("quit")
            except (OSError, RuntimeError, ValueError):
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Handler:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def table(rows: list[list[str]], header: list[str]) -> str:
    """A Markdown table (the README pastes it as printed)."""
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])
