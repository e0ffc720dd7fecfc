"""Password change: the current PIN, then the new one twice. The new PIN is
MIN_PIN_LENGTH..MAX_PIN_LENGTH digits and is stored as a keyed hash
(cardd.billing.pins, through identity.set_pin)."""

from __future__ import annotations

from cardd.billing import identity, pins
from cardd.billing.ledger import Card
from cardd.ivr.call import Call
from cardd.ivr.subapp import MenuResult, Silences

MIN_PIN_LENGTH = 4  # the prompt invalid_new_pin says "four to twelve digits"
MAX_PIN_LENGTH = 12


def _prompt(call: Call, base: str) -> str:
    return base + "_no_pound" if call.options.suppress_pound_phrase else base


def run(call: Call, card: Card, timeouts: Silences) -> MenuResult:
    ident = call.services.identity
    cli = call.cli
    # The PIN may have changed since the caller identified (another call).
    current = call.services.ledger.get_card(card.id)
    if current.has_pin:
        limits = identity.pin_limits(call.services.settings.daemon)
        buckets = identity.pin_buckets(limits, cli=cli, card_id=card.id)
        if ident.throttled(limits, cli=cli, card_id=card.id):
            call.services.metrics.auth_failures.labels("throttled").inc()
            return MenuResult(end="throttled", farewell=("too_many_attempts",))
        old = call.ask(
            _prompt(call, "enter_old_pin"), min_digits=1, max_digits=20, regex=r"^[0-9]{1,20}$", timeout_ms=7000
        )
        if old.timed_out:
            return MenuResult.timed_out(timeouts)
        # Checked (an HMAC: pure, constant time), then acted upon only when the throttle's
        # verdict allows, like every PIN (cardd.ivr.identify): refused, the result is discarded.
        typed = old.digits or ""
        ok = old.digits is not None and pins.check_pin(typed, current.pin_hash)
        gated = ident.verdict(buckets, limits.window_s, ok)
        if not gated.allowed:
            call.services.metrics.auth_failures.labels("throttled").inc()
            return MenuResult(end="throttled", farewell=("too_many_attempts",))
        if not gated.ok:
            call.services.metrics.auth_failures.labels("wrong_pin").inc()
            call.queue("wrong_pin")
            return MenuResult()
        ident.rehash_if_legacy(card.id, current.pin_hash, typed)
    pin_regex = rf"^[0-9]{{{MIN_PIN_LENGTH},{MAX_PIN_LENGTH}}}$"
    new = call.ask(_prompt(call, "enter_new_pin"), min_digits=1, max_digits=20, regex=pin_regex, timeout_ms=7000)
    if new.timed_out:
        return MenuResult.timed_out(timeouts)
    if new.digits is None:
        call.queue("invalid_new_pin")
        return MenuResult()
    again = call.ask(_prompt(call, "reenter_new_pin"), min_digits=1, max_digits=20, regex=pin_regex, timeout_ms=7000)
    if again.timed_out:
        return MenuResult.timed_out(timeouts)
    if again.digits != new.digits:
        call.queue("pins_do_not_match")
        return MenuResult()
    ident.set_pin(card.id, new.digits)
    call.log.info("PIN changed")
    call.queue("pin_changed")
    return MenuResult()
