"""One call attempt: rate the destination, reserve, bridge with a hard
hangup timer and a warning, then settle — keyed by the B leg's UUID."""

from __future__ import annotations

import re
import time
import uuid as uuidlib

from cardd import speech
from cardd.billing.routing import may_fail_over
from cardd.channel import DisconnectWarning
from cardd.errors import (
    CardBlocked,
    CardExpired,
    CardRefused,
    DatabaseUnavailable,
    ForbiddenDestination,
    InsufficientFunds,
    NoRate,
    NoRoute,
    TooManyCalls,
)
from cardd.ivr.call import Call
from cardd.options import translate

ORIGINATE_TIMEOUT = 60
_CLI = re.compile(r"^\+?[0-9]{1,20}$")
_DIALLABLE = re.compile(r"^\+?[0-9*#]{1,32}$")

# Why a grant was refused, as the caller hears it.
_REFUSALS = {
    ForbiddenDestination: "destination_forbidden",
    NoRate: "destination_unavailable",
    NoRoute: "destination_unavailable",
    InsufficientFunds: "insufficient_funds",
    TooManyCalls: "card_in_use",
}

# Outcomes that are the callee's doing, told apart for the caller.
_FAILURE_PROMPTS = {"USER_BUSY": "destination_busy", "NO_ANSWER": "no_answer", "NO_USER_RESPONSE": "no_answer"}


def place_call(call: Call, card, number: str) -> bool:
    """Dial `number` for `card`. True when the callee answered."""
    opts = call.options
    started = time.monotonic()  # the `dial` IVR step: destination typed -> bridge sent
    b_uuid = str(uuidlib.uuid4())
    caller_cli = call.channel.cli
    # Operators' number rules (national -> E.164 and the like) apply before
    # rating and dialling; the CDR keeps both forms.
    dialled = translate(number, opts.cld_translation)
    translated_cli = translate(caller_cli, opts.cli_translation)
    if not _DIALLABLE.match(dialled):
        # A translation rule could produce anything; only digits may reach
        # the dial string, so no rule (or caller) can add a parameter to it.
        call.log.warning("translation of %s gave %r: not diallable", number, dialled)
        call.queue("invalid_destination")
        return False
    if not call.services.hooks.destination_check(opts.destination_check_script).allowed(
        call_uuid=call.channel.uuid,
        cli=caller_cli,
        translated_cli=translated_cli,
        cld=number,
        translated_cld=dialled,
        username=card.username,
        original_cli=caller_cli,
    ):
        call.log.info("destination %s refused by the destination check", number)
        call.queue("destination_forbidden")
        return False
    grant = _reserve(call, card, b_uuid, number, dialled, caller_cli, translated_cli)
    if grant is None:
        return False
    call.log.info("dialling %s for %d s (reserved %s)", dialled, grant.duration_s, grant.reserved)
    outcome = None
    try:
        # From the reservation on, whatever happens ends in `finally`.
        if grant.route is None and _endpoint(call, dialled) is None:
            # No carrier and no proxy: `sofia/external/4420...@` would go
            # nowhere. Refused; `finally` settles the grant as not dialled.
            call.log.error(
                "no outbound proxy for instance %r (daemon.outbound_proxy or calling_card "
                "outbound_proxy): %s not dialled",
                call.instance,
                dialled,
            )
            call.queue("call_failed")
            return False
        _announce_rate(call, card, grant)
        _announce_duration(call, card, grant, number, dialled, translated_cli)
        call.flush()
        _observe_setup(call, started)
        outcome = _bridge(call, card, grant, b_uuid, _endpoint(call, dialled), dialled)
    finally:
        cdr = _settle(call, b_uuid, outcome)
    _counted(call, grant, b_uuid, outcome, cdr)
    tried: list[tuple[int, int]] = []
    # Carrier failover: one bridge (and one reservation, keyed by its own B leg)
    # per route, while the cause says the next carrier may succeed.
    while (
        grant.route is not None and not outcome.answered and not call.channel.hung_up and may_fail_over(outcome.cause)
    ):
        call.services.metrics.carrier_failovers.labels(grant.route.carrier).inc()
        tried.append(grant.route.key)
        b_uuid = str(uuidlib.uuid4())
        grant = _reserve(call, card, b_uuid, number, dialled, caller_cli, translated_cli, tried=tried)
        if grant is None:
            break
        outcome = None
        try:
            outcome = _bridge(call, card, grant, b_uuid, _endpoint(call, dialled), dialled)
        finally:
            cdr = _settle(call, b_uuid, outcome)
        _counted(call, grant, b_uuid, outcome, cdr)
    if not outcome.answered and not call.channel.hung_up:
        call.queue(_FAILURE_PROMPTS.get(outcome.cause, "call_failed"))
    return outcome.answered


