"""Asking for the destination number.

With destination_completion_regex the number is complete as soon as the
digits match it: play_and_get_digits cannot stop on a pattern, so cardd
reads one key at a time and checks after each. Keys the caller types while
cardd checks wait in FreeSWITCH's DTMF queue for the next read, so typing
fast loses nothing.
"""

from __future__ import annotations

from cardd.channel import Collected
from cardd.ivr.call import Call

# The longest destination a caller can enter (E.164 is 15; room for prefixes).
MAX_DESTINATION_DIGITS = 24
FIRST_KEY_TIMEOUT_MS = 10000
NEXT_KEY_TIMEOUT_MS = 3000


def ask_destination(call: Call) -> Collected:
    prompt_id = call.services.prompts.destination_prompt(call.options)
    pattern = call.options.destination_completion_regex
    if pattern is None:
        return call.ask(
            prompt_id,
            min_digits=1,
            max_digits=MAX_DESTINATION_DIGITS,
            regex=r"^[0-9]+$",
            timeout_ms=FIRST_KEY_TIMEOUT_MS,
            digit_timeout_ms=NEXT_KEY_TIMEOUT_MS,
        )
    channel = call.channel
    prompt: str | None = call.services.prompts.sentence(call.lang, call.pending + [prompt_id])
    call.pending = []
    keys_before = channel.keys_pressed
    digits = ""
    timeout = FIRST_KEY_TIMEOUT_MS
    while len(digits) < MAX_DESTINATION_DIGITS:
        # Reading key by key, a lone # or a pause is no error: nothing is said after it.
        key = channel.collect(
            prompt,
            None,
            min_digits=1,
            max_digits=1,
            tries=1,
            timeout_ms=timeout,
            terminators="#",
            regex=r"^[0-9]$",
            digit_timeout_ms=NEXT_KEY_TIMEOUT_MS,
        )
        if key.digits is None:
            break  # the pound key, or a pause: the number is as typed
        digits += key.digits
        if pattern.fullmatch(digits):
            break
        prompt, timeout = None, NEXT_KEY_TIMEOUT_MS  # no prompt before the next key
    return Collected(
        digits=digits or None,
        invalid=None,
        keys_pressed=channel.keys_pressed - keys_before,
        result="success" if digits else "failure",
    )
