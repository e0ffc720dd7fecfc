"""Tariff arithmetic: hand-computed cases, a brute-force reference and properties."""

from decimal import Decimal as D
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cardd.billing.rating import (
    UNBOUNDED_CALL_LIMIT_S,
    Rate,
    billed_seconds,
    call_cost,
    max_duration,
    tariff_duration,
)
from cardd.money import ceil_money, floor_money, money

# The spec's worked example: 0.06/min, 30 s first interval, 6 s next, 0.10 connect fee.
EXAMPLE = Rate("44", D("0.06"), 30, D("0.06"), 6, D("0.10"))
# A per-second-ish rate with no fee: 0.60/min in 1 s steps = 0.01 per second.
PER_SECOND = Rate("1", D("0.60"), 1, D("0.60"), 1)
# 1.20/min for 60 s, then 0.30/min per 10 s; free 5 s, grace 3 s, fee 0.05.
MIXED = Rate("33", D("1.20"), 60, D("0.30"), 10, D("0.05"), free_seconds=5, grace=3)


COST_CASES = [
    # rate, seconds, plan_seconds, expected, arithmetic
    (EXAMPLE, 0, 0, "0", "zero billsec: unanswered or instant, no connect fee"),
    (EXAMPLE, 1, 0, "0.13", "0.10 + first interval 0.06*30/60 = 0.03, charged whole"),
    (EXAMPLE, 30, 0, "0.13", "S = 30 = interval_1: only the first interval"),
    (EXAMPLE, 31, 0, "0.136", "spec: 0.10 + 0.03 + ceil(1/6)=1 * 0.006"),
    (EXAMPLE, 36, 0, "0.136", "ceil(6/6) = 1 next interval"),
    (EXAMPLE, 37, 0, "0.142", "ceil(7/6) = 2: 0.10 + 0.03 + 0.012"),
    (EXAMPLE, 900, 0, "1.00", "spec: 0.10 + 0.03 + 145 * 0.006 = 1.00000"),
    (EXAMPLE, 901, 0, "1.006", "spec: ceil(871/6) = 146: 0.10 + 0.03 + 0.876"),
    (MIXED, 3, 0, "0", "D = 3 <= grace 3: free"),
    (MIXED, 4, 0, "0.05", "D > grace, S = max(0, 4 - 5) = 0: connect fee only"),
    (MIXED, 5, 0, "0.05", "S = 0 still"),
    (MIXED, 6, 0, "1.25", "S = 1: 0.05 + 1.20*60/60 = 1.25"),
    (MIXED, 65, 0, "1.25", "S = 60 = interval_1"),
    (MIXED, 66, 0, "1.30", "S = 61: + ceil(1/10) * 0.30*10/60 = 0.05"),
    (MIXED, 75, 0, "1.30", "S = 70: ceil(10/10) = 1"),
    (MIXED, 76, 0, "1.35", "S = 71: ceil(11/10) = 2"),
    (EXAMPLE, 60, 60, "0", "plan covers the whole call"),
    (EXAMPLE, 61, 60, "0.13", "1 s left after the plan: rated as a 1 s call (fee + first interval)"),
    (EXAMPLE, 91, 60, "0.136", "91 - 60 = 31 s rated as the spec's 31 s call: 0.13600"),
    (PER_SECOND, 7, 0, "0.07", "7 * 0.60/60 = 0.07"),
    (Rate("9", D("0.07"), 7, D("0.07"), 7), 1, 0, "0.00817", "0.07*7/60 = 0.0081666.. ceil -> 0.00817"),
    (
        Rate("9", D("0.07"), 7, D("0.07"), 7),
        8,
        0,
        "0.01634",
        "2*0.0081666.. = 0.0163333.. ceil (total only) -> 0.01634",
    ),
    (Rate("9", D("0.00001"), 1, D("0.00001"), 1), 59, 0, "0.00001", "59/60 * 0.00001 = 0.0000098.. ceil -> 0.00001"),
]


@pytest.mark.parametrize("rate,seconds,plan,expected,why", COST_CASES)
def test_call_cost_matches_hand_computed_table(rate, seconds, plan, expected, why):
    assert call_cost(rate, seconds, plan_seconds=plan) == D(expected), why


