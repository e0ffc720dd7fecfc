"""Operator sub-commands for identities and vouchers, mounted by cardd.admin.add_parsers() after
cardd/admin/core.py (it adds to core's `card` command):

    cardd card generate N --tariff T --balance B --currency C   (CSV of numbers and PINs, printed once)
    cardd card block|unblock NUMBER,  cardd card set-pin NUMBER --pin P
    cardd card transfer FROM TO AMOUNT,  cardd card import FILE.csv,  cardd card hash-pins
    cardd cli map CLI NUMBER | unmap CLI | list
    cardd customer add|list|show|rename|delete|assign|unassign
    cardd plan add|list|show|set|delete|assign|unassign
    cardd voucher generate N --amount A --currency C | list | void NUMBER
    cardd hotdial set|remove|list,  cardd smartdial add|remove|list,  cardd blacklist list|add|remove

A refused write prints one line on stderr and returns 2 (unknown card, duplicate
number, bad amount), like cardd/admin/core.py.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import secrets
import sys
from decimal import Decimal
from typing import Any

from cardd.admin.common import (
    _amount,
    _currency,
    _digits,
    add_by,
    add_guard_flags,
    guard,
    operator_database,
    operator_name,
    refuse,
    sub_commands,
    when,
)
from cardd.billing import catalog, identity, operator, pins, vouchers
from cardd.billing.catalog import tariff_id
from cardd.billing.ledger import Ledger
from cardd.billing.pins import hash_pin
from cardd.digits import is_digits, whole_number
from cardd.errors import (
    CardBlocked,
    CardImportRefused,
    CardNotFound,
    CatalogError,
    IdentityError,
    InsufficientFunds,
    OperatorError,
    TransferError,
)
from cardd.money import format_money, money

log = logging.getLogger(__name__)

DEFAULT_PIN_LENGTH = 4


def _count(text: str) -> int:
    try:
        value = whole_number(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= 100000:
        raise argparse.ArgumentTypeError(f"must be between 1 and 100000, got {value}")
    return value


def _length(text: str) -> int:
    try:
        value = whole_number(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= 32:
        raise argparse.ArgumentTypeError(f"a length is 1 to 32 digits, got {value}")
    return value


def _length_or_zero(text: str) -> int:
    return 0 if text.strip() == "0" else _length(text)


_date = when


def _positive_amount(text: str) -> Decimal:
    value = _amount(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"bad amount {text!r}: must be positive")
    return value


def add_parsers(subparsers: Any) -> None:
    card = sub_commands(subparsers, "card", "calling cards", "card_command")
    gen = card.add_parser("generate", help="create N cards with random numbers and PINs; prints them once as CSV")
    gen.add_argument("count", type=_count)
    gen.add_argument("--tariff", required=True)
    gen.add_argument("--balance", type=_amount, default=Decimal(0))
    gen.add_argument("--currency", type=_currency, required=True)
    gen.add_argument(
        "--length",
        type=_length,
        default=None,
        help="digits of a card number (default: calling_card.card_number_length)",
    )
    gen.add_argument("--pin-length", type=_length, default=DEFAULT_PIN_LENGTH)
    gen.add_argument("--no-pin", action="store_true", help="cards without a PIN")
    gen.add_argument("--expires", type=_date, default=None, help="fixed expiry date")
    gen.add_argument(
        "--valid-days", type=_count, default=None, help="expire N days after the first call (cards start as 'new')"
    )
    gen.add_argument(
        "--max-calls", type=_length_or_zero, default=0, help="simultaneous calls allowed per card (0: unlimited)"
    )
    gen.add_argument("--customer", default=None, help="customer (name) owning the cards")
    gen.add_argument("--plan", default=None, help="service plan (name) of the cards")
    add_guard_flags(gen)
    add_by(gen)
    gen.set_defaults(func=run_card_generate)
    for name, status in (("block", "blocked"), ("unblock", "active")):
        p = card.add_parser(name, help=f"set a card's status to {status}")
        p.add_argument("number")
        add_by(p)
        p.set_defaults(func=run_card_status, status=status)
    sp = card.add_parser("set-pin", help="set (or with --pin '' clear) a card's PIN; stored hashed")
    sp.add_argument("number")
    sp.add_argument("--pin", required=True)
    add_by(sp)
    sp.set_defaults(func=run_card_set_pin)
    tr = card.add_parser("transfer", help="move balance from one card to another (one transaction)")
    tr.add_argument("from_number")
    tr.add_argument("to_number")
    tr.add_argument("amount", type=_positive_amount)
    add_by(tr)
    tr.set_defaults(func=run_card_transfer)
    imp = card.add_parser(
        "import",
        help="import cards from CSV (all rows or none); PINs are stored hashed",
        description="The first line names the columns: number (required), pin, balance, expires, in any order."
        " Every bad row is reported as FILE:LINE: reason and then nothing is imported.",
    )
    imp.add_argument("file", help="CSV file, '-' for stdin")
    imp.add_argument("--tariff", required=True)
    imp.add_argument("--currency", type=_currency, required=True)
    imp.add_argument("--customer", default=None, help="customer (name) owning the cards")
    imp.add_argument("--plan", default=None, help="service plan (name) of the cards")
    add_guard_flags(imp)
    add_by(imp)
    imp.set_defaults(func=run_card_import)
    hp = card.add_parser("hash-pins", help="hash imported plain PINs (pin_hash 'plain$<pin>') in place")
    hp.set_defaults(func=run_card_hash_pins)

    _add_customer_and_plan_parsers(subparsers)

    cli = sub_commands(subparsers, "cli", "trusted CLIs (calling_card_cli_map)", "cli_command")
    m = cli.add_parser("map", help="trust a CLI for a card")
    m.add_argument("cli")
    m.add_argument("number", help="card number")
    m.add_argument("--replace", action="store_true", help="move the CLI from another card")
    m.set_defaults(func=run_cli_map)
    u = cli.add_parser("unmap", help="forget a trusted CLI")
    u.add_argument("cli")
    u.set_defaults(func=run_cli_unmap)
    cl = cli.add_parser("list", help="list trusted CLIs")
    cl.add_argument("--card", default=None)
    cl.set_defaults(func=run_cli_list)

    voucher = sub_commands(subparsers, "voucher", "top-up vouchers", "voucher_command")
    vg = voucher.add_parser("generate", help="create N vouchers with random numbers; prints them once as CSV")
    vg.add_argument("count", type=_count)
    vg.add_argument("--amount", type=_positive_amount, required=True)
    vg.add_argument("--currency", type=_currency, required=True)
    vg.add_argument(
        "--length",
        type=_length,
        default=None,
        help="digits of a voucher number (default: the shortest from 10 up to"
        " calling_card.topup_card_length keeping one valid number per million)",
    )
    vg.add_argument("--expires", type=_date, default=None)
    vg.add_argument("--batch", default="", help="a label for this print run")
    vg.add_argument("--allow-past-expiry", action="store_true", help="allow an expiry date in the past")
    vg.set_defaults(func=run_voucher_generate)
    vl = voucher.add_parser("list", help="list vouchers")
    vl.add_argument("--batch", default=None)
    vl.set_defaults(func=run_voucher_list)
    vv = voucher.add_parser("void", help="withdraw an unused voucher")
    vv.add_argument("number")
    vv.set_defaults(func=run_voucher_void)

    hot = sub_commands(subparsers, "hotdial", "hot-dial keys of a card", "hotdial_command")
    hs = hot.add_parser("set", help="set a key's destination")
    hs.add_argument("number", help="card number")
    hs.add_argument("key", type=_digits("key"))
    hs.add_argument("destination", type=_digits("destination"))
    hs.set_defaults(func=run_hotdial_set)
    hr = hot.add_parser("remove", help="clear a key")
    hr.add_argument("number")
    hr.add_argument("key")
    hr.set_defaults(func=run_hotdial_remove)
    hl = hot.add_parser("list", help="a card's keys")
    hl.add_argument("number")
    hl.set_defaults(func=run_hotdial_list)

    smart = sub_commands(subparsers, "smartdial", "smart-dial DIDs", "smartdial_command")
    sa = smart.add_parser("add", help="calling DID from a trusted CLI of the card dials DESTINATION")
    sa.add_argument("did")
    sa.add_argument("number", help="card number")
    sa.add_argument("destination", type=_digits("destination"))
    sa.add_argument("--exclusive", action="store_true", help="the DID belongs to this account alone")
    sa.set_defaults(func=run_smartdial_add)
    sr = smart.add_parser("remove", help="remove a card's DID")
    sr.add_argument("did")
    sr.add_argument("number")
    sr.set_defaults(func=run_smartdial_remove)
    sl = smart.add_parser("list", help="list smart-dial DIDs")
    sl.set_defaults(func=run_smartdial_list)

    bl = sub_commands(subparsers, "blacklist", "blacklisted CLIs", "blacklist_command")
    bll = bl.add_parser("list", help="blacklisted CLIs (--all: with CLIs on a run of wrong card numbers)")
    bll.add_argument("--all", action="store_true")
    bll.set_defaults(func=run_blacklist_list)
    bla = bl.add_parser("add", help="blacklist a CLI")
    bla.add_argument("cli")
    bla.add_argument("--reason", default="added by the operator")
    bla.set_defaults(func=run_blacklist_add)
    blr = bl.add_parser("remove", help="remove a CLI from the black list")
    blr.add_argument("cli")
    blr.set_defaults(func=run_blacklist_remove)


def _plan_minutes(text: str) -> tuple[str, int]:
    prefix, sep, minutes = text.partition("=")
    if not sep or not (prefix == "" or is_digits(prefix)) or len(prefix) > 32 or not is_digits(minutes):
        raise argparse.ArgumentTypeError(
            f"expected PREFIX=MINUTES (e.g. 44=100; =60 for any destination), got {text!r}"
        )
    return prefix, int(minutes)


def _add_customer_and_plan_parsers(subparsers: Any) -> None:
    cust = sub_commands(subparsers, "customer", "customers owning cards", "customer_command")
    p = cust.add_parser("add", help="create a customer")
    p.add_argument("name")
    add_by(p)
    p.set_defaults(func=run_customer_add)
    p = cust.add_parser("list", help="customers with their card counts and balances")
    p.set_defaults(func=run_customer_list)
    p = cust.add_parser("show", help="a customer and its cards")
    p.add_argument("name")
    p.set_defaults(func=run_customer_show)
    p = cust.add_parser("rename", help="rename a customer")
    p.add_argument("name")
    p.add_argument("new_name")
    add_by(p)
    p.set_defaults(func=run_customer_rename)
    p = cust.add_parser("delete", help="delete a customer that owns no card")
    p.add_argument("name")
    add_by(p)
    p.set_defaults(func=run_customer_delete)
    p = cust.add_parser("assign", help="make a customer the owner of cards")
    p.add_argument("name")
    p.add_argument("numbers", nargs="+", metavar="NUMBER")
    add_by(p)
    p.set_defaults(func=run_customer_assign)
    p = cust.add_parser("unassign", help="cards belong to no customer")
    p.add_argument("numbers", nargs="+", metavar="NUMBER")
    add_by(p)
    p.set_defaults(func=run_customer_assign, name=None)

    plan = sub_commands(subparsers, "plan", "service plans (free minutes per destination prefix)", "plan_command")
    p = plan.add_parser("add", help="create a service plan")
    p.add_argument("name")
    p.add_argument(
        "--minutes",
        type=_plan_minutes,
        action="append",
        default=[],
        metavar="PREFIX=MINUTES",
        help="free minutes to destinations under PREFIX (repeat; longest prefix wins)",
    )
    p.add_argument("--minutes-plan", action="store_true", help="a minutes plan: the balance is not announced")
    add_by(p)
    p.set_defaults(func=run_plan_add)
    p = plan.add_parser("list", help="service plans with their minutes and card counts")
    p.set_defaults(func=run_plan_list)
    p = plan.add_parser("show", help="a plan, its minutes and its cards")
    p.add_argument("name")
    p.set_defaults(func=run_plan_show)
    p = plan.add_parser("set", help="change a plan: minutes per prefix, suspend/resume, rename")
    p.add_argument("name")
    p.add_argument(
        "--minutes",
        type=_plan_minutes,
        action="append",
        default=[],
        metavar="PREFIX=MINUTES",
        help="set the free minutes of a prefix (repeat)",
    )
    p.add_argument(
        "--remove-minutes",
        action="append",
        default=[],
        metavar="PREFIX",
        help="remove a prefix's free minutes (repeat)",
    )
    state = p.add_mutually_exclusive_group()
    state.add_argument(
        "--suspend",
        dest="suspended",
        action="store_const",
        const=True,
        default=None,
        help="its cards get no free minutes until resumed",
    )
    state.add_argument("--resume", dest="suspended", action="store_const", const=False)
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--minutes-plan", dest="minutes_plan", action="store_const", const=True, default=None)
    kind.add_argument("--no-minutes-plan", dest="minutes_plan", action="store_const", const=False)
    p.add_argument("--rename", default=None, metavar="NEW_NAME")
    add_by(p)
    p.set_defaults(func=run_plan_set)
    p = plan.add_parser("delete", help="delete a plan no card uses")
    p.add_argument("name")
    add_by(p)
    p.set_defaults(func=run_plan_delete)
    p = plan.add_parser("assign", help="put cards on a plan")
    p.add_argument("name")
    p.add_argument("numbers", nargs="+", metavar="NUMBER")
    add_by(p)
    p.set_defaults(func=run_plan_assign)
    p = plan.add_parser("unassign", help="take cards off their plan")
    p.add_argument("numbers", nargs="+", metavar="NUMBER")
    add_by(p)
    p.set_defaults(func=run_plan_assign, name=None)


def _card_id(db: Any, number: str) -> int | None:
    card = Ledger(db.pool).find_card(number)
    return card.id if card else None


# --- cards ----------------------------------------------------------------------------------


def _random_digits(length: int) -> str:
    """Random digits, the first never 0 (a number nobody mistypes as shorter)."""
    return str(1 + secrets.randbelow(9)) + "".join(str(secrets.randbelow(10)) for _ in range(length - 1))


def run_card_generate(args: argparse.Namespace, settings: Any) -> int:
    pins.use_key_of(settings.daemon)  # PINs are hashed under the shared key (cardd/billing/pins.py)
    options = settings.options_for()
    length = args.length or options.card_number_length
    if options.min_card_number_length and length < options.min_card_number_length:
        return refuse(f"cards of {length} digits are shorter than min_card_number_length")
    if length < 6:
        return refuse("card numbers need at least 6 digits to be hard to guess")
    if args.count > 9 * 10 ** (length - 1) // 100:
        return refuse(f"{args.count} cards of {length} digits would make numbers easy to guess")
    if args.expires and args.valid_days:
        return refuse("give --expires or --valid-days, not both")
    refused = guard(args, balance=args.balance, expires=args.expires)
    if refused:
        return refuse(refused)
    amount = money(args.balance)
    status = "new" if args.valid_days else "active"
    made: list[tuple[str, str]] = []
    with operator_database(settings) as db, db.pool.connection() as conn, conn.transaction():
        try:
            tid, tariff_currency = tariff_id(conn, args.tariff)
        except CatalogError as exc:
            return refuse(str(exc))
        if tariff_currency != args.currency:
            return refuse(f"tariff {args.tariff!r} is in {tariff_currency}; {args.currency} cards cannot use it")
        try:
            customer = catalog.named_id(conn, "customers", "customer", args.customer) if args.customer else None
            plan = catalog.named_id(conn, "service_plans", "service plan", args.plan) if args.plan else None
        except CatalogError as exc:
            return refuse(str(exc))
        # One transaction: the batch exists whole or not at all.
        while len(made) < args.count:
            number = _random_digits(length)
            pin = "" if args.no_pin else "".join(str(secrets.randbelow(10)) for _ in range(args.pin_length))
            row = conn.execute(
                "INSERT INTO accounts (username, pin_hash, currency, status, tariff_id, expires_at, valid_days,"
                " max_concurrent_calls, customer_id, service_plan_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (username) DO NOTHING RETURNING id",
                (
                    number,
                    hash_pin(pin) if pin else None,
                    args.currency,
                    status,
                    tid,
                    args.expires,
                    args.valid_days,
                    args.max_calls or None,
                    customer,
                    plan,
                ),
            ).fetchone()
            if row is None:
                continue  # the number exists: draw another
            if amount != 0:
                conn.execute(
                    "INSERT INTO ledger (account_id, amount, kind, reference)"
                    " VALUES (%s, %s, 'initial', 'card generated')",
                    (row[0], amount),
                )
            made.append((number, pin))
        operator.audit(
            conn,
            operator_name(args),
            "card generate",
            {
                "count": args.count,
                "tariff": args.tariff,
                "currency": args.currency,
                "balance": amount,
                "customer": args.customer,
                "plan": args.plan,
                "expires": args.expires,
                "valid_days": args.valid_days,
                "max_calls": args.max_calls,
            },
            detail=f"{len(made)} cards, {format_money(amount, args.currency)} each",
        )
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(["number", "pin", "balance", "currency"])
    for number, pin in made:
        out.writerow([number, pin, str(amount), args.currency])
    print(f"cardd: {len(made)} cards created; their PINs are stored hashed and cannot be shown again", file=sys.stderr)
    return 0


def run_card_status(args: argparse.Namespace, settings: Any) -> int:
    with operator_database(settings) as db:
        try:
            operator.set_card_status(db.pool, args.number, args.status, who=operator_name(args))
        except OperatorError:
            return refuse(f"no card {args.number!r}")
    print(f"card {args.number}: {args.status}")
    return 0


def run_card_set_pin(args: argparse.Namespace, settings: Any) -> int:
    pins.use_key_of(settings.daemon)  # PINs are hashed under the shared key (cardd/billing/pins.py)
    if args.pin and not is_digits(args.pin):
        return refuse(f"a PIN is digits only, got {args.pin!r}")
    with operator_database(settings) as db:
        try:
            operator.set_card_pin(db.pool, args.number, args.pin, who=operator_name(args))
        except OperatorError:
            return refuse(f"no card {args.number!r}")
    print(f"card {args.number}: PIN {'set' if args.pin else 'cleared'}")
    return 0


def run_card_transfer(args: argparse.Namespace, settings: Any) -> int:
    with operator_database(settings) as db:
        try:
            done = operator.transfer_credit(
                db.pool, args.from_number, args.to_number, args.amount, who=operator_name(args)
            )
        except (OperatorError, TransferError, InsufficientFunds, CardBlocked, CardNotFound) as exc:
            return refuse(str(exc))
    print(
        f"moved {format_money(done.amount, done.currency)}: card {args.from_number} now"
        f" {format_money(done.from_balance, done.currency)}, card {args.to_number} now"
        f" {format_money(done.to_balance, done.currency)}"
    )
    return 0


def run_card_import(args: argparse.Namespace, settings: Any) -> int:
    """All or nothing, like `rate import`: every bad row is listed as FILE:LINE: reason."""
    pins.use_key_of(settings.daemon)  # PINs are hashed under the shared key (cardd/billing/pins.py)
    if args.file == "-":
        stream: Any = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig", newline="")
        name = "standard input"
    else:
        try:
            stream = open(args.file, newline="", encoding="utf-8-sig")  # noqa: SIM115 (closed by the with below)
        except OSError as exc:
            return refuse(f"cannot read {args.file}: {exc.strerror}")
        name = args.file
    try:
        with stream, operator_database(settings) as db:
            count = operator.import_cards(
                db.pool,
                stream,
                tariff=args.tariff,
                currency=args.currency,
                customer=args.customer,
                plan=args.plan,
                allow_negative=args.allow_negative,
                allow_past_expiry=args.allow_past_expiry,
                who=operator_name(args),
                source=name,
            )
    except OperatorError as exc:
        return refuse(exc)
    except UnicodeDecodeError as exc:
        return refuse(f"nothing imported: {name} is not UTF-8 text ({exc.reason} at byte {exc.start})")
    except csv.Error as exc:
        return refuse(f"nothing imported: {name}: {exc}")
    except CardImportRefused as refused:
        for line, message in refused.errors:
            print(f"{name}:{line}: {message}", file=sys.stderr)
        return refuse(f"nothing imported: {len(refused.errors)} bad row(s) in {name} ({refused.rows} rows read)")
    print(f"{count} cards imported from {name} (PINs hashed)")
    return 0


def run_card_hash_pins(args: argparse.Namespace, settings: Any) -> int:
    pins.use_key_of(settings.daemon)  # PINs are hashed under the shared key (cardd/billing/pins.py)
    with operator_database(settings) as db:
        done = identity.hash_plain_pins(db.pool)
    print(f"{done} plain PINs hashed")
    return 0


# --- trusted CLIs ----------------------------------------------------------------------------


def run_cli_map(args: argparse.Namespace, settings: Any) -> int:
    with operator_database(settings) as db:
        cid = _card_id(db, args.number)
        if cid is None:
            return refuse(f"no card {args.number!r}")
        try:
            done = identity.map_cli(db.pool, args.cli, cid, replace=args.replace)
        except IdentityError as exc:
            return refuse(str(exc))
    if not done:
        return refuse(f"CLI {args.cli} already belongs to another card (use --replace to move it)")
    print(f"CLI {args.cli} -> card {args.number}")
    return 0


def run_cli_unmap(args: argparse.Namespace, settings: Any) -> int:
    with operator_database(settings) as db:
        if not identity.unmap_cli(db.pool, args.cli):
            return refuse(f"CLI {args.cli} is not mapped")
    print(f"CLI {args.cli} unmapped")
    return 0


def run_cli_list(args: argparse.Namespace, settings: Any) -> int:
    with operator_database(settings) as db:
        cid = None
        if args.card:
            cid = _card_id(db, args.card)
            if cid is None:
                return refuse(f"no card {args.card!r}")
        pairs = identity.cli_map(db.pool, cid)
    print("cli\tcard")
    for cli, number in pairs:
        print(f"{cli}\t{number}")
    return 0


# --- vouchers -----------------------------------------------------------------------------------


def run_voucher_generate(args: argparse.Namespace, settings: Any) -> int:
    refused = guard(args, expires=args.expires)
    if refused:
        return refuse(refused)
    with operator_database(settings) as db:
        try:
            # No --length: the shortest length that keeps guessing hard (cardd/billing/vouchers.py).
            numbers = vouchers.generate(
                db.pool,
                args.count,
                amount=args.amount,
                currency=args.currency,
                length=args.length,
                max_length=settings.options_for().topup_card_length,
                expires_at=args.expires,
                batch=args.batch,
            )
        except ValueError as exc:
            return refuse(str(exc))
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(["number", "amount", "currency", "expires"])
    for number in numbers:
        out.writerow([number, str(money(args.amount)), args.currency, args.expires.isoformat() if args.expires else ""])
    return 0


def run_voucher_list(args: argparse.Namespace, settings: Any) -> int:
    with operator_database(settings) as db:
        rows = vouchers.list_vouchers(db.pool, batch=args.batch)
    print("number\tamount\tcurrency\tstatus\tused by\texpires\tbatch")
    for r in rows:
        expires = f"{r.expires_at:%Y-%m-%d}" if r.expires_at else ""
        print(
            f"{r.number}\t{format_money(r.amount)}\t{r.currency}\t{r.status}\t{r.used_by or ''}\t{expires}\t{r.batch}"
        )
    return 0


def run_voucher_void(args: argparse.Namespace, settings: Any) -> int:
    with operator_database(settings) as db:
        if not vouchers.void(db.pool, args.number):
            return refuse(f"no unused voucher {args.number!r}")
    print(f"voucher {args.number} voided")
    return 0


# --- hot dial / smart dial ----------------------------------------------------------------------


def run_hotdial_set(args: argparse.Namespace, settings: Any) -> int:
    with operator_database(settings) as db:
        cid = _card_id(db, args.number)
        if cid is None:
            return refuse(f"no card {args.number!r}")
        try:
            identity.hot_dial_set(db.pool, cid, args.key, args.destination)
        except IdentityError as exc:
            return refuse(str(exc))
    print(f"card {args.number}: key {args.key} -> {args.destination}")
    return 0


def run_hotdial_remove(args: argparse.Namespace, settings: Any) -> int:
    with operator_database(settings) as db:
        cid = _card_id(db, args.number)
        if cid is None:
            return refuse(f"no card {args.number!r}")
        if not identity.hot_dial_remove(db.pool, cid, args.key):
            return refuse(f"card {args.number} has no key {args.key}")
    print(f"card {args.number}: key {args.key} cleared")
    return 0


def run_hotdial_list(args: argparse.Namespace, settings: Any) -> int:
    with operator_database(settings) as db:
        cid = _card_id(db, args.number)
        if cid is None:
            return refuse(f"no card {args.number!r}")
        keys = identity.hot_dial_list(db.pool, cid)
    print("key\tdestination")
    for key, destination in keys:
        print(f"{key}\t{destination}")
    return 0


def run_smartdial_add(args: argparse.Namespace, settings: Any) -> int:
    with operator_database(settings) as db:
        cid = _card_id(db, args.number)
        if cid is None:
            return refuse(f"no card {args.number!r}")
        try:
            identity.smart_dial_add(db.pool, args.did, cid, args.destination, exclusive=args.exclusive)
        except IdentityError as exc:
            return refuse(str(exc))
    print(
        f"DID {args.did} for card {args.number} -> {args.destination}"
        + (" (exclusive)" if args.exclusive else " (shared)")
    )
    return 0


def run_smartdial_remove(args: argparse.Namespace, settings: Any) -> int:
    with operator_database(settings) as db:
        cid = _card_id(db, args.number)
        if cid is None:
            return refuse(f"no card {args.number!r}")
        if not identity.smart_dial_remove(db.pool, args.did, cid):
            return refuse(f"card {args.number} has no DID {args.did}")
    print(f"DID {args.did} removed from card {args.number}")
    return 0


def run_smartdial_list(args: argparse.Namespace, settings: Any) -> int:
    with operator_database(settings) as db:
        rows = identity.smart_dial_list(db.pool)
    print("did\tcard\tdestination\tkind")
    for did, number, destination, exclusive in rows:
        print(f"{did}\t{number}\t{destination}\t{'exclusive' if exclusive else 'shared'}")
    return 0


# --- black list ----------------------------------------------------------------------------------


def run_blacklist_list(args: argparse.Namespace, settings: Any) -> int:
    with operator_database(settings) as db:
        entries = identity.blacklist_entries(db.pool, blocked_only=not args.all)
    print("cli\tblocked\twrong cards\tsince\treason")
    for e in entries:
        since = f"{e.blocked_at:%Y-%m-%d %H:%M}" if e.blocked_at else ""
        print(f"{e.cli}\t{'yes' if e.blocked else 'no'}\t{e.failed_attempts}\t{since}\t{e.reason or ''}")
    return 0


def run_blacklist_add(args: argparse.Namespace, settings: Any) -> int:
    if not identity.VALID_CLI.match(args.cli):
        return refuse(f"a CLI is digits (optionally after +), got {args.cli!r}")
    with operator_database(settings) as db:
        identity.blacklist_add(db.pool, args.cli, args.reason)
    print(f"CLI {args.cli} blacklisted")
    return 0


def run_blacklist_remove(args: argparse.Namespace, settings: Any) -> int:
    with operator_database(settings) as db:
        if not identity.blacklist_remove(db.pool, args.cli):
            return refuse(f"CLI {args.cli} is not on the black list")
    print(f"CLI {args.cli} removed from the black list")
    return 0


# --- customers and service plans -------------------------------------------------------------


def _operator_call(settings: Any, fn: Any, *args: Any, **kwargs: Any) -> tuple[int, Any]:
    """Run one operator service function; (0, its result) or (2, None) after printing the refusal."""
    with operator_database(settings) as db:
        try:
            return 0, fn(db.pool, *args, **kwargs)
        except (OperatorError, CatalogError) as exc:
            return refuse(exc), None


def _balances(balance: dict[str, Decimal]) -> str:
    return ", ".join(format_money(v, c) for c, v in sorted(balance.items())) or "-"


def run_customer_add(args: argparse.Namespace, settings: Any) -> int:
    rc, cid = _operator_call(settings, operator.add_customer, args.name, who=operator_name(args))
    if rc == 0:
        print(f"customer {args.name} created, id {cid}")
    return rc


def run_customer_list(args: argparse.Namespace, settings: Any) -> int:
    rc, rows = _operator_call(settings, operator.list_customers)
    if rc:
        return rc
    print("customer\tcards\tbalance\tcreated")
    for c in rows:
        print(f"{c.name}\t{c.cards}\t{_balances(c.balance)}\t{c.created_at:%Y-%m-%d}")
    return 0


def run_customer_show(args: argparse.Namespace, settings: Any) -> int:
    rc, rows = _operator_call(settings, operator.list_customers, args.name)
    if rc:
        return rc
    _, cards = _operator_call(settings, catalog.list_cards, customer=args.name)
    c = rows[0]
    print(f"customer   {c.name} (id {c.id}), since {c.created_at:%Y-%m-%d}")
    print(f"cards      {c.cards}, balance {_balances(c.balance)}")
    for card in cards:
        print(
            f"  {card.username}\t{card.status}\t{format_money(card.balance, card.currency)}\t{card.tariff}"
            f"\t{card.plan or ''}"
        )
    return 0


def run_customer_rename(args: argparse.Namespace, settings: Any) -> int:
    rc, _ = _operator_call(settings, operator.rename_customer, args.name, args.new_name, who=operator_name(args))
    if rc == 0:
        print(f"customer {args.name} renamed {args.new_name}")
    return rc


def run_customer_delete(args: argparse.Namespace, settings: Any) -> int:
    rc, _ = _operator_call(settings, operator.delete_customer, args.name, who=operator_name(args))
    if rc == 0:
        print(f"customer {args.name} deleted")
    return rc


def run_customer_assign(args: argparse.Namespace, settings: Any) -> int:
    rc, n = _operator_call(settings, operator.assign_customer, args.numbers, args.name, who=operator_name(args))
    if rc == 0:
        print(f"{n} card(s) now belong to " + (f"customer {args.name}" if args.name else "no customer"))
    return rc


def _minutes_text(minutes: dict[str, int]) -> str:
    return ", ".join(f"{p or '(any)'}={m}" for p, m in minutes.items()) or "-"


def run_plan_add(args: argparse.Namespace, settings: Any) -> int:
    minutes = dict(args.minutes)
    if len(minutes) != len(args.minutes):
        return refuse("a prefix is given twice in --minutes")
    rc, pid = _operator_call(
        settings, operator.add_plan, args.name, who=operator_name(args), minutes_plan=args.minutes_plan, minutes=minutes
    )
    if rc == 0:
        print(f"service plan {args.name} created, id {pid}: minutes {_minutes_text(minutes)}")
    return rc


def _plan_flags(p: operator.Plan) -> str:
    return ",".join(w for on, w in ((p.suspended, "suspended"), (p.minutes_plan, "minutes plan")) if on) or "-"


def run_plan_list(args: argparse.Namespace, settings: Any) -> int:
    rc, plans = _operator_call(settings, operator.list_plans)
    if rc:
        return rc
    print("plan\tflags\tcards\tminutes (prefix=minutes)")
    for p in plans:
        print(f"{p.name}\t{_plan_flags(p)}\t{p.cards}\t{_minutes_text(p.minutes)}")
    return 0


def run_plan_show(args: argparse.Namespace, settings: Any) -> int:
    rc, plans = _operator_call(settings, operator.list_plans, args.name)
    if rc:
        return rc
    p = plans[0]
    print(f"plan       {p.name} (id {p.id}), {_plan_flags(p)}")
    print("minutes    " + _minutes_text(p.minutes))
    print(f"cards      {p.cards}")
    with operator_database(settings) as db, db.pool.connection() as conn:
        numbers = [
            r[0]
            for r in conn.execute(
                "SELECT username FROM accounts WHERE service_plan_id = %s ORDER BY username LIMIT 1000", (p.id,)
            )
        ]
    for number in numbers:
        print(f"  {number}")
    return 0


def run_plan_set(args: argparse.Namespace, settings: Any) -> int:
    minutes = dict(args.minutes)
    if not (
        minutes or args.remove_minutes or args.suspended is not None or args.minutes_plan is not None or args.rename
    ):
        return refuse(
            "nothing to change: give --minutes, --remove-minutes, --suspend/--resume,"
            " --minutes-plan/--no-minutes-plan or --rename"
        )
    rc, _ = _operator_call(
        settings,
        operator.update_plan,
        args.name,
        who=operator_name(args),
        new_name=args.rename,
        suspended=args.suspended,
        minutes_plan=args.minutes_plan,
        set_minutes=minutes,
        remove_prefixes=args.remove_minutes,
    )
    if rc == 0:
        print(f"service plan {args.rename or args.name} changed")
    return rc


def run_plan_delete(args: argparse.Namespace, settings: Any) -> int:
    rc, _ = _operator_call(settings, operator.delete_plan, args.name, who=operator_name(args))
    if rc == 0:
        print(f"service plan {args.name} deleted")
    return rc


def run_plan_assign(args: argparse.Namespace, settings: Any) -> int:
    rc, n = _operator_call(settings, operator.assign_plan, args.numbers, args.name, who=operator_name(args))
    if rc == 0:
        print(f"{n} card(s) now on " + (f"service plan {args.name}" if args.name else "no service plan"))
    return rc
