"""What a card may dial and who may call with it: trusted CLIs (/cards/{n}/clis), hot dial
(/cards/{n}/hotdial), smart dial (/smartdial, /cards/{n}/smartdial), the black list (/blacklist);
and the cardd processes with their live calls (/nodes)."""

from __future__ import annotations

import re
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from cardd.api import schemas as s
from cardd.api.app import ADMIN, READ, WRITE, after_of, allow, card_id_for, owner_scope, pool, who
from cardd.api.cards import page_json
from cardd.billing import apistore, identity
from cardd.errors import NotVisible, Problem

cards_blp = Blueprint(
    "card dialling",
    __name__,
    url_prefix="/cards",
    description="A card's trusted CLIs, hot-dial keys and smart-dial DIDs",
)
smartdial_blp = Blueprint("smart dial", __name__, url_prefix="/smartdial", description="Smart-dial DIDs")
blacklist_blp = Blueprint("blacklist", __name__, url_prefix="/blacklist", description="Black-listed CLIs")
nodes_blp = Blueprint("nodes", __name__, url_prefix="/nodes", description="cardd processes and their live calls")

HOT_KEY = r"[0-9]{1,2}"


def _one_page(items: list[Any]) -> dict[str, Any]:
    # Per-card lists are short (a handful of CLIs, at most 100 hot-dial keys): one page.
    return {"items": items, "next_cursor": None}


# --- trusted CLIs -------------------------------------------------------------------------------


@cards_blp.route("/<string:number>/clis")
class CardClis(MethodView):
    @cards_blp.response(200, s.page_of(s.CliMapSchema))
    @allow(READ)
    def get(self, number: str) -> dict[str, Any]:
        """The CLIs that identify this card without its number (PIN-less when trusted)."""
        card_id = card_id_for(number)
        return _one_page([{"cli": cli, "card": card} for cli, card in identity.cli_map(pool(), card_id)])


@cards_blp.route("/<string:number>/clis/<string:cli>")
class CardCli(MethodView):
    @cards_blp.arguments(s.CliMapArgs, location="query")
    @cards_blp.response(200, s.CliMapSchema)
    @allow(WRITE)
    def put(self, args: dict[str, Any], number: str, cli: str) -> dict[str, Any]:
        """Map a CLI to this card. A CLI mapped to another card is refused unless replace=true
        (and a reseller may take it only from its own cards)."""
        card_id = card_id_for(number)
        current = identity.card_id_for_cli(pool(), cli)
        if current is not None and current != card_id and owner_scope() is not None:
            raise Problem(409, "Conflict", f"CLI {cli} belongs to another card")
        with apistore.transaction(pool()) as (conn, one):
            if not identity.map_cli(one, cli, card_id, replace=args["replace"]):
                raise Problem(409, "Conflict", f"CLI {cli} belongs to another card; give replace=true to move it")
            apistore.audit(
                conn,
                who(),
                "cli map",
                {"cli": cli, "card": number, "replace": args["replace"]},
                account_id=card_id,
                detail=f"CLI {cli} -> card {number}",
            )
        return {"cli": cli, "card": number}

    @cards_blp.response(204)
    @allow(WRITE)
    def delete(self, number: str, cli: str) -> None:
        card_id = card_id_for(number)
        if identity.card_id_for_cli(pool(), cli) != card_id:
            raise NotVisible(f"CLI {cli} is not mapped to card {number}")
        with apistore.transaction(pool()) as (conn, one):
            identity.unmap_cli(one, cli)
            apistore.audit(
                conn, who(), "cli unmap", {"cli": cli, "card": number}, account_id=card_id, detail=f"CLI {cli} unmapped"
            )


# --- hot dial ---------------------------------------------------------------------------------------


@cards_blp.route("/<string:number>/hotdial")
class CardHotDials(MethodView):
    @cards_blp.response(200, s.page_of(s.HotDialSchema))
    @allow(READ)
    def get(self, number: str) -> dict[str, Any]:
        card_id = card_id_for(number)
        return _one_page([{"key": k, "destination": d} for k, d in identity.hot_dial_list(pool(), card_id)])


@cards_blp.route("/<string:number>/hotdial/<string:key>")
class CardHotDial(MethodView):
    @cards_blp.arguments(s.HotDialSchema)
    @cards_blp.response(200, s.HotDialSchema)
    @allow(WRITE)
    def put(self, body: dict[str, Any], number: str, key: str) -> dict[str, Any]:
        """Set what key 0-99 dials for this card."""
        if not re.fullmatch(HOT_KEY, key):
            raise Problem(
                422,
                "Unprocessable Content",
                "a hot-dial key is 1 or 2 digits",
                invalid_params=[{"name": "key", "reason": "1 or 2 digits 0-9"}],
            )
        card_id = card_id_for(number)
        with apistore.transaction(pool()) as (conn, one):
            identity.hot_dial_set(one, card_id, key, body["destination"])
            apistore.audit(
                conn,
                who(),
                "hotdial set",
                {"card": number, "key": key, **body},
                account_id=card_id,
                detail=f"card {number}: key {key} -> {body['destination']}",
            )
        return {"key": key, "destination": body["destination"]}

    @cards_blp.response(204)
    @allow(WRITE)
    def delete(self, number: str, key: str) -> None:
        card_id = card_id_for(number)
        with apistore.transaction(pool()) as (conn, one):
            if not identity.hot_dial_remove(one, card_id, key):
                raise NotVisible(f"card {number} has no hot-dial key {key}")
            apistore.audit(
                conn,
                who(),
                "hotdial remove",
                {"card": number, "key": key},
                account_id=card_id,
                detail=f"card {number}: key {key} removed",
            )


