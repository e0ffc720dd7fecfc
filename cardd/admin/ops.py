"""Operator data commands: `rate import`, `rate lookup`, `cdr export`, `reservations`
(list, and `settle` / `release` of one an orphan check could not settle).

Mounted by cardd.admin.add_parsers(), after cardd.admin.core (whose `rate`
command gains the `import` and `lookup` sub-commands here). Handlers are
`run_*(args, settings) -> int`; a refusal prints one `cardd: ...` line on
stderr and returns 2.

The import itself (all or nothing, COPY into a temporary table, the apply under a lock) is
cardd.billing.rate_import, which the HTTP API and the web console use too.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import sys
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import IO, Any

from psycopg import sql

from cardd.admin.common import _amount, add_by, operator_database, operator_name, refuse, sub_commands
from cardd.billing import catalog, operator
from cardd.billing.ledger import Card, Ledger, find_rate
from cardd.billing.rate_import import TARIFF_DECK, Deck, import_rates
from cardd.billing.rating import Rate, max_duration
from cardd.digits import is_digits
from cardd.errors import CatalogError, ImportRefused, OperatorError
from cardd.money import QUANTUM, format_money

log = logging.getLogger(__name__)

# --- progress ----------------------------------------------------------------------


class Progress:
    """A one-line progress bar on a terminal; silent elsewhere (logs, pipes, tests)."""

    WIDTH = 30

    def __init__(self, stream: IO[str], total: int | None, *, enabled: bool | None = None, interval: float = 0.1):
        self.stream = stream
        self.total = total or None
        self.enabled = stream.isatty() if enabled is None else enabled
        self.interval = interval
        self._last = 0.0
        self._shown = False

    def update(self, done: int, rows: int, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        if self.total:
            frac = min(1.0, done / self.total)
            filled = int(frac * self.WIDTH)
            bar = "#" * filled + "." * (self.WIDTH - filled)
            text = f"\r[{bar}] {frac * 100:5.1f}%  {rows:,} rows"
        else:
            text = f"\r{rows:,} rows"
        self.stream.write(text)
        self.stream.flush()
        self._shown = True

    def phase(self, text: str) -> None:
        if self.enabled:
            self.stream.write(f"\r{text:<{self.WIDTH + 24}}")
            self.stream.flush()
            self._shown = True

    def finish(self) -> None:
        if self.enabled and self._shown:
            self.stream.write("\r" + " " * (self.WIDTH + 24) + "\r")
            self.stream.flush()


# --- argparse helpers ------------------------------------------------------------------


def _number(text: str) -> str:
    if not is_digits(text):
        raise argparse.ArgumentTypeError(f"a number is digits only, got {text!r}")
    return text


def _when(text: str) -> datetime:
    """An ISO date or date-time; naive values are UTC."""
    try:
        if len(text) == 10:
            value = datetime.combine(date.fromisoformat(text), datetime.min.time())
        else:
            value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a date (2026-11-23) or date-time (2026-11-23T14:00), got {text!r}"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _b_uuid(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a UUID: {text!r}") from None


def _billed_seconds(text: str) -> int:
    if not is_digits(text):
        raise argparse.ArgumentTypeError(f"a whole number of seconds >= 0, got {text!r}")
    return int(text)


def add_parsers(subparsers: Any) -> None:
    """Register `rate import`, `rate lookup`, `cdr export` and `reservations`."""
    r_sub = sub_commands(subparsers, "rate", "tariff rates", "rate_command")
    r_imp = r_sub.add_parser(
        "import",
        help="import a tariff's rates from CSV (all rows or none)",
        description="Columns: prefix, description, price_1, interval_1, price_n, interval_n, connect_fee,"
        " free_seconds, grace[, forbidden]. Prices per minute (up to 5 decimal places),"
        " intervals in seconds. A header row may name them in any order; description,"
        " connect_fee, free_seconds, grace and forbidden may then be left out."
        " Every bad row is reported with its line number and then nothing is imported.",
    )
    r_imp.add_argument("file", help="the CSV file ('-' = standard input)")
    r_imp.add_argument("--tariff", required=True)
    r_imp.add_argument(
        "--mode",
        choices=("merge", "replace"),
        default="merge",
        help="merge: add new prefixes, update existing ones (default);"
        " replace: the tariff's rates become exactly the file's",
    )
    r_imp.set_defaults(func=run_rate_import)

    r_look = r_sub.add_parser("lookup", help="the rate a number gets (longest prefix) and how long a call may last")
    r_look.add_argument("number", type=_number)
    r_look.add_argument("--tariff", help="tariff name (default: the --card's tariff)")
    credit = r_look.add_mutually_exclusive_group()
    credit.add_argument("--balance", type=_amount, help="credit to compute the longest call for")
    credit.add_argument("--card", help="use this card's available credit (balance minus open reservations)")
    r_look.add_argument(
        "--max-call-duration",
        type=int,
        default=None,
        help="cap in seconds (calling_card.max_call_duration); default: the tariff's own limit",
    )
    r_look.add_argument("--ignore-connect-fee", action="store_true")
    r_look.set_defaults(func=run_rate_lookup)

    cdr = subparsers.add_parser("cdr", help="call detail records")
    c_sub = cdr.add_subparsers(dest="cdr_command", required=True)
    c_exp = c_sub.add_parser(
        "export",
        help="CDRs ended in [--from, --to) as CSV on stdout",
        description="Dates are ISO (2026-11-23 or 2026-11-23T14:00), UTC unless they"
        " carry an offset; a plain --to date includes that whole day.",
    )
    c_exp.add_argument("--from", dest="start", type=_when, required=True)
    c_exp.add_argument("--to", dest="end", required=True)
    c_exp.add_argument("--card", help="only this card's CDRs")
    c_exp.set_defaults(func=run_cdr_export)

    res = subparsers.add_parser(
        "reservations",
        help="list open reservations (calls up or never settled); settle or release one",
        description="Without a sub-command: list open reservations. `settle` and `release` close one by hand"
        " (FreeSWITCH could not tell how the call ended); each is audited.",
    )
    res.add_argument("--expired", action="store_true", help="only those past their expiry")
    res.set_defaults(func=run_reservations)
    r_sub = res.add_subparsers(dest="reservations_command", required=False, metavar="{settle,release}")
    settle = r_sub.add_parser(
        "settle",
        help="bill an open reservation for N seconds (ledger row, CDR, audit line)",
        description="Bills the call with the reservation's own rate, exactly as its own hangup would have:"
        " a 'call' ledger row (or a zero 'release' row when it costs nothing), a CDR with"
        " hangup cause OPERATOR_SETTLED and an audit line. A reservation already settled is"
        " refused: a call is never charged twice.",
    )
    settle.add_argument("b_uuid", type=_b_uuid, metavar="B_UUID", help="the call's B-leg UUID (cardd reservations)")
    settle.add_argument(
        "--billed-seconds",
        type=_billed_seconds,
        required=True,
        help="seconds to bill (at most the seconds the reservation granted)",
    )
    settle.add_argument("--reason", default="", help="why, for the audit")
    settle.add_argument(
        "--force",
        action="store_true",
        help="close a reservation that has not expired yet (you know its call has ended)",
    )
    add_by(settle)
    settle.set_defaults(func=run_reservation_settle)
    release = r_sub.add_parser(
        "release",
        help="close an open reservation without charging (zero ledger row, CDR, audit line)",
        description="Frees the credit an open reservation holds: a zero-amount 'release' ledger row, a CDR"
        " of 0 s with hangup cause OPERATOR_RELEASED and an audit line. Refused if the"
        " reservation is already settled.",
    )
    release.add_argument("b_uuid", type=_b_uuid, metavar="B_UUID")
    release.add_argument("--reason", default="", help="why, for the audit")
    release.add_argument(
        "--force",
        action="store_true",
        help="close a reservation that has not expired yet (you know its call has ended)",
    )
    add_by(release)
    release.set_defaults(func=run_reservation_release)

    aud = subparsers.add_parser("audit", help="who did what: operator actions that moved money or changed cards")
    aud.add_argument("--card", default=None, help="only this card's lines")
    aud.add_argument("--last", type=int, default=100, help="the last N lines (default 100)")
    aud.set_defaults(func=run_audit)


# --- handlers ----------------------------------------------------------------------------


def run_rate_import(args: argparse.Namespace, settings: Any) -> int:
    return import_deck(args, settings, TARIFF_DECK, args.tariff)


def import_deck(args: argparse.Namespace, settings: Any, deck: Deck, owner: str) -> int:
    """`rate import` and `carrier rates import`: args.file, args.mode into `owner`'s deck."""
    if args.file == "-":
        f: IO[str] = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig", newline="")
        total = None
        name = "standard input"
    else:
        try:
            f = open(args.file, encoding="utf-8-sig", newline="")  # noqa: SIM115 (closed by the with below)
        except OSError as exc:
            return refuse(f"cannot read {args.file}: {exc.strerror}")
        total = os.path.getsize(args.file)
        name = args.file
    progress = Progress(sys.stderr, total)
    try:
        with f, operator_database(settings) as db:
            result = import_rates(db.pool, owner, f, mode=args.mode, progress=progress, deck=deck)
    except CatalogError as exc:
        progress.finish()
        return refuse(str(exc))
    except UnicodeDecodeError as exc:
        progress.finish()
        return refuse(f"nothing imported: {name} is not UTF-8 text ({exc.reason} at byte {exc.start})")
    except csv.Error as exc:
        progress.finish()
        return refuse(f"nothing imported: {name}: {exc}")
    except ImportRefused as refused:
        progress.finish()
        for line, message in refused.errors:
            print(f"{name}:{line}: {message}", file=sys.stderr)
        return refuse(f"nothing imported: {len(refused.errors)} bad row(s) in {name} ({refused.rows} rows read)")
    detail = f"{args.mode}: {result.inserted} new, {result.updated} updated, {result.unchanged} unchanged"
    if args.mode == "replace":
        detail += f", {result.deleted} not in the file deleted"
    print(f"{deck.kind} {owner}: {result.rows} rates imported from {name} ({detail}) in {result.seconds:.1f} s")
    log.info("rate import: %s %s, %s rows, mode %s, %.1f s", deck.kind, owner, result.rows, args.mode, result.seconds)
    return 0


