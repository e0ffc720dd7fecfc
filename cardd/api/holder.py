"""Card holders: sign in with card number + PIN, then see only their own card, balance and
calls, and top up with a voucher."""

from __future__ import annotations

from typing import Any

from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint

from cardd.api import schemas as s
from cardd.api.app import after_of, config, idempotent, pool, principal, who
from cardd.api.cards import card_json, page_json
from cardd.billing import apiauth, apistore
from cardd.errors import Problem

blp = Blueprint("card holder", __name__, url_prefix="", description="A card holder's own card")


@blp.route("/session")
class SessionView(MethodView):
    @blp.arguments(s.SignInSchema)
    @blp.response(201, s.SessionSchema)
    @blp.doc(security=[])
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Sign in with card number + PIN. Throttled like the IVR (per card, per client address);
        a wrong number and a wrong PIN get the same answer."""
        session = apiauth.sign_in(
            pool(),
            config().limits,
            body["number"],
            body["pin"],
            peer=request.remote_addr or "unknown",
            lifetime_s=config().session_lifetime_s,
        )
        return {"token": session.token, "expires_at": session.expires_at, "card": body["number"]}

    @blp.response(204)
    def delete(self) -> None:
        """Sign out: the session token stops working."""
        _holder()
        apiauth.sign_out(pool(), request.headers.get("Authorization", "").partition(" ")[2].strip())


def _holder() -> int:
    p = principal()
    if p.kind != "card" or p.card_id is None:
        raise Problem(403, "Forbidden", "only a signed-in card holder has a card of their own")
    return p.card_id


@blp.route("/me")
class Me(MethodView):
    @blp.response(200, s.CardSchema)
    def get(self) -> dict[str, Any]:
        """The signed-in card: balance and available credit."""
        return card_json(apistore.card_row(pool(), _holder()))


@blp.route("/me/calls")
class MyCalls(MethodView):
    @blp.arguments(s.PageArgs, location="query")
    @blp.response(200, s.page_of(s.CdrSchema))
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """The signed-in card's calls, newest first."""
        page = apistore.cdrs_page(pool(), card_id=_holder(), after=after_of(args["cursor"]), limit=args["limit"])
        return page_json(page, [{"id": i, **c.__dict__} for i, c in page.items])


@blp.route("/me/history")
class MyHistory(MethodView):
    @blp.arguments(s.PageArgs, location="query")
    @blp.response(200, s.page_of(s.LedgerEntrySchema))
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """The signed-in card's ledger (calls, top-ups, adjustments), newest first."""
        page = apistore.ledger_page(pool(), _holder(), after=after_of(args["cursor"]), limit=args["limit"])
        return page_json(page, page.items)


@blp.route("/me/topup")
class MyTopup(MethodView):
    @blp.arguments(s.RedeemSchema)
    @blp.response(200, s.RedeemedSchema)
    @blp.doc(parameters=[{"in": "header", "name": "Idempotency-Key", "required": True, "schema": {"type": "string"}}])
    def post(self, body: dict[str, Any]) -> Any:
        """Top up the signed-in card with a voucher, under the IVR's top-up throttle. Needs an Idempotency-Key."""
        card_id = _holder()
        number = body["voucher"]

        def work(pool_like: Any) -> dict[str, Any]:
            gated = apistore.redeem_voucher_throttled(
                pool_like,
                config().topup_limits,
                who=who(),
                card=principal().name,
                card_id=card_id,
                number=number,
                remote=request.remote_addr,
            )
            if not gated.allowed:
                raise Problem(429, "Too Many Requests", "too many failed top-ups; try again later")
            result = gated.value
            if not result.ok:
                # One answer for every reason: a refusal must not say which voucher numbers exist.
                raise Problem(422, "Unprocessable Content", "this voucher cannot be used for this card")
            return {"voucher": number, "amount": result.amount, "currency": result.currency, "balance": result.balance}

        return idempotent(200, s.RedeemedSchema(), work)
