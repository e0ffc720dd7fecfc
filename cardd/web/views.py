"""The operator console: sign in with an API key; the key's role decides what the pages may do,
exactly as in the JSON API (the same service calls, the same ownership scope, the same audit)."""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import secrets
import uuid
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from flask import Blueprint, Response, current_app, g, redirect, render_template, request, url_for

from cardd.api.app import ADMIN, READ, WRITE, Problem, card_id_for, owner_scope, pool, principal, problem_of, who
from cardd.billing import apiauth, apistore, cardadmin, catalog, identity, operator, stats
from cardd.billing import vouchers as voucher_service
from cardd.digits import is_digits
from cardd.errors import CarddError
from cardd.money import money
from cardd.web import charts, common, imports

bp = Blueprint(
    "web", __name__, url_prefix="", template_folder="templates", static_folder="static", static_url_path="/assets"
)
common.install(bp, "key", "error.html")

PAGE = 50
STATUSES = ("active", "blocked", "closed", "expired")


@bp.app_template_filter("money")
def _money_filter(value: Any, currency: str | None = None) -> str:
    return common.amount(value, currency)


def signed_in(roles: tuple[str, ...] = READ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The page needs an operator signed in with one of `roles` (else: the sign-in page, or 403)."""

    def wrap(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def checked(*args: Any, **kwargs: Any) -> Any:
            if g.principal is None:
                return redirect(url_for("web.login", next=request.path))
            if principal().role not in roles:
                return render_template(
                    "error.html", status=403, message=f"A {principal().role} key may not do this."
                ), 403
            return view(*args, **kwargs)

        return checked

    return wrap


def can_write() -> bool:
    return g.principal is not None and principal().role in WRITE


@bp.app_context_processor
def _globals() -> dict[str, Any]:
    return {"operator": g.get("principal") if request.blueprint == "web" else None, "can_write": can_write}


# --- signing in ---------------------------------------------------------------------------


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    error = None
    if request.method == "POST":
        key = request.form.get("key", "").strip()
        found = apiauth.authenticate(pool(), key) if key else None
        if found is not None and found.kind == "key":
            common.sign_in_browser(key)
            target = request.args.get("next", "")
            # Only a path of this site: never an open redirect.
            return redirect(target if _local(target) else url_for("web.dashboard"))
        error = "That API key is not valid (or was revoked)."
    return render_template("login.html", error=error), 401 if error else 200


def _local(target: str) -> bool:
    """A path on this site only (never an open redirect: browsers read /\\host and //host as another host)."""
    return target.startswith("/") and not target.startswith(("//", "/\\")) and target.isprintable()


@bp.route("/logout", methods=["POST"])
def logout() -> Any:
    common.sign_out_browser()
    return redirect(url_for("web.login"))


# --- dashboard ------------------------------------------------------------------------------


@bp.route("/")
@signed_in()
def dashboard() -> str:
    d = stats.dashboard(
        pool(),
        owner=owner_scope(),
        cache=current_app.extensions.setdefault("cardd_web_figures", {}),
        cache_s=current_app.config.get("CARDD_WEB_FIGURES_CACHE_S", stats.CACHE_S),
    )
    labels = [h.start.strftime("%H:00") for h in d.hours]
    asr = charts.bars("ASR by hour, last 24 h", labels, [h.asr for h in d.hours], unit="%", top=100)
    acd = charts.bars("ACD by hour, last 24 h", labels, [h.acd for h in d.hours], unit=" s")
    return render_template("dashboard.html", d=d, asr=asr, acd=acd)


# --- cards ------------------------------------------------------------------------------------


def _cursor(name: str = "cursor") -> int | None:
    try:
        return apistore.decode_cursor(request.args.get(name) or None)
    except ValueError as exc:
        raise Problem(400, "Bad Request", str(exc)) from None


@bp.route("/cards")
@signed_in()
def cards() -> str:
    number = request.args.get("number", "").strip()
    customer = request.args.get("customer", "").strip()
    status = request.args.get("status", "")
    page = apistore.cards_page(
        pool(),
        owner=owner_scope(),
        status=status if status in STATUSES else None,
        customer=customer or None,
        number_prefix=number or None,
        after=_cursor(),
        limit=PAGE,
    )
    tariffs = apistore.tariffs_page(pool(), limit=200).items
    return render_template(
        "cards.html",
        page=page,
        number=number,
        customer=customer,
        status=status,
        statuses=STATUSES,
        tariffs=tariffs,
        next=apistore.encode_cursor(page.next_after),
    )


@bp.route("/cards/new", methods=["POST"])
@signed_in(WRITE)
def card_new() -> Any:
    f = request.form
    number = f.get("number", "").strip()
    customer = f.get("customer", "").strip() or None
    if owner_scope() is not None:
        if customer is None:
            raise Problem(422, "Unprocessable Content", "a reseller's card belongs to one of its customers")
        apistore.customer_visible(pool(), customer, owner_scope())
    tariff = f.get("tariff", "")
    currency = apistore.tariffs_page(pool(), limit=200)
    cur = next((t.currency for t in currency.items if t.name == tariff), None)
    if cur is None:
        raise Problem(422, "Unprocessable Content", f"no tariff {tariff!r}")
    operator.add_card(
        pool(),
        number,
        who=who(),
        allow_negative=False,
        tariff=tariff,
        currency=cur,
        balance=_decimal(f.get("balance", "0"), "balance"),
        pin=f.get("pin", ""),
        customer=customer,
    )
    return redirect(url_for("web.card", number=number))


def _decimal(text: str, name: str) -> Decimal:
    try:
        return money(Decimal(text.strip()))
    except (InvalidOperation, ValueError, ArithmeticError):
        raise Problem(422, "Unprocessable Content", f"{name}: {text!r} is not an amount") from None


@bp.route("/cards/<number>")
@signed_in()
def card(number: str) -> str:
    card_id = card_id_for(number)
    row = apistore.card_row(pool(), card_id)
    details = operator.card_details(pool(), card_id)
    history = apistore.ledger_page(pool(), card_id, after=_cursor(), limit=PAGE)
    # The rows shown, oldest first, start from what the balance was before the oldest of them:
    # brought forward + the amounts shown = the balance after the newest shown.
    rows = list(reversed(history.items))
    forward = rows[0].balance_after - rows[0].amount if rows else row.summary.balance
    total = forward + sum((r.amount for r in rows), Decimal(0))
    return render_template(
        "card.html",
        c=row.summary,
        row=row,
        d=details,
        rows=rows,
        forward=forward,
        total=total,
        clis=identity.cli_map(pool(), card_id),
        hotkeys=identity.hot_dial_list(pool(), card_id),
        older=apistore.encode_cursor(history.next_after),
    )


@bp.route("/cards/<number>/block", methods=["POST"])
@signed_in(WRITE)
def card_block(number: str) -> Any:
    card_id_for(number)
    status = "active" if request.form.get("unblock") else "blocked"
    operator.set_card_status(pool(), number, status, who=who())
    return redirect(url_for("web.card", number=number))


@bp.route("/cards/<number>/pin", methods=["POST"])
@signed_in(WRITE)
def card_pin(number: str) -> Any:
    card_id = card_id_for(number)
    with apistore.transaction(pool()) as (conn, one):
        operator.set_card_pin(one, number, request.form.get("pin", "").strip(), who=who())
        apiauth.end_sessions(conn, card_id)  # as the API does: whoever signed in with the old PIN signs in again
    return render_template(
        "done.html",
        title=f"Card {number}",
        message="The PIN was changed; the card holder's sessions have ended.",
        back=url_for("web.card", number=number),
    )


# --- money actions: a confirmation step, then once per form (idempotent), then the ledger row ---


def once(work: Callable[[Any], dict[str, Any]]) -> tuple[dict[str, Any] | None, str | None, bool]:
    """Run `work(pool_like)` once per confirmation form (its hidden key is the Idempotency-Key the API
    would take): a second submit of the same form shows the first result and moves nothing.
    Returns (result, refusal, replayed)."""
    key = request.form.get("confirm_key", "")
    if not key or len(key) > 64:
        raise Problem(400, "Bad Request", "the confirmation form is incomplete; start again")
    fields = sorted((k, v) for k, v in request.form.items() if k not in ("csrf_token",))
    body_hash = hashlib.sha256(json.dumps(fields).encode()).hexdigest()

    def run(pool_like: Any) -> apistore.StoredAnswer:
        try:
            return apistore.StoredAnswer(200, json.dumps(work(pool_like), default=str), "application/json")
        except (CarddError, ValueError, Problem) as exc:
            p = problem_of(exc)
            return apistore.StoredAnswer(p.status, json.dumps({"refused": p.detail or p.title}), "application/json")

    answer, replayed = apistore.idempotent(
        pool(), principal().ident, "web:" + key, "POST", request.path, body_hash, run
    )
    body = json.loads(answer.body)
    return (None, body["refused"], replayed) if "refused" in body else (body, None, replayed)


def _ledger_row(card_id: int, ledger_id: int) -> Any:
    found = apistore.ledger_page(pool(), card_id, after=ledger_id + 1, limit=1).items
    return found[0] if found and found[0].id == ledger_id else None


@bp.route("/cards/<number>/adjust", methods=["POST"])
@signed_in(WRITE)
def card_adjust(number: str) -> Any:
    card_id = card_id_for(number)
    c = apistore.card_row(pool(), card_id).summary
    value = _decimal(request.form.get("amount", ""), "amount")
    reference = request.form.get("reference", "").strip() or "web console adjustment"
    allow_negative = request.form.get("allow_negative") == "yes"
    if request.form.get("step") != "confirm":
        return render_template(
            "confirm.html",
            title=f"Adjust card {number}",
            what=f"{common.amount(value, c.currency)} to card {number}"
            f" (balance now {common.amount(c.balance, c.currency)})",
            action=url_for("web.card_adjust", number=number),
            fields={"amount": str(value), "reference": reference, "allow_negative": "yes" if allow_negative else ""},
            key=secrets.token_urlsafe(16),
            back=url_for("web.card", number=number),
        )

    def work(pool_like: Any) -> dict[str, Any]:
        balance = operator.adjust_card(
            pool_like, number, value, who=who(), reference=reference, allow_negative=allow_negative
        )
        newest = apistore.ledger_page(pool_like, card_id, limit=1).items[0]
        return {"ledger_id": newest.id, "balance": str(balance)}

    result, refused, replayed = once(work)
    entry = _ledger_row(card_id, result["ledger_id"]) if result else None
    return render_template(
        "ledger_row.html", number=number, currency=c.currency, entry=entry, refused=refused, replayed=replayed
    ), 422 if refused else 200


# --- rates --------------------------------------------------------------------------------------


@bp.route("/rates", methods=["GET", "POST"])
@signed_in()
def rates() -> Any:
    if request.method == "POST":
        if principal().role not in ADMIN:
            return render_template("error.html", status=403, message="Only an admin key may import rates."), 403
        upload = request.files.get("file")
        tariff = request.form.get("tariff", "")
        if upload is None or not upload.filename:
            return _rates_page({"errors": [(0, "choose a CSV file")], "rows": 0}, 422, tariff)
        mode = request.form.get("mode", "merge")
        job = rate_imports().start(
            pool(), who(), tariff, mode if mode in ("merge", "replace") else "merge", upload.stream
        )
        return redirect(url_for("web.rate_import", job_id=job.id), 303)
    return _rates_page(None, 200, request.values.get("tariff"))


def rate_imports() -> imports.RateImports:
    return current_app.extensions.setdefault("cardd_web_rate_imports", imports.RateImports())


@bp.route("/rates/import/<job_id>")
@signed_in(ADMIN)
def rate_import(job_id: str) -> Any:
    """An upload's import: its progress (the page refreshes itself), then the rates page with the
    all-bad-rows report (nothing imported) or the counts."""
    job = rate_imports().get(job_id, who())
    if job is None:
        return render_template("error.html", status=404, message="No such import (or it was long ago)."), 404
    if not job.finished:
        return render_template("rate_import.html", job=job)
    if job.errors:
        report = {"errors": job.errors, "rows": job.rows}
        try:
            return _rates_page(report, 422, job.tariff)
        except CarddError:  # the tariff named in the form does not exist: the report, beside the first tariff
            return _rates_page(report, 422, None)
    return _rates_page({"imported": job.result, "tariff": job.tariff}, 200, job.tariff)


def _rates_page(report: dict[str, Any] | None, status: int, chosen: str | None) -> Any:
    tariffs = apistore.tariffs_page(pool(), limit=200).items
    chosen = chosen or (tariffs[0].name if tariffs else "")
    listing = (
        apistore.rates_page(pool(), chosen, prefix=request.args.get("prefix") or None, after=_cursor(), limit=PAGE)
        if chosen
        else None
    )
    return render_template(
        "rates.html",
        tariffs=tariffs,
        chosen=chosen,
        report=report,
        listing=listing,
        next=apistore.encode_cursor(listing.next_after) if listing else None,
    ), status


@bp.route("/tariffs/new", methods=["POST"])
@signed_in(ADMIN)
def tariff_new() -> Any:
    """A tariff, as POST /api/v1/tariffs makes it (audited)."""
    name, currency = request.form.get("name", "").strip(), request.form.get("currency", "").strip().upper()
    with apistore.transaction(pool()) as (conn, one):
        catalog.create_tariff(one, name, currency)
        apistore.audit(
            conn,
            who(),
            "tariff add",
            {"name": name, "currency": currency},
            detail=f"tariff {name} ({currency}) (web console)",
        )
    return redirect(url_for("web.rates", tariff=name))


# --- CDRs -----------------------------------------------------------------------------------------


def _cdr_page(limit: int) -> tuple[apistore.Page[Any], dict[str, str]]:
    filters = {k: request.args.get(k, "").strip() for k in ("card", "destination", "cause")}
    card_id = card_id_for(filters["card"]) if filters["card"] else None
    page = apistore.cdrs_page(
        pool(),
        owner=owner_scope(),
        card_id=card_id,
        destination_prefix=filters["destination"] or None,
        cause=filters["cause"] or None,
        after=_cursor(),
        limit=limit,
    )
    return page, filters


@bp.route("/cdrs")
@signed_in()
def cdrs() -> str:
    page, filters = _cdr_page(PAGE)
    return render_template("cdrs.html", page=page, f=filters, next=apistore.encode_cursor(page.next_after))


CSV_FIELDS = (
    "id",
    "b_uuid",
    "card",
    "currency",
    "cli",
    "cld",
    "translated_cld",
    "rate_prefix",
    "started_at",
    "answered_at",
    "ended_at",
    "billed_seconds",
    "cost",
    "hangup_cause",
    "estimated",
)


@bp.route("/cdrs.csv")
@signed_in()
def cdrs_csv() -> Response:
    page, _ = _cdr_page(5000)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for cdr_id, c in page.items:
        writer.writerow(
            [
                cdr_id,
                c.b_uuid,
                c.username,
                c.currency,
                c.cli,
                c.cld,
                c.translated_cld,
                c.rate_prefix,
                c.started_at.isoformat(),
                c.answered_at.isoformat() if c.answered_at else "",
                c.ended_at.isoformat(),
                c.billed_seconds,
                f"{c.cost:.5f}",
                c.hangup_cause,
                str(c.estimated).lower(),
            ]
        )
    response = Response(out.getvalue(), content_type="text/csv; charset=utf-8")
    response.headers["Content-Disposition"] = "attachment; filename=cdrs.csv"
    if page.next_after is not None:
        response.headers["Next-Cursor"] = apistore.encode_cursor(page.next_after) or ""
    return response


# --- reservations ------------------------------------------------------------------------------


@bp.route("/reservations")
@signed_in()
def reservations() -> str:
    expired = request.args.get("expired") == "1"
    page = apistore.reservations_page(pool(), owner=owner_scope(), expired_only=expired, after=_cursor(), limit=PAGE)
    return render_template(
        "reservations.html", page=page, expired=expired, next=apistore.encode_cursor(page.next_after)
    )


@bp.route("/reservations/<uuid:b_uuid>/<any(settle, release):action>", methods=["POST"])
@signed_in(WRITE)
def reservation_close(b_uuid: uuid.UUID, action: str) -> Any:
    apistore.reservation_visible(pool(), b_uuid, owner_scope())
    billed: int | None = None
    if action == "settle":
        text = request.form.get("billed_seconds", "").strip()
        if not is_digits(text) or len(text) > 7:
            raise Problem(422, "Unprocessable Content", "billed seconds: a whole number of seconds")
        billed = int(text)
    reason = request.form.get("reason", "").strip() or f"web console {action}"
    if request.form.get("step") != "confirm":
        what = (
            f"settle reservation {b_uuid} at {billed} billed seconds"
            if billed is not None
            else f"release reservation {b_uuid} at no charge"
        )
        return render_template(
            "confirm.html",
            title=f"{action.capitalize()} a reservation",
            what=what,
            action=request.path,
            key=secrets.token_urlsafe(16),
            back=url_for("web.reservations"),
            fields={"billed_seconds": "" if billed is None else str(billed), "reason": reason},
        )

    def work(pool_like: Any) -> dict[str, Any]:
        done = operator.close_reservation(
            pool_like, b_uuid, billed_seconds=billed, who=who(), reason=reason, force=False
        )
        card_id = apistore.card_id_visible(pool_like, done.card, None)
        newest = apistore.ledger_page(pool_like, card_id, limit=1).items
        return {
            "card": done.card,
            "card_id": card_id,
            "ledger_id": newest[0].id if newest else None,
            "currency": done.currency,
        }

    result, refused, replayed = once(work)
    entry = _ledger_row(result["card_id"], result["ledger_id"]) if result and result["ledger_id"] else None
    return render_template(
        "ledger_row.html",
        number=result["card"] if result else "",
        entry=entry,
        currency=result["currency"] if result else "",
        refused=refused,
        replayed=replayed,
    ), 422 if refused else 200


# --- card batches: a CSV with the PINs, downloaded once ---------------------------------------


@bp.route("/cards/batch", methods=["POST"])
@signed_in(ADMIN)
def card_batch() -> Any:
    """Random cards, all or none, after a confirmation; the CSV answer is the only place their PINs
    are ever shown: the same confirmation sent again gets the numbers with the PIN column empty."""
    f = request.form
    count_text, tariff = f.get("count", "").strip(), f.get("tariff", "")
    if not is_digits(count_text) or not 1 <= int(count_text) <= 10000:
        raise Problem(422, "Unprocessable Content", "count: a whole number from 1 to 10000")
    currency = next((t.currency for t in apistore.tariffs_page(pool(), limit=200).items if t.name == tariff), None)
    if currency is None:
        raise Problem(422, "Unprocessable Content", f"no tariff {tariff!r}")
    value = _decimal(f.get("balance", "0"), "balance")
    customer = f.get("customer", "").strip() or None
    if f.get("step") != "confirm":
        return render_template(
            "confirm.html",
            title="Generate a batch of cards",
            what=f"{count_text} cards on tariff {tariff}, each with"
            f" {common.amount(value, currency)}; their PINs are shown in this download only",
            action=url_for("web.card_batch"),
            key=secrets.token_urlsafe(16),
            back=url_for("web.cards"),
            fields={"count": count_text, "tariff": tariff, "balance": str(value), "customer": customer or ""},
        )
    key = f.get("confirm_key", "")
    if not key or len(key) > 64:
        raise Problem(400, "Bad Request", "the confirmation form is incomplete; start again")
    body_hash = hashlib.sha256(json.dumps(sorted((k, v) for k, v in f.items() if k != "csrf_token")).encode())

    def as_csv(cards: list[Any], *, pins: bool) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["number", "pin", "balance", "currency"])
        for c in cards:
            writer.writerow([c.number, c.pin if pins else "", f"{value:.5f}", currency])
        return out.getvalue()

    shown: list[str] = []

    def run(pool_like: Any) -> apistore.StoredAnswer:
        try:
            made = cardadmin.generate_cards(
                pool_like,
                int(count_text),
                who=who(),
                tariff=tariff,
                currency=currency,
                balance=value,
                customer=customer,
            )
        except (CarddError, ValueError) as exc:
            p = problem_of(exc)
            return apistore.StoredAnswer(p.status, p.detail or p.title, "text/plain")
        shown.append(as_csv(made, pins=True))
        return apistore.StoredAnswer(201, as_csv(made, pins=False), "text/csv")

    answer, _ = apistore.idempotent(
        pool(), principal().ident, "web:" + key, "POST", request.path, body_hash.hexdigest(), run
    )
    if answer.status >= 400:
        raise Problem(answer.status, "Unprocessable Content", answer.body)
    response = Response(shown[0] if shown else answer.body, content_type="text/csv; charset=utf-8")
    response.headers["Content-Disposition"] = "attachment; filename=cards.csv"
    return response


# --- vouchers --------------------------------------------------------------------------------------

VOUCHER_READ = ("admin", "readonly")  # the catalogue is the operator's, not a reseller's (as in the API)


@bp.route("/vouchers")
@signed_in(VOUCHER_READ)
def vouchers_list() -> str:
    batch = request.args.get("batch", "").strip()
    status = request.args.get("status", "")
    page = apistore.vouchers_page(
        pool(),
        batch=batch or None,
        status=status if status in ("unused", "used", "void") else None,
        after=_cursor(),
        limit=PAGE,
    )
    return render_template(
        "vouchers.html", page=page, batch=batch, status=status, made=None, next=apistore.encode_cursor(page.next_after)
    )


@bp.route("/vouchers/generate", methods=["POST"])
@signed_in(ADMIN)
def vouchers_generate() -> Any:
    f = request.form
    count_text = f.get("count", "").strip()
    if not is_digits(count_text) or not 1 <= int(count_text) <= 10000:
        raise Problem(422, "Unprocessable Content", "count: a whole number from 1 to 10000")
    value = _decimal(f.get("amount", ""), "amount")
    currency, batch = f.get("currency", "").strip().upper(), f.get("batch", "").strip()
    with apistore.transaction(pool()) as (conn, one):
        numbers = voucher_service.generate(one, int(count_text), amount=value, currency=currency, batch=batch)
        apistore.audit(
            conn,
            who(),
            "voucher generate",
            {"count": int(count_text), "amount": value, "currency": currency, "batch": batch},
            detail=f"{len(numbers)} vouchers of {value} {currency} (web console)",
        )
    page = apistore.vouchers_page(pool(), batch=batch or None, limit=PAGE)
    return render_template(
        "vouchers.html", page=page, batch=batch, status="", made=numbers, next=apistore.encode_cursor(page.next_after)
    ), 201


@bp.route("/vouchers/void", methods=["POST"])
@signed_in(ADMIN)
def voucher_void() -> Any:
    # The number in the form, not the path: request logs carry paths, and a voucher is as good as money.
    number = request.form.get("number", "").strip()
    with apistore.transaction(pool()) as (conn, one):
        if not voucher_service.void(one, number):
            raise apistore.NotVisible("no unused voucher with that number")
        apistore.audit(conn, who(), "voucher void", {"voucher": number[-4:]}, detail="voucher voided (web console)")
    return redirect(url_for("web.vouchers_list", status="void"))


# --- customers, plans, API keys ------------------------------------------------------------------


@bp.route("/customers")
@signed_in()
def customers() -> str:
    page = apistore.customers_page(pool(), owner=owner_scope(), after=_cursor(), limit=PAGE)
    return render_template("customers.html", page=page, next=apistore.encode_cursor(page.next_after))


@bp.route("/plans")
@signed_in(VOUCHER_READ)
def plans() -> str:
    return render_template("plans.html", plans=operator.list_plans(pool()))


@bp.route("/keys", methods=["GET", "POST"])
@signed_in(ADMIN)
def keys() -> Any:
    """API keys as `cardd apikey add|list|revoke` handles them; a new key is shown on this answer only."""
    made = None
    status = 200
    if request.method == "POST":
        f = request.form
        if f.get("revoke"):
            apiauth.revoke_key(pool(), f["revoke"], who=who())
        else:
            made = apiauth.create_key(
                pool(),
                f.get("name", "").strip(),
                f.get("role", ""),
                who=who(),
                owner=f.get("owner", "").strip() or None,
            )
            status = 201
    return render_template("keys.html", keys=apiauth.list_keys(pool()), made=made), status
