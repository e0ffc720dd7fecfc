"""/cards: create, list, show (available credit and history), adjust, block/unblock, set PIN."""

from __future__ import annotations

import csv
import io
from typing import Any

from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint

from cardd.api import schemas as s
from cardd.api.app import ADMIN, READ, WRITE, after_of, allow, card_id_for, idempotent, owner_scope, pool, who
from cardd.billing import apiauth, apistore, cardadmin, operator
from cardd.errors import CardImportRefused, Problem

blp = Blueprint("cards", __name__, url_prefix="/cards", description="Calling cards")

HISTORY_ON_SHOW = 20


def card_json(row: apistore.CardRow) -> dict[str, Any]:
    c = row.summary
    return {
        "number": c.username,
        "status": c.status,
        "balance": c.balance,
        "available": c.available,
        "currency": c.currency,
        "tariff": c.tariff,
        "customer": c.customer,
        "plan": c.plan,
        "open_reservations": c.open_reservations,
        "expires_at": row.expires_at,
        "created_at": row.created_at,
    }


def page_json(page: apistore.Page[Any], items: list[Any]) -> dict[str, Any]:
    return {"items": items, "next_cursor": apistore.encode_cursor(page.next_after)}


@blp.route("")
class Cards(MethodView):
    @blp.arguments(s.CardListArgs, location="query")
    @blp.response(200, s.page_of(s.CardSchema))
    @allow(READ)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """Cards by id, filtered; a reseller sees only its customers' cards."""
        page = apistore.cards_page(
            pool(),
            owner=owner_scope(),
            status=args.get("status"),
            customer=args.get("customer"),
            tariff=args.get("tariff"),
            number_prefix=args.get("number_prefix"),
            balance_below=args.get("balance_below"),
            after=after_of(args["cursor"]),
            limit=args["limit"],
        )
        return page_json(page, [card_json(r) for r in page.items])

    @blp.arguments(s.CardCreateSchema)
    @blp.response(201, s.CardSchema)
    @allow(WRITE)
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create a card; its starting balance is an 'initial' ledger row. A reseller must name one of its
        customers."""
        if owner_scope() is not None:
            if body["customer"] is None:
                raise Problem(
                    422,
                    "Unprocessable Content",
                    "a reseller's card belongs to one of its customers",
                    invalid_params=[{"name": "customer", "reason": "required for a reseller key"}],
                )
            apistore.customer_visible(pool(), body["customer"], owner_scope())
        number = body.pop("number")
        card_id = operator.add_card(pool(), number, who=who(), allow_negative=False, **{k: v for k, v in body.items()})
        return card_json(apistore.card_row(pool(), card_id))


@blp.route("/<string:number>")
class Card(MethodView):
    @blp.response(200, s.CardDetailSchema)
    @allow(READ)
    def get(self, number: str) -> dict[str, Any]:
        """A card with its available credit (balance minus open reservations) and newest ledger rows."""
        card_id = card_id_for(number)
        history = apistore.ledger_page(pool(), card_id, limit=HISTORY_ON_SHOW)
        return {
            **card_json(apistore.card_row(pool(), card_id)),
            "history": history.items,
            "history_cursor": apistore.encode_cursor(history.next_after),
        }


@blp.route("/<string:number>/history")
class CardHistory(MethodView):
    @blp.arguments(s.PageArgs, location="query")
    @blp.response(200, s.page_of(s.LedgerEntrySchema))
    @allow(READ)
    def get(self, args: dict[str, Any], number: str) -> dict[str, Any]:
        """The card's ledger, newest first."""
        page = apistore.ledger_page(pool(), card_id_for(number), after=after_of(args["cursor"]), limit=args["limit"])
        return page_json(page, page.items)


@blp.route("/<string:number>/adjust")
class CardAdjust(MethodView):
    @blp.arguments(s.AdjustSchema)
    @blp.response(200, s.BalanceSchema)
    @blp.doc(parameters=[{"in": "header", "name": "Idempotency-Key", "required": True, "schema": {"type": "string"}}])
    @allow(WRITE)
    def post(self, body: dict[str, Any], number: str) -> Any:
        """Credit or debit the card (an 'adjustment' ledger row). Needs an Idempotency-Key."""
        card_id = card_id_for(number)

        def work(pool_like: Any) -> dict[str, Any]:
            # Only pool_like in here: this transaction holds the key's lock, and waiting for a second
            # connection while others wait for the lock would starve the pool.
            balance = operator.adjust_card(
                pool_like,
                number,
                body["amount"],
                who=who(),
                reference=body["reference"],
                allow_negative=body["allow_negative"],
            )
            currency = apistore.card_row(pool_like, card_id).summary.currency
            return {"number": number, "balance": balance, "currency": currency}

        return idempotent(200, s.BalanceSchema(), work)


def _status(number: str, status: str) -> dict[str, Any]:
    card_id_for(number)
    operator.set_card_status(pool(), number, status, who=who())
    return {"number": number, "status": status}


@blp.route("/<string:number>/block")
class CardBlock(MethodView):
    @blp.response(200, s.StatusSchema)
    @allow(WRITE)
    def post(self, number: str) -> dict[str, Any]:
        """Block the card: it cannot place calls until unblocked."""
        return _status(number, "blocked")


@blp.route("/<string:number>/unblock")
class CardUnblock(MethodView):
    @blp.response(200, s.StatusSchema)
    @allow(WRITE)
    def post(self, number: str) -> dict[str, Any]:
        return _status(number, "active")


