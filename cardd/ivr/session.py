"""The main loop of a calling-card call, as the call-flow chart reads:
greeting -> identify -> balance -> destination -> dial -> bill -> again."""

from __future__ import annotations

import logging

import psycopg

from cardd import speech
from cardd.billing.ledger import Card
from cardd.channel import Channel, Collected
from cardd.errors import CallGone, CarddError, ConfigError, DatabaseUnavailable
from cardd.ivr import blacklist, menu, smartdial, topup
from cardd.ivr.call import Call, Services
from cardd.ivr.destination import ask_destination
from cardd.ivr.dial import CardRefused, place_call
from cardd.ivr.greeting import greet
from cardd.ivr.identify import InputTimeouts, available_credit, card_language_by_cli, identify

log = logging.getLogger(__name__)


def run(channel: Channel, services: Services) -> None:
    """The IVR for one call, from answer to hangup."""
    call, languages = _call_for(channel, services)
    outcome = "caller_hung_up"
    active = services.metrics.instance_calls_active.labels(
        call.instance if call.instance in services.settings.instances else "other"
    )
    active.inc()
    try:
        channel.answer()
        if services.journal is not None and not services.journal.accepting:
            # A settlement sits in memory only (database and journal both
            # refused it): no new money rides on it until one of them is back.
            outcome = "not_accepting"
            call.log.warning("call refused: a settlement is held in memory (see the journal's error)")
            call.goodbye("service_unavailable")
        elif blacklist.refused(call):  # before anything else, greetings included
            outcome = "blacklisted"
        else:
            # Greetings and the language menu set call.lang; None: the call ended there.
            with services.metrics.step("greeting"):
                # Only a menu can be skipped: no look-up for a one-language number.
                known = card_language_by_cli(call) if len(languages) > 1 else None
                chosen = greet(call, languages, known)
            outcome = "no_language" if chosen is None else _serve(call)
    except _SessionOver:
        outcome = "card_refused"
    except CallGone:
        outcome = "caller_hung_up"
        raise
    except (psycopg.Error, DatabaseUnavailable) as exc:
        # The caller hears why and the call ends politely; the money side is
        # safe because every change is one transaction.
        outcome = "service_unavailable"
        services.metrics.db_errors.labels("call").inc()
        call.log.error("database failure: %s", exc)
        call.pending = []
        call.goodbye("service_unavailable")
    finally:
        active.dec()
        services.metrics.calls.labels(outcome).inc()


def _call_for(channel: Channel, services: Services) -> tuple[Call, list[str]]:
    """The options in force for this call, from its CLD string. A malformed
    CLD is the dialplan's mistake, not the caller's: the call goes on with
    the calling_card settings, and the operator is told."""
    settings = services.settings
    try:
        call_options = settings.call_options(channel.cld)
    except ConfigError as exc:
        log.error("malformed CLD %r (%s): using the calling_card settings", channel.cld, exc)
        services.metrics.unknown_cld_tokens.inc()
        call_options = settings.call_options("default")
    for token in call_options.unknown_tokens:
        services.metrics.unknown_cld_tokens.inc()
        log.warning("unknown CLD token %r in %r", token, channel.cld)
    for warning in call_options.warnings:
        log.warning("%s", warning)
    languages, skipped = call_options.pick_languages(services.prompts.has_language)
    for lang in skipped:
        log.warning("language %r has no prompts: skipped", lang)
    return Call(
        channel=channel,
        options=call_options.options,
        lang=languages[0],
        services=services,
        instance=call_options.instance,
        languages=tuple(languages),
        # own_accounts_only: the instance's customer, else the instance name
        customer=call_options.customer or call_options.instance,
    ), languages


