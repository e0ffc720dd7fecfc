"""The API's request and response shapes (marshmallow; flask-smorest turns them into OpenAPI).

Money is a JSON string with exactly 5 decimal places ("10.50000") next to its currency:
never a JSON number, so no client's float can round a balance. Times are UTC ISO 8601.
Unknown fields are refused (marshmallow's RAISE), each with its own reason.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from cardd.money import QUANTUM, money

DIGITS = validate.Regexp(r"^[0-9]{1,32}$", error="digits 0-9 only, 1 to 32 of them")
PREFIX = validate.Regexp(r"^[0-9]{0,32}$", error="digits 0-9 only, at most 32")
CURRENCY = validate.Regexp(r"^[A-Z]{3}$", error="three capital letters (ISO 4217)")
NAME = validate.Length(min=1, max=200)


class Money(fields.Field):
    """A decimal string with at most 5 places in, exactly 5 out."""

    def __init__(self, *, positive: bool = False, non_negative: bool = False, **kwargs: Any):
        metadata = {
            "type": "string",
            "pattern": r"^[+-]?[0-9]{1,13}(\.[0-9]{1,5})?$",
            "example": "10.00000",
            **kwargs.pop("metadata", {}),
        }
        super().__init__(metadata=metadata, **kwargs)
        self.positive = positive
        self.non_negative = non_negative

    def _serialize(self, value: Any, attr: Any, obj: Any, **kwargs: Any) -> str | None:
        return None if value is None else f"{Decimal(value).quantize(QUANTUM)}"

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Decimal:
        if not isinstance(value, str):
            raise ValidationError('an amount is a string such as "10.50000", not a JSON number')
        try:
            amount = money(value)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        if self.positive and amount <= 0:
            raise ValidationError("must be more than 0")
        if self.non_negative and amount < 0:
            raise ValidationError("must not be negative")
        return amount


class UtcDateTime(fields.DateTime):
    """ISO 8601, always written in UTC; a time without an offset is refused on input."""

    def _serialize(self, value: Any, attr: Any, obj: Any, **kwargs: Any) -> str | None:
        if value is None:
            return None
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> datetime:
        result = super()._deserialize(value, attr, data, **kwargs)
        if result.tzinfo is None:
            raise ValidationError("give a time zone offset (Z for UTC)")
        return result


class PageArgs(Schema):
    cursor = fields.Str(
        load_default=None,
        validate=validate.Length(max=100),
        metadata={"description": "next_cursor of the previous page"},
    )
    limit = fields.Int(load_default=100, validate=validate.Range(1, 500))


_PAGES: dict[type, type[Schema]] = {}


def page_of(item: type[Schema]) -> type[Schema]:
    """The page schema of a list of `item` (one class per item, so OpenAPI names it once)."""
    if item not in _PAGES:
        name = item.__name__.removesuffix("Schema") + "PageSchema"
        _PAGES[item] = Schema.from_dict(
            {
                "items": fields.List(fields.Nested(item), required=True),
                "next_cursor": fields.Str(allow_none=True, required=True),
            },
            name=name,
        )
    return _PAGES[item]


# --- cards ----------------------------------------------------------------------------


class CardSchema(Schema):
    number = fields.Str(required=True)
    status = fields.Str(required=True)
    balance = Money(required=True)
    available = Money(required=True, metadata={"description": "balance minus open reservations"})
    currency = fields.Str(required=True)
    tariff = fields.Str(required=True)
    customer = fields.Str(allow_none=True)
    plan = fields.Str(allow_none=True)
    open_reservations = fields.Int(required=True)
    expires_at = UtcDateTime(allow_none=True)
    created_at = UtcDateTime()


class CardCreateSchema(Schema):
    number = fields.Str(required=True, validate=DIGITS)
    tariff = fields.Str(required=True, validate=NAME)
    currency = fields.Str(required=True, validate=CURRENCY)
    balance = Money(load_default=Decimal(0), non_negative=True)
    pin = fields.Str(
        load_default="", load_only=True, validate=validate.Regexp(r"^[0-9]{0,20}$", error="digits 0-9 only, at most 20")
    )
    customer = fields.Str(load_default=None, validate=NAME)
    plan = fields.Str(load_default=None, validate=NAME)
    status = fields.Str(load_default="active", validate=validate.OneOf(["new", "active", "blocked"]))
    max_concurrent_calls = fields.Int(load_default=None, validate=validate.Range(1, 1000))
    expires_at = UtcDateTime(load_default=None)


class CardListArgs(PageArgs):
    status = fields.Str(validate=validate.OneOf(["new", "active", "blocked", "closed"]))
    customer = fields.Str(validate=NAME)
    tariff = fields.Str(validate=NAME)
    number_prefix = fields.Str(validate=PREFIX)
    balance_below = Money()


class LedgerEntrySchema(Schema):
    id = fields.Int(required=True)
    amount = Money(required=True)
    kind = fields.Str(required=True)
    b_uuid = fields.UUID(allow_none=True)
    reference = fields.Str()
    balance_after = Money(required=True)
    created_at = UtcDateTime(required=True)


class CardDetailSchema(CardSchema):
    history = fields.List(
        fields.Nested(LedgerEntrySchema), required=True, metadata={"description": "the newest ledger rows"}
    )
    history_cursor = fields.Str(allow_none=True, metadata={"description": "cursor for GET .../history"})


class AdjustSchema(Schema):
    amount = Money(required=True, metadata={"description": "positive credits, negative debits"})
    reference = fields.Str(required=True, validate=validate.Length(min=1, max=500))
    allow_negative = fields.Bool(load_default=False)


class BalanceSchema(Schema):
    number = fields.Str(required=True)
    balance = Money(required=True)
    currency = fields.Str(required=True)


class PinSchema(Schema):
    pin = fields.Str(
        required=True, load_only=True, validate=validate.Regexp(r"^[0-9]{0,20}$", error="digits 0-9 only, at most 20")
    )


class StatusSchema(Schema):
    number = fields.Str(required=True)
    status = fields.Str(required=True)


# --- card holders ----------------------------------------------------------------------


class SignInSchema(Schema):
    number = fields.Str(required=True, validate=DIGITS)
    pin = fields.Str(
        required=True, load_only=True, validate=validate.Regexp(r"^[0-9]{1,20}$", error="digits 0-9 only, 1 to 20")
    )


class SessionSchema(Schema):
    token = fields.Str(required=True)
    expires_at = UtcDateTime(required=True)
    card = fields.Str(required=True)


class RedeemSchema(Schema):
    voucher = fields.Str(required=True, validate=DIGITS)


class RedeemedSchema(Schema):
    voucher = fields.Str(required=True)
    amount = Money(required=True)
    currency = fields.Str(required=True)
    balance = Money(required=True)


# --- CDRs and reservations ---------------------------------------------------------------


class CdrSchema(Schema):
    id = fields.Int(required=True)
    b_uuid = fields.UUID(required=True)
    a_uuid = fields.UUID(required=True)
    card = fields.Str(required=True, attribute="username")
    currency = fields.Str(required=True)
    cli = fields.Str()
    cld = fields.Str()
    translated_cld = fields.Str()
    rate_prefix = fields.Str()
    started_at = UtcDateTime(required=True)
    answered_at = UtcDateTime(allow_none=True)
    ended_at = UtcDateTime(required=True)
    granted_seconds = fields.Int()
    billed_seconds = fields.Int()
    plan_seconds_used = fields.Int()
    cost = Money(required=True)
    hangup_cause = fields.Str()
    estimated = fields.Bool()


class CdrListArgs(PageArgs):
    card = fields.Str(validate=DIGITS)
    customer = fields.Str(validate=NAME)
    start = UtcDateTime(data_key="from", metadata={"description": "ended at or after (UTC ISO 8601)"})
    end = UtcDateTime(data_key="to", metadata={"description": "ended before"})
    destination = fields.Str(validate=PREFIX, metadata={"description": "prefix of the translated CLD"})
    cause = fields.Str(validate=validate.Length(min=1, max=64))
    format = fields.Str(load_default="json", validate=validate.OneOf(["json", "csv"]))


class ReservationSchema(Schema):
    b_uuid = fields.UUID(required=True)
    card = fields.Str(required=True)
    amount = Money(required=True)
    currency = fields.Str(required=True)
    duration_s = fields.Int(required=True)
    cld = fields.Str()
    created_at = UtcDateTime(required=True)
    expires_at = UtcDateTime(required=True)
    expired = fields.Bool()
    switchname = fields.Str(allow_none=True)
    bridge_sent_at = UtcDateTime(allow_none=True)
    answered_at = UtcDateTime(allow_none=True)


class ReservationListArgs(PageArgs):
    card = fields.Str(validate=DIGITS)
    expired = fields.Bool(load_default=False)


class SettleSchema(Schema):
    billed_seconds = fields.Int(required=True, validate=validate.Range(0, 86400 * 7))
    reason = fields.Str(load_default="", validate=validate.Length(max=500))
    force = fields.Bool(load_default=False)


class ReleaseSchema(Schema):
    reason = fields.Str(load_default="", validate=validate.Length(max=500))
    force = fields.Bool(load_default=False)


class ClosureSchema(Schema):
    card = fields.Str(required=True)
    b_uuid = fields.UUID(required=True)
    billed_seconds = fields.Int(required=True)
    cost = Money(required=True)
    currency = fields.Str(required=True)
    balance = Money(required=True)


# --- tariffs and rates ---------------------------------------------------------------------


class TariffSchema(Schema):
    name = fields.Str(required=True, validate=NAME)
    currency = fields.Str(required=True, validate=CURRENCY)
    rates = fields.Int(dump_only=True)


class RateSchema(Schema):
    prefix = fields.Str(required=True, validate=PREFIX)
    price_1 = Money(required=True, non_negative=True)
    interval_1 = fields.Int(required=True, validate=validate.Range(1, 86400))
    price_n = Money(required=True, non_negative=True)
    interval_n = fields.Int(required=True, validate=validate.Range(1, 86400))
    connect_fee = Money(load_default=Decimal(0), non_negative=True)
    free_seconds = fields.Int(load_default=0, validate=validate.Range(0, 86400))
    grace = fields.Int(load_default=0, validate=validate.Range(0, 86400))
    forbidden = fields.Bool(load_default=False)


class RateListArgs(PageArgs):
    prefix = fields.Str(validate=PREFIX, metadata={"description": "rates whose prefix starts with this"})


class LookupArgs(Schema):
    number = fields.Str(required=True, validate=DIGITS)
    credit = Money(non_negative=True, metadata={"description": "credit for the max duration"})
    card = fields.Str(validate=DIGITS, metadata={"description": "use this card's available credit"})


class LookupSchema(Schema):
    number = fields.Str(required=True)
    tariff = fields.Str(required=True)
    currency = fields.Str(required=True)
    rate = fields.Nested(RateSchema, allow_none=True)
    credit = Money(allow_none=True)
    max_duration_s = fields.Int(allow_none=True)


class ImportArgs(Schema):
    mode = fields.Str(load_default="merge", validate=validate.OneOf(["merge", "replace"]))


class ImportResultSchema(Schema):
    rows = fields.Int()
    inserted = fields.Int()
    updated = fields.Int()
    deleted = fields.Int()


# --- vouchers, customers, plans --------------------------------------------------------------


class VoucherSchema(Schema):
    number = fields.Str(required=True)
    amount = Money(required=True)
    currency = fields.Str(required=True)
    status = fields.Str(required=True)
    used_by = fields.Str(allow_none=True)
    used_at = UtcDateTime(allow_none=True)
    expires_at = UtcDateTime(allow_none=True)
    batch = fields.Str()


class VoucherGenerateSchema(Schema):
    count = fields.Int(required=True, validate=validate.Range(1, 10000))
    amount = Money(required=True, positive=True)
    currency = fields.Str(required=True, validate=CURRENCY)
    length = fields.Int(load_default=None, validate=validate.Range(6, 32))
    expires_at = UtcDateTime(load_default=None)
    batch = fields.Str(load_default="", validate=validate.Length(max=100))


class VoucherListArgs(PageArgs):
    batch = fields.Str(validate=validate.Length(max=100))
    status = fields.Str(validate=validate.OneOf(["unused", "used", "void"]))


class GeneratedSchema(Schema):
    numbers = fields.List(fields.Str(), required=True)


class CustomerSchema(Schema):
    name = fields.Str(required=True, validate=NAME)
    owner = fields.Str(allow_none=True, dump_only=True)
    cards = fields.Int(dump_only=True)
    created_at = UtcDateTime(dump_only=True)


class PlanSchema(Schema):
    name = fields.Str(required=True, validate=NAME)
    minutes_plan = fields.Bool(load_default=False)
    suspended = fields.Bool(load_default=False)
    minutes = fields.Dict(
        keys=fields.Str(validate=PREFIX), values=fields.Int(validate=validate.Range(0, 10**6)), load_default=dict
    )
    cards = fields.Int(dump_only=True)


# --- more card operations ----------------------------------------------------------------------


class CardPatchSchema(Schema):
    expires_at = UtcDateTime(allow_none=True, metadata={"description": "null: never expires"})
    plan = fields.Str(allow_none=True, validate=NAME, metadata={"description": "null: no plan"})
    customer = fields.Str(allow_none=True, validate=NAME, metadata={"description": "null: no customer"})


class TransferSchema(Schema):
    to = fields.Str(required=True, validate=DIGITS)
    amount = Money(required=True, positive=True)


class TransferredSchema(Schema):
    from_card = fields.Str(required=True, data_key="from")
    to = fields.Str(required=True)
    amount = Money(required=True)
    currency = fields.Str(required=True)
    from_balance = Money(required=True)
    to_balance = Money(required=True)


class BatchSchema(Schema):
    count = fields.Int(required=True, validate=validate.Range(1, 10000))
    tariff = fields.Str(required=True, validate=NAME)
    currency = fields.Str(required=True, validate=CURRENCY)
    length = fields.Int(load_default=10, validate=validate.Range(6, 32))
    pin_length = fields.Int(load_default=4, validate=validate.Range(0, 20))
    balance = Money(load_default=Decimal(0), non_negative=True)
    customer = fields.Str(load_default=None, validate=NAME)
    plan = fields.Str(load_default=None, validate=NAME)
    expires_at = UtcDateTime(load_default=None)
    valid_days = fields.Int(load_default=None, validate=validate.Range(1, 36500))
    max_concurrent_calls = fields.Int(load_default=None, validate=validate.Range(1, 1000))


# --- dialling: CLI maps, hot dial, smart dial, black list; live calls ------------------------------

CLI = validate.Regexp(r"^\+?[0-9]{1,32}$", error="digits 0-9, optionally after +, at most 32")


class CliMapSchema(Schema):
    cli = fields.Str(required=True)
    card = fields.Str(required=True)


class CliMapArgs(Schema):
    replace = fields.Bool(load_default=False, metadata={"description": "take the CLI from another card"})


class HotDialSchema(Schema):
    key = fields.Str(dump_only=True)
    destination = fields.Str(required=True, validate=DIGITS)


class SmartDialSchema(Schema):
    did = fields.Str(dump_only=True)
    card = fields.Str(dump_only=True)
    destination = fields.Str(required=True, validate=DIGITS)
    exclusive = fields.Bool(load_default=False)


class BlacklistSchema(Schema):
    cli = fields.Str(dump_only=True)
    failed_attempts = fields.Int(dump_only=True)
    blocked = fields.Bool(dump_only=True)
    blocked_at = UtcDateTime(dump_only=True, allow_none=True)
    reason = fields.Str(load_default="added by the operator", allow_none=True, validate=validate.Length(max=500))
    updated_at = UtcDateTime(dump_only=True)


class BlacklistArgs(PageArgs):
    all = fields.Bool(load_default=False, metadata={"description": "also CLIs counting wrong cards, not blocked"})


class NodeSchema(Schema):
    node = fields.Str(required=True)
    host = fields.Str(required=True)
    pid = fields.Int(required=True)
    started_at = UtcDateTime(required=True)
    heartbeat_at = UtcDateTime(required=True)
    alive = fields.Bool(required=True)
    calls = fields.Int(required=True, metadata={"description": "open reservations this process granted"})


class RenameSchema(Schema):
    name = fields.Str(required=True, validate=NAME)


class PlanPatchSchema(Schema):
    name = fields.Str(validate=NAME, metadata={"description": "a new name"})
    suspended = fields.Bool()
    minutes_plan = fields.Bool()
    minutes = fields.Dict(
        keys=fields.Str(validate=PREFIX),
        values=fields.Int(validate=validate.Range(0, 10**6)),
        metadata={"description": "free minutes to set per prefix"},
    )
    remove_prefixes = fields.List(fields.Str(validate=PREFIX))


class AuditSchema(Schema):
    id = fields.Int(required=True)
    at = UtcDateTime(required=True)
    who = fields.Str(required=True)
    action = fields.Str(required=True)
    args = fields.Dict(required=True)
    card = fields.Str(allow_none=True)
    b_uuid = fields.UUID(allow_none=True)
    detail = fields.Str()


class AuditArgs(PageArgs):
    card = fields.Str(validate=DIGITS)
    action = fields.Str(validate=validate.Length(min=1, max=100))


class CardImportArgs(Schema):
    tariff = fields.Str(required=True, validate=NAME)
    currency = fields.Str(required=True, validate=CURRENCY)
    customer = fields.Str(validate=NAME)
    plan = fields.Str(validate=NAME)
    allow_negative = fields.Bool(load_default=False)
    allow_past_expiry = fields.Bool(load_default=False)


class CardImportResultSchema(Schema):
    cards = fields.Int(required=True)


# --- carriers, prompts, maintenance ------------------------------------------------------------

GATEWAY = validate.Length(min=1, max=500)


class CarrierSchema(Schema):
    name = fields.Str(required=True, validate=validate.Length(min=1, max=64))
    currency = fields.Str(required=True, validate=CURRENCY)
    gateways = fields.List(
        fields.Str(validate=GATEWAY),
        required=True,
        validate=validate.Length(min=1, max=20),
        metadata={"description": "dial-string templates with {number}, tried in order"},
    )
    priority = fields.Int(
        load_default=100,
        validate=validate.Range(0, 2_147_483_647),
        metadata={"description": "among equal first-minute prices the lower goes first"},
    )
    channel_limit = fields.Int(load_default=None, allow_none=True, validate=validate.Range(1, 2_147_483_647))
    enabled = fields.Bool(dump_only=True)
    rates = fields.Int(dump_only=True, metadata={"description": "prefixes in the buy deck"})
    open_calls = fields.Int(dump_only=True, metadata={"description": "open reservations routed to it"})


class RoutePlanArgs(Schema):
    number = fields.Str(required=True, validate=DIGITS)
    tariff = fields.Str(required=True, validate=NAME, metadata={"description": "the sell side: the card's tariff"})
    allow_loss = fields.Bool(load_default=False, metadata={"description": "as calling_card.route_at_a_loss"})


class RouteSchema(Schema):
    carrier = fields.Str(required=True)
    gateway = fields.Str(required=True)
    prefix = fields.Str(required=True)
    buy_first_minute = Money(required=True)
    margin_first_minute = Money(required=True)


class RoutePlanSchema(Schema):
    number = fields.Str(required=True)
    tariff = fields.Str(required=True)
    currency = fields.Str(required=True)
    refused = fields.Bool(required=True, metadata={"description": "the tariff has no rate or forbids the number"})
    sell_prefix = fields.Str(allow_none=True, required=True)
    sell_first_minute = Money(allow_none=True, required=True)
    routes = fields.List(fields.Nested(RouteSchema), required=True)


class PromptSchema(Schema):
    id = fields.Int(required=True)
    name = fields.Str(required=True)
    description = fields.Str(required=True)
    default_audio = fields.Str(
        allow_none=True, required=True, metadata={"description": "the default recording, relative to daemon.sounds_dir"}
    )
    languages = fields.Dict(
        keys=fields.Str(),
        values=fields.Str(),
        required=True,
        metadata={"description": "language -> recording, relative to daemon.sounds_dir"},
    )


class PromptCreateForm(Schema):
    name = fields.Str(required=True, validate=NAME)
    description = fields.Str(load_default="", validate=validate.Length(max=1000))


class PromptUpdateForm(Schema):
    name = fields.Str(validate=NAME)
    description = fields.Str(validate=validate.Length(max=1000))
    lang = fields.Str(
        validate=validate.Regexp(r"^[a-z]{2}$", error="a two-letter code such as th"),
        metadata={"description": "the uploaded audio's language; without it, the default audio"},
    )


class HashedPinsSchema(Schema):
    hashed = fields.Int(required=True, metadata={"description": "plain PINs hashed by this request"})


class RateDeleteArgs(Schema):
    prefix = fields.Str(
        required=True, validate=PREFIX, metadata={"description": "the rate's prefix; empty for the catch-all rate"}
    )