DURATION_CASES = [
    # rate, credit, kwargs, expected, arithmetic
    (EXAMPLE, "1.00", {}, 900, "spec: cost(900) = 1.00000 <= 1.00 < cost(901)"),
    (EXAMPLE, "0.99999", {}, 894, "0.99999 - 0.13 = 0.86999; floor(/0.006) = 144 -> 30 + 144*6 = 894"),
    (EXAMPLE, "0.13", {}, 30, "fee + first interval exactly: 30 s"),
    (EXAMPLE, "0.12999", {}, 0, "fee fits, first interval does not, free_seconds 0: 0"),
    (EXAMPLE, "0.05", {}, 0, "connect fee 0.10 larger than the balance: nothing"),
    (EXAMPLE, "0", {}, 0, "C <= 0"),
    (EXAMPLE, "-5", {}, 0, "negative balance"),
    (
        EXAMPLE,
        "1.00",
        {"ignore_connect_fee": True},
        996,
        "fee ignored: (1.00 - 0.03) / 0.006 = 161.67 -> 161 intervals -> 30 + 161*6 = 996",
    ),
    (EXAMPLE, "1.00", {"plan_seconds": 120}, 1020, "900 tariff seconds + 120 plan seconds"),
    (EXAMPLE, "1.00", {"max_call_duration": 600}, 600, "capped at max_call_duration"),
    (EXAMPLE, "0", {"plan_seconds": 120}, 120, "no credit, plan seconds still usable"),
    (
        EXAMPLE,
        "100",
        {"max_call_duration": 3600},
        3600,
        "100 buys 30 + floor(99.87/0.006)=16645 * 6 = 99,900 s; capped at the 3600 s default",
    ),
    (MIXED, "0.04", {}, 3, "fee 0.05 > C: only calls within grace (3 s) are affordable"),
    (MIXED, "0.05", {}, 5, "fee fits, first interval (1.20) does not: the 5 free seconds"),
    (MIXED, "1.25", {}, 65, "5 free + 60 first interval"),
    (MIXED, "1.34999", {}, 75, "1.34999 - 1.25 = 0.09999; floor(/0.05) = 1 -> 5 + 60 + 10"),
    (MIXED, "0", {}, 0, "C <= 0: 0 even though grace would make a 3 s call free"),
    (
        Rate("8", D("0.50"), 60, D("0"), 60),
        "0.50",
        {"max_call_duration": 7200},
        7200,
        "price_n 0: after the first minute calls never get dearer -> the cap",
    ),
    (Rate("8", D("0.50"), 60, D("0"), 60), "0.50", {}, UNBOUNDED_CALL_LIMIT_S, "no cap given: the one-day limit"),
]


@pytest.mark.parametrize("rate,credit,kwargs,expected,why", DURATION_CASES)
def test_max_duration_matches_hand_computed_table(rate, credit, kwargs, expected, why):
    assert max_duration(rate, D(credit), **kwargs) == expected, why


def test_billed_seconds_round_billmsec_up():
    assert billed_seconds(None) == 0
    assert billed_seconds(0) == 0
    assert billed_seconds(1) == 1
    assert billed_seconds(1000) == 1
    assert billed_seconds(1001) == 2
    assert billed_seconds(30999) == 31


def test_rate_rejects_bad_rows():
    with pytest.raises(ValueError):
        Rate("1", D("0.1"), 0, D("0.1"), 1)
    with pytest.raises(ValueError):
        Rate("1", D("0.1"), 1, D("0.1"), 0)
    with pytest.raises(ValueError):
        Rate("1", D("-0.1"), 1, D("0.1"), 1)
    with pytest.raises(ValueError):
        Rate("1", D("0.1"), 1, D("0.1"), 1, free_seconds=-1)
    with pytest.raises(ValueError):
        Rate("1", 0.1, 1, D("0.1"), 1)  # floats are never money


def test_money_refuses_floats_and_extra_places():
    with pytest.raises(ValueError):
        money(0.1)
    with pytest.raises(ValueError):
        money("0.000001")
    with pytest.raises(ValueError):
        money("abc")
    assert money("1.5") == D("1.50000")
    assert ceil_money(Fraction(1, 3)) == D("0.33334")
    assert floor_money(Fraction(-1, 3)) == D("-0.33334")
    assert ceil_money(Fraction(-1, 3)) == D("-0.33333")


# --- brute force reference and properties ----------------------------------


