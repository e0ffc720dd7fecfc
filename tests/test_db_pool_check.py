"""The pool's connection check (cardd.db.check_idle_connection): a healthy
idle connection is handed out without a round trip to the server, one the
server has ended is never handed out."""

from __future__ import annotations

import select
import time

import psycopg
from psycopg_pool import ConnectionPool

from cardd.db import Database


def _backend_pid(db: Database) -> int:
    with db.pool.connection() as conn:
        return int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])


def _round_trip_check_calls(monkeypatch) -> list[int]:
    """Records every time psycopg_pool's own check (an empty query: a round trip) runs."""
    calls: list[int] = []
    real = ConnectionPool.check_connection

    def recorded(conn) -> None:
        calls.append(conn.info.backend_pid)
        real(conn)

    monkeypatch.setattr(ConnectionPool, "check_connection", staticmethod(recorded))
    return calls


def test_a_healthy_pooled_connection_is_handed_out_without_a_round_trip(dsn, monkeypatch):
    calls = _round_trip_check_calls(monkeypatch)
    with Database(dsn, pool_size=1, pool_timeout=10.0) as db:
        first = _backend_pid(db)
        for _ in range(5):
            assert _backend_pid(db) == first  # the same connection, checked each time
    assert calls == []


def test_a_connection_the_server_ended_is_replaced_not_handed_out(dsn, monkeypatch):
    calls = _round_trip_check_calls(monkeypatch)
    with Database(dsn, pool_size=1, pool_timeout=10.0) as db:
        with db.pool.connection() as conn:
            victim = conn.info.backend_pid
            fd = conn.fileno()
        with psycopg.connect(dsn, autocommit=True) as admin:
            assert admin.execute("SELECT pg_terminate_backend(%s)", (victim,)).fetchone()[0]
        # The pool's idle connection hears of it: an error, then EOF on its socket.
        deadline = time.monotonic() + 30
        while not select.select([fd], [], [], 0.05)[0]:
            assert time.monotonic() < deadline, "the terminated backend's socket never became readable"
        assert _backend_pid(db) != victim  # the first checkout after it already works
        assert calls == [victim]  # the round trip ran for that connection only
