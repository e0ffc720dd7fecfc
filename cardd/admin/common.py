"""What every operator command shares: argparse value types (amounts, currencies, seconds, digits, dates),
the --by audit flag and who ran the command, the guard flags, the sub-command lookup that lets several modules
add to `card` and `rate`, the operator's database, and the one-line refusal (`cardd: ...`, exit status 2).

Imports nothing of cardd.admin: the command modules import it, never each other's parsers.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from cardd.db import Database, open_for_operator
from cardd.digits import is_digits, whole_number
from cardd.money import check_currency, parse_amount


def _amount(text: str) -> Decimal:
    try:
        return parse_amount(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad amount {text!r}: {exc}") from None


def _non_negative_amount(text: str) -> Decimal:
    value = _amount(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"bad amount {text!r}: must not be negative")
    return value


def _currency(text: str) -> str:
    try:
        return check_currency(text.upper())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds(minimum: int):
    def parse(text: str) -> int:
        try:
            value = whole_number(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number of seconds: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def _digits(what: str):
    def parse(text: str) -> str:
        if not is_digits(text) and not (what == "prefix" and text == ""):
            raise argparse.ArgumentTypeError(f"a {what} is digits only, got {text!r}")
        return text

    return parse


def when(text: str) -> datetime:
    """A date or date-time argument (YYYY-MM-DD[THH:MM]); naive values are UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD[THH:MM]): {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def add_guard_flags(parser: argparse.ArgumentParser) -> None:
    """--allow-negative and --allow-past-expiry: say that an odd value is meant."""
    parser.add_argument("--allow-negative", action="store_true", help="allow a negative starting balance")
    parser.add_argument("--allow-past-expiry", action="store_true", help="allow an expiry date in the past")


def guard(args: argparse.Namespace, *, balance: Decimal | None = None, expires: datetime | None = None) -> str | None:
    """Why a negative balance or a past expiry is refused (None: fine or meant)."""
    if balance is not None and balance < 0 and not getattr(args, "allow_negative", False):
        return f"a starting balance of {balance} is negative; give --allow-negative if that is meant"
    if expires is not None and expires <= datetime.now(UTC) and not getattr(args, "allow_past_expiry", False):
        return (
            f"expiry {expires.astimezone(UTC):%Y-%m-%d %H:%M} UTC is in the past;"
            " give --allow-past-expiry if that is meant"
        )
    return None


def add_by(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--by", default=None, metavar="NAME", help="who is doing this, for the audit (default: the OS user)"
    )


def operator_name(args: argparse.Namespace) -> str:
    """Who runs an audited command: --by, else the OS user (and who sudo'ed to it)."""
    if getattr(args, "by", None):
        return str(args.by)
    try:
        user = getpass.getuser()
    except Exception:  # no login name in the environment or the password database
        user = f"uid {os.getuid()}"
    sudo = os.environ.get("SUDO_USER")
    return f"{sudo} (as {user})" if sudo and sudo != user else user


def sub_commands(subparsers: Any, name: str, help_text: str, dest: str) -> Any:
    """The sub-command action of `name`: the one already registered (several
    modules add to `card` and `rate`), else a new one."""
    parser = subparsers.choices.get(name)
    if parser is None:
        parser = subparsers.add_parser(name, help=help_text)
        return parser.add_subparsers(dest=dest, required=True)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return parser.add_subparsers(dest=dest, required=True)


@contextlib.contextmanager
def operator_database(settings: Any, *, migrate: bool = False) -> Iterator[Database]:
    """The database for one operator command; only `db migrate` passes migrate=True."""
    db = open_for_operator(settings, migrate=migrate)
    try:
        yield db
    finally:
        db.close()


def refuse(message: object) -> int:
    """An operator command's refusal: one `cardd: …` line, exit status 2."""
    print(f"cardd: {message}", file=sys.stderr)
    return 2
