"""The dashboard's figures: read-only aggregates the API has no route for yet.

These are the only queries of cardd/web (everything else goes through the API's service
functions); each is bounded by an index (cdrs_ended_idx, the reservations' open indexes)
so the dashboard stays quick at millions of CDRs. They belong in the service layer
(cardd/billing) next to apistore; they live here until the API owns a dashboard route."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from psycopg_pool import ConnectionPool

from cardd.billing.ledger import _database_errors
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
    hours: list[Hour]            # the last 24 hours, oldest first, every hour present
    failures: list[tuple[str, int]]   # unanswered calls of the last 24 h by hangup cause, most first


def _owner_filter(owner: str | None) -> tuple[str, tuple[Any, ...]]:
    if owner is None:
        return "", ()
    return (" AND account_id IN (SELECT a.id FROM accounts a JOIN customers c ON c.id = a.customer_id"
            " WHERE c.owner = %s)", (owner,))


@_database_errors
def dashboard(pool: ConnectionPool, *, owner: str | None = None) -> Dashboard:
    extra, params = _owner_filter(owner)
    with pool.connection() as conn:
        counts = conn.execute(
            "SELECT count(*) FILTER (WHERE answered_at IS NOT NULL AND expires_at > now()), count(*),"
            "       count(*) FILTER (WHERE expires_at <= now())"
            f"  FROM reservations WHERE status = 'open'{extra}", params).fetchone()
        assert counts is not None   # an aggregate always has its row
        up, open_, expired = counts
        today = conn.execute(
            "SELECT currency, count(*), coalesce(sum(cost), 0) FROM cdrs"
            " WHERE ended_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
            f"{extra} GROUP BY currency ORDER BY currency", params).fetchall()
        hours = conn.execute(
            "SELECT h, count(c.id), count(c.answered_at), coalesce(sum(c.billed_seconds)"
            "       FILTER (WHERE c.answered_at IS NOT NULL), 0)"
            "  FROM generate_series(date_trunc('hour', now()) - interval '23 hours', date_trunc('hour', now()),"
            "                       interval '1 hour') AS h"
            "  LEFT JOIN cdrs c ON c.ended_at >= h AND c.ended_at < h + interval '1 hour'"
            "       AND c.ended_at >= date_trunc('hour', now()) - interval '23 hours'"
            f"{extra.replace('account_id', 'c.account_id')}"
            " GROUP BY h ORDER BY h", params).fetchall()
        failures = conn.execute(
            "SELECT coalesce(nullif(hangup_cause, ''), 'none recorded'), count(*) FROM cdrs"
            " WHERE ended_at >= now() - interval '24 hours' AND answered_at IS NULL"
            f"{extra} GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10", params).fetchall()
    return Dashboard(int(up), int(open_), int(expired),
                     [Today(c.strip(), int(n), money(r)) for c, n, r in today],
                     [Hour(h, int(n), int(a), int(s)) for h, n, a, s in hours],
                     [(cause, int(n)) for cause, n in failures])
