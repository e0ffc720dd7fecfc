"""Top-up: a voucher number moves its value to the card (one transaction in
cardd.billing.vouchers), and the caller hears the new balance. Used, expired,
unknown and other-currency vouchers each get their own prompt. Wrong voucher
numbers count against the caller's CLI like wrong card numbers, so vouchers
cannot be guessed faster than cards."""

from __future__ import annotations

from cardd import prompts, speech
from cardd.billing import identity, vouchers
from cardd.ivr.call import Call
from cardd.ivr.menu import MenuResult

_PROMPTS = {
    vouchers.UNKNOWN: "voucher_unknown",
    vouchers.USED: "voucher_used",
    vouchers.EXPIRED: "voucher_expired",
    vouchers.WRONG_CURRENCY: "voucher_wrong_currency",
}


def run(call: Call, card, timeouts) -> MenuResult:
    opts = call.options
    pool = call.services.ledger.pool
    cli = call.channel.cli
    length = opts.topup_card_length
    ask_voucher = prompts.voucher_prompt(suppress_pound_phrase=opts.suppress_pound_phrase)
    failures = 0
    while failures < opts.card_entry_attempts:
        if identity.throttled(pool, cli=cli):
            call.log.warning("top-up throttled: too many wrong entries from this CLI recently")
            call.services.metrics.auth_failures.labels("throttled").inc()
            return MenuResult(end="throttled", farewell=("too_many_attempts",))
        entry = call.ask(ask_voucher, min_digits=1, max_digits=length, regex=rf"^\d{{1,{length}}}$",
                         timeout_ms=10000)
        if entry.digits is None:
            if entry.timed_out:
                return MenuResult.timed_out(timeouts)
            failures += 1
            call.queue("voucher_unknown")
            continue
        result = vouchers.redeem(pool, entry.digits, card.id)
        if result.ok:
            call.log.info("top-up of %s %s", result.amount, result.currency)
            available = call.services.ledger.available_credit(card.id)
            call.queue("topup_successful",
                       *speech.balance_ids(available, card.currency, call.lang,
                                           negative_as_zero=opts.say_negative_balance_as_zero))
            return MenuResult()
        failures += 1
        call.log.info("voucher refused: %s", result.outcome)
        if result.outcome == vouchers.UNKNOWN:
            identity.record_failure(pool, cli=cli)
        call.queue(_PROMPTS[result.outcome])
    return MenuResult()
