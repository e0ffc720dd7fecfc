"""Menu extensions: short numbers entered at the destination prompt start a
sub-application (top-up, password change, CLI registration, hot dial, hot
dial edit). They work even when normal calls are off (nodial): they are
service codes, not calls.

A sub-application returns a MenuResult: back to the destination prompt
(the default), a destination to dial now (hot dial), or the end of the session.
"""

from __future__ import annotations

from collections.abc import Callable

from cardd.billing.ledger import Card
from cardd.ivr import cli_registration, hotdial, password, topup
from cardd.ivr.call import Call
from cardd.ivr.subapp import MenuResult, Silences
from cardd.options import CardOptions

__all__ = ["MenuResult", "dispatch", "extensions"]

# The sub-applications by name; each takes (call, card, timeouts).
_APPS: dict[str, Callable[[Call, Card, Silences], MenuResult]] = {
    "topup": topup.run,
    "password": password.run,
    "cli_registration": cli_registration.run,
    "hot_dial": hotdial.run_dial,
    "hot_dial_edit": hotdial.run_edit,
}


def extensions(options: CardOptions) -> dict[str, str]:
    """Enabled menu extensions: the digits -> the sub-application's name."""
    table = [
        ("topup_ext", options.topup, "topup"),
        # Under use_word_pin the card number is the PIN: there is no password to change.
        ("password_change_ext", options.password_change and not options.use_word_pin, "password"),
        ("cli_registration_ext", options.cli_registration, "cli_registration"),
        ("hot_dial_ext", options.hot_dial, "hot_dial"),
        ("hot_dial_edit_ext", options.hot_dial, "hot_dial_edit"),
    ]
    found: dict[str, str] = {}
    for option, enabled, name in table:
        ext = getattr(options, option)
        # The first wins when two share digits (config warns about the clash).
        if enabled and ext is not None and str(ext) not in found:
            found[str(ext)] = name
    return found


def dispatch(call: Call, card: Card, digits: str, timeouts: Silences) -> MenuResult | None:
    """Run the sub-application `digits` names; None when they are not a menu
    extension (nor, under direct_hot_dial, a hot-dial key): an ordinary destination."""
    name = extensions(call.options).get(digits)
    if name is not None:
        call.log.info("menu extension %s: %s", digits, name)
        return _APPS[name](call, card, timeouts)
    return hotdial.direct(call, card, digits)
