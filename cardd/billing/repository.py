"""The one way a service reaches the database: a repository object over the pool whose query methods are
timed and have their database failures mapped to cardd's errors alike.

A method decorated with @query is timed into the repository's observer as op=<method name> (the daemon's
observer is Metrics.observe_query: cardd_db_query_seconds{op}), and a lost server, a refused connection or a
pool checkout past its deadline raises DatabaseUnavailable, as with every module function decorated with
@database_errors. The IVR holds repositories (cardd.ivr.call.Services), never the pool.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

import psycopg
from psycopg_pool import ConnectionPool

from cardd.errors import DatabaseUnavailable

__all__ = ["QueryObserver", "Repository", "database_errors", "query"]

#: Told (op, seconds) after each query method, whether it returned or raised.
QueryObserver = Callable[[str, float], None]

_P = ParamSpec("_P")
_R = TypeVar("_R")
_Repo = TypeVar("_Repo", bound="Repository")


def database_errors(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """A lost server, a refused connection or a pool checkout past its deadline is
    DatabaseUnavailable to callers (psycopg_pool.PoolTimeout is an OperationalError);
    the transaction was rolled back, so the call may be retried or journalled."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return fn(*args, **kwargs)
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(f"database unavailable: {exc}") from exc

    return wrapper


def query(method: Callable[Concatenate[_Repo, _P], _R]) -> Callable[Concatenate[_Repo, _P], _R]:
    """A repository method that talks to the database: timed as op=<its name>, its failures mapped by
    database_errors."""
    op = method.__name__
    guarded = database_errors(method)

    @functools.wraps(method)
    def timed(self: _Repo, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        started = time.perf_counter()
        try:
            return guarded(self, *args, **kwargs)
        finally:
            if self.observe is not None:
                self.observe(op, time.perf_counter() - started)

    return timed


class Repository:
    """A pool and who is told how long each query took (None: nobody, as in operator commands)."""

    def __init__(self, pool: ConnectionPool, *, observe: QueryObserver | None = None) -> None:
        self.pool = pool
        self.observe = observe
