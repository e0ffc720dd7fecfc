"""Operator sub-commands: db, tariff, rate, card. Mounted by cardd.admin.add_parsers() (first: the other
modules add sub-commands to its `rate` and `card`).

Every handler is `run_*(args, settings) -> int`; settings is a cardd.config.Settings
(only settings.daemon.dsn and settings.daemon.data_dir are used). A refused
write (unknown tariff, duplicate card number) prints one line on stderr and
returns 2; bad amounts or currencies are refused by argparse (also exit 2).
Only `db migrate` creates or migrates a database; every other command refuses a
missing or unmigrated one with one line (cardd.db.open_for_operator).
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import UTC
from decimal import Decimal
from typing import Any

from cardd.admin.common import (
    _amount,
    _currency,
    _digits,
    _non_negative_amount,
    _seconds,
    add_by,
    add_guard_flags,
    guard,
    operator_database,
    operator_name,
    refuse,
    when,
)
from cardd.billing import catalog, operator, pins
from cardd.billing.ledger import Ledger
from cardd.digits import is_digits
from cardd.errors import CatalogError, OperatorError
from cardd.money import format_money

log = logging.getLogger(__name__)


def add_parsers(subparsers: Any) -> None:
    """Register `db`, `tariff`, `rate` and `card` on the cli's sub-parsers."""
    db = subparsers.add_parser("db", help="database administration")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    mig = db_sub.add_parser("migrate", help="apply pending schema migrations")
    mig.set_defaults(func=run_db_migrate)

    tariff = subparsers.add_parser("tariff", help="tariffs")
    t_sub = tariff.add_subparsers(dest="tariff_command", required=True)
    t_add = t_sub.add_parser("add", help="create a tariff")
    t_add.add_argument("name")
    t_add.add_argument("--currency", type=_currency, required=True, help="ISO code, e.g. USD")
    t_add.set_defaults(func=run_tariff_add)
    t_list = t_sub.add_parser("list", help="list tariffs with their rate counts")
    t_list.set_defaults(func=run_tariff_list)

    rate = subparsers.add_parser("rate", help="tariff rates")
    r_sub = rate.add_subparsers(dest="rate_command", required=True)
    r_add = r_sub.add_parser("add", help="add a rate (prices per minute, intervals in seconds)")
    r_add.add_argument("--tariff", required=True)
    r_add.add_argument("prefix", type=_digits("prefix"), help="destination prefix (longest match wins)")
    r_add.add_argument("--price-1", type=_non_negative_amount, required=True, help="per minute, first interval")
    r_add.add_argument("--interval-1", type=_seconds(1), required=True, help="first interval, seconds")
    r_add.add_argument("--price-n", type=_non_negative_amount, required=True, help="per minute, next intervals")
    r_add.add_argument("--interval-n", type=_seconds(1), required=True, help="next intervals, seconds")
    r_add.add_argument("--connect-fee", type=_non_negative_amount, default=Decimal(0))
    r_add.add_argument("--free-seconds", type=_seconds(0), default=0)
    r_add.add_argument("--grace", type=_seconds(0), default=0, help="calls this short are free")
    r_add.add_argument("--forbidden", action="store_true", help="calls to this prefix are refused")
    r_add.add_argument("--replace", action="store_true", help="update the prefix's rate if it exists")
    r_add.set_defaults(func=run_rate_add)
    r_list = r_sub.add_parser("list", help="list a tariff's rates")
    r_list.add_argument("--tariff", required=True)
    r_list.set_defaults(func=run_rate_list)

    card = subparsers.add_parser("card", help="calling cards")
    c_sub = card.add_subparsers(dest="card_command", required=True)
    c_add = c_sub.add_parser("add", help="create a card")
    c_add.add_argument("number", type=_digits("card number"))
    c_add.add_argument("--pin", default="", help="PIN (digits); empty = no PIN")
    c_add.add_argument("--balance", type=_amount, default=Decimal(0))
    c_add.add_argument("--currency", type=_currency, required=True)
    c_add.add_argument("--tariff", required=True)
    c_add.add_argument("--authname", default=None, help="VoIP login that may be used as the card number")
    c_add.add_argument("--max-calls", type=_seconds(1), default=None, help="simultaneous calls allowed")
    c_add.add_argument("--expires", type=when, default=None, help="expiry date (YYYY-MM-DD[THH:MM], UTC)")
    c_add.add_argument("--customer", default=None, help="customer (name) owning the card")
    c_add.add_argument("--plan", default=None, help="service plan (name)")
    add_guard_flags(c_add)
    add_by(c_add)
    c_add.set_defaults(func=run_card_add)
    c_show = c_sub.add_parser("show", help="balance, tariff, customer, plan, PIN state, open reservations, last CDRs")
    c_show.add_argument("number")
    c_show.add_argument("--cdrs", type=_seconds(0), default=10, help="how many CDRs to show")
    c_show.set_defaults(func=run_card_show)
    c_hist = c_sub.add_parser(
        "history", help="the card's ledger rows (calls, top-ups, adjustments, transfers) with the running balance"
    )
    c_hist.add_argument("number")
    c_hist.add_argument("--last", type=_seconds(1), default=None, help="only the last N rows")
    c_hist.set_defaults(func=run_card_history)
    c_list = c_sub.add_parser("list", help="list cards")
    c_list.add_argument("--status", choices=("new", "active", "blocked", "closed"), default=None)
    c_list.add_argument("--customer", default=None, help="only this customer's cards")
    c_list.add_argument("--tariff", default=None, help="only cards on this tariff")
    c_list.add_argument(
        "--balance-below", type=_amount, default=None, metavar="AMOUNT", help="only cards whose balance is below AMOUNT"
    )
    c_list.add_argument("--limit", type=_seconds(1), default=1000, help="at most this many cards")
    c_list.set_defaults(func=run_card_list)
    c_adj = c_sub.add_parser("adjust", help="credit (positive) or debit (negative) a card, as a ledger row")
    c_adj.add_argument("number")
    c_adj.add_argument("amount", type=_amount)
    c_adj.add_argument("--reference", default="operator adjustment")
    c_adj.add_argument(
        "--allow-negative",
        action="store_true",
        help="allow a debit that leaves the balance (or the credit open calls may spend) below 0",
    )
    add_by(c_adj)
    c_adj.set_defaults(func=run_card_adjust)


