"""Rate import: a rates CSV into a tariff's sell rates or a carrier's buy deck (the same columns), for
`cardd rate import`, `cardd carrier rates import`, the HTTP API and the web console.

Rate import is all or nothing: every row is checked in Python while the good
ones stream into a temporary table with COPY; duplicate prefixes are found
there, with their line numbers; only when no row is bad are they applied to
`rates`, in the same transaction: rows that changed are deleted and inserted
again, new prefixes inserted (INSERT ... ON CONFLICT), unchanged rows left
alone, and in replace mode the tariff's prefixes missing from the file
deleted. Calls being rated meanwhile keep seeing the old rates (MVCC) until
the commit.
"""

from __future__ import annotations

import csv
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any, Protocol

from cardd.billing import carriers, catalog
from cardd.digits import is_digits
from cardd.errors import ImportRefused
from cardd.money import money

__all__ = [
    "CARRIER_DECK",
    "Deck",
    "ImportProgress",
    "ImportRefused",
    "ImportResult",
    "RATE_COLUMNS",
    "TARIFF_DECK",
    "import_rates",
]

log = logging.getLogger(__name__)


class ImportProgress(Protocol):
    """What an import reports to as it goes (the CLI's progress bar)."""

    def update(self, done: int, rows: int, *, force: bool = False) -> None: ...

    def phase(self, text: str) -> None: ...

    def finish(self) -> None: ...


# --- the CSV format -------------------------------------------------------------

RATE_COLUMNS = (
    "prefix",
    "description",
    "price_1",
    "interval_1",
    "price_n",
    "interval_n",
    "connect_fee",
    "free_seconds",
    "grace",
    "forbidden",
)
REQUIRED_COLUMNS = ("prefix", "price_1", "interval_1", "price_n", "interval_n")
MONEY_COLUMNS = ("price_1", "price_n", "connect_fee")
# column -> smallest allowed value (integer columns of the rates table)
INT_COLUMNS = {"interval_1": 1, "interval_n": 1, "free_seconds": 0, "grace": 0}
INT_MAX = 2_147_483_647  # PostgreSQL integer

# The common, already-exact spellings take a regex match instead of a Decimal
# parse: that is most of the difference between 5 s and 15 s per million rows.
# Anything else goes through cardd.money.money(), which refuses floats'
# spellings it cannot represent exactly and more than 5 places.
_PLAIN_MONEY = re.compile(r"[0-9]{1,13}(\.[0-9]{1,5})?")
_PLAIN_INT = re.compile(r"[0-9]{1,10}")
_PREFIX = re.compile(r"[0-9]{0,32}")
_TRUE = frozenset({"1", "t", "true", "y", "yes"})
_FALSE = frozenset({"", "0", "f", "false", "n", "no"})

COPY_CHUNK = 1 << 20  # characters per COPY write


@dataclass(frozen=True)
class ImportResult:
    rows: int
    inserted: int  # prefixes new to the tariff
    updated: int  # prefixes whose values changed
    deleted: int  # prefixes not in the file (replace mode)
    seconds: float

    @property
    def unchanged(self) -> int:
        return self.rows - self.inserted - self.updated


def _copy_text(value: str) -> str:
    """A value for COPY's text format (only the description can hold these)."""
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        value = value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return value


def _money_cell(name: str, text: str) -> str:
    text = text.strip()
    if _PLAIN_MONEY.fullmatch(text):
        return text
    if text == "" and name == "connect_fee":
        return "0"
    try:
        value = money(text)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    if value < 0:
        raise ValueError(f"{name}: must not be negative, got {text}")
    return str(value)


def _int_cell(name: str, text: str) -> str:
    text = text.strip()
    minimum = INT_COLUMNS[name]
    if text == "" and minimum == 0:
        return "0"
    if not _PLAIN_INT.fullmatch(text):
        if is_digits(text.lstrip("-")):
            raise ValueError(f"{name}: must be >= {minimum}, got {text}")
        raise ValueError(f"{name}: not a whole number of seconds: {text!r}")
    value = int(text)
    if value < minimum:
        raise ValueError(f"{name}: must be >= {minimum}, got {value}")
    if value > INT_MAX:
        raise ValueError(f"{name}: too large: {value}")
    return str(value)


def _bool_cell(text: str) -> str:
    word = text.strip().lower()
    if word in _FALSE:
        return "f"
    if word in _TRUE:
        return "t"
    raise ValueError(f"forbidden: expected true/false, yes/no or 1/0, got {text!r}")