def _hms(seconds: int) -> str:
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"


def describe_rate(rate: Rate) -> list[str]:
    lines = [
        f"prefix        {rate.prefix or '(catch-all)'}" + ("   FORBIDDEN: calls are refused" if rate.forbidden else ""),
        f"first         {rate.price_1}/min, interval {rate.interval_1} s",
        f"then          {rate.price_n}/min, interval {rate.interval_n} s",
        f"connect fee   {rate.connect_fee}",
        f"free seconds  {rate.free_seconds}",
        f"grace         {rate.grace} s",
    ]
    return lines


def run_rate_lookup(args: argparse.Namespace, settings: Any) -> int:
    if args.tariff is None and args.card is None:
        return refuse("rate lookup needs --tariff NAME or --card NUMBER")
    if args.max_call_duration is not None and args.max_call_duration < 0:
        return refuse("--max-call-duration must be >= 0")
    with operator_database(settings) as db:
        credit: Decimal | None = args.balance
        card_text = ""
        card: Card | None = None
        with db.pool.connection() as conn:
            if args.card is not None:
                ledger = Ledger(db.pool)
                card = ledger.find_card(args.card)
                if card is None:
                    return refuse(f"no card {args.card!r}")
                credit = ledger.available_credit(card.id)
                card_text = f" (card {card.username}, available)"
                if args.tariff is None:
                    row = conn.execute("SELECT name, currency FROM tariffs WHERE id = %s", (card.tariff_id,)).fetchone()
                    assert row is not None
                    tariff_name = str(row[0])
                else:
                    tariff_name = args.tariff
            else:
                tariff_name = args.tariff
            try:
                tid, currency = catalog.tariff_id(conn, tariff_name)
            except CatalogError as exc:
                return refuse(str(exc))
            if card is not None and currency != card.currency:
                return refuse(f"card {card.username} is in {card.currency}, tariff {tariff_name} in {currency}")
            rate = find_rate(conn, tid, args.number)
    print(f"number        {args.number}")
    print(f"tariff        {tariff_name} ({currency})")
    if rate is None:
        print("rate          none: calls to this number are refused (no rate)")
        return 1
    for line in describe_rate(rate):
        print(line)
    if credit is not None:
        print(f"credit        {format_money(credit, currency)}{card_text}")
        if rate.forbidden:
            print("max duration  0 s (forbidden destination)")
        else:
            seconds = max_duration(
                rate, credit, ignore_connect_fee=args.ignore_connect_fee, max_call_duration=args.max_call_duration
            )
            print(f"max duration  {seconds} s ({_hms(seconds)})")
    return 0


