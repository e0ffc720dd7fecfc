"""Operator commands for carriers: `cardd carrier add|list|enable|disable` and
`cardd carrier rates import FILE --carrier C`.

Mounted by cardd.admin.add_parsers. The buy-deck import is `rate import`'s own
code (cardd.admin.ops.import_deck) pointed at carrier_rates: the same CSV
columns, the same all-or-nothing check with every bad row reported as
FILE:LINE, the same COPY path and speed. Refusals print one `cardd: ...` line
and return 2.
"""

from __future__ import annotations

import argparse
from typing import Any

from cardd.admin.common import _currency, operator_database, refuse, sub_commands
from cardd.admin.ops import import_deck
from cardd.billing import carriers
from cardd.billing.carrier_plan import routes_in_order
from cardd.billing.rate_import import CARRIER_DECK
from cardd.billing.rating import call_cost
from cardd.billing.routing import FIRST_MINUTE_S
from cardd.digits import whole_number
from cardd.errors import CatalogError
from cardd.money import format_money


def _count(minimum: int):
    def parse(text: str) -> int:
        try:
            value = whole_number(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def add_parsers(subparsers: Any) -> None:
    """Register `carrier` and its sub-commands."""
    c_sub = sub_commands(subparsers, "carrier", "carriers and their buy rates (least-cost routing)", "carrier_command")
    add = c_sub.add_parser(
        "add",
        help="add a carrier (enabled)",
        description="A carrier terminates calls through its gateways, tried in the order given, at the"
        " prices of its buy deck (`cardd carrier rates import`). Calls go to the carrier whose"
        " deck makes the first minute cheapest; with no carrier at all cardd dials"
        " daemon.dial_string.",
    )
    add.add_argument("name")
    add.add_argument("--currency", type=_currency, required=True, help="the buy deck's currency (ISO code)")
    add.add_argument(
        "--gateway",
        action="append",
        required=True,
        metavar="TEMPLATE",
        help="dial-string template with {number}, e.g. sofia/gateway/acme/{number};"
        " repeat for more gateways, tried in order",
    )
    add.add_argument(
        "--priority",
        type=_count(0),
        default=100,
        help="among equal first-minute prices the lower number goes first (default 100)",
    )
    add.add_argument(
        "--channel-limit",
        type=_count(1),
        default=None,
        help="calls up at once through this carrier (default: no limit)",
    )
    add.set_defaults(func=run_carrier_add)

    lst = c_sub.add_parser("list", help="carriers, their gateways, deck sizes and calls up")
    lst.set_defaults(func=run_carrier_list)

    for verb, enabled in (("disable", False), ("enable", True)):
        p = c_sub.add_parser(verb, help=f"{verb} a carrier (calls up on it go on)")
        p.add_argument("name")
        p.set_defaults(func=run_carrier_enable, enabled=enabled)

    rates = c_sub.add_parser("rates", help="a carrier's buy deck")
    r_sub = rates.add_subparsers(dest="carrier_rates_command", required=True)
    imp = r_sub.add_parser(
        "import",
        help="import a carrier's buy rates from CSV (all rows or none)",
        description="The CSV of `cardd rate import`: prefix, description, price_1, interval_1, price_n,"
        " interval_n, connect_fee, free_seconds, grace[, forbidden] (prices per minute,"
        " intervals in seconds; a forbidden prefix is one the carrier does not take)."
        " Every bad row is reported with its line number and then nothing is imported.",
    )
    imp.add_argument("file", help="the CSV file ('-' = standard input)")
    imp.add_argument("--carrier", required=True)
    imp.add_argument(
        "--mode",
        choices=("merge", "replace"),
        default="merge",
        help="merge: add new prefixes, update existing ones (default); replace: the deck becomes exactly the file",
    )
    imp.set_defaults(func=run_carrier_rates_import)

    route = c_sub.add_parser(
        "route",
        help="the routes a call to NUMBER would take now, in order, with their buy prices",
        description="What a grant would choose, in order, without reserving anything: the carrier, gateway,"
        " longest prefix and first-minute buy price of each route, against the tariff's sell"
        " price. Carriers at their channel limit right now are left out, as for a call.",
    )
    route.add_argument("number")
    route.add_argument("--tariff", required=True, help="the sell side: the card's tariff")
    route.add_argument("--allow-loss", action="store_true", help="as calling_card.route_at_a_loss: true")
    route.set_defaults(func=run_carrier_route)


def run_carrier_add(args: argparse.Namespace, settings: Any) -> int:
    with operator_database(settings) as db:
        try:
            cid = carriers.create_carrier(
                db.pool,
                args.name,
                currency=args.currency,
                gateways=args.gateway,
                priority=args.priority,
                channel_limit=args.channel_limit,
            )
        except CatalogError as exc:
            return refuse(exc)
    limit = f", at most {args.channel_limit} calls" if args.channel_limit else ""
    print(
        f"carrier {args.name} ({args.currency}) created, id {cid}, {len(args.gateway)} gateway(s),"
        f" priority {args.priority}{limit}"
    )
    return 0


def run_carrier_list(args: argparse.Namespace, settings: Any) -> int:
    with operator_database(settings) as db:
        found = carriers.list_carriers(db.pool)
    print("carrier\tcurrency\tenabled\tpriority\tchannel limit\tcalls up\tbuy rates\tgateways")
    for c in found:
        print(
            f"{c.name}\t{c.currency}\t{'yes' if c.enabled else 'no'}\t{c.priority}"
            f"\t{c.channel_limit if c.channel_limit is not None else '-'}\t{c.open_calls}\t{c.rates}"
            f"\t{' | '.join(c.gateways)}"
        )
    return 0


def run_carrier_enable(args: argparse.Namespace, settings: Any) -> int:
    with operator_database(settings) as db:
        try:
            carriers.set_enabled(db.pool, args.name, args.enabled)
        except CatalogError as exc:
            return refuse(exc)
    print(f"carrier {args.name} {'enabled' if args.enabled else 'disabled'}")
    return 0


def run_carrier_rates_import(args: argparse.Namespace, settings: Any) -> int:
    return import_deck(args, settings, CARRIER_DECK, args.carrier)


def run_carrier_route(args: argparse.Namespace, settings: Any) -> int:
    if not args.number.isascii() or not args.number.isdigit():
        return refuse(f"a number is digits only, got {args.number!r}")
    with operator_database(settings) as db, db.pool.connection() as conn:
        try:
            with conn.transaction(force_rollback=True):
                sell, currency, routes = routes_in_order(conn, args.number, args.tariff, allow_loss=args.allow_loss)
        except CatalogError as exc:
            return refuse(exc)
    if sell is None or sell.forbidden:
        print(f"{args.number}: {'forbidden' if sell else 'no rate'} in tariff {args.tariff}: calls are refused")
        return 1
    sell_minute = call_cost(sell, FIRST_MINUTE_S)
    print(
        f"sell: tariff {args.tariff} prefix {sell.prefix or '(catch-all)'}, first minute"
        f" {format_money(sell_minute, currency)}"
    )
    if not routes:
        print(
            'no route: the caller hears "destination unavailable" (or, with no carrier at all,'
            " daemon.dial_string is dialled)"
        )
        return 1
    print("#\tcarrier\tgateway\tprefix\tbuy first minute\tmargin first minute")
    for n, r in enumerate(routes, 1):
        print(
            f"{n}\t{r.carrier}\t{r.gateway}\t{r.buy.prefix or '(catch-all)'}\t{format_money(r.first_minute)}"
            f"\t{format_money(sell_minute - r.first_minute)}"
        )
    return 0