def _header(first: list[str]) -> tuple[list[str], bool]:
    """The column names of the file and whether its first row was a header.

    A header names columns in any order; a file without one lists them in
    RATE_COLUMNS order (the trailing `forbidden` may be left out)."""
    names = [c.strip().lower() for c in first]
    if "prefix" in names:
        unknown = [n for n in names if n not in RATE_COLUMNS]
        if unknown:
            raise ImportRefused([(1, f"unknown column(s) {', '.join(unknown)}; known: {', '.join(RATE_COLUMNS)}")], 0)
        missing = [n for n in REQUIRED_COLUMNS if n not in names]
        if missing:
            raise ImportRefused([(1, f"missing column(s) {', '.join(missing)}")], 0)
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ImportRefused([(1, f"column(s) named twice: {', '.join(twice)}")], 0)
        return names, True
    if len(first) in (len(RATE_COLUMNS), len(RATE_COLUMNS) - 1):
        return list(RATE_COLUMNS[: len(first)]), False
    raise ImportRefused(
        [
            (
                1,
                f"no header row (prefix,description,price_1,...) and {len(first)} columns"
                f" instead of {len(RATE_COLUMNS) - 1} or {len(RATE_COLUMNS)}",
            )
        ],
        0,
    )


def _row_converter(names: list[str]) -> Callable[[list[str]], str]:
    """A function turning one CSV row into a COPY text line (columns of the temp table after `line`)."""
    index = {n: names.index(n) for n in names}
    width = len(names)
    i_prefix = index["prefix"]
    i_desc = index.get("description")
    money_idx = [(n, index.get(n)) for n in MONEY_COLUMNS]
    int_idx = [(n, index.get(n)) for n in INT_COLUMNS]
    i_forbidden = index.get("forbidden")
    fast = _fast_path(index)

    def convert(cells: list[str]) -> str:
        if fast is not None and len(cells) == width:
            numbers = fast.pick(cells)
            if fast.exact.fullmatch("\t".join(numbers)):
                return fast.line.format(
                    *numbers,
                    desc=_copy_text(cells[i_desc]) if i_desc is not None else "",
                    forbidden=_bool_cell(cells[i_forbidden]) if i_forbidden is not None else "f",
                )
        if len(cells) != width:
            raise ValueError(f"{len(cells)} columns, expected {width}")
        prefix = cells[i_prefix].strip()
        if not _PREFIX.fullmatch(prefix):
            raise ValueError(f"prefix: digits only, at most 32, got {prefix!r}")
        out = [prefix, _copy_text(cells[i_desc]) if i_desc is not None else ""]
        for name, i in money_idx:
            out.append(_money_cell(name, cells[i]) if i is not None else "0")
        for name, i in int_idx:
            out.append(_int_cell(name, cells[i]) if i is not None else "0")
        out.append(_bool_cell(cells[i_forbidden]) if i_forbidden is not None else "f")
        return "\t".join(out)

    return convert


@dataclass(frozen=True)
class _FastPath:
    pick: Callable[[list[str]], tuple[str, ...]]  # the prefix and the number cells of a row
    exact: re.Pattern[str]  # those cells, tab-joined, already in COPY form
    line: str  # the COPY line, format()ted from them


# Per number cell, a spelling that convert() would pass through unchanged:
# no spaces, no empty cell, no leading zero, at most 9 digits for integers
# (always <= INT_MAX), no 0 where the minimum is 1. Any other spelling (or a bad one)
# takes the cell-by-cell path, which says what is wrong.
_FAST_CELL = {
    "prefix": "[0-9]{0,32}",
    "money": r"[0-9]{1,13}(?:\.[0-9]{1,5})?",
    0: "0|[1-9][0-9]{0,8}",
    1: "[1-9][0-9]{0,8}",
}