@blp.route("/<string:number>/pin")
class CardPin(MethodView):
    @blp.arguments(s.PinSchema)
    @blp.response(204)
    @allow(WRITE)
    def put(self, body: dict[str, Any], number: str) -> None:
        """Set (or with "" clear) the card's PIN. The PIN is never echoed nor audited. The card
        holder's sessions end: whoever signed in with the old PIN must sign in again."""
        card_id = card_id_for(number)
        with apistore.transaction(pool()) as (conn, one):
            operator.set_card_pin(one, number, body["pin"], who=who())
            apiauth.end_sessions(conn, card_id)


@blp.route("/<string:number>/transfer")
class CardTransfer(MethodView):
    @blp.arguments(s.TransferSchema)
    @blp.response(200, s.TransferredSchema)
    @blp.doc(parameters=[{"in": "header", "name": "Idempotency-Key", "required": True, "schema": {"type": "string"}}])
    @allow(WRITE)
    def post(self, body: dict[str, Any], number: str) -> Any:
        """Move credit to another card of the same currency (only what open calls have not reserved).
        Needs an Idempotency-Key."""
        card_id_for(number)
        card_id_for(body["to"])

        def work(pool_like: Any) -> dict[str, Any]:
            done = operator.transfer_credit(pool_like, number, body["to"], body["amount"], who=who())
            return {
                "from_card": number,
                "to": body["to"],
                "amount": done.amount,
                "currency": done.currency,
                "from_balance": done.from_balance,
                "to_balance": done.to_balance,
            }

        return idempotent(200, s.TransferredSchema(), work)


@blp.route("/<string:number>/terms")
class CardTerms(MethodView):
    @blp.arguments(s.CardPatchSchema)
    @blp.response(200, s.CardSchema)
    @allow(WRITE)
    def patch(self, body: dict[str, Any], number: str) -> dict[str, Any]:
        """Change a card's expiry, service plan or customer (each field given; null removes it).
        A reseller may move a card only between its own customers, and not off them."""
        card_id = card_id_for(number)
        if owner_scope() is not None and "customer" in body:
            if body["customer"] is None:
                raise Problem(403, "Forbidden", "a reseller's card stays with one of its customers")
            apistore.customer_visible(pool(), body["customer"], owner_scope())
        with apistore.transaction(pool()) as (_, one):
            if "expires_at" in body:
                cardadmin.set_expiry(one, number, body["expires_at"], who=who())
            if "plan" in body:
                operator.assign_plan(one, [number], body["plan"], who=who())
            if "customer" in body:
                operator.assign_customer(one, [number], body["customer"], who=who())
        return card_json(apistore.card_row(pool(), card_id))


@blp.route("/batch")
class CardBatch(MethodView):
    @blp.arguments(s.BatchSchema)
    @blp.response(
        201, description="number,pin,balance,currency: the PINs are shown in this answer only", content_type="text/csv"
    )
    @blp.doc(parameters=[{"in": "header", "name": "Idempotency-Key", "required": True, "schema": {"type": "string"}}])
    @allow(ADMIN)
    def post(self, body: dict[str, Any]) -> Any:
        """Generate a batch of random cards, all or none, as CSV. The PINs are in this answer only: they are
        stored hashed, and a repeat of the request (same Idempotency-Key) gets the numbers with the PIN
        column empty. Needs an Idempotency-Key."""

        def work(pool_like: Any) -> list[cardadmin.NewCard]:
            return cardadmin.generate_cards(pool_like, body.pop("count"), who=who(), **body)

        def as_csv(cards: list[cardadmin.NewCard], *, pins: bool = True) -> tuple[str, str]:
            out = io.StringIO()
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(["number", "pin", "balance", "currency"])
            for card in cards:
                writer.writerow([card.number, card.pin if pins else "", f"{body['balance']:.5f}", body["currency"]])
            return out.getvalue(), "text/csv; charset=utf-8"

        return idempotent(201, None, work, render=as_csv, stored=lambda cards: as_csv(cards, pins=False))


@blp.route("/import")
class CardImport(MethodView):
    @blp.arguments(s.CardImportArgs, location="query")
    @blp.response(201, s.CardImportResultSchema)
    @blp.doc(requestBody={"required": True, "content": {"text/csv": {"schema": {"type": "string"}}}})
    @allow(WRITE)
    def post(self, args: dict[str, Any]) -> dict[str, Any]:
        """Import cards from CSV (`number[,pin,balance,expires]`, the format of `cardd card import`), all or
        nothing: a file with bad rows creates nothing and the answer lists every bad row with its line.
        A reseller imports into one of its own customers."""
        if owner_scope() is not None:
            if "customer" not in args:
                raise Problem(
                    422,
                    "Unprocessable Content",
                    "a reseller's cards belong to one of its customers",
                    invalid_params=[{"name": "customer", "reason": "required for a reseller key"}],
                )
            apistore.customer_visible(pool(), args["customer"], owner_scope())
        try:
            text = request.get_data().decode("utf-8")
        except UnicodeDecodeError:
            raise Problem(422, "Unprocessable Content", "the CSV is not UTF-8 text") from None
        try:
            count = operator.import_cards(pool(), io.StringIO(text), who=who(), source="HTTP API", **args)
        except CardImportRefused as exc:
            raise Problem(
                422,
                "Unprocessable Content",
                f"{len(exc.errors)} bad rows of {exc.rows}; nothing imported",
                invalid_params=[{"name": f"line {line}", "reason": why} for line, why in exc.errors],
            ) from None
        return {"cards": count}
