"""The WSGI application of `cardd api`: Flask + flask-smorest.

Why flask-smorest: the request and response schemas (marshmallow) are the validation and
the OpenAPI document at once, so the document cannot drift from what the code accepts;
Flask runs unchanged on gevent's WSGIServer, which the rest of cardd already uses.

Cross-cutting rules live here: bearer authentication (API key or card-holder session),
roles, RFC 9457 problem documents for every error, Idempotency-Key on money-moving
requests, and request logs that carry neither keys nor PINs.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, g, request
from flask_smorest import Api
from psycopg_pool import ConnectionPool
from werkzeug.exceptions import HTTPException

from cardd.billing import apiauth, apistore
from cardd.billing.identity import Limits
from cardd.errors import (
    CarddError,
    CardNotFound,
    DatabaseUnavailable,
    IdempotencyConflict,
    NotVisible,
    Problem,
    SignInRefused,
)

log = logging.getLogger("cardd.api")

PROBLEM = "application/problem+json"
PREFIX = "/api/v1"
#: Paths served without credentials.
PUBLIC = {f"{PREFIX}/openapi.json", f"{PREFIX}/session"}


def problem_of(exc: BaseException) -> Problem:
    """The problem a domain error means to an API client."""
    if isinstance(exc, Problem):
        return exc
    if isinstance(exc, (NotVisible, CardNotFound)):
        return Problem(404, "Not Found", str(exc))
    if isinstance(exc, IdempotencyConflict):
        return Problem(409, "Conflict", str(exc))
    if isinstance(exc, SignInRefused):
        if exc.throttled:
            return Problem(429, "Too Many Requests", str(exc))
        return Problem(401, "Unauthorized", str(exc))
    if isinstance(exc, DatabaseUnavailable):
        return Problem(503, "Service Unavailable", "the database is unavailable; try again")
    if isinstance(exc, (CarddError, ValueError)):
        # A refusal by the service layer (unknown tariff, closed reservation, would go negative...).
        return Problem(422, "Unprocessable Content", str(exc))
    raise exc


def _flatten(messages: Any, path: str = "") -> list[dict[str, str]]:
    """marshmallow's nested {location: {field: [reasons]}} as [{name, reason}], one per reason."""
    out: list[dict[str, str]] = []
    if isinstance(messages, dict):
        for key, value in messages.items():
            name = str(key) if not path else f"{path}.{key}"
            if key in ("json", "query", "form", "files", "headers", "path") and not path:
                name = ""
            out += _flatten(value, name)
    elif isinstance(messages, list):
        for item in messages:
            out += (
                _flatten(item, path)
                if isinstance(item, (dict, list))
                else [{"name": path or "body", "reason": str(item)}]
            )
    else:
        out.append({"name": path or "body", "reason": str(messages)})
    return out


class CarddApi(Api):
    """flask-smorest's Api whose errors are RFC 9457 problem documents."""

    def handle_http_exception(self, error: HTTPException) -> Response:
        data = getattr(error, "data", None) or {}
        params = _flatten(data.get("messages") or data.get("errors") or {})
        code = error.code or 500
        detail = "the request has invalid fields" if params else (error.description or "")
        if code == 500:
            detail = "an internal error; it was logged"
        return problem_response(
            Problem(code, error.name, detail, invalid_params=params, headers=data.get("headers") or {})
        )