def _serve(call: Call) -> str:
    opts = call.options
    call.queue("welcome")
    timeouts = InputTimeouts(call)
    with call.services.metrics.step("identify"):
        smart = smartdial.identify(call)
        card, first_number = smart if smart else (identify(call, timeouts), None)
    if card is None:
        return "auth_failed"
    _speak_the_cards_language(call, card)
    if opts.topup_only:
        # CLD `topup`: the top-up sub-application and nothing else.
        done = topup.run(call, card, timeouts)
        call.goodbye(*done.farewell)
        return done.end or "topup"
    if first_number is None and opts.announce_balance:
        with call.services.metrics.step("balance"):
            # The credit identification read with the card, when it did (Card.available).
            _announce_balance(call, card, just_identified=True)
    failures = 0
    answered_any = False
    entry: _Entered | Collected
    while True:
        if first_number is not None:
            entry, first_number = _Entered(first_number), None
        else:
            with call.services.metrics.step("destination"):
                entry = ask_destination(call)
            # Menu extensions (service codes) work even under nodial.
            action = menu.dispatch(call, card, entry.digits, timeouts) if entry.digits else None
            if action is not None:
                if action.end is not None:
                    call.goodbye(*action.farewell)
                    return action.end
                if action.dial is None:
                    continue
                entry = _Entered(action.dial)
        if entry.digits is None:
            if entry.timed_out:
                if timeouts.silent():
                    call.goodbye()
                    return "input_timeout"
                continue
            call.queue("invalid_destination")
            failures += 1
        elif not opts.normal_calls_allowed:
            call.queue("invalid_destination")
            failures += 1
        else:
            answered = _dial(call, card, entry.digits)
            if answered:
                answered_any = True
                failures = 0
            else:
                failures += 1
            if not opts.call_several_destinations:
                # noredial: one attempt per session, "regardless it was
                # successful or not" (busy, no answer, refused for funds).
                break
            if not answered and opts.disconnect_on_failure:
                break
            if answered and opts.announce_balance_after_call and not call.channel.hung_up:
                _balance_after_call(call, card)
        if call.channel.hung_up:
            return "bridged" if answered_any else "caller_hung_up"
        if failures >= opts.wrong_destinations:
            break
    call.goodbye()
    return "bridged" if answered_any else "failed"


def _dial(call: Call, card: Card, number: str) -> bool:
    try:
        return place_call(call, card, number)
    except CardRefused as refused:
        call.goodbye(refused.prompt)
        raise _SessionOver from None


class _Entered:
    """A destination that comes from elsewhere than the prompt (smart dial, hot dial)."""

    def __init__(self, digits: str):
        self.digits = digits
        self.timed_out = False


class _SessionOver(CarddError):
    """The session ended inside a step; the main loop has nothing more to do."""


def _balance_after_call(call: Call, card: Card) -> None:
    """announce_balance_after_call: the new balance, heard as the start of
    the next destination prompt. A database away now (the call's settlement
    journalled) costs the caller this sentence, not the call."""
    try:
        _announce_balance(call, card)
    except (psycopg.Error, DatabaseUnavailable) as exc:
        call.log.warning("balance after the call not said: %s", exc)


def _speak_the_cards_language(call: Call, card: Card) -> None:
    """From identification on, the card's own language (accounts.language),
    when the access number offers it and the caller did not pick one."""
    lang = card.language
    if lang and lang != call.lang and lang in call.languages and not call.lang_chosen:
        call.log.info("speaking the card's language %s", lang)
        call.lang = lang


def _announce_balance(call: Call, card: Card, *, just_identified: bool = False) -> None:
    """The balance sentence (after identification, and after a call with
    announce_balance_after_call). Not with a minutes plan or a suspended
    plan: the money balance is not what the caller is spending then; not
    when it is zero (the reference's rule). Right after identification, the
    available credit read with the card (the PIN's verdict reads it) when it
    was; after a call, always read afresh (the card's is from before it)."""
    if card.minutes_plan or card.plan_suspended:
        return
    if just_identified:
        available = available_credit(call, card)
    else:
        available = call.services.ledger.available_credit(card.id)
    if available == 0:
        return
    call.queue(
        *speech.balance_ids(
            available, card.currency, call.lang, negative_as_zero=call.options.say_negative_balance_as_zero
        )
    )
