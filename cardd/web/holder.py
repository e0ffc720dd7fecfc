"""The card holder's self-care page (/my): sign in with card number + PIN under the IVR's PIN
throttle (apiauth.sign_in, the API's own), then the card's balance, its calls with their cost,
a voucher top-up under the IVR's top-up throttle, a PIN change, the caller IDs on the card."""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable
from typing import Any

from flask import Blueprint, g, redirect, render_template, request, session, url_for

from cardd.api.app import config, pool, principal, who
from cardd.billing import apiauth, apistore, identity, operator
from cardd.digits import is_digits
from cardd.errors import CarddError
from cardd.web import common, i18n
from cardd.web.views import once

bp = Blueprint("selfcare", __name__, url_prefix="/my", template_folder="templates")
common.install(bp, "card", "my_error.html")


@bp.before_request
def _language() -> None:
    asked = request.args.get("lang")
    if asked in i18n.LANGUAGES:
        session["lang"] = asked
    g.lang = i18n.choose(session.get("lang"), request.headers.get("Accept-Language"))


@bp.context_processor
def _words() -> dict[str, Any]:
    return {"t": i18n.translator(g.get("lang", "en")), "lang": g.get("lang", "en"), "languages": i18n.LANGUAGES}


def holder(view: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(view)
    def checked(*args: Any, **kwargs: Any) -> Any:
        if g.principal is None:
            return redirect(url_for("selfcare.login"))
        return view(*args, **kwargs)

    return checked


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    error = None
    if request.method == "POST":
        number, pin = request.form.get("number", "").strip(), request.form.get("pin", "").strip()
        try:
            signed = apiauth.sign_in(
                pool(),
                config().limits,
                number,
                pin,
                peer=request.remote_addr or "unknown",
                lifetime_s=config().session_lifetime_s,
            )
        except apiauth.SignInRefused as exc:
            error = "throttled" if exc.throttled else "wrong"
            return render_template("my_login.html", error=error, number=number), 429 if exc.throttled else 401
        lang = session.get("lang")
        common.sign_in_browser(signed.token)
        if lang:
            session["lang"] = lang
        return redirect(url_for("selfcare.home"))
    return render_template("my_login.html", error=error, number="")


@bp.route("/logout", methods=["POST"])
def logout() -> Any:
    token = common.sign_out_browser()
    if token:
        apiauth.sign_out(pool(), token)
    return redirect(url_for("selfcare.login"))


def _page(message: str | None = None, error: str | None = None, status: int = 200) -> tuple[str, int]:
    card_id = principal().card_id
    assert card_id is not None
    c = apistore.card_row(pool(), card_id).summary
    try:
        after = apistore.decode_cursor(request.args.get("cursor") or None)
    except ValueError:
        after = None
    calls = apistore.cdrs_page(pool(), card_id=card_id, after=after, limit=25)
    return render_template(
        "my_home.html",
        c=c,
        calls=calls,
        older=apistore.encode_cursor(calls.next_after),
        clis=[cli for cli, _ in identity.cli_map(pool(), card_id)],
        message=message,
        error=error,
        key=secrets.token_urlsafe(16),
    ), status


@bp.route("")
@holder
def home() -> Any:
    return _page()


@bp.route("/topup", methods=["POST"])
@holder
def topup() -> Any:
    """The API's /me/topup, for a form: the voucher under the top-up throttle, once per form."""
    t = i18n.translator(g.lang)
    card_id = principal().card_id
    assert card_id is not None  # a card holder's principal always names its card
    number = request.form.get("voucher", "").strip()

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
            return {"error": "topup_throttled"}
        if not gated.value.ok:
            return {"error": "voucher_refused"}  # one answer whatever the reason: no voucher oracle
        r = gated.value
        return {"amount": common.amount(r.amount, r.currency), "balance": common.amount(r.balance, r.currency)}

    result, refused, _ = once(work)
    if refused or result is None or "error" in result:
        return _page(error=t(result["error"]) if result and "error" in result else refused, status=422)
    return _page(message=t("topped_up", amount=result["amount"], balance=result["balance"]))


@bp.route("/pin", methods=["POST"])
@holder
def change_pin() -> Any:
    """A new PIN after the current one is proven again, under the same throttle as signing in."""
    t = i18n.translator(g.lang)
    f = request.form
    new, again = f.get("new_pin", "").strip(), f.get("repeat_pin", "").strip()
    if new != again or not is_digits(new) or not 4 <= len(new) <= 12:
        return _page(error=t("pin_mismatch"), status=422)
    number = principal().name
    try:
        proof = apiauth.sign_in(
            pool(),
            config().limits,
            number,
            f.get("current_pin", "").strip(),
            peer=request.remote_addr or "unknown",
            lifetime_s=60,
        )
    except apiauth.SignInRefused as exc:
        return _page(error=t("throttled" if exc.throttled else "wrong"), status=429 if exc.throttled else 401)
    try:
        with apistore.transaction(pool()) as (conn, one):
            operator.set_card_pin(one, number, new, who=who())
            apiauth.end_sessions(conn, proof.card_id)  # every session opened with the old PIN, elsewhere too
    except CarddError as exc:
        apiauth.sign_out(pool(), proof.token)
        return _page(error=str(exc), status=422)
    # This browser goes on with a session of the new PIN.
    fresh = apiauth.sign_in(
        pool(),
        config().limits,
        number,
        new,
        peer=request.remote_addr or "unknown",
        lifetime_s=config().session_lifetime_s,
    )
    lang = session.get("lang")
    common.sign_in_browser(fresh.token)
    if lang:
        session["lang"] = lang
    return _page(message=t("pin_changed"))
