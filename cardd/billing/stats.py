"""The console's dashboard figures (cardd.web): read-only aggregates over reservations and the CDRs
of the last 24 hours, the service layer's as every other query of the console is. Each is bounded by
an index range: the reservations' open indexes, and cdrs_ended_figures_idx (schema/010), which
carries every column the figures read, so the 24 h scan is index-only."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from cardd.errors import DatabaseUnavailable
from cardd.money import money


@dataclass(frozen=True)
class Today:
    currency: str
    calls: int
    revenue: Decimal


@dataclass(frozen=True)
class Hour:
    start: datetime
    attempts: int
    answered: int
    billed_seconds: int

    @property
    def asr(self) -> float | None:
        """Answer-seizure ratio in percent (None: no attempts)."""
        return 100.0 * self.answered / self.attempts if self.attempts else None

    @property
    def acd(self) -> float | None:
        """Average call duration of the answered calls, in seconds."""
        return self.billed_seconds / self.answered if self.answered else None


@dataclass(frozen=True)
class Dashboard:
    calls_up: int
    open_reservations: int
    expired_reservations: int
    today: list[Today]
    hours: list[Hour]  # the last 24 hours, oldest first, every hour present
    failures: list[tuple[str, int]]  # unanswered calls of the last 24 h by hangup cause, most first


def _owner_filter(owner: str | None) -> tuple[str, tuple[Any, ...]]:
    if owner is None:
        return "", ()
    return (
        " AND account_id IN (SELECT a.id FROM accounts a JOIN customers c ON c.id = a.customer_id WHERE c.owner = %s)",
        (owner,),
    )


#: How long the CDR figures are reused by default: the 24 h scan reads every CDR of the last day
#: (333,000 at 10 million CDRs a month), so a dashboard open on several screens must not run it per load.
CACHE_S = 20.0
Figures = tuple[list[Today], list[Hour], list[tuple[str, int]]]


def dashboard(
    pool: ConnectionPool,
    *,
    owner: str | None = None,
    cache: dict[str | None, tuple[float, Figures]] | None = None,
    cache_s: float = CACHE_S,
) -> Dashboard:
    """The figures; the CDR ones are taken from `cache` (per owner) while younger than cache_s.
    A database that cannot be reached is DatabaseUnavailable, as for every service call."""
    try:
        return _dashboard(pool, owner, {} if cache is None else cache, cache_s)
    except (psycopg.OperationalError, PoolTimeout) as exc:
        raise DatabaseUnavailable(f"the database is unavailable: {exc}") from None


def _dashboard(
    pool: ConnectionPool, owner: str | None, cache: dict[str | None, tuple[float, Figures]], cache_s: float
) -> Dashboard:
    extra, params = _owner_filter(owner)
    with pool.connection() as conn:
        counts = conn.execute(
            "SELECT count(*) FILTER (WHERE answered_at IS NOT NULL AND expires_at > now()), count(*),"
            "       count(*) FILTER (WHERE expires_at <= now())"
            f"  FROM reservations WHERE status = 'open'{extra}",
            params,
        ).fetchone()
    assert counts is not None  # an aggregate always has its row
    up, open_, expired = counts
    cached = cache.get(owner)
    if cached is None or time.monotonic() - cached[0] >= cache_s:
        cached = (time.monotonic(), _cdr_figures(pool, extra, params))
        cache[owner] = cached
    today, hours, failures = cached[1]
    return Dashboard(int(up), int(open_), int(expired), today, hours, failures)


def _cdr_figures(pool: ConnectionPool, extra: str, params: tuple[Any, ...]) -> Figures:
    """Today's calls and revenue, ASR/ACD by hour and failures by cause, in one scan of the last 24
    hourly buckets (cdrs_ended_figures_idx, index-only); today since 00:00 UTC always lies inside them."""
    with pool.connection() as conn:
        start, midnight = conn.execute(
            "SELECT date_trunc('hour', now()) - interval '23 hours',"
            "       date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
        ).fetchone() or (None, None)
        rows = conn.execute(
            "SELECT date_trunc('hour', ended_at), currency, coalesce(nullif(hangup_cause, ''), 'none recorded'),"
            "       answered_at IS NOT NULL, ended_at >= %s, count(*), sum(cost), sum(billed_seconds)"
            f"  FROM cdrs WHERE ended_at >= %s{extra} GROUP BY 1, 2, 3, 4, 5",
            (midnight, start, *params),
        ).fetchall()
    buckets = {start + timedelta(hours=i): [0, 0, 0] for i in range(24)}
    today: dict[str, list[Any]] = {}
    failures: dict[str, int] = {}
    for hour, currency, cause, answered, is_today, n, cost, seconds in rows:
        b = buckets.setdefault(hour, [0, 0, 0])
        b[0] += n
        if answered:
            b[1] += n
            b[2] += int(seconds)
        else:
            failures[cause] = failures.get(cause, 0) + n
        if is_today:
            t = today.setdefault(currency.strip(), [0, Decimal(0)])
            t[0] += n
            t[1] += cost
    return (
        [Today(c, int(n), money(r)) for c, (n, r) in sorted(today.items())],
        [Hour(h, *b) for h, b in sorted(buckets.items()) if h >= start][-24:],
        sorted(failures.items(), key=lambda kv: (-kv[1], kv[0]))[:10],
    )
