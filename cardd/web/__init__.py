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

import secrets
from datetime import timedelta

from flask import Flask
from flask_wtf.csrf import CSRFProtect

#: No script at all, styles and images only from this origin, forms only to it, never framed.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def register(app: Flask) -> None:
    """Mount the console and the self-care page on the API's application (its app factory calls this)."""
    from cardd.web import holder, views

    lifetime = app.extensions["cardd"]["config"].session_lifetime_s
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = secrets.token_hex(32)  # per process: a restart signs everyone out
    app.config.update(
        SESSION_COOKIE_NAME="cardd_web",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=lifetime),
        WTF_CSRF_CHECK_DEFAULT=False,  # the JSON API uses bearer tokens, not cookies: no CSRF there
        WTF_CSRF_TIME_LIMIT=lifetime,
    )
    csrf = CSRFProtect(app)
    app.extensions["cardd_web_csrf"] = csrf
    app.register_blueprint(views.bp)
    app.register_blueprint(holder.bp)
