"""Top-up: a voucher number moves its value to the card (one transaction in
cardd.billing.vouchers), and the caller hears the new balance.

Voucher numbers are secrets, guarded like PINs: every number typed is looked
up inside the throttle's gate (cardd.billing.identity.gate: per card, per CLI
and across the service; nothing is looked up when a bucket is full), and every
outcome but a credit counts. A refused voucher, whatever the reason (no such number, used, expired,
voided, another currency), gets one prompt, `voucher_unknown`: a guesser who hit
a used or foreign-currency number must not learn that it exists (a foreign one
could then be redeemed with another card). The log and the metric keep the
reason for the operator. Over a limit the caller hears "too many attempts",
which says nothing about the number typed."""

from __future__ import annotations

from cardd import prompts, speech
from cardd.billing import identity
from cardd.billing.ledger import Card
from cardd.ivr.call import Call
from cardd.ivr.subapp import MenuResult, Silences


def run(call: Call, card: Card, timeouts: Silences) -> MenuResult:
    opts = call.options
    ident = call.services.identity
    limits = identity.topup_limits(call.services.settings.daemon)
    buckets = identity.topup_buckets(limits, cli=call.cli, card_id=card.id)
    length = opts.topup_card_length
    ask_voucher = prompts.voucher_prompt(suppress_pound_phrase=opts.suppress_pound_phrase)
    failures = 0
    while failures < opts.card_entry_attempts:
        # A courtesy: a caller already over a limit is not asked for a number.
        if ident.is_full(buckets, limits.window_s):
            return _throttled(call, "before the number")
        entry = call.ask(
            ask_voucher, min_digits=1, max_digits=length, regex=rf"^[0-9]{{1,{length}}}$", timeout_ms=10000
        )
        if entry.digits is None:
            if entry.timed_out:
                return MenuResult.timed_out(timeouts)
            failures += 1
            call.queue("voucher_unknown")
            continue

        # The guarantee: the number is looked up inside the gate (a failure
        # recorded before the locks are released), so racing calls cannot try
        # more numbers than the limits allow.
        def redeem(conn, number=entry.digits):
            result = call.services.vouchers.redeem_in(conn, number, card.id)
            return result.ok, result

        gated = ident.gate(buckets, limits.window_s, redeem)
        if not gated.allowed:
            return _throttled(call, gated.refused_by)
        result = gated.value
        if result.ok:
            call.log.info("top-up of %s %s", result.amount, result.currency)
            available = call.services.ledger.available_credit(card.id)
            call.queue(
                "topup_successful",
                *speech.balance_ids(
                    available, card.currency, call.lang, negative_as_zero=opts.say_negative_balance_as_zero
                ),
            )
            return MenuResult()
        failures += 1
        call.log.info("voucher refused: %s", result.outcome)
        call.services.metrics.auth_failures.labels("voucher").inc()
        call.queue("voucher_unknown")
    return MenuResult()


def _throttled(call: Call, what: str | None) -> MenuResult:
    call.log.warning("top-up throttled (%s): too many failed top-ups recently", what)
    call.services.metrics.auth_failures.labels("throttled").inc()
    return MenuResult(end="throttled", farewell=("too_many_attempts",))
