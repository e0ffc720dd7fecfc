"""Identify the card: by the caller's CLI when enabled, else card number (and
PIN), up to the allowed attempts.

Every PIN (and, under use_word_pin, every card number) passes the throttle
(cardd.billing.identity.verdict: per CLI and per card, locked, counted and
recorded in PostgreSQL in one statement), so however many calls race, at most
the limit of wrong attempts per window is ever acted upon, across calls and
cardd processes. The PIN's check itself is pure (an HMAC, constant time) and
runs before that statement; when a bucket is full its result is discarded
unread, so a throttled caller learns nothing, the right PIN included. Wrong
card numbers in a row blacklist the CLI when the black list is on.

Round trips of a card number and PIN, right: the CLI's bucket before the number
is asked; the card and its PIN buckets (identity.card_for_pin); the verdict,
which brings the card back fresh with its available credit (Card.available),
so neither the minimum-balance check nor the balance said next reads it again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from cardd import prompts
from cardd.billing import identity, pins
from cardd.billing.ledger import Card
from cardd.digits import is_digits
from cardd.ivr import cli_registration
from cardd.ivr.call import Call

# Card-number entries shorter than this are fumbles, not fraud (spec, "Black list").
FRAUD_MIN_DIGITS = 4


class InputTimeouts:
    """Counts silences; the session ends after input_timeouts of them."""

    def __init__(self, call: Call):
        self.call = call
        self.count = 0

    def silent(self) -> bool:
        """Record one silence; True when the caller has used them all up."""
        self.count += 1
        if self.count >= self.call.options.input_timeouts:
            return True
        self.call.queue("no_input")
        return False


def identify(call: Call, timeouts: InputTimeouts):
    """The card the caller proved they hold, or None (the call has been ended)."""
    opts = call.options
    if opts.cli_as_card_number or opts.cli_auth_only or opts.trusted_cli_auth:
        found = _by_cli(call, timeouts)
        if found is not _ASK_NUMBER:
            return found
    return _by_entry(call, timeouts)


def card_language_by_cli(call: Call) -> str | None:
    """The language of the card the caller's CLI is mapped to, when the
    identification goes by CLI: known before the language menu, it can spare
    the caller the menu. Only a CLI mapping counts, never the CLI tried as a
    card number: skipping the menu must not tell a caller with a forged CLI
    that some card number exists. A smart-dial DID (a CLI mapping too) counts."""
    opts = call.options
    ident = call.services.identity
    card_id = None
    if call.channel.rdnis:
        smart = ident.smart_dial_lookup(call.channel.rdnis, call.cli, exclusive=opts.smart_dial_exclusive)
        card_id = smart.card_id if smart is not None else None
    if card_id is None and (opts.cli_as_card_number or opts.cli_auth_only or opts.trusted_cli_auth):
        card_id = ident.card_id_for_cli(call.cli)
    if card_id is None:
        return None
    return call.services.ledger.get_card(card_id).language


# A sentinel: the CLI did not settle it, ask for the card number.
_ASK_NUMBER = object()


def _by_cli(call: Call, timeouts: InputTimeouts):
    opts = call.options
    ident = call.services.identity
    ledger = call.services.ledger
    cli = call.cli
    card = None
    card_id = ident.card_id_for_cli(cli)
    if card_id is not None:
        card = ledger.get_card(card_id)
    elif opts.cli_as_card_number and not opts.cli_auth_only and is_digits(cli):
        # No mapping: the CLI itself may be the card number (or VoIP login).
        card = _find(call, cli)
    if card is None:
        if opts.cli_auth_only:
            call.services.metrics.auth_failures.labels("cli_not_mapped").inc()
            call.goodbye("cli_not_registered")
            return None
        return _ASK_NUMBER
    refusal = refusal_of(call, card)
    if refusal in ("blocked", "expired"):
        call.services.metrics.auth_failures.labels(refusal).inc()
        call.goodbye("card_blocked" if refusal == "blocked" else "card_expired")
        return None
    if refusal is None and _below_threshold(call, card):
        refusal = "low_balance"
    if refusal is not None:
        # Below balance_threshold (or otherwise unusable this way): the caller
        # may still enter a card number, unless only CLIs may get in.
        call.log.info("CLI authentication not used: %s", refusal)
        if opts.cli_auth_only:
            call.services.metrics.auth_failures.labels(refusal).inc()
            call.goodbye(_refusal_prompt(call, refusal))
            return None
        return _ASK_NUMBER
    if opts.trusted_cli_auth or not card.has_pin:
        call.log.info("card %s identified by CLI", _masked(card.username))
        return card
    if opts.use_word_pin:
        # The card number is the PIN: an untrusted CLI proves nothing here.
        return _ASK_NUMBER
    failures = 0
    while failures < opts.card_entry_attempts:
        result, fresh = _check_pin(call, card, timeouts)
        if result is None:
            call.log.info("card %s identified by CLI and PIN", _masked(card.username))
            return fresh
        if result in ("timeout", "throttled"):
            return None
        failures += 1
        call.services.metrics.auth_failures.labels(result).inc()
        call.queue("wrong_pin")
    call.goodbye("too_many_attempts")
    return None


def _by_entry(call: Call, timeouts: InputTimeouts):
    opts = call.options
    catalogue = call.services.prompts
    ident = call.services.identity
    metrics = call.services.metrics
    cli = call.cli
    min_len = opts.min_card_number_length or 1
    max_len = opts.card_number_length
    number_prompt = catalogue.card_number_prompt(opts)
    wrong_card = prompts.invalid_card_prompt(use_word_pin=opts.use_word_pin)
    limits = _limits(call)
    failures = 0
    while failures < opts.card_entry_attempts:
        if ident.throttled(limits, cli=cli):
            return _throttled(call, "cli")
        entry = call.ask(
            number_prompt,
            min_digits=min_len,
            max_digits=max_len,
            regex=rf"^[0-9]{{{min_len},{max_len}}}$",
            timeout_ms=7000,
        )
        if entry.digits is None:
            if entry.timed_out:
                if timeouts.silent():
                    call.goodbye()  # as at the destination prompt: never a silent drop
                    return None
                continue
            failures += 1
            metrics.auth_failures.labels("malformed").inc()
            if _wrong_card_number(call, entry.invalid or ""):
                return None
            call.queue(wrong_card)
            continue
        if opts.use_word_pin:
            # The number alone is the secret: what it is, the caller learns only
            # through the throttle's verdict, like a PIN's.
            found = _find(call, entry.digits)
            gated = ident.verdict(
                identity.pin_buckets(limits, cli=cli, number=entry.digits),
                limits.window_s,
                found is not None,
                card_id=found.id if found is not None else None,
            )
            if not gated.allowed:
                return _throttled(call, gated.refused_by)
            card = gated.value  # read afresh by the verdict, with its available credit
            refusal = refusal_of(call, card)
        else:
            # The card and the courtesy check of its PIN buckets, in one look-up.
            found, full = ident.card_for_pin(entry.digits, limits, cli=cli, by_authname=opts.voip_login_as_card_number)
            refusal, card = _number_and_pin(call, found, timeouts, entry.digits, full=full)
        if refusal is None:
            call.log.info("card %s identified", _masked(entry.digits))
            if opts.blacklist and cli:
                ident.reset_wrong_cards(cli)
            cli_registration.offer_after_entry(call, card)
            return card
        if refusal in ("timeout", "throttled"):
            return None
        failures += 1
        metrics.auth_failures.labels(refusal).inc()
        call.log.info("card entry refused: %s", refusal)
        if refusal in ("blocked", "expired"):
            call.goodbye("card_blocked" if refusal == "blocked" else "card_expired")
            return None
        # A number that is no card was counted against the CLI by the verdict already.
        if refusal == "unknown" and _wrong_card_number(call, entry.digits, counted=found is None):
            return None
        if not opts.use_word_pin and refusal in ("unknown", "wrong_pin"):
            call.queue("invalid_card_or_pin")  # the same words for both: see _number_and_pin
        else:
            call.queue(_refusal_prompt(call, refusal))
    call.goodbye("too_many_attempts")
    return None


def _find(call: Call, number: str):
    """The card of a number: by VoIP login (authname) or by card number (username)."""
    return call.services.ledger.find_card(number, by_authname=call.options.voip_login_as_card_number)


def _wrong_card_number(call: Call, typed: str, *, counted: bool = False) -> bool:
    """Count a wrong card number against the CLI (throttle, unless the verdict
    counted it already; black list). True when this one blacklisted the CLI
    and the call was ended."""
    ident = call.services.identity
    cli = call.cli
    digits = "".join(ch for ch in typed if is_digits(ch))
    if not digits:
        return False
    # Every wrong number slows guessing down, short ones too (short card numbers exist) ...
    if not counted:
        ident.record_failure(cli=cli)
    # ... but only numbers of FRAUD_MIN_DIGITS or more count towards the black list,
    # and only a real CLI can be blacklisted: anonymous callers would all share it.
    if len(digits) < FRAUD_MIN_DIGITS:
        return False
    if (
        call.options.blacklist
        and identity.is_registrable_cli(cli, 1)
        and ident.record_wrong_card(cli, call.options.blacklist_attempts)
    ):
        call.services.metrics.auth_failures.labels("blacklisted").inc()
        call.goodbye("cli_blacklisted")
        return True
    return False


def _limits(call: Call) -> identity.Limits:
    return identity.pin_limits(call.services.settings.daemon)


def _throttled(call: Call, what: str | None):
    call.log.warning("identification throttled (%s): too many wrong entries recently", what)
    call.services.metrics.auth_failures.labels("throttled").inc()
    call.goodbye("too_many_attempts")
    return None


def refusal_of(call: Call, card: Card | None) -> str | None:
    """Why this card may not be used on this call, or None."""
    if card is None:
        return "unknown"
    if card.status in ("blocked", "closed"):
        return "blocked"
    if card.expires_at is not None and card.expires_at <= datetime.now(UTC):
        return "expired"
    if call.options.own_accounts_only and not _own_account(call, card):
        # Said as an unknown card: another operator's cards are not ours to reveal.
        return "unknown"
    if not card.has_pin and not call.options.allow_empty_pin and not call.options.use_word_pin:
        return "empty_pin"
    minimum = call.options.minimum_balance
    if minimum is not None and minimum.applies_to(card.currency) and available_credit(call, card) < minimum.amount:
        return "low_balance"
    return None


def available_credit(call: Call, card: Card) -> Decimal:
    """The card's available credit: as read with the card when it was (Card.available:
    identification reads it with the card), else read now."""
    if card.available is not None:
        return card.available
    return call.services.ledger.available_credit(card.id)


def _own_account(call: Call, card: Card) -> bool:
    customer = getattr(call, "customer", None) or call.instance
    if not customer:
        return False
    owner = call.services.identity.customer_id(customer)
    if owner is None:
        # Misconfigured: fail closed, loudly.
        call.log.error("own_accounts_only: customer %r of instance %r does not exist", customer, call.instance)
        return False
    return card.customer_id == owner


def _below_threshold(call: Call, card: Card) -> bool:
    threshold = call.options.balance_threshold
    if threshold is None or not threshold.applies_to(card.currency):
        return False
    return available_credit(call, card) < threshold.amount


def _number_and_pin(
    call: Call, card: Card | None, timeouts: InputTimeouts, number: str, *, full: bool | None = None
) -> tuple[str | None, Card | None]:
    """Card number then PIN: (None, the card) or (why not, None). The PIN is
    asked whether or not the number is a card, checked at the same cost, and
    a wrong number sounds like a wrong PIN: neither the prompts nor their
    timing tell a guesser which numbers are real. Only a caller who typed the
    right PIN hears why a card cannot be used (blocked, expired, low balance).
    `full`: whether the PIN buckets were full when the card was looked up
    (identity.card_for_pin), None when not known."""
    if card is not None and not card.has_pin:
        if call.options.allow_empty_pin:
            return refusal_of(call, card), card  # the number alone is the card
        card = None  # unusable without a PIN: it sounds like any wrong number
    result, fresh = _check_pin(call, card, timeouts, number, full=full)
    if result is not None:
        return result, None
    return refusal_of(call, fresh), fresh


def _check_pin(
    call: Call, card: Card | None, timeouts: InputTimeouts, number: str | None = None, *, full: bool | None = None
) -> tuple[str | None, Card | None]:
    """(None, the card read afresh with its available credit) when the caller
    typed the card's PIN; else (why not, None): "unknown" for no card,
    "wrong_pin", "timeout", "throttled" (the last two have ended the call or
    will). `number` is what the caller typed as the card number (the
    throttle's bucket when it is no card); `full` whether the PIN buckets
    were full when the card was looked up (None: asked here)."""
    if card is not None and not card.has_pin:
        return None, card  # allowed by allow_empty_pin, checked above
    ident = call.services.identity
    cli = call.cli
    limits = _limits(call)
    card_id = card.id if card else None
    # A courtesy before the PIN is asked: a locked-out caller is not made to type it.
    if full is None:
        full = ident.throttled(limits, cli=cli, card_id=card_id, number=number)
    if full:
        _throttled(call, "card")
        return "throttled", None
    while True:
        entry = call.ask(
            call.services.prompts.pin_prompt(call.options),
            min_digits=1,
            max_digits=20,
            regex=r"^[0-9]{1,20}$",
            timeout_ms=7000,
        )
        if entry.digits is None and entry.timed_out:
            if timeouts.silent():
                call.goodbye()
                return "timeout", None
            continue
        break
    # The PIN is checked here (an HMAC against the hash read with the card: pure,
    # constant time), then the throttle's verdict decides whether that result may be
    # acted upon, under the card's and the CLI's locks, a failure recorded before they
    # are released: racing calls cannot act on more than the limit. During a lock-out
    # even the right PIN is refused, or the lock-out would still let a guesser find it.
    typed = entry.digits or ""
    if card is None:
        pins.decoy_check(typed)  # as costly as a PIN check
        ok = False
    else:
        ok = entry.digits is not None and pins.check_pin(typed, card.pin_hash)
    gated = ident.verdict(
        identity.pin_buckets(limits, cli=cli, card_id=card_id, number=number), limits.window_s, ok, card_id=card_id
    )
    if not gated.allowed:
        _throttled(call, gated.refused_by)
        return "throttled", None
    if card is None:
        return "unknown", None  # counted by the verdict against the CLI and the number
    if not gated.ok:
        return "wrong_pin", None
    fresh = gated.value
    if fresh is None:
        return "unknown", None  # the card was deleted while the PIN was typed
    ident.rehash_if_legacy(card.id, card.pin_hash, typed)
    return None, fresh


def _refusal_prompt(call: Call, refusal: str) -> str:
    opts = call.options
    if refusal == "low_balance":
        return prompts.low_balance_prompt(
            use_word_pin=opts.use_word_pin, say_no_card_on_low_balance=opts.say_no_card_on_low_balance
        )
    if refusal == "wrong_pin":
        return "wrong_pin"
    return prompts.invalid_card_prompt(use_word_pin=opts.use_word_pin)


def _masked(number: str) -> str:
    """Card numbers are secrets: logs show only the last four digits."""
    return "*" * max(0, len(number) - 4) + number[-4:]
