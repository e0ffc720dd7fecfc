"""/tariffs (and their rates: CRUD, CSV import, longest-prefix lookup), /vouchers, /customers, /plans."""

from __future__ import annotations

import io
from typing import Any

from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint

from cardd.api import schemas as s
from cardd.api.app import ADMIN, READ, WRITE, after_of, allow, card_id_for, idempotent, owner_scope, pool, who
from cardd.api.cards import page_json
from cardd.billing import apistore, catalog, operator, vouchers
from cardd.billing.ledger import Ledger
from cardd.billing.rating import max_duration
from cardd.errors import NotVisible, Problem

tariffs_blp = Blueprint("tariffs", __name__, url_prefix="/tariffs", description="Tariffs and their rates")
vouchers_blp = Blueprint("vouchers", __name__, url_prefix="/vouchers", description="Prepaid vouchers")
customers_blp = Blueprint("customers", __name__, url_prefix="/customers", description="Customers")
plans_blp = Blueprint("plans", __name__, url_prefix="/plans", description="Service plans")

OPERATOR_READ = ("admin", "readonly")  # the catalogue is the operator's, not a reseller's
_IDEMPOTENCY = [{"in": "header", "name": "Idempotency-Key", "required": True, "schema": {"type": "string"}}]


# --- tariffs and rates ---------------------------------------------------------------------------


@tariffs_blp.route("")
class Tariffs(MethodView):
    @tariffs_blp.arguments(s.PageArgs, location="query")
    @tariffs_blp.response(200, s.page_of(s.TariffSchema))
    @allow(READ)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        page = apistore.tariffs_page(pool(), after=after_of(args["cursor"]), limit=args["limit"])
        return page_json(page, page.items)

    @tariffs_blp.arguments(s.TariffSchema)
    @tariffs_blp.response(201, s.TariffSchema)
    @allow(ADMIN)
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        with apistore.transaction(pool()) as (conn, one):
            catalog.create_tariff(one, body["name"], body["currency"])
            apistore.audit(conn, who(), "tariff add", body, detail=f"tariff {body['name']} ({body['currency']})")
        return {**body, "rates": 0}


@tariffs_blp.route("/<string:tariff>")
class Tariff(MethodView):
    @tariffs_blp.arguments(s.RenameSchema)
    @tariffs_blp.response(200, s.TariffSchema)
    @allow(ADMIN)
    def patch(self, body: dict[str, Any], tariff: str) -> dict[str, Any]:
        """Rename a tariff; its cards and rates follow."""
        with apistore.transaction(pool()) as (conn, one):
            catalog.rename_tariff(one, tariff, body["name"])
            apistore.audit(
                conn,
                who(),
                "tariff rename",
                {"name": tariff, "new_name": body["name"]},
                detail=f"tariff {tariff} renamed {body['name']}",
            )
        return _tariff_json(body["name"])

    @tariffs_blp.response(204)
    @allow(ADMIN)
    def delete(self, tariff: str) -> None:
        """Delete a tariff and its rates; refused (422) while any card uses it."""
        with apistore.transaction(pool()) as (conn, one):
            rates = catalog.delete_tariff(one, tariff)
            apistore.audit(
                conn, who(), "tariff delete", {"name": tariff}, detail=f"tariff {tariff} deleted with {rates} rates"
            )


def _tariff_json(name: str) -> dict[str, Any]:
    with pool().connection() as conn:
        tid, currency = catalog.tariff_id(conn, name)
        row = conn.execute("SELECT count(*) FROM rates WHERE tariff_id = %s", (tid,)).fetchone()
    return {"name": name, "currency": currency.strip(), "rates": row[0] if row else 0}


def _rate_json(rate: Any) -> dict[str, Any]:
    return {
        k: getattr(rate, k)
        for k in (
            "prefix",
            "price_1",
            "interval_1",
            "price_n",
            "interval_n",
            "connect_fee",
            "free_seconds",
            "grace",
            "forbidden",
        )
    }


