"""The one money type of cardd: Decimal with 5 decimal places.

Balances and prices hold 5 places (NUMERIC(18,5) in SQL). A call's total cost is
computed exactly (as a fraction) and rounded up to 5 places once, at the end;
the terms of a cost are never rounded one by one. Floats are refused everywhere,
so a binary rounding error can never reach a balance.
"""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation
from fractions import Fraction

PLACES = 5
QUANTUM = Decimal(1).scaleb(-PLACES)  # Decimal("0.00001")
ZERO = Decimal("0.00000")
# NUMERIC(18,5): 13 digits before the point.
MAX_ABS = Decimal(10) ** 13 - QUANTUM

_CURRENCY = re.compile(r"[A-Z]{3}")
_AMOUNT = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)")

MoneyLike = Decimal | int | str | Fraction


def money(value: MoneyLike) -> Decimal:
    """Convert an exact value to a 5-place Decimal; more than 5 places is an error.

    Raises ValueError for floats, non-finite values, too many places or too large.
    """
    if isinstance(value, (float, bool)):
        raise ValueError(f"money must not be a {type(value).__name__}: {value!r}")
    if isinstance(value, Fraction):
        d = Decimal(value.numerator) / Decimal(value.denominator)
        if Fraction(d) != value:
            raise ValueError(f"{value} is not exact to {PLACES} places")
        value = d
    elif isinstance(value, str):
        text = value.strip()
        if not _AMOUNT.fullmatch(text):
            raise ValueError(f"not an amount: {value!r}")
        value = Decimal(text)
    elif isinstance(value, int):
        value = Decimal(value)
    elif not isinstance(value, Decimal):
        raise ValueError(f"not an amount: {value!r}")
    if not value.is_finite():
        raise ValueError(f"not a finite amount: {value!r}")
    try:
        q = value.quantize(QUANTUM)
    except InvalidOperation:
        raise ValueError(f"amount out of range: {value!r}") from None
    if q != value:
        raise ValueError(f"amount has more than {PLACES} decimal places: {value}")
    if abs(q) > MAX_ABS:
        raise ValueError(f"amount out of range: {value}")
    return q


def parse_amount(text: str) -> Decimal:
    """Parse an operator-typed amount ("12.5", "0.10000"). ValueError when bad."""
    return money(text)


def ceil_money(value: Fraction | Decimal | int) -> Decimal:
    """Round an exact value up (towards +infinity) to 5 places."""
    return _round(value, ROUND_CEILING)


def floor_money(value: Fraction | Decimal | int) -> Decimal:
    """Round an exact value down (towards -infinity) to 5 places."""
    return _round(value, ROUND_FLOOR)


def _round(value: Fraction | Decimal | int, rounding: str) -> Decimal:
    if isinstance(value, float):
        raise ValueError("money must not be a float")
    f = Fraction(value)
    scaled = f * 10**PLACES
    if rounding == ROUND_CEILING:
        units = -((-scaled.numerator) // scaled.denominator)
    else:
        units = scaled.numerator // scaled.denominator
    return Decimal(units).scaleb(-PLACES).quantize(QUANTUM)


def check_currency(code: str) -> str:
    """Return an ISO 4217-shaped code (three capital letters) or raise ValueError."""
    if not isinstance(code, str) or not _CURRENCY.fullmatch(code):
        raise ValueError(f"currency must be three capital letters, got {code!r}")
    return code


def format_money(amount: Decimal, currency: str | None = None) -> str:
    """Human form for operators: 5 places kept, so nothing is hidden by rounding."""
    text = f"{amount.quantize(QUANTUM)}"
    return f"{text} {currency}" if currency else text