# --- smart dial -------------------------------------------------------------------------------------


def _smart_json(row: apistore.SmartDialRow) -> dict[str, Any]:
    return {"did": row.did, "card": row.card, "destination": row.destination, "exclusive": row.exclusive}


@smartdial_blp.route("")
class SmartDials(MethodView):
    @smartdial_blp.arguments(s.PageArgs, location="query")
    @smartdial_blp.response(200, s.page_of(s.SmartDialSchema))
    @allow(READ)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        page = apistore.smart_dial_page(
            pool(), owner=owner_scope(), after=after_of(args["cursor"]), limit=args["limit"]
        )
        return page_json(page, [_smart_json(r) for r in page.items])


@cards_blp.route("/<string:number>/smartdial/<string:did>")
class CardSmartDial(MethodView):
    @cards_blp.arguments(s.SmartDialSchema)
    @cards_blp.response(200, s.SmartDialSchema)
    @allow(WRITE)
    def put(self, body: dict[str, Any], number: str, did: str) -> dict[str, Any]:
        """Calls to `did` from this card's trusted CLIs go straight to `destination`."""
        card_id = card_id_for(number)
        with apistore.transaction(pool()) as (conn, one):
            identity.smart_dial_add(one, did, card_id, body["destination"], exclusive=body["exclusive"])
            apistore.audit(
                conn,
                who(),
                "smartdial add",
                {"card": number, "did": did, **body},
                account_id=card_id,
                detail=f"DID {did} for card {number} -> {body['destination']}",
            )
        return {"did": did, "card": number, **body}

    @cards_blp.response(204)
    @allow(WRITE)
    def delete(self, number: str, did: str) -> None:
        card_id = card_id_for(number)
        with apistore.transaction(pool()) as (conn, one):
            if not identity.smart_dial_remove(one, did, card_id):
                raise NotVisible(f"card {number} has no smart-dial DID {did}")
            apistore.audit(
                conn,
                who(),
                "smartdial remove",
                {"card": number, "did": did},
                account_id=card_id,
                detail=f"DID {did} for card {number} removed",
            )


# --- black list (the operator's) ----------------------------------------------------------------------


@blacklist_blp.route("")
class Blacklist(MethodView):
    @blacklist_blp.arguments(s.BlacklistArgs, location="query")
    @blacklist_blp.response(200, s.page_of(s.BlacklistSchema))
    @allow(("admin", "readonly"))
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        try:
            after = apistore.decode_text_cursor(args["cursor"])
        except ValueError as exc:
            raise Problem(
                400, "Bad Request", str(exc), invalid_params=[{"name": "cursor", "reason": str(exc)}]
            ) from None
        rows, last = apistore.blacklist_page(pool(), blocked_only=not args["all"], after=after, limit=args["limit"])
        return {"items": rows, "next_cursor": apistore.encode_text_cursor(last)}


@blacklist_blp.route("/<string:cli>")
class BlacklistEntry(MethodView):
    @blacklist_blp.arguments(s.BlacklistSchema)
    @blacklist_blp.response(204)
    @allow(ADMIN)
    def put(self, body: dict[str, Any], cli: str) -> None:
        """Block a CLI: its calls are refused before anything is asked."""
        with apistore.transaction(pool()) as (conn, one):
            identity.blacklist_add(one, cli, body["reason"] or "added by the operator")
            apistore.audit(
                conn, who(), "blacklist add", {"cli": cli, "reason": body["reason"]}, detail=f"CLI {cli} blocked"
            )

    @blacklist_blp.response(204)
    @allow(ADMIN)
    def delete(self, cli: str) -> None:
        with apistore.transaction(pool()) as (conn, one):
            if not identity.blacklist_remove(one, cli):
                raise NotVisible(f"CLI {cli} is not on the black list")
            apistore.audit(conn, who(), "blacklist remove", {"cli": cli}, detail=f"CLI {cli} unblocked")


# --- live calls ------------------------------------------------------------------------------------------


@nodes_blp.route("")
class Nodes(MethodView):
    @nodes_blp.response(200, s.page_of(s.NodeSchema))
    @allow(READ)
    def get(self) -> dict[str, Any]:
        """The cardd processes sharing this database and the calls each has up now (read-only; one page).
        A reseller counts only its own cards' calls."""
        return {"items": apistore.live_nodes(pool(), owner=owner_scope()), "next_cursor": None}