def _observe_setup(call: Call, started: float) -> None:
    """The `dial` step of this attempt and, for the call's first bridge,
    cardd_call_setup_seconds (connect -> bridge sent)."""
    metrics = call.services.metrics
    now = time.monotonic()
    metrics.ivr_step_seconds.labels("dial").observe(now - started)
    if call.bridges_sent == 0:
        metrics.setup_seconds.observe(now - call.connected_at)
    call.bridges_sent += 1


def _reserve(
    call: Call,
    card,
    b_uuid: str,
    number: str,
    dialled: str,
    caller_cli: str,
    translated_cli: str,
    tried: list[tuple[int, int]] | None = None,
):
    """The grant (rate, duration, reservation, route), or None with the reason
    queued; None in silence when the routes not `tried` yet are used up."""
    opts = call.options
    try:
        return call.services.ledger.grant(
            card.id,
            a_uuid=call.channel.uuid,
            b_uuid=b_uuid,
            destination=number,
            translated_destination=dialled,
            cli=caller_cli,
            translated_cli=translated_cli,
            ignore_connect_fee=opts.ignore_connect_fee,
            max_call_duration=opts.max_call_duration,
            min_call_duration=opts.min_call_duration,
            margin_s=call.services.settings.daemon.reservation_margin,
            allow_loss=opts.route_at_a_loss,
            tried_routes=tried or (),
            switchname=call.channel.switchname,
        )
    except (CardBlocked, CardExpired) as exc:
        # Blocked or expired by the operator since the caller identified.
        raise CardRefused("card_blocked" if isinstance(exc, CardBlocked) else "card_expired") from exc
    except tuple(_REFUSALS) as exc:
        if not (tried and isinstance(exc, NoRoute)):
            call.queue(_REFUSALS[type(exc)])
        return None


def _bridge(call: Call, card, grant, b_uuid: str, endpoint: str | None, dialled: str):
    """One bridge: to the grant's carrier gateway, or the dial-string template
    when no carrier is configured. The card's grant bounds it either way."""
    if grant.route is not None:
        endpoint = grant.route.gateway.format(number=dialled, proxy=call.options.outbound_proxy)
        call.log.info(
            "route: carrier %s gateway %d (%s), %s more",
            grant.route.carrier,
            grant.route.gateway_index + 1,
            endpoint,
            grant.route.alternatives,
        )
    # Without a route the dial string's endpoint was checked before the first
    # bridge, and a failover always has a route (carriers exist).
    assert endpoint is not None
    # Durably, before the bridge goes out: after a crash, a reservation without
    # this mark was never dialled and is released at no cost (cardd/orphans.py).
    # The database away here: the caller hears "service unavailable", nothing dialled.
    if not call.services.ledger.mark_dialled(b_uuid):
        # Released meanwhile by another cardd that took this process for dead
        # (its heartbeat late by three intervals): dialling now would be free.
        call.log.error("reservation %s was released before its bridge: not dialled", b_uuid)
        raise CardRefused("call_failed")
    return call.channel.bridge(
        endpoint,
        leg_uuid=b_uuid,
        caller_id=_outgoing_cli(call, card),
        hard_limit_s=grant.duration_s,
        warning=_disconnect_warning(call, grant.duration_s),
        early_media=call.options.early_media,
        originate_timeout=ORIGINATE_TIMEOUT,
        on_answer=lambda: _mark_answered(call, b_uuid),
    )


def _mark_answered(call: Call, b_uuid: str) -> None:
    """B answered: record when, so an estimate after a crash is at most the time
    since (cardd/orphans.py). Best effort: with the database away the call goes
    on, and an estimate of it would be 0 until its CDR arrives (README)."""
    try:
        call.services.ledger.mark_answered(b_uuid)
    except DatabaseUnavailable as exc:
        call.log.warning("answer of %s not recorded: %s", b_uuid, exc)


