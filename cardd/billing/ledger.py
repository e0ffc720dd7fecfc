"""Money-moving SQL transactions: cards, reservations (grant), settlement, CDRs.

Every money step is one short transaction on a pooled connection, one statement
on the call's path (schema 011): the grant reads a snapshot, prices it here
(cardd.billing.rating, the one tariff arithmetic) and writes the reservation
with cardd_reserve, which locks the account row and checks the price still
holds (else the grant prices again); a call's own settlement is priced from its
grant and written by cardd_settle_granted; any other settlement (a CDR for
another process's call, an estimate, a repeat) locks and reads the reservation
first. Lock order is always account, then reservation or carrier, so grant and
settle never deadlock each other. Balances move only through
ledger rows (the schema's trigger applies them), so the balance always equals
the sum of its ledger.

Reservations, settlements and CDRs are keyed by the attempt's B-leg UUID: a
settlement repeated (a retry, a journal replay, the orphan checker racing the
call's own hangup) returns the first CDR and charges nothing more.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import errors
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from cardd.billing.pins import check_pin
from cardd.billing.rating import Rate, billed_seconds, call_cost, max_duration, plan_seconds_used
from cardd.billing.repository import QueryObserver, Repository, query
from cardd.billing.routing import Route, buy_and_margin, buy_rate, no_route, route_at, route_candidates
from cardd.errors import (
    CardBlocked,
    CardExpired,
    CardNotFound,
    DuplicateGrant,
    ForbiddenDestination,
    InsufficientFunds,
    NoRate,
    ReservationNotFound,
    TooManyCalls,
)
from cardd.money import money

log = logging.getLogger(__name__)

UuidLike = uuid.UUID | str


@dataclass(frozen=True)
class Card:
    id: int
    username: str
    authname: str | None
    pin_hash: str | None
    balance: Decimal
    currency: str
    status: str
    tariff_id: int
    customer_id: int | None
    service_plan_id: int | None
    plan_suspended: bool
    minutes_plan: bool
    expires_at: datetime | None
    max_concurrent_calls: int | None
    language: str | None
    # Available credit (balance minus open reservations) when the card was read
    # with it (the PIN verdict, cardd.billing.identity); None when not read.
    available: Decimal | None = None

    @property
    def has_pin(self) -> bool:
        return self.pin_hash is not None

    def __repr__(self) -> str:
        # Never print the PIN hash in logs or tracebacks.
        return f"Card(id={self.id}, username={self.username!r}, status={self.status!r})"


@dataclass(frozen=True)
class Grant:
    b_uuid: uuid.UUID
    a_uuid: uuid.UUID
    card_id: int
    rate: Rate
    duration_s: int  # the hard limit for sched_hangup, plan seconds included
    plan_seconds: int  # of duration_s, how many are service-plan seconds
    reserved: Decimal  # the most the call can cost
    available: Decimal  # available credit before this reservation
    currency: str
    expires_at: datetime
    route: Route | None = None  # the carrier and gateway; None: daemon.dial_string (no carriers)


@dataclass(frozen=True)
class Cdr:
    b_uuid: uuid.UUID
    a_uuid: uuid.UUID
    account_id: int
    username: str
    currency: str
    cli: str
    cld: str
    translated_cli: str
    translated_cld: str
    rate_id: int | None
    rate_prefix: str
    started_at: datetime
    answered_at: datetime | None
    ended_at: datetime
    granted_seconds: int
    billed_seconds: int
    plan_seconds_used: int
    cost: Decimal
    hangup_cause: str
    estimated: bool
    # The carrier that carried the attempt and what it cost the business (None without carriers).
    carrier_id: int | None = None
    carrier: str | None = None
    gateway: str | None = None
    buy_cost: Decimal | None = None
    margin: Decimal | None = None


@dataclass(frozen=True)
class OpenReservation:
    b_uuid: uuid.UUID
    a_uuid: uuid.UUID
    account_id: int
    amount: Decimal
    duration_s: int
    cld: str
    created_at: datetime
    expires_at: datetime
    # Who granted it (schema 006): the FreeSWITCH box and the cardd process;
    # None for reservations granted before that migration.
    switchname: str | None = None
    node: str | None = None
    bridge_sent_at: datetime | None = None
    answered_at: datetime | None = None


@dataclass(frozen=True)
class LedgerEntry:
    id: int
    account_id: int
    amount: Decimal
    kind: str
    b_uuid: uuid.UUID | None
    reference: str
    balance_after: Decimal
    created_at: datetime


_CARD_SQL = (
    "SELECT a.id, a.username, a.authname, a.pin_hash, a.balance, a.currency, a.status, a.tariff_id,"
    "       a.customer_id, a.service_plan_id, coalesce(sp.suspended, false) AS plan_suspended,"
    "       coalesce(sp.minutes_plan, false) AS minutes_plan, a.expires_at, a.max_concurrent_calls,"
    "       a.language"
    "  FROM accounts a LEFT JOIN service_plans sp ON sp.id = a.service_plan_id"
)

_CDR_COLUMNS = (
    "b_uuid, a_uuid, account_id, username, currency, cli, cld, translated_cli, translated_cld, rate_id,"
    " rate_prefix, started_at, answered_at, ended_at, granted_seconds, billed_seconds, plan_seconds_used,"
    " cost, hangup_cause, estimated, carrier_id, carrier, gateway, buy_cost, margin"
)


# The longest-prefix rate of a tariff (the (tariff_id, prefix) index probed once per prefix
# length): find_rate's and the grant's one lookup.
_RATE_SQL = (
    "SELECT * FROM rates WHERE tariff_id = {tariff} AND prefix = ANY({prefixes}) ORDER BY length(prefix) DESC LIMIT 1"
)


def number_prefixes(number: str) -> list[str]:
    """Every prefix of a number, '' included: the keys the longest-prefix lookup probes."""
    return [number[:i] for i in range(len(number) + 1)]


def _card(row: dict[str, Any]) -> Card:
    return Card(**{**row, "currency": row["currency"].strip()})


def _cdr(row: dict[str, Any]) -> Cdr:
    return Cdr(**{**row, "currency": row["currency"].strip()})


def _uuid(value: UuidLike) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def find_rate(conn: psycopg.Connection[Any], tariff_id: int, number: str) -> Rate | None:
    """The longest-prefix rate of a tariff for a number (one index probe per prefix length)."""
    row = conn.execute(
        "SELECT id, prefix, price_1, interval_1, price_n, interval_n, connect_fee, free_seconds, grace, forbidden"
        " FROM (" + _RATE_SQL.format(tariff="%s", prefixes="%s") + ") r",
        (tariff_id, number_prefixes(number)),
    ).fetchone()
    if row is None:
        return None
    return Rate(
        prefix=row[1],
        price_1=row[2],
        interval_1=row[3],
        price_n=row[4],
        interval_n=row[5],
        connect_fee=row[6],
        free_seconds=row[7],
        grace=row[8],
        forbidden=row[9],
        rate_id=row[0],
    )


#: Grants a Ledger keeps for their settlement. A held call holds its grant anyway; what the bound
#: caps is grants never settled here (the socket died, another process's orphan check settled
#: them): ~1.5 KB each. Twice the 10,000 calls one process holds (bench_bridged).
MAX_GRANTS_HELD = 20_000

#: How often a grant prices again when the card's credit moved between its read and its write.
GRANT_ATTEMPTS = 8

# The grant's snapshot, one statement: the card, its open calls, the longest-prefix rate, the
# service plan's longest prefix for the number and its seconds used or held, whether any
# carrier exists (then the route candidates are read too). No lock: cardd_reserve checks.
_GRANT_FACTS_SQL = (
    "SELECT a.balance, a.currency, a.status, a.tariff_id, a.expires_at, a.max_concurrent_calls,"
    "       a.service_plan_id, now() AS now, h.n AS calls_up, h.amount AS held,"
    "       r.id AS rate_id, r.prefix AS rate_prefix, r.price_1, r.interval_1, r.price_n, r.interval_n,"
    "       r.connect_fee, r.free_seconds, r.grace, r.forbidden, pm.prefix AS plan_prefix,"
    "       pm.minutes AS plan_minutes,"
    "       CASE WHEN pm.prefix IS NULL THEN 0"
    "            ELSE coalesce((SELECT used_seconds FROM account_plan_usage u"
    "                            WHERE u.account_id = a.id AND u.prefix = pm.prefix), 0)"
    "               + coalesce((SELECT sum(plan_seconds) FROM reservations p"
    "                            WHERE p.account_id = a.id AND p.plan_prefix = pm.prefix AND p.status = 'open'), 0)"
    "       END AS plan_used,"
    "       EXISTS (SELECT 1 FROM carriers) AS any_carrier"
    "  FROM accounts a"
    "  LEFT JOIN service_plans sp ON sp.id = a.service_plan_id"
    " CROSS JOIN LATERAL (SELECT count(*) AS n, coalesce(sum(amount), 0) AS amount FROM reservations"
    "                      WHERE account_id = a.id AND status = 'open') h"
    "  LEFT JOIN LATERAL (" + _RATE_SQL.format(tariff="a.tariff_id", prefixes="%(prefixes)s") + ") r ON true"
    "  LEFT JOIN LATERAL (SELECT m.prefix, m.minutes FROM service_plan_minutes m"
    "                      WHERE m.plan_id = a.service_plan_id AND NOT coalesce(sp.suspended, true)"
    "                        AND m.prefix = ANY(%(prefixes)s)"
    "                      ORDER BY length(m.prefix) DESC LIMIT 1) pm ON true"
    " WHERE a.id = %(card)s"
)

_RESERVE_ARGS = ", ".join(["%s"] * 37)


@dataclass(frozen=True)
class _Price:
    """What a grant prices from its snapshot (Ledger.grant)."""

    rate: Rate
    currency: str
    available: Decimal
    duration: int
    plan_id: int | None
    plan_prefix: str | None
    plan_minutes: int
    plan_seconds: int
    reserved: Decimal
    needed: Decimal  # the credit the paid seconds need: reserved, less an ignored connect fee


def _price(
    facts: dict[str, Any] | None,
    card_id: int,
    number: str,
    *,
    ignore_connect_fee: bool,
    max_call_duration: int | None,
    min_call_duration: int,
) -> _Price:
    """The grant's arithmetic on its snapshot, or the refusal it leads to."""
    if facts is None:
        raise CardNotFound(f"no card with id {card_id}")
    if facts["status"] in ("blocked", "closed"):
        raise CardBlocked(f"card {card_id} is {facts['status']}")
    if facts["expires_at"] is not None and facts["expires_at"] <= facts["now"]:
        raise CardExpired(f"card {card_id} expired at {facts['expires_at']}")
    _refuse_calls(card_id, facts["calls_up"], facts["max_concurrent_calls"])
    if facts["rate_id"] is None:
        raise NoRate(f"no rate for {number!r} in tariff {facts['tariff_id']}")
    rate = _rate(facts)
    if rate.forbidden:
        raise ForbiddenDestination(f"{number!r} matches forbidden prefix {rate.prefix!r}")
    plan_minutes = facts["plan_minutes"] or 0
    plan_left = max(0, plan_minutes * 60 - int(facts["plan_used"])) if facts["plan_prefix"] is not None else 0
    available = money(facts["balance"] - facts["held"])
    duration = max_duration(
        rate,
        available,
        ignore_connect_fee=ignore_connect_fee,
        plan_seconds=plan_left,
        max_call_duration=max_call_duration,
    )
    currency = facts["currency"].strip()
    if duration < max(min_call_duration, 1):
        raise InsufficientFunds(
            f"card {card_id}: {available} {currency} buys {duration} s to {number!r}, minimum {min_call_duration} s"
        )
    plan_s = min(plan_left, duration)
    reserved = call_cost(rate, duration, plan_seconds=plan_s)
    ignored_fee = rate.connect_fee if ignore_connect_fee and reserved > 0 else Decimal(0)
    return _Price(
        rate=rate,
        currency=currency,
        available=available,
        duration=duration,
        plan_id=facts["service_plan_id"],
        plan_prefix=facts["plan_prefix"],
        plan_minutes=plan_minutes,
        plan_seconds=plan_s,
        reserved=reserved,
        needed=reserved - ignored_fee,
    )