CDR_FIELDS = (
    "b_uuid",
    "a_uuid",
    "card",
    "currency",
    "cli",
    "cld",
    "translated_cli",
    "translated_cld",
    "rate_prefix",
    "started_at",
    "answered_at",
    "ended_at",
    "granted_seconds",
    "billed_seconds",
    "plan_seconds_used",
    "cost",
    "hangup_cause",
    "estimated",
    "carrier",
    "gateway",
    "buy_cost",
    "margin",
)


def _iso(value: datetime | None) -> str:
    return value.astimezone(UTC).isoformat() if value is not None else ""


def _money_or_empty(value: Decimal | None) -> str:
    """A CDR's buy cost or margin: 5 places, empty for a call without a carrier."""
    return "" if value is None else f"{Decimal(value).quantize(QUANTUM)}"


def run_cdr_export(args: argparse.Namespace, settings: Any) -> int:
    try:
        end = _when(args.end)
    except argparse.ArgumentTypeError as exc:
        return refuse(f"--to: {exc}")
    if len(args.end) == 10:
        end += timedelta(days=1)  # a plain date: through the end of that day
    if end <= args.start:
        return refuse("--to must be after --from")
    where = [sql.SQL("c.ended_at >= %s AND c.ended_at < %s")]
    params: list[Any] = [args.start, end]
    if args.card is not None:
        where.append(sql.SQL("c.username = %s"))
        params.append(args.card)
    query = sql.SQL(
        "SELECT c.b_uuid, c.a_uuid, c.username, c.currency, c.cli, c.cld, c.translated_cli, c.translated_cld,"
        " c.rate_prefix, c.started_at, c.answered_at, c.ended_at, c.granted_seconds, c.billed_seconds,"
        " c.plan_seconds_used, c.cost, c.hangup_cause, c.estimated, c.carrier, c.gateway, c.buy_cost, c.margin"
        " FROM cdrs c WHERE {} ORDER BY c.ended_at, c.id"
    ).format(sql.SQL(" AND ").join(where))
    count = 0
    with operator_database(settings) as db:
        if args.card is not None:
            with db.pool.connection() as conn:
                if conn.execute("SELECT 1 FROM accounts WHERE username = %s", (args.card,)).fetchone() is None:
                    return refuse(f"no card {args.card!r}")
        # Only now, so a refused export writes nothing on stdout.
        out = csv.writer(sys.stdout, lineterminator="\n")
        out.writerow(CDR_FIELDS)
        # A named (server-side) cursor streams a month of CDRs without holding them all in memory.
        with db.pool.connection() as conn, conn.transaction(), conn.cursor(name="cdr_export") as cur:
            cur.itersize = 5000
            cur.execute(query, params)
            for row in cur:
                (
                    b_uuid,
                    a_uuid,
                    card,
                    currency,
                    cli,
                    cld,
                    t_cli,
                    t_cld,
                    prefix,
                    started,
                    answered,
                    ended,
                    granted,
                    billed,
                    plan_used,
                    cost,
                    cause,
                    estimated,
                    carrier,
                    gateway,
                    buy_cost,
                    margin,
                ) = row
                out.writerow(
                    (
                        b_uuid,
                        a_uuid,
                        card,
                        currency.strip(),
                        cli,
                        cld,
                        t_cli,
                        t_cld,
                        prefix,
                        _iso(started),
                        _iso(answered),
                        _iso(ended),
                        granted,
                        billed,
                        plan_used,
                        f"{Decimal(cost).quantize(QUANTUM)}",
                        cause,
                        "true" if estimated else "false",
                        carrier or "",
                        gateway or "",
                        _money_or_empty(buy_cost),
                        _money_or_empty(margin),
                    )
                )
                count += 1
    sys.stdout.flush()
    print(f"{count} CDRs exported", file=sys.stderr)
    return 0


