"""What the console and the self-care page share: signed-in browsers, CSRF, security headers,
the page's error answer, and money as text."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from decimal import Decimal
from typing import Any

from flask import Blueprint, Response, current_app, g, render_template, request, session
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from cardd.api.app import pool
from cardd.billing import apiauth
from cardd.money import money

log = logging.getLogger("cardd.web")

#: Headers on every page: the CSP (see cardd.web), no sniffing, a referrer only to this site
#: (Flask-WTF checks it over https), never cached.
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}


class Browsers:
    """Signed-in browsers. The cookie carries only a random id; the bearer token it stands for
    (an API key or a card holder's session token) stays in this process, so a stolen cookie
    never yields the key itself, and it stops working when the session expires."""

    def __init__(self) -> None:
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def open(self, token: str, lifetime_s: float) -> str:
        sid = secrets.token_urlsafe(24)
        now = time.monotonic()
        with self._lock:
            for old in [k for k, (_, until) in self._tokens.items() if until <= now]:
                del self._tokens[old]
            self._tokens[sid] = (token, now + lifetime_s)
        return sid

    def token(self, sid: str | None) -> str | None:
        with self._lock:
            found = self._tokens.get(sid or "")
            if found is None:
                return None
            if found[1] <= time.monotonic():
                del self._tokens[sid or ""]
                return None
            return found[0]

    def close(self, sid: str | None) -> str | None:
        with self._lock:
            found = self._tokens.pop(sid or "", None)
        return found[0] if found else None


def browsers() -> Browsers:
    return current_app.extensions.setdefault("cardd_web_browsers", Browsers())


def lifetime_s() -> int:
    return int(current_app.extensions["cardd"]["config"].session_lifetime_s)


def sign_in_browser(token: str) -> None:
    """A fresh session (a new id and CSRF token: no fixation) for this bearer token."""
    session.clear()
    session.permanent = True
    session["sid"] = browsers().open(token, lifetime_s())


def sign_out_browser() -> str | None:
    token = browsers().close(session.get("sid"))
    session.clear()
    return token


def load_principal(kind: str) -> None:
    """g.principal from the session (as the API's bearer check sets it), or None; POSTs checked for CSRF."""
    g.principal = None
    if request.endpoint and request.endpoint.endswith(".static"):
        return  # the stylesheet needs nobody signed in, and must not touch the session
    token = browsers().token(session.get("sid"))
    if token:
        principal = apiauth.authenticate(pool(), token)
        if principal is None:
            sign_out_browser()  # a revoked key or an expired card session
        elif principal.kind == kind:
            g.principal = principal  # (a card holder's session opens no console page, and the reverse)
    if request.method == "POST":
        current_app.extensions["cardd_web_csrf"].protect()


def secure_headers(response: Response) -> Response:
    from cardd.web import CSP

    response.headers["Content-Security-Policy"] = CSP
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def install(bp: Blueprint, kind: str, error_template: str) -> None:
    """The hooks every page of `bp` has: who is signed in, CSRF, headers, HTML errors."""
    bp.before_request(lambda: load_principal(kind))
    bp.after_request(secure_headers)

    def csrf_refused(exc: CSRFError) -> tuple[str, int]:
        return render_template(
            error_template,
            status=400,
            message="The form had expired or was not sent by this site; open the page and try again.",
        ), 400

    bp.register_error_handler(CSRFError, csrf_refused)

    def refused(exc: Exception) -> tuple[str, int]:
        # A refusal by the service layer (CarddError, ValueError...) as the API maps it, on a page.
        from cardd.api.app import problem_of

        try:
            p = problem_of(exc)
        except Exception:  # not a refusal: a fault of ours
            log.exception("unexpected error in %s %s", request.method, request.path)
            return render_template(error_template, status=500, message="An internal error; it was logged."), 500
        return render_template(error_template, status=p.status, message=p.detail or p.title), p.status

    def http_error(exc: HTTPException) -> tuple[str, int]:
        code = exc.code or 500
        return render_template(error_template, status=code, message=exc.description or exc.name), code

    bp.register_error_handler(HTTPException, http_error)
    bp.register_error_handler(Exception, refused)


def amount(value: Any, currency: str | None = None) -> str:
    """Money as the API writes it (5 places), with its currency."""
    text = f"{money(value if value is not None else Decimal(0)):.5f}"
    return f"{text} {currency}" if currency else text