def _rate(row: Mapping[str, Any]) -> Rate:
    """The sell rate of a grant's snapshot or of a reservation (columns rate_id, rate_prefix, price_1, ...)."""
    return Rate(
        prefix=row["rate_prefix"],
        price_1=row["price_1"],
        interval_1=row["interval_1"],
        price_n=row["price_n"],
        interval_n=row["interval_n"],
        connect_fee=row["connect_fee"],
        free_seconds=row["free_seconds"],
        grace=row["grace"],
        forbidden=row.get("forbidden", False),
        rate_id=row["rate_id"],
    )


@dataclass(frozen=True)
class _Attempt:
    """The call attempt a grant reserves for, as the caller named it (Ledger.grant)."""

    b_id: uuid.UUID
    a_id: uuid.UUID
    card_id: int
    cli: str
    destination: str
    translated_cli: str
    number: str  # the translated destination: what is rated and dialled
    margin_s: int
    switchname: str | None


def _reserve_params(price: _Price, attempt: _Attempt, node: str | None, route: Route | None) -> tuple[Any, ...]:
    """cardd_reserve's arguments, in its order."""
    rate = price.rate
    buy = route.buy if route is not None else None
    return (
        attempt.b_id,
        attempt.a_id,
        attempt.card_id,
        price.reserved,
        price.duration,
        price.duration - price.plan_seconds,
        price.needed,
        price.plan_id,
        price.plan_seconds,
        price.plan_prefix,
        price.plan_minutes,
        attempt.cli,
        attempt.destination,
        attempt.translated_cli,
        attempt.number,
        rate.rate_id,
        rate.prefix,
        rate.price_1,
        rate.interval_1,
        rate.price_n,
        rate.interval_n,
        rate.connect_fee,
        rate.free_seconds,
        rate.grace,
        attempt.margin_s,
        attempt.switchname or None,
        node,
        route.carrier_id if route else None,
        route.gateway if route else None,
        buy.prefix if buy else None,
        buy.price_1 if buy else None,
        buy.interval_1 if buy else None,
        buy.price_n if buy else None,
        buy.interval_n if buy else None,
        buy.connect_fee if buy else None,
        buy.free_seconds if buy else None,
        buy.grace if buy else None,
    )


