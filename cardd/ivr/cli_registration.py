"""CLI registration: the caller's number becomes a trusted CLI of the card
(calling_card_cli_map), by the sub-application or automatically after the
card number was entered. Anonymous, withheld, non-numeric and too-short CLIs
are never registered; a CLI already trusted by another card is not moved."""

from __future__ import annotations

from cardd.billing import identity
from cardd.billing.ledger import Card
from cardd.ivr.call import Call
from cardd.ivr.subapp import MenuResult, Silences


def run(call: Call, card: Card, timeouts: Silences) -> MenuResult:
    """The sub-application: register this CLI now."""
    if _register(call, card):
        call.queue("cli_registered")
    else:
        call.queue("cli_cannot_be_registered")
    return MenuResult()


def offer_after_entry(call: Call, card: Card) -> None:
    """auto_cli_registration: after a card number was entered, trust this CLI —
    silently, or when the caller presses 1 (silent_auto_cli_registration false)."""
    opts = call.options
    cli = call.cli
    if not opts.auto_cli_registration or not identity.is_registrable_cli(cli, opts.min_valid_cli_length):
        return
    if call.services.identity.card_id_for_cli(cli) is not None:
        return
    if not opts.silent_auto_cli_registration:
        entry = call.ask(
            "register_cli_offer", min_digits=1, max_digits=1, regex=r"^[0-9]$", timeout_ms=5000, terminators="#"
        )
        if entry.digits != "1":
            return
    if _register(call, card) and not opts.silent_auto_cli_registration:
        call.queue("cli_registered")


def _register(call: Call, card: Card) -> bool:
    cli = call.cli
    if not identity.is_registrable_cli(cli, call.options.min_valid_cli_length):
        call.log.info("CLI %r cannot be registered", cli)
        return False
    done = call.services.identity.map_cli(cli, card.id)
    call.log.info("CLI %s %s card id %s", cli, "registered with" if done else "belongs to another card than", card.id)
    return done