def run_reservations(args: argparse.Namespace, settings: Any) -> int:
    with operator_database(settings) as db, db.pool.connection() as conn:
        rows = conn.execute(
            "SELECT a.username, r.b_uuid, r.amount, a.currency, r.duration_s, r.cld, r.created_at, r.expires_at,"
            "       r.switchname, r.bridge_sent_at, r.answered_at, r.expires_at <= now()"
            "  FROM reservations r JOIN accounts a ON a.id = r.account_id"
            " WHERE r.status = 'open'"
            + (" AND r.expires_at <= now()" if args.expired else "")
            + " ORDER BY r.created_at"
        ).fetchall()
    # What cardd recorded of each call (which box, bridge sent, answered) is what an operator
    # settling one by hand has to go on.
    print("card\tb_uuid\tamount\tcurrency\tseconds\tdestination\tcreated\texpires\tswitch\tdialled\tanswered\texpired")
    for card, b_uuid, amount, currency, seconds, cld, created, expires, switch, dialled, answered, expired in rows:
        print(
            f"{card}\t{b_uuid}\t{format_money(amount)}\t{currency.strip()}\t{seconds}\t{cld}"
            f"\t{_iso(created)}\t{_iso(expires)}\t{switch or ''}\t{_iso(dialled)}\t{_iso(answered)}"
            f"\t{'yes' if expired else 'no'}"
        )
    print(f"{len(rows)} open reservation(s)", file=sys.stderr)
    return 0


