"""The domain errors of cardd, in one place.

Flows catch these by class; nobody matches on message text. Every exception
class of cardd derives from CarddError, and every public one is declared here
(tests/test_errors.py checks both); a module's private control-flow signal
(`_SessionOver`) may live beside its only user, still under CarddError.
"""

from __future__ import annotations

import json
from typing import Any


class CarddError(Exception):
    """Base of every error cardd raises on purpose."""


class ConfigError(CarddError):
    """A configuration file or value is wrong. The message names file and key."""


# --- the Event Socket --------------------------------------------------------


class ProtocolError(CarddError):
    """The Event Socket protocol was broken, by one side or the other.

    Catch this to handle both; the two subclasses say who broke it.
    """


class RemoteProtocolError(ProtocolError):
    """The bytes FreeSWITCH sent (or its answer to a command) broke the protocol."""


class LocalProtocolError(ProtocolError):
    """cardd was asked to send something that cannot be sent (a line break in a
    header, a value FreeSWITCH would misread): a bug or bad input on our side."""


class CallGone(CarddError):
    """The call went away (hangup, disconnect notice, socket closed).

    Every waiter of a call is released with this one exception type, so a flow
    unwinds through its `finally` blocks to billing.
    """


class ESLTimeout(CarddError):
    """A deadline passed while waiting for FreeSWITCH (reply, completion, event)."""


# --- cards and money --------------------------------------------------------


class CardNotFound(CarddError):
    pass


class CardBlocked(CarddError):
    pass


class CardExpired(CarddError):
    pass


class InsufficientFunds(CarddError):
    pass


class NoRate(CarddError):
    """No tariff rate matches the destination."""


class ForbiddenDestination(CarddError):
    pass


class TooManyCalls(CarddError):
    """The card already has as many calls up as it may."""


class NoRoute(CarddError):
    """Carriers are configured but none may carry the destination (no buy rate,
    disabled, at its channel limit, or dearer than the sell price)."""


class DatabaseUnavailable(CarddError):
    pass


class SchemaError(CarddError):
    """The database has no cardd schema, or an older one, or cardd has no migrations to apply.
    Only `cardd db migrate` and `cardd serve` change the schema."""


class ListenError(CarddError):
    """An address cardd must listen on is taken or impossible. The message names it."""


def show_value(value: object) -> str:
    """A value as the operator wrote it in YAML, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(show_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "a mapping"
    return str(value)


class BadValue(CarddError, ValueError):
    """A value does not fit its option (cardd.options). `expected` says what would."""

    def __init__(self, expected: str, got: object):
        self.expected = expected
        self.got = got
        super().__init__(f"expected {expected}, got {show_value(got)}")


# --- calls -------------------------------------------------------------------


class CardRefused(CarddError):
    """The card cannot be used any more in this session; `prompt` says why."""

    def __init__(self, prompt: str):
        super().__init__(prompt)
        self.prompt = prompt


class InboundEslError(CarddError):
    """FreeSWITCH's inbound Event Socket could not be used."""


class BadCdr(CarddError, ValueError):
    """The body is not a usable mod_json_cdr document."""


# --- billing -----------------------------------------------------------------


class ReservationNotFound(CarddError, LookupError):
    """settle() was asked about a B-leg UUID that was never granted."""


class DuplicateGrant(CarddError):
    """A reservation for this B-leg UUID exists already: a B leg is granted once."""


class PinKeyError(CarddError):
    """The PIN key file is missing, unreadable, malformed or readable by others."""


class TransferError(CarddError):
    """A card-to-card transfer was refused (same card, other currency, bad amount)."""


class IdentityError(CarddError):
    """An operator write about identities was refused (bad CLI, unknown card, duplicate)."""


class CatalogError(CarddError):
    """An operator write was refused (unknown tariff, duplicate card number, bad value)."""


class OperatorError(CarddError):
    """An operator command was refused (unknown name, closed reservation, a rule it would break)."""


class CardImportRefused(CarddError):
    """The whole file was refused: `errors` lists (line number, message) of every bad row."""

    def __init__(self, errors: list[tuple[int, str]], rows: int):
        super().__init__(f"{len(errors)} bad rows")
        self.errors = errors
        self.rows = rows


class ImportRefused(CarddError):
    """A rates file was refused whole: `errors` lists (line number, message) of every bad row."""

    def __init__(self, errors: list[tuple[int, str]], rows: int):
        super().__init__(f"{len(errors)} bad rows")
        self.errors = errors
        self.rows = rows


class PromptError(CarddError):
    """An operator's prompt request that cannot be done; the message says why."""


# --- the HTTP API --------------------------------------------------------------


class ApiKeyError(CarddError):
    """An API key command was refused (unknown key, bad role, reseller without an owner)."""


class SignInRefused(CarddError):
    """A card holder's sign-in failed. `throttled` says the throttle refused it (nothing was checked)."""

    def __init__(self, message: str, *, throttled: bool = False):
        super().__init__(message)
        self.throttled = throttled


class NotVisible(CarddError):
    """The thing does not exist, or the caller may not see it (the API answers 404 either way)."""


class IdempotencyConflict(CarddError):
    """An Idempotency-Key was reused with another request."""


class Problem(CarddError):
    """An RFC 9457 problem: status, a short title, a detail, and per-field reasons.

    The HTTP API (and the web console) raise it to refuse a request in HTTP's terms;
    cardd.api.app answers it as a problem document, and maps every other CarddError to one.
    """

    def __init__(
        self,
        status: int,
        title: str,
        detail: str = "",
        *,
        invalid_params: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.invalid_params = invalid_params or []
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"type": "about:blank", "title": self.title, "status": self.status}
        if self.detail:
            doc["detail"] = self.detail
        if self.invalid_params:
            doc["invalid_params"] = self.invalid_params
        return doc