@tariffs_blp.route("/<string:tariff>/rates")
class Rates(MethodView):
    @tariffs_blp.arguments(s.RateListArgs, location="query")
    @tariffs_blp.response(200, s.page_of(s.RateSchema))
    @allow(READ)
    def get(self, args: dict[str, Any], tariff: str) -> dict[str, Any]:
        page = apistore.rates_page(
            pool(), tariff, prefix=args.get("prefix"), after=after_of(args["cursor"]), limit=args["limit"]
        )
        return page_json(page, [_rate_json(r) for r in page.items])

    @tariffs_blp.arguments(s.RateSchema)
    @tariffs_blp.response(200, s.RateSchema)
    @allow(ADMIN)
    def put(self, body: dict[str, Any], tariff: str) -> dict[str, Any]:
        """Add or replace the rate of one prefix."""
        with apistore.transaction(pool()) as (conn, one):
            catalog.add_rate(
                one, tariff, body["prefix"], replace=True, **{k: v for k, v in body.items() if k != "prefix"}
            )
            apistore.audit(
                conn,
                who(),
                "rate add",
                {"tariff": tariff, **body},
                detail=f"tariff {tariff}: rate for {body['prefix'] or '(any)'}",
            )
        return body

    @tariffs_blp.arguments(s.RateDeleteArgs, location="query")
    @tariffs_blp.response(204)
    @allow(ADMIN)
    def delete(self, args: dict[str, Any], tariff: str) -> None:
        """Delete the rate of one prefix, given as ?prefix=; ?prefix= (empty) deletes the catch-all rate,
        which no path segment can name."""
        _delete_rate(tariff, args["prefix"])


def _delete_rate(tariff: str, prefix: str) -> None:
    with apistore.transaction(pool()) as (conn, _):
        if not apistore.delete_rate(conn, tariff, prefix):
            raise NotVisible(f"tariff {tariff} has no rate for prefix {prefix!r}")
        apistore.audit(
            conn,
            who(),
            "rate delete",
            {"tariff": tariff, "prefix": prefix},
            detail=f"tariff {tariff}: rate for {prefix or '(catch-all)'} deleted",
        )


@tariffs_blp.route("/<string:tariff>/rates/<string:prefix>")
class RateByPrefix(MethodView):
    @tariffs_blp.response(204)
    @allow(ADMIN)
    def delete(self, tariff: str, prefix: str) -> None:
        _delete_rate(tariff, prefix)


@tariffs_blp.route("/<string:tariff>/lookup")
class Lookup(MethodView):
    @tariffs_blp.arguments(s.LookupArgs, location="query")
    @tariffs_blp.response(200, s.LookupSchema)
    @allow(READ)
    def get(self, args: dict[str, Any], tariff: str) -> dict[str, Any]:
        """The longest-prefix rate of a number, and the longest call a credit (or a card's available credit) allows."""
        currency, rate = apistore.lookup_rate(pool(), tariff, args["number"])
        credit = args.get("credit")
        if "card" in args:
            card_id = card_id_for(args["card"])
            credit = Ledger(pool()).available_credit(card_id)
        seconds = None
        if rate is not None and credit is not None:
            seconds = 0 if rate.forbidden else max_duration(rate, credit)
        return {
            "number": args["number"],
            "tariff": tariff,
            "currency": currency,
            "rate": _rate_json(rate) if rate else None,
            "credit": credit,
            "max_duration_s": seconds,
        }


@tariffs_blp.route("/<string:tariff>/rates/import")
class RateImport(MethodView):
    @tariffs_blp.arguments(s.ImportArgs, location="query")
    @tariffs_blp.response(200, s.ImportResultSchema)
    @tariffs_blp.doc(requestBody={"required": True, "content": {"text/csv": {"schema": {"type": "string"}}}})
    @allow(ADMIN)
    def post(self, args: dict[str, Any], tariff: str) -> dict[str, Any]:
        """Import a rates CSV (the format of `cardd rate import`), all or nothing: a file with bad rows
        changes nothing and the answer lists every bad row with its line."""
        from cardd.billing.rate_import import ImportRefused  # the CLI's importer, shared (apistore)

        try:
            text = request.get_data().decode("utf-8")
        except UnicodeDecodeError:
            raise Problem(422, "Unprocessable Content", "the CSV is not UTF-8 text") from None
        try:
            result = apistore.import_rates_audited(pool(), who(), tariff, io.StringIO(text), mode=args["mode"])
        except ImportRefused as exc:
            raise Problem(
                422,
                "Unprocessable Content",
                f"{len(exc.errors)} bad rows of {exc.rows}; nothing imported",
                invalid_params=[{"name": f"line {line}", "reason": why} for line, why in exc.errors],
            ) from None
        return {"rows": result.rows, "inserted": result.inserted, "updated": result.updated, "deleted": result.deleted}


