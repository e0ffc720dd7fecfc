"""The web console (operators, API key login) and the card holders' self-care page, served
by `cardd api` under `/` beside the JSON API under /api/v1.

Why in the API's process rather than a `cardd web` of its own: one listener to expose and
put behind TLS, one authentication model (the same API keys and roles, the same card-holder
sessions under the IVR's PIN throttle), one set of limits (body size, request time,
connections) -- and the pages call the very service functions the API's routes call.

Server-rendered HTML that works without JavaScript; the CSS is the package's own (no CDN);
charts are SVG drawn on the server. Every form carries a CSRF token (Flask-WTF), cookies are
HttpOnly, Secure and SameSite=Strict, sessions expire, and every answer carries a
Content-Security-Policy that allows nothing but this origin's stylesheet.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from flask import Flask, request
from flask_wtf.csrf import CSRFProtect

#: No script at all, styles and images only from this origin, forms only to it, never framed.
CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none';"
       " base-uri 'none'")


def register(app: Flask) -> None:
    """Mount the console and the self-care page on the API's application (its app factory calls this)."""
    from cardd.web import holder, views

    lifetime = app.extensions["cardd"]["config"].session_lifetime_s
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = secrets.token_hex(32)   # per process: a restart signs everyone out
    app.config.update(
        SESSION_COOKIE_NAME="cardd_web", SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_SAMESITE="Strict", PERMANENT_SESSION_LIFETIME=timedelta(seconds=lifetime),
        WTF_CSRF_CHECK_DEFAULT=False,          # the JSON API uses bearer tokens, not cookies: no CSRF there
        WTF_CSRF_TIME_LIMIT=lifetime,
    )
    csrf = CSRFProtect(app)
    app.extensions["cardd_web_csrf"] = csrf
    _leave_web_to_its_own_auth(app)
    app.register_blueprint(views.bp)
    app.register_blueprint(holder.bp)


def _leave_web_to_its_own_auth(app: Flask) -> None:
    """The API's app-wide hooks ask for a bearer token; the pages sign in with a form and a
    cookie instead, so those hooks are skipped for the web blueprints' requests only."""
    def api_only(hook: Callable[[], Any]) -> Callable[[], Any]:
        @functools.wraps(hook)
        def guarded() -> Any:
            if request.blueprint in WEB_BLUEPRINTS:
                return None
            return hook()
        return guarded

    app.before_request_funcs[None] = [api_only(f) for f in app.before_request_funcs.get(None, [])]


WEB_BLUEPRINTS = ("web", "selfcare")