def _counted(call: Call, grant, b_uuid: str, outcome, cdr) -> None:
    metrics = call.services.metrics
    metrics.bridges.labels("answered" if outcome.answered else "failed").inc()
    if grant.route is not None:
        metrics.carrier_attempt(grant.route.carrier, answered=outcome.answered, cdr=cdr)
    call.log.info("attempt %s ended %s (billmsec %s)", b_uuid, outcome.cause, outcome.billmsec)


def _announce_rate(call: Call, card, grant) -> None:
    """announce_rate: "this call costs N per minute", the first interval's
    price, in the card's currency and the call's language."""
    if call.options.announce_rate:
        call.queue(*speech.rate_ids(grant.rate.price_1, card.currency, call.lang))


def _announce_duration(call: Call, card, grant, number: str, dialled: str, translated_cli: str) -> None:
    opts = call.options
    if not opts.announce_duration:
        return
    shown = grant.plan_seconds if opts.play_plan_minutes_only and grant.plan_seconds else grant.duration_s
    # The script changes only what is said; the hangup timer stays the grant.
    shown = call.services.hooks.duration_script(opts.duration_script).announced(
        call_uuid=call.channel.uuid,
        username=card.username,
        balance=grant.available,
        cli=call.channel.cli,
        cld=number,
        max_duration_s=shown,
        tariff_id=card.tariff_id,
        translated_cli=translated_cli,
        translated_cld=dialled,
    )
    call.queue(
        *speech.talk_time_ids(
            shown, call.lang, no_seconds=opts.no_seconds_in_duration, no_hours=opts.no_hours_in_duration
        )
    )


def _settle(call: Call, b_uuid: str, outcome):
    """Bill the attempt, through the journal: with the database away the
    settlement is kept on disk and replayed later (cdr None)."""
    services = call.services
    settle = services.journal.settle if services.journal is not None else services.ledger.settle
    if outcome is None:
        if call.channel.dialled_leg != b_uuid:
            # Nothing was dialled (the caller left first): nothing to pay.
            settle(b_uuid, billmsec=0, hangup_cause="NOT_DIALLED")
        # A bridge was sent but its outcome is unknown (the socket died): the
        # reservation stays open for the orphan check, never silently released.
        return None
    billmsec = outcome.billmsec if outcome.billmsec is not None else outcome.fallback_msec
    # B's answer and end as FreeSWITCH stamped them; absent, settle() falls
    # back to cardd's clock.
    cdr = settle(
        b_uuid,
        billmsec=billmsec if outcome.answered else 0,
        hangup_cause=outcome.cause,
        answered_at=outcome.answered_at,
        ended_at=outcome.ended_at,
    )
    if cdr is not None:
        services.metrics.billed_seconds.labels(cdr.currency).inc(cdr.billed_seconds)
        services.metrics.revenue.labels(cdr.currency).inc(float(cdr.cost))
    return cdr


def _outgoing_cli(call: Call, card) -> str:
    """The caller's own CLI when asked to keep it (and it is a number), else
    the card's number."""
    if call.options.preserve_original_cli and _CLI.match(call.channel.cli or ""):
        return call.channel.cli
    return card.username


def _endpoint(call: Call, number: str) -> str | None:
    """The dial string's endpoint; None when every alternative needs a proxy
    and none is set (an alternative that needs one is left out)."""
    daemon = call.services.settings.daemon
    proxy = call.options.outbound_proxy  # already falls back to daemon.outbound_proxy
    # `|` in the template is FreeSWITCH's failover between gateways.
    parts = [
        part.format(number=number, proxy=proxy)
        for part in daemon.dial_string.split("|")
        if proxy or "{proxy}" not in part
    ]
    return "|".join(parts) or None


def _disconnect_warning(call: Call, seconds: int) -> DisconnectWarning | None:
    """The "your call ends in N" sentence, when disconnect_warning_time asks
    for one and it falls inside the granted time (the grant is the hard limit)."""
    before = call.options.disconnect_warning_time
    if before <= 0 or seconds - before < 1:
        return None
    sound = call.services.prompts.sentence(call.lang, speech.disconnect_warning_ids(before, call.lang))
    return DisconnectWarning(sound=sound, seconds_before_end=before)