# --- vouchers -----------------------------------------------------------------------------------


@vouchers_blp.route("")
class Vouchers(MethodView):
    @vouchers_blp.arguments(s.VoucherListArgs, location="query")
    @vouchers_blp.response(200, s.page_of(s.VoucherSchema))
    @allow(OPERATOR_READ)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        page = apistore.vouchers_page(
            pool(),
            batch=args.get("batch"),
            status=args.get("status"),
            after=after_of(args["cursor"]),
            limit=args["limit"],
        )
        return page_json(page, page.items)

    @vouchers_blp.arguments(s.VoucherGenerateSchema)
    @vouchers_blp.response(201, s.GeneratedSchema)
    @allow(ADMIN)
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Generate vouchers; their numbers are in this answer (and in GET /vouchers)."""
        with apistore.transaction(pool()) as (conn, one):
            numbers = vouchers.generate(
                one,
                body["count"],
                amount=body["amount"],
                currency=body["currency"],
                length=body["length"],
                expires_at=body["expires_at"],
                batch=body["batch"],
            )
            apistore.audit(
                conn,
                who(),
                "voucher generate",
                {k: v for k, v in body.items()},
                detail=f"{len(numbers)} vouchers of {body['amount']} {body['currency']}",
            )
        return {"numbers": numbers}


@vouchers_blp.route("/<string:number>/void")
class VoucherVoid(MethodView):
    @vouchers_blp.response(204)
    @allow(ADMIN)
    def post(self, number: str) -> None:
        with apistore.transaction(pool()) as (conn, one):
            if not vouchers.void(one, number):
                raise NotVisible(f"no unused voucher {number}")
            apistore.audit(conn, who(), "voucher void", {"voucher": number[-4:]}, detail="voucher voided")


@vouchers_blp.route("/<string:number>/redeem")
class VoucherRedeem(MethodView):
    @vouchers_blp.arguments(
        s.Schema.from_dict({"card": s.fields.Str(required=True, validate=s.DIGITS)}, name="RedeemForCardSchema")
    )
    @vouchers_blp.response(200, s.RedeemedSchema)
    @vouchers_blp.doc(parameters=_IDEMPOTENCY)
    @allow(WRITE)
    def post(self, body: dict[str, Any], number: str) -> Any:
        """Redeem a voucher for a card. Needs an Idempotency-Key."""
        card_id = card_id_for(body["card"])

        def work(pool_like: Any) -> dict[str, Any]:
            with pool_like.connection() as conn, conn.transaction():
                result = vouchers.redeem_in(conn, number, card_id)
                if not result.ok:
                    raise Problem(422, "Unprocessable Content", f"voucher not redeemed: {result.outcome}")
                apistore.audit(
                    conn,
                    who(),
                    "voucher redeem",
                    {"voucher": number[-4:], "card": body["card"]},
                    account_id=card_id,
                    detail=f"{result.amount} {result.currency} credited",
                )
            return {"voucher": number, "amount": result.amount, "currency": result.currency, "balance": result.balance}

        return idempotent(200, s.RedeemedSchema(), work)


# --- customers and plans ----------------------------------------------------------------------------


@customers_blp.route("")
class Customers(MethodView):
    @customers_blp.arguments(s.PageArgs, location="query")
    @customers_blp.response(200, s.page_of(s.CustomerSchema))
    @allow(READ)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        page = apistore.customers_page(pool(), owner=owner_scope(), after=after_of(args["cursor"]), limit=args["limit"])
        return page_json(page, page.items)

    @customers_blp.arguments(s.CustomerSchema)
    @customers_blp.response(201, s.CustomerSchema)
    @allow(WRITE)
    def post(self, body: dict[str, Any]) -> Any:
        """Create a customer; a reseller's customers are its own."""
        with apistore.transaction(pool()) as (conn, one):
            customer_id = operator.add_customer(one, body["name"], who=who())
            if owner_scope() is not None:
                apistore.set_customer_owner(conn, customer_id, owner_scope())
                apistore.audit(
                    conn,
                    who(),
                    "customer owner",
                    {"name": body["name"], "owner": owner_scope()},
                    detail=f"customer {body['name']} belongs to reseller {owner_scope()}",
                )
        [row] = [c for c in apistore.customers_page(pool(), owner=owner_scope(), after=customer_id - 1, limit=1).items]
        return row