def _close(args: argparse.Namespace, settings: Any, billed_seconds: int | None) -> int:
    with operator_database(settings) as db:
        try:
            done = operator.close_reservation(
                db.pool,
                args.b_uuid,
                billed_seconds=billed_seconds,
                who=operator_name(args),
                reason=args.reason,
                force=args.force,
            )
        except OperatorError as exc:
            return refuse(exc)
    cdr = done.cdr
    what = (
        f"settled: {cdr.billed_seconds} s to {cdr.cld}, {format_money(cdr.cost, done.currency)}"
        if billed_seconds is not None
        else f"released: {cdr.cld}, nothing charged"
    )
    print(f"reservation {cdr.b_uuid} of card {done.card} {what}; balance {format_money(done.balance, done.currency)}")
    return 0


def run_reservation_settle(args: argparse.Namespace, settings: Any) -> int:
    return _close(args, settings, args.billed_seconds)


def run_reservation_release(args: argparse.Namespace, settings: Any) -> int:
    return _close(args, settings, None)


def run_audit(args: argparse.Namespace, settings: Any) -> int:
    with operator_database(settings) as db:
        lines = operator.audit_lines(db.pool, card=args.card, limit=max(1, args.last))
    print("time (UTC)\twho\taction\tcard\tdetail\targs")
    for a in lines:
        print(
            f"{a.at.astimezone(UTC):%Y-%m-%d %H:%M:%S}\t{a.who}\t{a.action}\t{a.card or ''}"
            f"\t{a.detail}\t{json.dumps(a.args, sort_keys=True)}"
        )
    return 0
