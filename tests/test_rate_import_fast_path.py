"""`cardd rate import` checks a row with one regex when its cells are already
in the form COPY takes (cardd.billing.rate_import._fast_path), cell by cell otherwise.
Both must accept, refuse and convert every row alike."""

from __future__ import annotations

import random

import pytest

from cardd.billing import rate_import
from cardd.billing.rate_import import RATE_COLUMNS, _row_converter

# Spellings around every edge the cell checks draw: empty, spaces, leading
# zeros, 0 where the minimum is 1, 9/10 digits and INT_MAX, 5/6 decimals,
# signs, exponents, non-ASCII digits, tabs and line breaks inside a cell.
EDGES = [
    "",
    " ",
    "0",
    "00",
    "01",
    "1",
    "7",
    "60",
    "060",
    "999999999",
    "1000000000",
    "2147483647",
    "2147483648",
    "0.5",
    "0.00001",
    "0.000001",
    "1.",
    ".5",
    "-1",
    "+1",
    "1e3",
    " 5",
    "5 ",
    "1\t2",
    "\u0661",
    "12345678901234",
    "1234567890123.12345",
    "abc",
    "0x10",
    "4420",
    "t",
    "yes",
    "no",
    "maybe",
    "True",
    "Zone\\1",
    "a\nb",
    "Zone {0}",
]
# A good cell of each column, as price lists spell them.
TYPICAL = {
    "prefix": ["44", "4420", ""],
    "description": ["Zone 1", "UK {mobile}", ""],
    "price_1": ["0.05000", "1", "0"],
    "price_n": ["0.05", "12.5"],
    "connect_fee": ["0.01000", "0"],
    "interval_1": ["60", "1"],
    "interval_n": ["6", "60"],
    "free_seconds": ["0", "30"],
    "grace": ["3", "0"],
    "forbidden": ["f", "true", ""],
}
LAYOUTS = [
    list(RATE_COLUMNS),
    list(RATE_COLUMNS[:-1]),
    ["prefix", "price_1", "interval_1", "price_n", "interval_n"],
    ["interval_n", "prefix", "price_n", "grace", "price_1", "interval_1", "description"],
]


def _outcome(convert, cells):
    try:
        return "ok", convert(cells)
    except ValueError as exc:
        return "refused", str(exc)


@pytest.mark.parametrize("names", LAYOUTS, ids=lambda n: ",".join(n))
def test_the_one_regex_path_accepts_refuses_and_converts_every_row_as_the_cell_checks_do(names, monkeypatch):
    fast = _row_converter(names)
    path = rate_import._fast_path({n: i for i, n in enumerate(names)})
    monkeypatch.setattr(rate_import, "_fast_path", lambda index: None)
    slow = _row_converter(names)
    rng = random.Random(14)
    took_fast = 0
    for _ in range(20_000):
        cells = [rng.choice(EDGES) if rng.random() < 0.1 else rng.choice(TYPICAL[n]) for n in names]
        if rng.random() < 0.05:
            cells = cells[:-1]
        assert _outcome(fast, cells) == _outcome(slow, cells), cells
        took_fast += len(cells) == len(names) and bool(path.exact.fullmatch("\t".join(path.pick(cells))))
    assert took_fast > 1000  # both paths were exercised