@plans_blp.route("")
class Plans(MethodView):
    @plans_blp.response(200, s.page_of(s.PlanSchema))
    @allow(OPERATOR_READ)
    def get(self) -> dict[str, Any]:
        """Every service plan (a short list: one page)."""
        return {"items": operator.list_plans(pool()), "next_cursor": None}

    @plans_blp.arguments(s.PlanSchema)
    @plans_blp.response(201, s.PlanSchema)
    @allow(ADMIN)
    def post(self, body: dict[str, Any]) -> Any:
        with apistore.transaction(pool()) as (_, one):
            operator.add_plan(one, body["name"], who=who(), minutes_plan=body["minutes_plan"], minutes=body["minutes"])
            if body["suspended"]:
                operator.update_plan(one, body["name"], who=who(), suspended=True)
        return operator.list_plans(pool(), body["name"])[0]


@customers_blp.route("/<string:name>")
class Customer(MethodView):
    @customers_blp.response(200, s.CustomerSchema)
    @allow(READ)
    def get(self, name: str) -> Any:
        customer_id = apistore.customer_visible(pool(), name, owner_scope())
        return apistore.customers_page(pool(), after=customer_id - 1, limit=1).items[0]

    @customers_blp.arguments(s.RenameSchema)
    @customers_blp.response(200, s.CustomerSchema)
    @allow(WRITE)
    def patch(self, body: dict[str, Any], name: str) -> Any:
        """Rename a customer."""
        customer_id = apistore.customer_visible(pool(), name, owner_scope())
        operator.rename_customer(pool(), name, body["name"], who=who())
        return apistore.customers_page(pool(), after=customer_id - 1, limit=1).items[0]

    @customers_blp.response(204)
    @allow(WRITE)
    def delete(self, name: str) -> None:
        """Delete a customer no card belongs to."""
        apistore.customer_visible(pool(), name, owner_scope())
        operator.delete_customer(pool(), name, who=who())


@plans_blp.route("/<string:name>")
class Plan(MethodView):
    @plans_blp.arguments(s.PlanPatchSchema)
    @plans_blp.response(200, s.PlanSchema)
    @allow(ADMIN)
    def patch(self, body: dict[str, Any], name: str) -> Any:
        """Rename, suspend or resume a plan, and set or remove its free minutes per prefix."""
        operator.update_plan(
            pool(),
            name,
            who=who(),
            new_name=body.get("name"),
            suspended=body.get("suspended"),
            minutes_plan=body.get("minutes_plan"),
            set_minutes=body.get("minutes"),
            remove_prefixes=body.get("remove_prefixes"),
        )
        return operator.list_plans(pool(), body.get("name") or name)[0]

    @plans_blp.response(204)
    @allow(ADMIN)
    def delete(self, name: str) -> None:
        """Delete a plan no card uses."""
        operator.delete_plan(pool(), name, who=who())


audit_blp = Blueprint("audit", __name__, url_prefix="/audit", description="The operator audit")


@audit_blp.route("")
class Audit(MethodView):
    @audit_blp.arguments(s.AuditArgs, location="query")
    @audit_blp.response(200, s.page_of(s.AuditSchema))
    @allow(OPERATOR_READ)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """Every change, newest first: who (key or operator, and from where), when, what."""
        card_id = card_id_for(args["card"]) if "card" in args else None
        page = apistore.audit_page(
            pool(), card_id=card_id, action=args.get("action"), after=after_of(args["cursor"]), limit=args["limit"]
        )
        return page_json(page, page.items)