def _fast_path(index: dict[str, int]) -> _FastPath | None:
    """One regex match per row instead of one call per cell: at a million rows
    the cell-by-cell checks were ~4.5 s of the import. Rows it does not match
    go through the cell-by-cell path, so what is accepted and refused, and the
    COPY text of every row, are the same either way."""
    from operator import itemgetter

    names = ["prefix"] + [n for n in MONEY_COLUMNS if n in index] + [n for n in INT_COLUMNS if n in index]
    if len(names) < 2:
        return None
    cells = [_FAST_CELL["prefix"]] + [
        _FAST_CELL["money"] if n in MONEY_COLUMNS else _FAST_CELL[INT_COLUMNS[n]] for n in names[1:]
    ]
    cells = [f"(?:{c})" for c in cells]
    slot = {n: f"{{{i}}}" for i, n in enumerate(names)}
    line = "\t".join(
        [slot["prefix"], "{desc}"]
        + [slot.get(n, "0") for n in MONEY_COLUMNS]
        + [slot.get(n, "0") for n in INT_COLUMNS]
        + ["{forbidden}"]
    )
    return _FastPath(itemgetter(*[index[n] for n in names]), re.compile("\t".join(cells)), line)


# --- the import ---------------------------------------------------------------------


@dataclass(frozen=True)
class Deck:
    """Where rates are imported: a tariff's sell rates, or a carrier's buy deck
    (CARRIER_DECK): the same columns, keyed by `owner`."""

    kind: str  # "tariff", "carrier": for messages
    table: str
    owner: str  # the owner's column in `table`
    owner_id: Callable[[Any, str], tuple[int, str]]  # (connection, name) -> (id, currency)


TARIFF_DECK = Deck("tariff", "rates", "tariff_id", catalog.tariff_id)
CARRIER_DECK = Deck("carrier", "carrier_rates", "carrier_id", carriers.carrier_id)

_TEMP_TABLE = (
    "CREATE TEMP TABLE rate_import ("
    " line integer NOT NULL, prefix text NOT NULL, description text NOT NULL,"
    " price_1 numeric(18,5) NOT NULL, price_n numeric(18,5) NOT NULL, connect_fee numeric(18,5) NOT NULL,"
    " interval_1 integer NOT NULL, interval_n integer NOT NULL, free_seconds integer NOT NULL,"
    " grace integer NOT NULL, forbidden boolean NOT NULL) ON COMMIT DROP"
)
_COPY = (
    "COPY rate_import (line, prefix, description, price_1, price_n, connect_fee, interval_1, interval_n,"
    " free_seconds, grace, forbidden) FROM STDIN"
)
_RATE_FIELDS = "price_1, interval_1, price_n, interval_n, connect_fee, free_seconds, grace, forbidden"
_ROW = (
    "({0}.price_1, {0}.interval_1, {0}.price_n, {0}.interval_n, {0}.connect_fee, {0}.free_seconds, {0}.grace,"
    " {0}.forbidden)"
)
# Rows whose prefix is in the file with other values. They are deleted and
# inserted again rather than UPDATEd: in PostgreSQL an UPDATE writes a new row
# version and index entries too, and measured slower (26 s against 19 s for a
# million changed rows). The changed rate gets a new id; nothing references
# rate ids (reservations and CDRs copy the rate).
_DELETE_CHANGED = (
    "DELETE FROM {table} r USING rate_import i WHERE r.{owner} = %s AND r.prefix = i.prefix"
    f" AND {_ROW.format('r')} IS DISTINCT FROM {_ROW.format('i')}"
)
_DELETE_MISSING = (
    "DELETE FROM {table} r WHERE r.{owner} = %s AND NOT EXISTS (SELECT 1 FROM rate_import i WHERE i.prefix = r.prefix)"
)
# Unchanged rows are left alone, so re-importing a mostly unchanged price list
# writes little. No ON CONFLICT: the apply runs under _LOCK_DECK, so no `cardd
# rate add` can insert a prefix between the NOT EXISTS and the insert (and an
# ON CONFLICT arbiter cost a fourth WAL record per row: ~1 s per million).
_INSERT_NEW = (
    f"INSERT INTO {{table}} ({{owner}}, prefix, {_RATE_FIELDS})"
    f" SELECT %s, i.prefix, {_RATE_FIELDS} FROM rate_import i"
    " WHERE NOT EXISTS (SELECT 1 FROM {table} r WHERE r.{owner} = %s AND r.prefix = i.prefix)"
    " ORDER BY i.prefix"
)
# Writers of the deck's table wait while the checked file is applied (seconds,
# rare); readers (calls being rated) never do: SHARE ROW EXCLUSIVE conflicts with
# INSERT/UPDATE/DELETE, not with SELECT. Taken after the file is read and
# checked, so a slow upload holds nobody back.
_LOCK_DECK = "LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE"


def _lines_counted(f: IO[str], counter: list[int]) -> Iterator[str]:
    for line in f:
        counter[0] += len(line)
        yield line