def _json(value: Any) -> str:
    """JSON as Flask writes it (compact, keys sorted), so a stored answer reads like a live one."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def problem_response(p: Problem) -> Response:
    response = Response(_json(p.body()), status=p.status, content_type=PROBLEM)
    for name, value in p.headers.items():
        response.headers[name] = value
    return response


@dataclass(frozen=True)
class ApiConfig:
    limits: Limits  # the card holders' sign-in throttle (the IVR's PIN limits)
    topup_limits: Limits  # their voucher top-ups (the IVR's top-up limits)
    session_lifetime_s: int = 3600
    max_body_bytes: int = 1 << 20
    max_upload_bytes: int = 128 << 20  # a rates CSV (RATE_UPLOADS): about a million rows
    max_page: int = 500
    sounds_dir: str = ""  # daemon.sounds_dir: where uploaded prompts are stored


def create_app(pool: ConnectionPool, config: ApiConfig) -> Flask:
    app = Flask("cardd.api")
    app.config.update(
        API_TITLE="cardd",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX=PREFIX,
        OPENAPI_JSON_PATH="openapi.json",
        MAX_CONTENT_LENGTH=config.max_body_bytes,
        API_SPEC_OPTIONS={
            "security": [{"bearer": []}],
            "components": {
                "securitySchemes": {
                    "bearer": {
                        "type": "http",
                        "scheme": "bearer",
                        "description": "an API key (cardd apikey add) or a card holder's session token (POST /session)",
                    }
                }
            },
            "info": {"description": "Operators, resellers and card holders. Money: decimal strings with 5 places."},
        },
    )
    app.extensions["cardd"] = {"pool": pool, "config": config}
    api = CarddApi(app)
    app.register_error_handler(Problem, problem_response)
    app.register_error_handler(CarddError, lambda exc: problem_response(problem_of(exc)))
    app.register_error_handler(Exception, _internal_error)
    app.before_request(_upload_limit)
    app.before_request(_authenticate)
    app.after_request(_log_request)

    from cardd.api import cards, carriers, catalogue, cdrs, dialing, holder

    for blp in (
        cards.blp,
        holder.blp,
        cdrs.blp,
        cdrs.reservations_blp,
        catalogue.tariffs_blp,
        catalogue.vouchers_blp,
        catalogue.customers_blp,
        catalogue.plans_blp,
        catalogue.audit_blp,
        carriers.carriers_blp,
        carriers.prompts_blp,
        carriers.admin_blp,
        dialing.cards_blp,
        dialing.smartdial_blp,
        dialing.blacklist_blp,
        dialing.nodes_blp,
    ):
        api.register_blueprint(blp, url_prefix=PREFIX + blp.url_prefix)
    from cardd.web import register as register_web  # the console and self-care page under / (issue 16)

    register_web(app)
    return app


def _internal_error(exc: Exception) -> Response:
    if isinstance(exc, HTTPException):
        return app_api().handle_http_exception(exc)
    log.exception("unexpected error in %s %s", request.method, request.path)
    return problem_response(Problem(500, "Internal Server Error", "an internal error; it was logged"))


def app_api() -> CarddApi:
    from flask import current_app

    return current_app.extensions["flask-smorest"]["apis"][""]["ext_obj"]


def pool() -> ConnectionPool:
    from flask import current_app

    return current_app.extensions["cardd"]["pool"]


def config() -> ApiConfig:
    from flask import current_app

    return current_app.extensions["cardd"]["config"]


# --- who is calling ----------------------------------------------------------------------

#: The routes that take a rates CSV: api.max_upload_bytes instead of api.max_body_bytes.
RATE_UPLOADS = frozenset({"tariffs.RateImport", "carriers.CarrierRatesImport", "web.rates"})


def _upload_limit() -> None:
    if request.endpoint in RATE_UPLOADS:
        request.max_content_length = config().max_upload_bytes


def _authenticate() -> Response | None:
    g.principal = None
    if not request.path.startswith(PREFIX + "/") and request.path != PREFIX:
        return None  # the web console's pages (cardd.web) sign in with a form and a cookie instead
    if request.path in PUBLIC and request.method in ("GET", "POST"):
        return None
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    principal = apiauth.authenticate(pool(), token.strip()) if scheme.lower() == "bearer" else None
    if principal is None:
        return problem_response(
            Problem(
                401,
                "Unauthorized",
                "send Authorization: Bearer <API key or session token>",
                headers={"WWW-Authenticate": "Bearer"},
            )
        )
    g.principal = principal
    return None


def _log_request(response: Response) -> Response:
    # Path and who only: a body may carry a PIN, a header a key. A voucher number in a path
    # is as good as money: only its last 4 digits are logged (as the audit and the IVR do).
    who = g.get("principal")
    path = request.path
    voucher = (request.view_args or {}).get("number") if request.blueprint == "vouchers" else None
    if isinstance(voucher, str) and voucher:
        path = path.replace(voucher, "…" + voucher[-4:])
    log.info(
        "%s %s %s by %s from %s",
        request.method,
        path,
        response.status_code,
        who.ident if who else "-",
        request.remote_addr,
    )
    return response


def principal() -> apiauth.Principal:
    return g.principal


def who() -> str:
    """The audit's `who`: the key's name and id (or the card holder), and where from."""
    p = principal()
    name = f"api key {p.name} ({p.key_id})" if p.kind == "key" else f"card holder {p.name}"
    return f"{name} from {request.remote_addr or 'unknown'}"


READ, WRITE, ADMIN = ("admin", "reseller", "readonly"), ("admin", "reseller"), ("admin",)


def allow(roles: tuple[str, ...]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Refuse the request unless the caller's role is in `roles` (card holders have their own routes)."""

    def wrap(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def checked(*args: Any, **kwargs: Any) -> Any:
            p = principal()
            if p.kind != "key" or p.role not in roles:
                what = "a card holder" if p.kind == "card" else f"a {p.role} key"
                raise Problem(403, "Forbidden", f"{what} may not do this")
            return view(*args, **kwargs)

        return checked

    return wrap


def owner_scope() -> str | None:
    """The reseller whose customers bound what this caller sees; None for admin and read-only keys."""
    p = principal()
    return p.owner if p.role == "reseller" else None


def card_id_for(number: str) -> int:
    """The id of a card this key may see; 404 when it may not (as if it did not exist)."""
    return apistore.card_id_visible(pool(), number, owner_scope())


def after_of(cursor: str | None) -> int | None:
    try:
        return apistore.decode_cursor(cursor)
    except ValueError as exc:
        raise Problem(400, "Bad Request", str(exc), invalid_params=[{"name": "cursor", "reason": str(exc)}]) from None


# --- money-moving requests ------------------------------------------------------------------


def idempotent(
    status: int,
    schema: Any,
    work: Callable[[Any], Any],
    *,
    render: Callable[[Any], tuple[str, str]] | None = None,
    stored: Callable[[Any], tuple[str, str]] | None = None,
) -> Response:
    """Run `work(pool_like)` once per Idempotency-Key of this caller. The first answer (a
    refusal included) is stored with the change in one transaction; a repeat gets it back
    with Idempotent-Replayed: true and moves nothing. `render` makes the answer's (body,
    content type) from work's result (default: JSON through `schema`); `stored`, when given,
    is what a repeat gets instead (the first answer without the secrets it showed once)."""
    key = request.headers.get("Idempotency-Key", "")
    if not key or len(key) > 200 or not key.isprintable():
        raise Problem(
            400,
            "Bad Request",
            "a request that moves money needs an Idempotency-Key header (1 to 200 printable characters)",
            invalid_params=[{"name": "Idempotency-Key", "reason": "required"}],
        )
    body_hash = hashlib.sha256(request.get_data()).hexdigest()
    render = render or (lambda result: (_json(schema.dump(result)), "application/json"))
    live: list[tuple[str, str]] = []

    def run(pool_like: Any) -> apistore.StoredAnswer:
        try:
            result = work(pool_like)
        except (CarddError, ValueError) as exc:  # a Problem is a CarddError too
            p = problem_of(exc)
            if p.status >= 500:
                raise  # a database outage is not an answer: nothing is stored, a repeat tries again
            return apistore.StoredAnswer(p.status, _json(p.body()), PROBLEM)
        live.append(render(result))
        return apistore.StoredAnswer(status, *(stored or render)(result))

    answer, replayed = apistore.idempotent(pool(), principal().ident, key, request.method, request.path, body_hash, run)
    body, content_type = live[0] if live else (answer.body, answer.content_type)
    response = Response(body, status=answer.status, content_type=content_type)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


__all__ = [
    "ADMIN",
    "ApiConfig",
    "Problem",
    "READ",
    "WRITE",
    "allow",
    "create_app",
    "idempotent",
    "owner_scope",
    "pool",
    "principal",
    "who",
]