def run_db_migrate(args: argparse.Namespace, settings: Any) -> int:
    pins.use_key_of(settings.daemon, create=True)  # the PIN key is created with the schema
    with operator_database(settings, migrate=True) as db:
        pins.refuse_new_key_for_hashed_pins(db.pool)
        print(f"schema at version {db.schema_version()}")
    return 0


def run_tariff_add(args: argparse.Namespace, settings: Any) -> int:
    with operator_database(settings) as db:
        try:
            tid = catalog.create_tariff(db.pool, args.name, args.currency)
        except CatalogError as exc:
            return refuse(str(exc))
    print(f"tariff {args.name} ({args.currency}) created, id {tid}")
    return 0


def run_tariff_list(args: argparse.Namespace, settings: Any) -> int:
    with operator_database(settings) as db, db.pool.connection() as conn:
        rows = conn.execute(
            "SELECT t.name, t.currency, count(r.id) FROM tariffs t LEFT JOIN rates r ON r.tariff_id = t.id"
            " GROUP BY t.id ORDER BY t.name"
        ).fetchall()
    for name, currency, n in rows:
        print(f"{name}\t{currency}\t{n} rates")
    return 0


def run_rate_add(args: argparse.Namespace, settings: Any) -> int:
    with operator_database(settings) as db:
        try:
            catalog.add_rate(
                db.pool,
                args.tariff,
                args.prefix,
                price_1=args.price_1,
                interval_1=args.interval_1,
                price_n=args.price_n,
                interval_n=args.interval_n,
                connect_fee=args.connect_fee,
                free_seconds=args.free_seconds,
                grace=args.grace,
                forbidden=args.forbidden,
                replace=args.replace,
            )
        except CatalogError as exc:
            return refuse(str(exc))
    print(
        f"rate {args.prefix or '(default)'} in tariff {args.tariff}: {args.price_1}/min"
        f" {args.interval_1}s then {args.price_n}/min {args.interval_n}s" + (" FORBIDDEN" if args.forbidden else "")
    )
    return 0


def run_rate_list(args: argparse.Namespace, settings: Any) -> int:
    with operator_database(settings) as db, db.pool.connection() as conn:
        found = conn.execute("SELECT id FROM tariffs WHERE name = %s", (args.tariff,)).fetchone()
        if found is None:
            return refuse(f"unknown tariff {args.tariff!r}")
        rows = conn.execute(
            "SELECT prefix, price_1, interval_1, price_n, interval_n, connect_fee, free_seconds, grace, forbidden"
            "  FROM rates WHERE tariff_id = %s ORDER BY prefix",
            (found[0],),
        ).fetchall()
    print("prefix\tprice_1\tint_1\tprice_n\tint_n\tfee\tfree\tgrace\tforbidden")
    for row in rows:
        print("\t".join(str(v) for v in row))
    return 0


def run_card_add(args: argparse.Namespace, settings: Any) -> int:
    if args.pin and not is_digits(args.pin):
        return refuse(f"a PIN is digits only, got {args.pin!r}")
    refused = guard(args, balance=args.balance, expires=args.expires)
    if refused:
        return refuse(refused)
    if args.pin:
        pins.use_key_of(settings.daemon)
    with operator_database(settings) as db:
        try:
            cid = operator.add_card(
                db.pool,
                args.number,
                who=operator_name(args),
                tariff=args.tariff,
                currency=args.currency,
                pin=args.pin,
                balance=args.balance,
                authname=args.authname,
                max_concurrent_calls=args.max_calls,
                expires_at=args.expires,
                customer=args.customer,
                plan=args.plan,
                allow_negative=args.allow_negative,
            )
        except (CatalogError, OperatorError) as exc:
            return refuse(str(exc))
    print(f"card {args.number} created, id {cid}, balance {format_money(args.balance, args.currency)}")
    return 0