def import_rates(
    pool: Any,
    tariff: str,
    f: IO[str],
    *,
    mode: str = "merge",
    progress: ImportProgress | None = None,
    deck: Deck = TARIFF_DECK,
) -> ImportResult:
    """Import a rates CSV into a tariff (or the `deck` named `tariff`: a carrier's),
    all or nothing. Raises ImportRefused (every bad row, with its line number) or
    catalog.CatalogError (unknown tariff or carrier)."""
    if mode not in ("merge", "replace"):
        raise ValueError(f"mode is merge or replace, got {mode!r}")
    started = time.monotonic()
    consumed = [0]
    reader = csv.reader(_lines_counted(f, consumed))
    errors: list[tuple[int, str]] = []
    rows = 0
    with pool.connection() as conn, conn.transaction():
        tid, _currency = deck.owner_id(conn, tariff)
        # Room to sort and hash a million rows in memory (the duplicate check, the
        # anti-join against the tariff's rates): the default 4 MB spilled both to
        # disk. For this transaction only.
        conn.execute("SET LOCAL work_mem = '256MB'")
        conn.execute(_TEMP_TABLE)
        with conn.cursor().copy(_COPY) as copy:
            first = next(reader, None)
            if first is None:
                raise ImportRefused([(1, "the file is empty")], 0)
            names, had_header = _header(first)
            convert = _row_converter(names)
            pending: list[str] = []
            size = 0

            def rows_of() -> Iterable[list[str]]:
                if not had_header:
                    yield first
                yield from reader

            line = 1
            for cells in rows_of():
                # The physical line a record ends on (a quoted description may span
                # lines); a headerless file's first row is yielded while still 1.
                line = reader.line_num
                if not cells or (len(cells) == 1 and not cells[0].strip()):
                    continue  # blank line
                rows += 1
                try:
                    text = convert(cells)
                except ValueError as exc:
                    errors.append((line, str(exc)))
                    continue
                # Good rows keep streaming after a bad one, so duplicate prefixes
                # are reported for the whole file, not just up to the first error.
                entry = f"{line}\t{text}\n"
                pending.append(entry)
                size += len(entry)
                if size >= COPY_CHUNK:
                    copy.write("".join(pending))
                    pending, size = [], 0
                    if progress is not None:
                        progress.update(consumed[0], rows)
            if pending:
                copy.write("".join(pending))
        log.debug("rate import: %s rows checked and copied in %.1f s", rows, time.monotonic() - started)
        if progress is not None:
            progress.update(consumed[0], rows, force=True)
            progress.phase("checking duplicates ...")
        # Temporary tables are never auto-analyzed; without statistics the
        # planner may pick a nested loop over a million rows for the joins below.
        conn.execute("ANALYZE rate_import")
        for prefix, lines in conn.execute(
            "SELECT prefix, array_agg(line ORDER BY line) FROM rate_import GROUP BY prefix HAVING count(*) > 1"
        ):
            for later in lines[1:]:
                errors.append((later, f"prefix {prefix!r} already on line {lines[0]}"))
        if errors:
            errors.sort()
            # Leaving the transaction by an exception rolls the COPY back: nothing is imported.
            raise ImportRefused(errors, rows)
        if rows == 0:
            raise ImportRefused([(max(line, 1), "no rates in the file")], 0)
        log.debug("rate import: duplicates checked at %.1f s", time.monotonic() - started)
        if progress is not None:
            progress.phase(f"{mode} into {deck.kind} {tariff} ...")
        deleted = 0
        deck_names = {"table": deck.table, "owner": deck.owner}
        conn.execute(_LOCK_DECK.format(**deck_names))
        if mode == "replace":
            deleted = conn.execute(_DELETE_MISSING.format(**deck_names), (tid,)).rowcount
        updated = conn.execute(_DELETE_CHANGED.format(**deck_names), (tid,)).rowcount
        inserted = conn.execute(_INSERT_NEW.format(**deck_names), (tid, tid)).rowcount - updated
        log.debug("rate import: %s done at %.1f s, committing", mode, time.monotonic() - started)
    if rows >= 10_000:
        # Fresh planner statistics for the longest-prefix lookups; outside the
        # import's transaction, it never holds the new rates back.
        with pool.connection() as conn:
            conn.execute(f"ANALYZE {deck.table}")
    if progress is not None:
        progress.finish()
    return ImportResult(
        rows=rows, inserted=inserted, updated=updated, deleted=deleted, seconds=time.monotonic() - started
    )
