"""`cardd apikey add|list|revoke`: the keys of the HTTP API (`cardd api`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cardd.admin.common import add_by, operator_database, operator_name
from cardd.billing import apiauth


def add_parsers(subparsers: Any) -> None:
    apikey = subparsers.add_parser("apikey", help="keys of the HTTP API (cardd api)")
    sub = apikey.add_subparsers(dest="apikey_command", required=True)
    add = sub.add_parser("add", help="create a key; it is printed once and never again")
    add.add_argument("name", help="what the key is for (shown in lists and in the audit)")
    add.add_argument(
        "--role",
        choices=apiauth.ROLES,
        required=True,
        help="admin: everything; reseller: only its customers and their cards; readonly: reads",
    )
    add.add_argument("--owner", help="reseller keys: the reseller its customers belong to")
    add_by(add)
    add.set_defaults(func=run_apikey_add)
    lst = sub.add_parser("list", help="list keys (never their secrets)")
    lst.set_defaults(func=run_apikey_list)
    revoke = sub.add_parser("revoke", help="revoke a key by its id: it stops working at once")
    revoke.add_argument("key_id", help="the 12 hex digits after cardd_ (or the whole key)")
    add_by(revoke)
    revoke.set_defaults(func=run_apikey_revoke)


def run_apikey_add(args: argparse.Namespace, settings: Any) -> int:
    with operator_database(settings) as db:
        key = apiauth.create_key(db.pool, args.name, args.role, owner=args.owner, who=operator_name(args))
    print(key)
    print("cardd: keep this key now: it is stored hashed and cannot be shown again", file=sys.stderr)
    return 0


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else "-"


def run_apikey_list(args: argparse.Namespace, settings: Any) -> int:
    with operator_database(settings) as db:
        keys = apiauth.list_keys(db.pool)
    print("key_id\tname\trole\towner\tcreated\tlast_used\trevoked")
    for k in keys:
        print(
            f"{k.key_id}\t{k.name}\t{k.role}\t{k.owner or '-'}\t{_when(k.created_at)}\t{_when(k.last_used_at)}"
            f"\t{_when(k.revoked_at)}"
        )
    return 0


def run_apikey_revoke(args: argparse.Namespace, settings: Any) -> int:
    with operator_database(settings) as db:
        apiauth.revoke_key(db.pool, args.key_id, who=operator_name(args))
    print(f"revoked {args.key_id[:18]}")
    return 0