def _refuse_calls(card_id: int, calls_up: int, limit: int | None) -> None:
    if limit is not None and calls_up >= limit:
        raise TooManyCalls(f"card {card_id} already has {calls_up} of {limit} calls up")


def _refuse(outcome: str, card_id: int, calls_up: int | None, calls_limit: int | None) -> None:
    """cardd_reserve's refusals (the card changed since the snapshot) as cardd's errors."""
    if outcome == "ok":
        return
    if outcome == "not_found":
        raise CardNotFound(f"no card with id {card_id}")
    if outcome == "blocked":
        raise CardBlocked(f"card {card_id} was blocked or closed")
    if outcome == "expired":
        raise CardExpired(f"card {card_id} has expired")
    if outcome == "too_many_calls":
        assert calls_up is not None
        _refuse_calls(card_id, calls_up, calls_limit)
    raise AssertionError(f"cardd_reserve said {outcome!r}")


# on_disagreement(kind, b_uuid, first, second): a settlement that differs from
# the one already recorded. kind: "repeat_differs" (a CDR or replay after the
# call's own settlement, or the reverse), "estimate_below_real" (the real CDR of
# an estimate billed more than the estimate), "estimate_shortfall" (and the card
# could not pay all of the difference).
DisagreementHook = Callable[[str, uuid.UUID, str, str], None]