def reference_cost(rate: Rate, seconds: int, connect_fee: D | None = None) -> D:
    """The spec's sentences transcribed literally, seconds walked one by one."""
    fee = rate.connect_fee if connect_fee is None else connect_fee
    if seconds == 0 or seconds <= rate.grace:
        return ceil_money(0)
    s = max(0, seconds - rate.free_seconds)
    total = Fraction(fee)
    if s > 0:
        total += Fraction(rate.price_1) * rate.interval_1 / 60
        charged = rate.interval_1
        while charged < s:  # each started next interval
            total += Fraction(rate.price_n) * rate.interval_n / 60
            charged += rate.interval_n
    return ceil_money(total)


def reference_costs(rate: Rate, limit: int, connect_fee: D) -> list[D]:
    """cost(D) for every D in 0..limit in one pass, by the same literal reading."""
    costs = []
    total = None  # exact cost of the tariff part for the current S
    charged = 0
    for d in range(0, limit + 1):
        if d == 0 or d <= rate.grace:
            costs.append(ceil_money(0))
            continue
        s = max(0, d - rate.free_seconds)
        if s > 0 and total is None:
            total = Fraction(rate.price_1) * rate.interval_1 / 60
            charged = rate.interval_1
        while total is not None and charged < s:
            total += Fraction(rate.price_n) * rate.interval_n / 60
            charged += rate.interval_n
        costs.append(ceil_money(Fraction(connect_fee) + (total or 0)))
    return costs


def reference_max_duration(rate, credit, *, ignore_connect_fee, limit):
    """Look at every D up to limit; the largest with cost(D) <= credit."""
    if credit <= 0:
        return 0
    fee = D(0) if ignore_connect_fee else rate.connect_fee
    costs = reference_costs(rate, limit, fee)
    return max(d for d, c in enumerate(costs) if c <= credit)


prices = st.decimals(min_value=D("0"), max_value=D("3"), places=5, allow_nan=False, allow_infinity=False)
rates = st.builds(
    Rate,
    prefix=st.just("1"),
    price_1=prices,
    interval_1=st.integers(1, 90),
    price_n=prices,
    interval_n=st.integers(1, 90),
    connect_fee=st.decimals(min_value=D("0"), max_value=D("1"), places=5),
    free_seconds=st.integers(0, 40),
    grace=st.integers(0, 20),
)
credits = st.decimals(min_value=D("-1"), max_value=D("5"), places=5)


@settings(max_examples=300, deadline=None)
@given(rate=rates, seconds=st.integers(0, 600))
def test_call_cost_equals_literal_reference(rate, seconds):
    assert call_cost(rate, seconds) == reference_cost(rate, seconds)
    assert reference_costs(rate, seconds, rate.connect_fee)[seconds] == reference_cost(rate, seconds)


@settings(max_examples=200, deadline=None)
@given(rate=rates, credit=credits, ignore=st.booleans())
def test_max_duration_equals_brute_force(rate, credit, ignore):
    limit = 1500
    got = max_duration(rate, credit, ignore_connect_fee=ignore, max_call_duration=limit)
    assert got == reference_max_duration(rate, credit, ignore_connect_fee=ignore, limit=limit)


@settings(max_examples=500, deadline=None)
@given(rate=rates, credit=credits, plan=st.integers(0, 300), cap=st.integers(0, 10_000), ignore=st.booleans())
def test_cost_at_max_duration_never_exceeds_credit_and_one_more_interval_would(rate, credit, plan, cap, ignore):
    d = max_duration(rate, credit, ignore_connect_fee=ignore, plan_seconds=plan, max_call_duration=cap)
    assert 0 <= d <= cap
    cost = call_cost(rate, d, plan_seconds=plan)
    # ignore_connect_fee may overspend by at most one connect fee (DESIGN "Decisions").
    allowance = rate.connect_fee if ignore else D(0)
    assert cost <= max(credit, D(0)) + allowance
    if d < cap and credit > 0:
        # Not capped: the next second starts a new billing interval that does not fit.
        fee = D(0) if ignore else rate.connect_fee
        paid = d - plan
        assert reference_cost(rate, paid + 1, fee) > credit


def test_max_duration_is_not_a_loop_over_seconds():
    # A huge credit on a per-second rate answers at once (O(1)): 10^9 seconds.
    rate = Rate("1", D("0.00060"), 1, D("0.00060"), 1)  # 0.00001 per second
    assert tariff_duration(rate, D("10000")) == 1_000_000_000
