"""Smart dial: the access number (DID) the caller dialled stands for a
destination. The dialplan rewrites the CLD to the instance and keeps the DID
in rdnis (freeswitch-conf/); a caller whose CLI is a trusted CLI of the card
the DID belongs to is connected at once, without card number, PIN or
destination prompt."""

from __future__ import annotations

from cardd.ivr.call import Call
from cardd.ivr.identify import refusal_of


def identify(call: Call):
    """(card, destination) for a smart-dial call, or None (identify as usual)."""
    did = call.channel.rdnis
    if not did:
        return None
    ledger = call.services.ledger
    found = call.services.identity.smart_dial_lookup(did, call.cli, exclusive=call.options.smart_dial_exclusive)
    if found is None:
        return None
    card = ledger.get_card(found.card_id)
    refusal = refusal_of(call, card)
    if refusal is not None:
        # The card cannot be used this way; the usual identification says why.
        call.log.info("smart dial of DID %s not used: %s", did, refusal)
        return None
    call.log.info("smart dial: DID %s -> %s", did, found.destination)
    return card, found.destination
