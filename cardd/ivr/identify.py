"""Identify the card: card number (and PIN), up to the allowed attempts."""

from __future__ import annotations

from datetime import datetime, timezone

from cardd import prompts
from cardd.ivr.call import Call


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
    """The card the caller proved they hold, or None (the call should end)."""
    opts = call.options
    catalogue = call.services.prompts
    ledger = call.services.ledger
    metrics = call.services.metrics
    min_len = opts.min_card_number_length or 1
    max_len = opts.card_number_length
    number_prompt = catalogue.card_number_prompt(opts)
    wrong_card = prompts.invalid_card_prompt(use_word_pin=opts.use_word_pin)
    failures = 0
    while failures < opts.card_entry_attempts:
        entry = call.ask(number_prompt, min_digits=min_len, max_digits=max_len,
                         regex=rf"^\d{{{min_len},{max_len}}}$", timeout_ms=7000)
        if entry.digits is None:
            if entry.timed_out:
                if timeouts.silent():
                    return None
                continue
            failures += 1
            metrics.auth_failures.labels("malformed").inc()
            call.queue(wrong_card)
            continue
        card = ledger.find_card(entry.digits)
        refusal = _refusal(call, card)
        if refusal is None and not opts.use_word_pin:
            refusal = _check_pin(call, card, timeouts)
        if refusal is None:
            call.log.info("card %s identified", _masked(entry.digits))
            return card
        if refusal == "timeout":
            return None
        failures += 1
        metrics.auth_failures.labels(refusal).inc()
        call.log.info("card entry refused: %s", refusal)
        if refusal in ("blocked", "expired"):
            call.goodbye("card_blocked" if refusal == "blocked" else "card_expired")
            return None
        call.queue(_refusal_prompt(call, refusal))
    call.goodbye("too_many_attempts")
    return None


def _refusal(call: Call, card) -> str | None:
    if card is None:
        return "unknown"
    if card.status == "blocked":
        return "blocked"
    if card.expires_at is not None and card.expires_at <= datetime.now(timezone.utc):
        return "expired"
    if not card.has_pin and not call.options.allow_empty_pin and not call.options.use_word_pin:
        return "empty_pin"
    minimum = call.options.minimum_balance
    if minimum is not None and minimum.applies_to(card.currency):
        if call.services.ledger.available_credit(card.id) < minimum.amount:
            return "low_balance"
    return None


def _check_pin(call: Call, card, timeouts: InputTimeouts) -> str | None:
    if not card.has_pin:
        return None  # allowed by allow_empty_pin, checked above
    while True:
        entry = call.ask(call.services.prompts.pin_prompt(call.options),
                         min_digits=1, max_digits=20, regex=r"^\d{1,20}$", timeout_ms=7000)
        if entry.digits is None and entry.timed_out:
            if timeouts.silent():
                return "timeout"
            continue
        if entry.digits is not None and call.services.ledger.verify_pin(card, entry.digits):
            return None
        return "wrong_pin"


def _refusal_prompt(call: Call, refusal: str) -> str:
    opts = call.options
    if refusal == "low_balance":
        return prompts.low_balance_prompt(use_word_pin=opts.use_word_pin,
                                          say_no_card_on_low_balance=opts.say_no_card_on_low_balance)
    if refusal == "wrong_pin":
        return "wrong_pin"
    return prompts.invalid_card_prompt(use_word_pin=opts.use_word_pin)


def _masked(number: str) -> str:
    """Card numbers are secrets: logs show only the last four digits."""
    return "*" * max(0, len(number) - 4) + number[-4:]