def run_card_show(args: argparse.Namespace, settings: Any) -> int:
    with operator_database(settings) as db:
        ledger = Ledger(db.pool)
        card = ledger.find_card(args.number)
        if card is None:
            return refuse(f"no card {args.number!r}")
        available = ledger.available_credit(card.id)
        reservations = ledger.open_reservations(card.id)
        cdrs = ledger.cdrs_for(card.id, limit=args.cdrs)
        details = operator.card_details(db.pool, card.id)
    print(
        f"card       {card.username} (id {card.id}), {card.status}"
        + (f", expires {card.expires_at:%Y-%m-%d %H:%M}" if card.expires_at else "")
        + (f", valid {details.valid_days} days from first use" if details.valid_days and not card.expires_at else "")
    )
    print(f"balance    {format_money(card.balance, card.currency)}")
    print(f"available  {format_money(available, card.currency)}")
    print(f"tariff     {details.tariff}")
    print(f"customer   {details.customer or '-'}")
    plan = "-"
    if details.plan:
        plan = details.plan + "".join(
            f", {word}"
            for on, word in ((details.plan_suspended, "suspended"), (details.minutes_plan, "minutes plan"))
            if on
        )
    print(f"plan       {plan}")
    for prefix, used, minutes in details.plan_usage:
        print(f"  prefix {prefix or '(any)'}: {used // 60} min {used % 60} s used of {minutes} min")
    print(f"PIN        {details.pin_state}")
    if details.authname:
        print(f"VoIP login {details.authname}")
    if details.max_concurrent_calls:
        print(f"max calls  {details.max_concurrent_calls}")
    print(f"open reservations: {len(reservations)}")
    for r in reservations:
        print(
            f"  {r.b_uuid}  {format_money(r.amount)}  {r.duration_s} s to {r.cld}"
            f"  expires {r.expires_at:%Y-%m-%d %H:%M:%S}"
        )
    print(f"last CDRs: {len(cdrs)}")
    for c in cdrs:
        print(
            f"  {c.ended_at:%Y-%m-%d %H:%M:%S}  {c.cld:<16} {c.billed_seconds:>6} s  {format_money(c.cost)}"
            f"  {c.hangup_cause}" + ("  (estimated)" if c.estimated else "")
        )
    return 0


def run_card_history(args: argparse.Namespace, settings: Any) -> int:
    with operator_database(settings) as db:
        card = Ledger(db.pool).find_card(args.number)
        if card is None:
            return refuse(f"no card {args.number!r}")
        rows = operator.card_history(db.pool, card.id, limit=args.last)
    print("time (UTC)\tkind\tamount\tbalance\treference\tcall")
    for e in rows:
        print(
            f"{e.created_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}\t{e.kind}\t{format_money(e.amount)}"
            f"\t{format_money(e.balance_after)}\t{e.reference}\t{e.b_uuid or ''}"
        )
    print(
        f"card {card.username}: {len(rows)} ledger row(s), balance {format_money(card.balance, card.currency)}",
        file=sys.stderr,
    )
    return 0


def run_card_list(args: argparse.Namespace, settings: Any) -> int:
    with operator_database(settings) as db:
        try:
            cards = catalog.list_cards(
                db.pool,
                limit=args.limit,
                status=args.status,
                customer=args.customer,
                tariff=args.tariff,
                balance_below=args.balance_below,
            )
        except CatalogError as exc:
            return refuse(str(exc))
    print("card\tstatus\tbalance\tavailable\tcurrency\ttariff\topen calls\tcustomer\tplan")
    for c in cards:
        print(
            f"{c.username}\t{c.status}\t{format_money(c.balance)}\t{format_money(c.available)}\t{c.currency}"
            f"\t{c.tariff}\t{c.open_reservations}\t{c.customer or ''}\t{c.plan or ''}"
        )
    print(
        f"{len(cards)} card(s)" + (f" (the first {args.limit}: --limit)" if len(cards) == args.limit else ""),
        file=sys.stderr,
    )
    return 0


def run_card_adjust(args: argparse.Namespace, settings: Any) -> int:
    with operator_database(settings) as db:
        card = Ledger(db.pool).find_card(args.number)
        if card is None:
            return refuse(f"no card {args.number!r}")
        try:
            balance = operator.adjust_card(
                db.pool,
                args.number,
                args.amount,
                who=operator_name(args),
                reference=args.reference,
                allow_negative=args.allow_negative,
            )
        except OperatorError as exc:
            return refuse(exc)
    print(f"card {card.username}: balance {format_money(balance, card.currency)}")
    return 0