class Ledger(Repository):
    """Cards, reservations, settlements and CDRs over a psycopg ConnectionPool.

    `node` (the granting cardd process, cardd.nodes) is written on every grant;
    `on_disagreement` is told about settlements that differ from the first;
    `observe` about each query's time (cardd.billing.repository: op=<method>)."""

    def __init__(
        self,
        pool: ConnectionPool,
        *,
        node: str | None = None,
        on_disagreement: DisagreementHook | None = None,
        observe: QueryObserver | None = None,
    ):
        super().__init__(pool, observe=observe)
        self.node = node
        self.on_disagreement = on_disagreement
        # The grants this process made and has not settled yet, by B-leg UUID: a call's own
        # settlement is priced from its grant and written in one statement (_settle_granted).
        self._granted: dict[uuid.UUID, Grant] = {}

    # --- cards -------------------------------------------------------------

    @query
    def find_card(self, number: str, *, by_authname: bool = False) -> Card | None:
        column = "a.authname" if by_authname else "a.username"
        with self.pool.connection() as conn:
            row = conn.cursor(row_factory=dict_row).execute(f"{_CARD_SQL} WHERE {column} = %s", (number,)).fetchone()
        return _card(row) if row else None

    @query
    def get_card(self, card_id: int) -> Card:
        with self.pool.connection() as conn:
            row = conn.cursor(row_factory=dict_row).execute(f"{_CARD_SQL} WHERE a.id = %s", (card_id,)).fetchone()
        if row is None:
            raise CardNotFound(f"no card with id {card_id}")
        return _card(row)

    def verify_pin(self, card: Card, pin: str) -> bool:
        """Constant-time PIN check against the card's keyed hash (cardd.billing.pins),
        inline: an HMAC costs microseconds."""
        return check_pin(pin, card.pin_hash)

    @query
    def available_credit(self, card_id: int) -> Decimal:
        """Balance minus open reservations: what the card may still spend."""
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT a.balance - coalesce((SELECT sum(amount) FROM reservations r"
                "                             WHERE r.account_id = a.id AND r.status = 'open'), 0)"
                "  FROM accounts a WHERE a.id = %s",
                (card_id,),
            ).fetchone()
        if row is None:
            raise CardNotFound(f"no card with id {card_id}")
        return money(row[0])

    # --- before the bridge -------------------------------------------------

    @query
    def grant(
        self,
        card_id: int,
        *,
        a_uuid: UuidLike,
        b_uuid: UuidLike,
        destination: str,
        cli: str = "",
        translated_destination: str | None = None,
        translated_cli: str | None = None,
        ignore_connect_fee: bool = False,
        max_call_duration: int | None = 3600,
        min_call_duration: int = 10,
        margin_s: int = 120,
        switchname: str | None = None,
        allow_loss: bool = False,
        tried_routes: Collection[tuple[int, int]] = (),
    ) -> Grant:
        """Reserve the most a call to `destination` can cost.

        Two round trips without carriers, three with: one snapshot of the card,
        its open calls, the rate, the plan seconds (and the route candidates),
        priced here (cardd.billing.rating); then cardd_reserve (schema 011)
        writes the reservation under the account's row lock after checking the
        price still holds, else the grant reads and prices again. Rating uses
        the translated destination when given. Raises CardNotFound, CardBlocked,
        CardExpired, TooManyCalls, NoRate, ForbiddenDestination,
        InsufficientFunds (granted duration below max(min_call_duration, 1)),
        NoRoute (carriers are configured and none may carry it, or all in
        tried_routes), DuplicateGrant.
        """
        a_id, b_id = _uuid(a_uuid), _uuid(b_uuid)
        number = translated_destination if translated_destination is not None else destination
        t_cli = translated_cli if translated_cli is not None else cli
        attempt = _Attempt(b_id, a_id, card_id, cli, destination, t_cli, number, margin_s, switchname)
        with self.pool.connection() as conn:
            for _ in range(GRANT_ATTEMPTS):
                facts = (
                    conn.cursor(row_factory=dict_row)
                    .execute(_GRANT_FACTS_SQL, {"card": card_id, "prefixes": number_prefixes(number)})
                    .fetchone()
                )
                price = _price(
                    facts,
                    card_id,
                    number,
                    ignore_connect_fee=ignore_connect_fee,
                    max_call_duration=max_call_duration,
                    min_call_duration=min_call_duration,
                )
                routes: list[tuple[tuple[Any, ...], int]] = []
                if facts is not None and facts["any_carrier"]:
                    routes = route_candidates(
                        conn, number, price.rate, price.currency, allow_loss=allow_loss, tried=tried_routes
                    )
                    if not routes:
                        raise no_route(number, any_candidate=False)
                outcome, until, calls_up, calls_limit, route = self._reserve(conn, price, routes, attempt)
                if outcome != "moved":
                    break
            else:
                raise InsufficientFunds(f"card {card_id}: its credit kept moving during {GRANT_ATTEMPTS} grants")
        _refuse(outcome, card_id, calls_up, calls_limit)
        log.info(
            "grant b=%s card=%s dest=%s prefix=%s duration=%ss plan=%ss reserved=%s available=%s",
            b_id,
            card_id,
            number,
            price.rate.prefix,
            price.duration,
            price.plan_seconds,
            price.reserved,
            price.available,
        )
        grant = Grant(
            b_uuid=b_id,
            a_uuid=a_id,
            card_id=card_id,
            rate=price.rate,
            duration_s=price.duration,
            plan_seconds=price.plan_seconds,
            reserved=price.reserved,
            available=price.available,
            currency=price.currency,
            expires_at=until,
            route=route,
        )
        while len(self._granted) >= MAX_GRANTS_HELD:
            # Grants settled elsewhere (another process's orphan check, an operator) are
            # never popped here: drop the oldest, whose settlement takes the general path.
            self._granted.pop(next(iter(self._granted)))
        self._granted[b_id] = grant
        return grant

    def _reserve(
        self,
        conn: psycopg.Connection[Any],
        price: _Price,
        routes: list[tuple[tuple[Any, ...], int]],
        attempt: _Attempt,
    ) -> tuple[str, datetime, int, int | None, Route | None]:
        """cardd_reserve on the first route whose carrier has a channel free (no route
        without carriers): (outcome, expiry, calls up, call limit, route)."""
        full: set[int] = set()
        for k in range(len(routes)) if routes else [None]:
            route = None if k is None else route_at(routes, k)
            if route is not None and route.carrier_id in full:
                continue
            params = _reserve_params(price, attempt, self.node, route)
            try:
                row = conn.execute(
                    "SELECT outcome, until, calls_up, calls_limit FROM cardd_reserve(" + _RESERVE_ARGS + ")", params
                ).fetchone()
            except errors.UniqueViolation:
                raise DuplicateGrant(f"B-leg UUID {attempt.b_id} was already granted") from None
            assert row is not None  # a function with OUT parameters returns one row
            if row[0] == "carrier_full":
                assert route is not None
                full.add(route.carrier_id)
                continue
            return row[0], row[1], row[2], row[3], route
        raise no_route(attempt.number, any_candidate=True)

    # --- during the call ---------------------------------------------------

    @query
    def mark_dialled(self, b_uuid: UuidLike) -> bool:
        """Record, before the bridge is sent, that it is being sent: an orphan
        without this mark was never dialled and is released at no cost. False
        when the reservation is no longer open (another cardd took this process
        for dead and released it): then the bridge must not be sent."""
        with self.pool.connection() as conn:
            return (
                conn.execute(
                    "UPDATE reservations SET bridge_sent_at = now() WHERE b_uuid = %s AND status = 'open'",
                    (_uuid(b_uuid),),
                ).rowcount
                == 1
            )

    @query
    def mark_answered(self, b_uuid: UuidLike) -> None:
        """Record when the B leg answered (the database's clock, the one the
        orphan estimate reads): an orphan is billed at most the time since."""
        with self.pool.connection() as conn:
            conn.execute(
                "UPDATE reservations SET answered_at = coalesce(answered_at, now())"
                " WHERE b_uuid = %s AND status = 'open'",
                (_uuid(b_uuid),),
            )

    # --- after the hangup --------------------------------------------------

    @query
    def settle(
        self,
        b_uuid: UuidLike,
        *,
        billmsec: int | None,
        hangup_cause: str,
        answered_at: datetime | None = None,
        ended_at: datetime | None = None,
        estimated: bool = False,
    ) -> Cdr:
        """Bill a call attempt once: cost, ledger debit, reservation closed, CDR. Idempotent.

        billed seconds = min(ceil(billmsec / 1000), granted duration); billmsec
        None or 0 = unanswered, a CDR with cost 0. estimated=True with billmsec
        None is the orphan rule's estimate, bounded by what cardd recorded
        (_estimated_seconds); a later settle() with the real figures
        (estimated=False) corrects that CDR, once.
        """
        b_id = _uuid(b_uuid)
        grant = self._granted.pop(b_id, None)
        if grant is not None and not estimated:
            done = self._settle_granted(grant, billmsec, hangup_cause, answered_at, ended_at)
            if done is not None:
                return done
        with self.pool.connection() as conn, conn.transaction():
            cur = conn.cursor(row_factory=dict_row)
            head = cur.execute("SELECT account_id FROM reservations WHERE b_uuid = %s", (b_id,)).fetchone()
            if head is None:
                done = self._cdr(cur, b_id)
                if done is not None:
                    return done
                raise ReservationNotFound(f"no reservation for B-leg {b_id}")
            acct = cur.execute(
                "SELECT username, currency, now() AS now FROM accounts WHERE id = %s FOR UPDATE",
                (head["account_id"],),
            ).fetchone()
            assert acct is not None
            res = cur.execute("SELECT * FROM reservations WHERE b_uuid = %s FOR UPDATE", (b_id,)).fetchone()
            assert res is not None
            rate = _rate(res)
            ended = ended_at or acct["now"]
            guess = billmsec is None and estimated
            if guess and res["status"] == "settled":
                # An estimate never replaces figures already recorded.
                done = self._cdr(cur, b_id)
                assert done is not None, "a settled reservation always has its CDR"
                return done
            if guess:
                billed, estimated, never_dialled = self._estimated_seconds(res, ended)
                if never_dialled:
                    hangup_cause = "NOT_DIALLED"
            else:
                # sched_hangup fires on whole seconds and may overshoot: never bill past the grant.
                billed = min(billed_seconds(billmsec), res["duration_s"])
            cost = call_cost(rate, billed, plan_seconds=res["plan_seconds"])
            plan_used = plan_seconds_used(billed, res["plan_seconds"])
            answered = answered_at or (res["answered_at"] if guess else None)
            if answered is None and billed > 0:
                answered = ended - timedelta(milliseconds=billmsec if billmsec else billed * 1000)

            if res["status"] == "settled":
                done = self._cdr(cur, b_id)
                assert done is not None, "a settled reservation always has its CDR"
                if done.estimated and not estimated:
                    return self._correct_estimate(
                        cur,
                        res,
                        done,
                        billed=billed,
                        cost=cost,
                        plan_used=plan_used,
                        answered=answered,
                        ended=ended,
                        hangup_cause=hangup_cause,
                    )
                if not estimated and not done.estimated and billed != done.billed_seconds:
                    # Two real settlements of one call disagree (the call's own and a CDR,
                    # in either order). The first stands (README "Security"); the second
                    # is not dropped silently.
                    self._disagree(
                        "repeat_differs",
                        b_id,
                        f"{done.billed_seconds} s {done.cost} ({done.hangup_cause})",
                        f"{billed} s {cost} ({hangup_cause})",
                    )
                log.info("settle b=%s: already settled, nothing charged", b_id)
                return done

            if plan_used and res["plan_prefix"] is not None:
                cur.execute(
                    "INSERT INTO account_plan_usage (account_id, prefix, used_seconds) VALUES (%s, %s, %s)"
                    " ON CONFLICT (account_id, prefix)"
                    " DO UPDATE SET used_seconds = account_plan_usage.used_seconds + EXCLUDED.used_seconds",
                    (res["account_id"], res["plan_prefix"], plan_used),
                )
            if cost > 0:
                cur.execute(
                    "INSERT INTO ledger (account_id, amount, kind, b_uuid, reference) VALUES (%s, %s, 'call', %s, %s)",
                    (res["account_id"], -cost, b_id, res["translated_cld"]),
                )
            cur.execute("UPDATE reservations SET status = 'settled', settled_at = now() WHERE b_uuid = %s", (b_id,))
            row = cur.execute(
                f"INSERT INTO cdrs ({_CDR_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
                " %s, %s, %s, %s, %s, %s, %s, %s, %s, (SELECT name FROM carriers WHERE id = %s), %s, %s, %s)"
                f" RETURNING {_CDR_COLUMNS}",
                (
                    b_id,
                    res["a_uuid"],
                    res["account_id"],
                    acct["username"],
                    acct["currency"],
                    res["cli"],
                    res["cld"],
                    res["translated_cli"],
                    res["translated_cld"],
                    res["rate_id"],
                    res["rate_prefix"],
                    res["created_at"],
                    answered,
                    ended,
                    res["duration_s"],
                    billed,
                    plan_used,
                    cost,
                    hangup_cause or "",
                    estimated,
                    res["carrier_id"],
                    res["carrier_id"],
                    res["gateway"],
                    *buy_and_margin(buy_rate(res), billed, cost),
                ),
            ).fetchone()
            assert row is not None
        log.info("settle b=%s billed=%ss cost=%s cause=%s", b_id, billed, cost, hangup_cause)
        return _cdr(row)

    def _settle_granted(
        self,
        grant: Grant,
        billmsec: int | None,
        hangup_cause: str,
        answered_at: datetime | None,
        ended_at: datetime | None,
    ) -> Cdr | None:
        """A call's own settlement, priced from its grant and written by cardd_settle_granted
        (schema 011) in one statement; None when the reservation is no longer open (settle's
        general path then applies the rules for repeats)."""
        # sched_hangup fires on whole seconds and may overshoot: never bill past the grant.
        billed = min(billed_seconds(billmsec), grant.duration_s)
        cost = call_cost(grant.rate, billed, plan_seconds=grant.plan_seconds)
        plan_used = plan_seconds_used(billed, grant.plan_seconds)
        buy = grant.route.buy if grant.route is not None else None
        with self.pool.connection() as conn:
            row = (
                conn.cursor(row_factory=dict_row)
                .execute(
                    f"SELECT {_CDR_COLUMNS} FROM cardd_settle_granted(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (
                        grant.b_uuid,
                        grant.card_id,
                        grant.duration_s,
                        billed,
                        cost,
                        plan_used,
                        answered_at,
                        billmsec if billmsec else billed * 1000,
                        ended_at,
                        hangup_cause or "",
                        *buy_and_margin(buy, billed, cost),
                    ),
                )
                .fetchone()
            )
        if row is None:
            return None
        log.info("settle b=%s billed=%ss cost=%s cause=%s", grant.b_uuid, billed, cost, hangup_cause)
        return _cdr(row)

    @staticmethod
    def _estimated_seconds(res: dict[str, Any], ended: datetime) -> tuple[int, bool, bool]:
        """(billed seconds, still an estimate, never dialled) of an orphan without
        FreeSWITCH's figures, bounded by what cardd recorded as it happened.

        Never dialled -> 0, certain; dialled, no answer recorded -> 0 (its CDR may
        still correct it); answered at T -> the time from T to `ended` (the pass
        that found the leg gone), within the grant. A reservation from before
        schema 006 (no node) recorded none of it: the whole grant, as before."""
        if res["node"] is None:
            return res["duration_s"], True, False
        if res["bridge_sent_at"] is None:
            return 0, False, True
        if res["answered_at"] is None:
            return 0, True, False
        since = max(0.0, (ended - res["answered_at"]).total_seconds())
        return min(res["duration_s"], math.ceil(since)), True, False

    def _disagree(self, kind: str, b_id: uuid.UUID, first: str, second: str) -> None:
        log.warning("settle b=%s: %s: recorded %s, now %s", b_id, kind.replace("_", " "), first, second)
        if self.on_disagreement is not None:
            self.on_disagreement(kind, b_id, first, second)

    def _correct_estimate(
        self,
        cur: psycopg.Cursor[Any],
        res: dict[str, Any],
        done: Cdr,
        *,
        billed: int,
        cost: Decimal,
        plan_used: int,
        answered: datetime | None,
        ended: datetime,
        hangup_cause: str,
    ) -> Cdr:
        """The real CDR of an orphan settled on an estimate arrived: refund the difference,
        or charge it when the estimate was lower (an answer cardd did not get to record).

        A further charge is capped at the card's available credit (the reservation
        was released, the credit may have been spent since): the balance never goes
        negative, the CDR says what was charged, and the shortfall is reported.
        """
        refund = done.cost - cost
        if refund > 0:
            cur.execute(
                "INSERT INTO ledger (account_id, amount, kind, b_uuid, reference) VALUES (%s, %s, 'refund', %s, %s)",
                (res["account_id"], refund, res["b_uuid"], "estimated call corrected by its CDR"),
            )
        elif refund < 0:
            owed = -refund
            account = cur.execute(
                "SELECT a.balance - coalesce((SELECT sum(amount) FROM reservations r"
                "   WHERE r.account_id = a.id AND r.status = 'open'), 0) AS avail"
                "  FROM accounts a WHERE a.id = %s",
                (res["account_id"],),
            ).fetchone()
            assert account is not None  # a reservation always has its account (foreign key)
            avail = account["avail"]
            extra = min(owed, max(money(avail), Decimal(0)))
            self._disagree(
                "estimate_below_real",
                res["b_uuid"],
                f"{done.billed_seconds} s {done.cost}",
                f"{billed} s {cost} ({hangup_cause}), {extra} charged now",
            )
            if extra < owed:
                self._disagree("estimate_shortfall", res["b_uuid"], f"owed {owed}", f"charged {extra}")
            if extra > 0:
                # One 'call' row per call (ledger_one_charge_per_call_idx): the estimate's
                # row holds it when the estimate cost anything, the rest is an adjustment.
                cur.execute(
                    "INSERT INTO ledger (account_id, amount, kind, b_uuid, reference) VALUES (%s, %s, %s, %s, %s)",
                    (
                        res["account_id"],
                        -extra,
                        "adjustment" if done.cost > 0 else "call",
                        res["b_uuid"],
                        "estimated call corrected by its CDR",
                    ),
                )
            cost = done.cost + extra
        if res["plan_prefix"] is not None and done.plan_seconds_used != plan_used:
            cur.execute(
                "UPDATE account_plan_usage SET used_seconds = greatest(0, used_seconds - %s)"
                " WHERE account_id = %s AND prefix = %s",
                (done.plan_seconds_used - plan_used, res["account_id"], res["plan_prefix"]),
            )
        row = cur.execute(
            "UPDATE cdrs SET billed_seconds = %s, plan_seconds_used = %s, cost = %s, answered_at = %s,"
            "       ended_at = %s, hangup_cause = %s, estimated = false, buy_cost = %s, margin = %s"
            f" WHERE b_uuid = %s RETURNING {_CDR_COLUMNS}",
            (
                billed,
                plan_used,
                cost,
                answered,
                ended,
                hangup_cause or done.hangup_cause,
                *buy_and_margin(buy_rate(res), billed, cost),
                res["b_uuid"],
            ),
        ).fetchone()
        assert row is not None
        log.info(
            "settle b=%s: estimate %s corrected to %s, refunded %s",
            res["b_uuid"],
            done.cost,
            cost,
            max(refund, Decimal(0)),
        )
        return _cdr(row)

    @staticmethod
    def _cdr(cur: psycopg.Cursor[Any], b_id: uuid.UUID) -> Cdr | None:
        row = cur.execute(f"SELECT {_CDR_COLUMNS} FROM cdrs WHERE b_uuid = %s", (b_id,)).fetchone()
        return _cdr(row) if row else None

    # --- reading -----------------------------------------------------------

    @query
    def cdrs_for(self, card_id: int, *, limit: int = 20) -> list[Cdr]:
        """The card's CDRs, newest first."""
        with self.pool.connection() as conn:
            rows = (
                conn.cursor(row_factory=dict_row)
                .execute(
                    f"SELECT {_CDR_COLUMNS} FROM cdrs WHERE account_id = %s ORDER BY id DESC LIMIT %s",
                    (card_id, limit),
                )
                .fetchall()
            )
        return [_cdr(r) for r in rows]

    @query
    def cdr(self, b_uuid: UuidLike) -> Cdr | None:
        with self.pool.connection() as conn:
            return self._cdr(conn.cursor(row_factory=dict_row), _uuid(b_uuid))

    @query
    def open_reservations(self, card_id: int | None = None, *, expired_only: bool = False) -> list[OpenReservation]:
        """Open reservations of a card (or of every card); expired_only for the orphan check."""
        where = ["status = 'open'"]
        params: list[Any] = []
        if card_id is not None:
            where.append("account_id = %s")
            params.append(card_id)
        if expired_only:
            where.append("expires_at <= now()")
        with self.pool.connection() as conn:
            rows = (
                conn.cursor(row_factory=dict_row)
                .execute(
                    "SELECT b_uuid, a_uuid, account_id, amount, duration_s, cld, created_at, expires_at,"
                    "       switchname, node, bridge_sent_at, answered_at"
                    f"  FROM reservations WHERE {' AND '.join(where)} ORDER BY created_at",
                    params,
                )
                .fetchall()
            )
        return [OpenReservation(**r) for r in rows]

    @query
    def ledger_entries(self, card_id: int) -> list[LedgerEntry]:
        with self.pool.connection() as conn:
            rows = (
                conn.cursor(row_factory=dict_row)
                .execute(
                    "SELECT id, account_id, amount, kind, b_uuid, reference, balance_after, created_at"
                    "  FROM ledger WHERE account_id = %s ORDER BY id",
                    (card_id,),
                )
                .fetchall()
            )
        return [LedgerEntry(**r) for r in rows]

    # --- operator money ----------------------------------------------------

    @query
    def adjust(self, card_id: int, amount: Decimal | str, *, kind: str = "adjustment", reference: str = "") -> Decimal:
        """Credit (positive) or debit (negative) a card through a ledger row; returns the new balance."""
        value = money(amount)
        if value == 0:
            raise ValueError("an adjustment of 0 changes nothing")
        try:
            with self.pool.connection() as conn, conn.transaction():
                row = conn.execute(
                    "INSERT INTO ledger (account_id, amount, kind, reference) VALUES (%s, %s, %s, %s)"
                    " RETURNING balance_after",
                    (card_id, value, kind, reference),
                ).fetchone()
        except errors.ForeignKeyViolation:
            raise CardNotFound(f"no card with id {card_id}") from None
        assert row is not None
        return money(row[0])
