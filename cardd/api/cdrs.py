"""/cdrs (JSON or CSV, filtered) and /reservations (list, settle, release)."""

from __future__ import annotations

import csv
import io
import uuid
from typing import Any

from flask import Response
from flask.views import MethodView
from flask_smorest import Blueprint

from cardd.api import schemas as s
from cardd.api.app import READ, WRITE, after_of, allow, card_id_for, idempotent, owner_scope, pool, who
from cardd.api.cards import page_json
from cardd.billing import apistore, operator

blp = Blueprint("cdrs", __name__, url_prefix="/cdrs", description="Call detail records")
reservations_blp = Blueprint(
    "reservations",
    __name__,
    url_prefix="/reservations",
    description="Open reservations (calls in progress or orphaned)",
)

CSV_FIELDS = (
    "id",
    "b_uuid",
    "a_uuid",
    "card",
    "currency",
    "cli",
    "cld",
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
)


@blp.route("")
class Cdrs(MethodView):
    @blp.arguments(s.CdrListArgs, location="query")
    @blp.response(200, s.page_of(s.CdrSchema), content_type="application/json")
    @blp.alt_response(
        200,
        description="format=csv: the same page as CSV (next cursor in the Next-Cursor header)",
        content_type="text/csv",
        success=True,
    )
    @allow(READ)
    def get(self, args: dict[str, Any]) -> Any:
        """CDRs newest first, filtered by card, customer, end time [from, to), destination prefix, hangup cause."""
        owner = owner_scope()
        card_id = card_id_for(args["card"]) if "card" in args else None
        customer_id = apistore.customer_visible(pool(), args["customer"], owner) if "customer" in args else None
        page = apistore.cdrs_page(
            pool(),
            owner=owner,
            card_id=card_id,
            customer_id=customer_id,
            start=args.get("start"),
            end=args.get("end"),
            destination_prefix=args.get("destination"),
            cause=args.get("cause"),
            after=after_of(args["cursor"]),
            limit=args["limit"],
        )
        items = [{"id": i, **c.__dict__} for i, c in page.items]
        if args["format"] == "csv":
            return _csv(items, apistore.encode_cursor(page.next_after))
        return page_json(page, items)


def _csv(items: list[dict[str, Any]], next_cursor: str | None) -> Response:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    schema = s.CdrSchema()
    for item in items:
        row = schema.dump(item)
        writer.writerow(
            [
                "" if row.get(f) is None else str(row[f]).lower() if isinstance(row[f], bool) else row[f]
                for f in CSV_FIELDS
            ]
        )
    response = Response(out.getvalue(), content_type="text/csv; charset=utf-8")
    if next_cursor:
        response.headers["Next-Cursor"] = next_cursor
    return response


@reservations_blp.route("")
class Reservations(MethodView):
    @reservations_blp.arguments(s.ReservationListArgs, location="query")
    @reservations_blp.response(200, s.page_of(s.ReservationSchema))
    @allow(READ)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """Open reservations, oldest first, with what cardd recorded of each call."""
        card_id = card_id_for(args["card"]) if "card" in args else None
        page = apistore.reservations_page(
            pool(),
            owner=owner_scope(),
            card_id=card_id,
            expired_only=args["expired"],
            after=after_of(args["cursor"]),
            limit=args["limit"],
        )
        return page_json(page, page.items)


def _close(b_uuid: uuid.UUID, billed_seconds: int | None, body: dict[str, Any]) -> Any:
    apistore.reservation_visible(pool(), b_uuid, owner_scope())

    def work(pool_like: Any) -> dict[str, Any]:
        done = operator.close_reservation(
            pool_like, b_uuid, billed_seconds=billed_seconds, who=who(), reason=body["reason"], force=body["force"]
        )
        return {
            "card": done.card,
            "b_uuid": b_uuid,
            "billed_seconds": done.cdr.billed_seconds,
            "cost": done.cdr.cost,
            "currency": done.currency,
            "balance": done.balance,
        }

    return idempotent(200, s.ClosureSchema(), work)


_IDEMPOTENCY = [{"in": "header", "name": "Idempotency-Key", "required": True, "schema": {"type": "string"}}]


@reservations_blp.route("/<uuid:b_uuid>/settle")
class Settle(MethodView):
    @reservations_blp.arguments(s.SettleSchema)
    @reservations_blp.response(200, s.ClosureSchema)
    @reservations_blp.doc(parameters=_IDEMPOTENCY)
    @allow(WRITE)
    def post(self, body: dict[str, Any], b_uuid: uuid.UUID) -> Any:
        """Settle an expired open reservation at the given billed seconds (never twice). Needs an Idempotency-Key."""
        return _close(b_uuid, body["billed_seconds"], body)


@reservations_blp.route("/<uuid:b_uuid>/release")
class Release(MethodView):
    @reservations_blp.arguments(s.ReleaseSchema)
    @reservations_blp.response(200, s.ClosureSchema)
    @reservations_blp.doc(parameters=_IDEMPOTENCY)
    @allow(WRITE)
    def post(self, body: dict[str, Any], b_uuid: uuid.UUID) -> Any:
        """Release an expired open reservation at no charge. Needs an Idempotency-Key."""
        return _close(b_uuid, None, body)
