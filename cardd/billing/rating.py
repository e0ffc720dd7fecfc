"""Tariff arithmetic, exactly as CALLING_CARD_OPTIONS.md "Tariff arithmetic" states it.

Pure functions, no I/O. Every intermediate value is an exact Fraction; only a
call's total is rounded, up, to 5 places (cardd.money.ceil_money).

cost(D), D whole billed seconds:
    0                                   when D == 0 or D <= grace
    ceil5(connect_fee + T(S))           otherwise, S = max(0, D - free_seconds)
    T(0) = 0
    T(S) = price_1*interval_1/60 + price_n*interval_n/60 * ceil((S - interval_1) / interval_n)^+
With service-plan seconds P the first P seconds are free and the rest R = D - P
is rated as a call of length R (its own connect fee, grace and first interval).

cost is non-decreasing in D, so "the largest D with cost(D) <= C" is found by
inverting the step function in O(1) (max_duration), not by walking seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from cardd.money import ceil_money, floor_money, money

# A rate whose calls never get dearer (price_n == 0) would allow an endless
# call; without a max_call_duration cap we still hand FreeSWITCH a finite
# sched_hangup: one day.
UNBOUNDED_CALL_LIMIT_S = 86_400


@dataclass(frozen=True)
class Rate:
    """One row of a tariff. Prices are per minute; the rest are whole seconds."""

    prefix: str
    price_1: Decimal
    interval_1: int
    price_n: Decimal
    interval_n: int
    connect_fee: Decimal = Decimal("0")
    free_seconds: int = 0
    grace: int = 0
    forbidden: bool = False
    rate_id: int | None = None

    def __post_init__(self) -> None:
        for name in ("price_1", "price_n", "connect_fee"):
            value = money(getattr(self, name))
            if value < 0:
                raise ValueError(f"{name} must not be negative, got {value}")
            object.__setattr__(self, name, value)
        for name in ("interval_1", "interval_n"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("free_seconds", "grace"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def first_interval_price(self) -> Fraction:
        """price_1 * interval_1 / 60, exact."""
        return Fraction(self.price_1) * self.interval_1 / 60

    @property
    def next_interval_price(self) -> Fraction:
        """price_n * interval_n / 60, exact."""
        return Fraction(self.price_n) * self.interval_n / 60


def billed_seconds(billmsec: int | None) -> int:
    """Whole billable seconds of an answered leg: ceil(billmsec / 1000); None or <= 0 -> 0."""
    if billmsec is None or billmsec <= 0:
        return 0
    return -(-int(billmsec) // 1000)


def _tariff_part(rate: Rate, seconds_after_free: int) -> Fraction:
    s = seconds_after_free
    if s <= 0:
        return Fraction(0)
    part = rate.first_interval_price
    if s > rate.interval_1:
        # ceil((S - interval_1) / interval_n) started intervals after the first
        started = -(-(s - rate.interval_1) // rate.interval_n)
        part += started * rate.next_interval_price
    return part


def _exact_cost(rate: Rate, seconds: int, connect_fee: Fraction) -> Fraction:
    if seconds <= 0 or seconds <= rate.grace:
        return Fraction(0)
    return connect_fee + _tariff_part(rate, seconds - rate.free_seconds)


def call_cost(rate: Rate, seconds: int, *, plan_seconds: int = 0) -> Decimal:
    """Cost of a call of `seconds` billed seconds, service-plan seconds used first."""
    if seconds < 0:
        raise ValueError(f"seconds must be >= 0, got {seconds}")
    if plan_seconds < 0:
        raise ValueError(f"plan_seconds must be >= 0, got {plan_seconds}")
    rest = seconds - plan_seconds
    if rest <= 0:
        return ceil_money(0)
    return ceil_money(_exact_cost(rate, rest, Fraction(rate.connect_fee)))


def plan_seconds_used(seconds: int, plan_seconds: int) -> int:
    """How many of the available plan seconds a call of `seconds` consumes."""
    return max(0, min(seconds, plan_seconds))


def tariff_duration(rate: Rate, credit: Decimal, *, ignore_connect_fee: bool = False) -> int | None:
    """Largest whole D with cost(D) <= credit; None when no duration is too dear.

    With credit <= 0 the answer is 0, even where grace would make a short call
    free. With ignore_connect_fee the connect fee counts as 0.
    """
    exact = Fraction(credit)
    if exact <= 0:
        return 0
    # ceil5(x) <= C  <=>  x <= floor5(C): ceil5(x) is a multiple of 0.00001.
    limit = Fraction(floor_money(exact))
    fee = Fraction(0) if ignore_connect_fee else Fraction(rate.connect_fee)
    first = rate.first_interval_price
    step = rate.next_interval_price
    if fee > limit:
        # Every charged call costs at least the connect fee: only the grace
        # period is affordable.
        formula = 0
    elif fee + first > limit:
        # Seconds inside free_seconds cost only the connect fee.
        formula = rate.free_seconds
    elif step == 0:
        return None
    else:
        # k started next intervals fit: fee + first + k*step <= limit.
        k = (limit - fee - first) // step
        formula = rate.free_seconds + rate.interval_1 + int(k) * rate.interval_n
    # Calls up to grace cost 0, and cost is non-decreasing: the affordable set is [0, max].
    return max(rate.grace, formula)


def max_duration(
    rate: Rate,
    credit: Decimal,
    *,
    ignore_connect_fee: bool = False,
    plan_seconds: int = 0,
    max_call_duration: int | None = None,
) -> int:
    """The longest call the available credit allows, in whole seconds.

    Tariff seconds (tariff_duration) plus the destination's service-plan
    seconds, capped at max_call_duration (None: UNBOUNDED_CALL_LIMIT_S caps a
    rate that never gets dearer).
    """
    if plan_seconds < 0:
        raise ValueError(f"plan_seconds must be >= 0, got {plan_seconds}")
    if max_call_duration is not None and max_call_duration < 0:
        raise ValueError(f"max_call_duration must be >= 0, got {max_call_duration}")
    paid = tariff_duration(rate, credit, ignore_connect_fee=ignore_connect_fee)
    cap = UNBOUNDED_CALL_LIMIT_S if max_call_duration is None else max_call_duration
    if paid is None:
        return cap
    return min(paid + plan_seconds, cap)
