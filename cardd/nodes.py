"""Which cardd processes are alive: one heartbeat row per process.

Every reservation records the process that granted it (cardd_nodes.node,
schema 006). Only that process knows whether the call is still up, so no
other process may settle it while that process lives: not the orphan rule,
not a CDR. A process is dead when its row is gone (a clean stop deletes it),
when its heartbeat is older than three of its intervals, or, on the same
host, as soon as its pid no longer exists (a SIGKILL is then seen at once).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Iterable

import gevent
import psycopg
from psycopg_pool import ConnectionPool

from cardd.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

STALE_INTERVALS = 3


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


class NodeRegistry:
    """This process's heartbeat row, and the liveness of the others."""

    def __init__(self, pool: ConnectionPool, *, interval: float = 10.0):
        self.pool = pool
        self.interval = interval
        self.host = socket.gethostname()
        self.pid = os.getpid()
        # host:pid:start:random. The random part keeps two in-process daemons
        # (the tests) and a reused pid apart.
        self.node = f"{self.host}:{self.pid}:{int(time.time())}:{secrets.token_hex(3)}"
        self._loop: gevent.Greenlet | None = None

    def _execute(self, sql: str, params: tuple) -> int:
        try:
            with self.pool.connection() as conn:
                return conn.execute(sql, params).rowcount
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(f"database unavailable: {exc}") from exc

    def beat(self) -> None:
        """Insert or refresh this process's row."""
        self._execute(
            "INSERT INTO cardd_nodes (node, host, pid, stale_after) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (node) DO UPDATE SET heartbeat_at = now(), stale_after = EXCLUDED.stale_after",
            (self.node, self.host, self.pid, f"{self.interval * STALE_INTERVALS} seconds"),
        )

    def start(self) -> None:
        self.beat()
        if self._loop is None:
            self._loop = gevent.spawn(self._run)
            self._loop.name = "node-heartbeat"

    def _run(self) -> None:
        while True:
            gevent.sleep(self.interval)
            try:
                self.beat()
            except Exception as exc:  # a database outage must not end the loop
                log.warning("node heartbeat failed: %s", exc)

    def stop(self, *, forget: bool = True) -> None:
        """End the heartbeat; `forget` deletes the row (a clean stop), so the
        reservations this process leaves open are orphans for the others at once."""
        if self._loop is not None:
            self._loop.kill(block=True, timeout=5)
            self._loop = None
        if forget:
            try:
                self._execute("DELETE FROM cardd_nodes WHERE node = %s", (self.node,))
            except Exception as exc:
                log.warning("cannot remove node %s: %s (it goes stale instead)", self.node, exc)

    def dead(self, nodes: Iterable[str]) -> set[str]:
        """Which of these processes are dead (this process never is)."""
        wanted = {n for n in nodes if n and n != self.node}
        if not wanted:
            return set()
        try:
            with self.pool.connection() as conn:
                rows = conn.execute(
                    "SELECT node, host, pid, heartbeat_at > now() - stale_after FROM cardd_nodes WHERE node = ANY(%s)",
                    (list(wanted),),
                ).fetchall()
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(f"database unavailable: {exc}") from exc
        alive = {node for node, host, pid, fresh in rows if fresh and not (host == self.host and not _pid_alive(pid))}
        return wanted - alive
