"""Hot dial: keys that stand for destinations. The sub-application dials a key,
the edit sub-application says a key's number and stores a new one, and under
direct_hot_dial a single digit at the destination prompt is a key: 1, 2 or 3
as in the reference product, any digit with direct_hot_dial_any_key."""

from __future__ import annotations

import re

from cardd import speech
from cardd.billing.ledger import Card
from cardd.ivr.call import Call
from cardd.ivr.subapp import MenuResult, Silences

_KEY = re.compile(r"^[0-9]{1,2}$")
LIMITED_KEYS = ("1", "2", "3")


def valid_key(options, key: str) -> bool:
    if options.limit_hot_keys:
        return key in LIMITED_KEYS
    return bool(_KEY.match(key))


def _ask_key(call: Call, timeouts) -> str | MenuResult:
    """The key the caller typed, or what the sub-application returns without one."""
    entry = call.ask("enter_hot_dial_key", min_digits=1, max_digits=2, regex=r"^[0-9]{1,2}$", timeout_ms=7000)
    if entry.timed_out:
        return MenuResult.timed_out(timeouts)
    if entry.digits is None or not valid_key(call.options, entry.digits):
        call.queue("invalid_hot_dial_key")
        return MenuResult()
    return entry.digits


def run_dial(call: Call, card: Card, timeouts: Silences) -> MenuResult:
    key = _ask_key(call, timeouts)
    if isinstance(key, MenuResult):
        return key
    return _dial_key(call, card, key)


def run_edit(call: Call, card: Card, timeouts: Silences) -> MenuResult:
    key = _ask_key(call, timeouts)
    if isinstance(key, MenuResult):
        return key
    ident = call.services.identity
    current = ident.hot_dial_get(card.id, key)
    if current is None:
        call.queue("hot_dial_key_not_set")
    else:
        call.queue("hot_dial_key_is", *speech.digit_ids(current, call.lang))
    prompt = "enter_hot_dial_number_no_pound" if call.options.suppress_pound_phrase else "enter_hot_dial_number"
    entry = call.ask(prompt, min_digits=1, max_digits=32, regex=r"^[0-9]{1,32}$", timeout_ms=10000)
    if entry.timed_out:
        # Nothing typed: the key keeps its number.
        return MenuResult.timed_out(timeouts)
    if entry.digits is None:
        call.queue("invalid_destination")
        return MenuResult()
    ident.hot_dial_set(card.id, key, entry.digits)
    call.log.info("hot-dial key %s saved", key)
    call.queue("hot_dial_saved")
    return MenuResult()


def direct(call: Call, card: Card, digits: str) -> MenuResult | None:
    """direct_hot_dial: a one-digit destination is a key. None when not applicable."""
    opts = call.options
    if not (opts.direct_hot_dial and opts.hot_dial and len(digits) == 1):
        return None
    # The reference's direct hot keys are 1, 2 and 3; any digit only when asked for.
    direct_key = valid_key(opts, digits) if opts.direct_hot_dial_any_key else digits in LIMITED_KEYS
    if not direct_key:
        call.queue("invalid_hot_dial_key")
        return MenuResult()
    return _dial_key(call, card, digits)


def _dial_key(call: Call, card: Card, key: str) -> MenuResult:
    destination = call.services.identity.hot_dial_get(card.id, key)
    if destination is None:
        call.queue("hot_dial_key_not_set")
        return MenuResult()
    call.log.info("hot-dial key %s", key)
    return MenuResult(dial=destination)
