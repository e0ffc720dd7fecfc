"""Channel: what the IVR may do to a call.

The only place that knows FreeSWITCH application names, their argument
syntax and the variables they leave behind. The IVR calls play(), collect(),
bridge(); it never builds an ESL string.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import gevent

from cardd.digits import is_digits
from cardd.errors import CallGone, LocalProtocolError
from cardd.esl.session import EslSession

log = logging.getLogger(__name__)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
PLAYBACK_TIMEOUT = 600.0
# Room for a prompt before the digit timers start (pagd's prompt is not timed).
PROMPT_ALLOWANCE = 120.0
# How long after the bridge returns we wait for B's CHANNEL_HANGUP_COMPLETE
# (it trails A's bridge completion when B hung up first: capture 14).
LEG_END_WAIT = 5.0
# US ringback, played to the caller while B rings (no dead silence).
RINGBACK = "%(2000,4000,440,480)"
# play_and_get_digits plays its "invalid" file after a lone # or a silence;
# a question with nothing to say then gets 1 ms of silence.
_NOTHING_AFTER = "silence_stream://1"
# FreeSWITCH's name for "no prompt": play_and_get_digits plays nothing.
_NO_PROMPT = "silence"


def _arg(value: str, what: str) -> str:
    """One word of an application argument; quote it when it has spaces."""
    if "'" in value or "\n" in value:
        raise LocalProtocolError(f"{what} cannot be passed to FreeSWITCH: {value!r}")
    return f"'{value}'" if (" " in value or not value) else value


def dial_var(value: str) -> str:
    """A value inside a dial string's {...}: single-quoted when it holds , or space."""
    if "'" in value or "\n" in value or "}" in value:
        raise LocalProtocolError(f"dial-string value not allowed: {value!r}")
    return f"'{value}'" if re.search(r"[,\s]", value) else value


@dataclass(frozen=True)
class Collected:
    """What play_and_get_digits left behind (capture facts 13 and 30)."""

    digits: str | None  # present only on a match
    invalid: str | None  # the last input that failed the regex
    keys_pressed: int  # DTMF events during the collection
    result: str | None  # success | failure | timeout (not to be trusted alone)

    @property
    def timed_out(self) -> bool:
        """Nothing typed at all. read_terminator_used cannot tell: FreeSWITCH
        never clears it, so it still holds an earlier question's #."""
        return self.digits is None and not self.keys_pressed


@dataclass(frozen=True)
class DisconnectWarning:
    """A sentence played to the caller `seconds_before_end` before the hard
    limit hangs the call up (disconnect_warning_time)."""

    sound: str
    seconds_before_end: int


@dataclass(frozen=True)
class BridgeOutcome:
    answered: bool
    cause: str  # B's cause (last_bridge_hangup_cause), or the failure
    dialstatus: str | None
    billmsec: int | None  # from B's CHANNEL_HANGUP_COMPLETE
    fallback_msec: int | None  # unbridge time - B's answer time, seen on A
    # B's answer and end on FreeSWITCH's clock (its CHANNEL_HANGUP_COMPLETE,
    # else what A's bridge completion says); None when it did not say.
    answered_at: datetime | None = None
    ended_at: datetime | None = None


class Channel:
    def __init__(self, session: EslSession):
        self.session = session
        self._bridge_ready = False
        self._answered_before = False  # a bridge of this call was answered
        # The B leg of the last bridge actually sent: from then on that leg
        # may exist in FreeSWITCH, whatever happens to this socket.
        self.dialled_leg: str | None = None
        self._answer_watch: tuple[str, Callable[[], None]] | None = None
        self._answer_listening = False

    # -- who is calling ----------------------------------------------------------

    @property
    def uuid(self) -> str:
        return self.session.uuid or ""

    def _data(self, name: str, default: str = "") -> str:
        # Caller-supplied (SIP From, Request-URI): control characters such as
        # a url-encoded NUL are dropped; PostgreSQL text cannot hold NUL.
        data = self.session.session_data  # None only before the connect reply, which a Channel follows
        value = (data.get(name, default) if data is not None else default) or default
        return _CONTROL.sub("", value)

    @property
    def cli(self) -> str:
        return self._data("Caller-Caller-ID-Number")

    @property
    def cld(self) -> str:
        return self._data("Caller-Destination-Number")

    @property
    def switchname(self) -> str:
        """The FreeSWITCH box carrying the call, as it names itself (its
        `switchname`; the orphan rule asks only that box about the call)."""
        return self._data("FreeSWITCH-Switchname")

    @property
    def rdnis(self) -> str:
        return self._data("Caller-RDNIS") or self._data("variable_rdnis")

    @property
    def hung_up(self) -> bool:
        return self.session.a_hungup or self.session.closed

    @property
    def keys_pressed(self) -> int:
        """Keys the caller has pressed on this call so far (DTMF events)."""
        return self.session.dtmf_count

    # -- applications ----------------------------------------------------------

    def answer(self) -> None:
        self.session.execute("answer", timeout=30)

    def play(self, sound: str) -> str:
        """playback; returns FILE PLAYED / FILE NOT FOUND / PLAYBACK ERROR."""
        done = self.session.execute("playback", _arg(sound, "sound"), timeout=PLAYBACK_TIMEOUT)
        return done.get("Application-Response", "")

    def set(self, name: str, value: str) -> None:
        self.session.execute("set", f"{name}={value}", timeout=10)

    def collect(
        self,
        prompt: str | None,
        invalid_prompt: str | None = None,
        *,
        min_digits: int,
        max_digits: int,
        tries: int = 1,
        timeout_ms: int = 5000,
        terminators: str = "#",
        regex: str = r"[0-9]+",
        digit_timeout_ms: int = 3000,
        var: str = "cardd_digits",
    ) -> Collected:
        """play_and_get_digits with all 11 arguments spelled out.

        The prompt is the sentence that precedes the entry, so digits typed
        over it are collected (capture 18). No prompt: the caller hears
        nothing before typing; no invalid prompt: nothing after a wrong entry."""
        prompt = _NO_PROMPT if prompt is None else prompt
        invalid_prompt = _NOTHING_AFTER if invalid_prompt is None else invalid_prompt
        args = " ".join(
            [
                str(min_digits),
                str(max_digits),
                str(tries),
                str(timeout_ms),
                _arg(terminators or "#", "terminators"),
                _arg(prompt, "prompt"),
                _arg(invalid_prompt, "invalid prompt"),
                var,
                _arg(regex, "regex"),
                str(digit_timeout_ms),
                "''",
            ]
        )
        waits = tries * (timeout_ms + max_digits * digit_timeout_ms) / 1000.0
        keys_before = self.keys_pressed
        done = self.session.execute("play_and_get_digits", args, timeout=waits + PROMPT_ALLOWANCE * tries)
        return Collected(
            digits=done.variable(var),
            invalid=done.variable(var + "_invalid"),
            keys_pressed=self.keys_pressed - keys_before,
            result=done.variable("read_result"),
        )

    def flush_keys(self) -> None:
        """Drop keys waiting in the channel's DTMF queue (flush_dtmf)."""
        self.session.execute("flush_dtmf", timeout=10)

    def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        if self.hung_up:
            return
        try:
            self.session.execute("hangup", cause, timeout=10)
        except CallGone:
            pass

    # -- the outgoing leg ------------------------------------------------------

    def _watch_answer(self, leg_uuid: str, on_answer: Callable[[], None] | None) -> None:
        self._answer_watch = (leg_uuid, on_answer) if on_answer is not None else None
        if on_answer is not None and not self._answer_listening:
            self.session.add_listener(_answer_listener(self))
            self._answer_listening = True

    def bridge(
        self,
        endpoint: str,
        *,
        leg_uuid: str,
        caller_id: str,
        hard_limit_s: int,
        warning: DisconnectWarning | None,
        early_media: bool,
        originate_timeout: int,
        on_answer: Callable[[], None] | None = None,
    ) -> BridgeOutcome:
        """Dial B with cardd's uuid for it, presenting `caller_id`, and wait
        for the bridge to end. B is hung up `hard_limit_s` after it answers,
        the `warning` played to the caller before; with `early_media` the
        caller hears B's early media, else cardd's ringback.

        `##` from the caller hangs B up, ringing or answered, and hands the
        call back (captures 12, 17). The bridge is sent without event-lock so
        the warning broadcast is not held back. `on_answer()` runs in a
        greenlet of its own when B answers: its execute_on_answer sched_hangup
        completes on B (capture 14), the first thing FreeSWITCH does on answer."""
        self._watch_answer(leg_uuid, on_answer)
        if not self._bridge_ready:
            self.set("continue_on_fail", "true")
            self.set("hangup_after_bridge", "false")
            self._bridge_ready = True
        if not early_media:
            self.set("ringback", RINGBACK)
        if self._answered_before:
            # Channel variables outlive the bridge: a busy or unanswered next
            # attempt would still show the last answered call's cause.
            self.session.execute("unset", "bridge_hangup_cause", timeout=10)
        self.session.add_leg(leg_uuid)
        self.session.execute("bind_digit_action", "ccbreak,##,exec[H]:hangup,NORMAL_CLEARING,self,peer", timeout=10)
        self.session.execute("digit_action_set_realm", "ccbreak", timeout=10)
        all_vars = {
            "origination_uuid": leg_uuid,
            "originate_timeout": str(originate_timeout),
            **_leg_variables(caller_id, hard_limit_s, warning, early_media),
        }
        dial = "{" + ",".join(f"{k}={dial_var(v)}" for k, v in all_vars.items()) + "}" + endpoint
        self.dialled_leg = leg_uuid
        try:
            done = self.session.execute(
                "bridge", dial, event_lock=False, timeout=originate_timeout + hard_limit_s + 120
            )
        except CallGone:
            if not self.session.closed:
                # The caller left before the bridge ran: FreeSWITCH completes
                # every application that ran before the caller's last event,
                # and runs none queued after the hangup (capture 10a). No B leg.
                self.dialled_leg = None
            raise
        b_end = self.session.wait_leg_end(leg_uuid, LEG_END_WAIT)
        if not self.hung_up:
            try:
                self.session.execute("clear_digit_action", "ccbreak", timeout=10)
            except CallGone:
                pass
        outcome = _outcome(done, b_end)
        self._answered_before = self._answered_before or outcome.answered
        return outcome


def _leg_variables(
    caller_id: str, hard_limit_s: int, warning: DisconnectWarning | None, early_media: bool
) -> dict[str, str]:
    """Variables of the B leg. The timers run on B (execute_on_answer inside
    the dial string), so they bound the call even if cardd dies (capture 16);
    `bleg` makes the warning play to the caller (capture 14)."""
    # The name too: left unset, FreeSWITCH presents the caller's own number
    # as the SIP display name, whatever number is presented.
    variables = {
        "origination_caller_id_number": caller_id,
        "origination_caller_id_name": caller_id,
        "execute_on_answer_1": f"sched_hangup +{hard_limit_s} ALLOTTED_TIMEOUT",
    }
    if warning is not None:
        warn_at = hard_limit_s - warning.seconds_before_end
        if warn_at < 1:
            raise LocalProtocolError(
                f"a warning {warning.seconds_before_end} s before the end of a "
                f"{hard_limit_s} s call would come before the answer"
            )
        variables["execute_on_answer_2"] = f"sched_broadcast +{warn_at} playback::{warning.sound} bleg"
    if not early_media:
        variables["ignore_early_media"] = "true"
    return variables


def _answer_listener(channel: Channel):
    def listener(event) -> None:
        watch = channel._answer_watch
        if (
            watch is not None
            and event.name == "CHANNEL_EXECUTE_COMPLETE"
            and event.unique_id == watch[0]
            and event.get("Application") == "sched_hangup"
        ):
            channel._answer_watch = None
            gevent.spawn(watch[1]).name = "b-answered"

    return listener


def _outcome(done, b_end) -> BridgeOutcome:
    # bridge_hangup_cause is set only when a bridge happened (README fact 9).
    bridged_cause = done.variable("bridge_hangup_cause")
    cause = (
        bridged_cause
        or done.variable("last_bridge_hangup_cause")
        or done.variable("originate_failed_cause")
        or "UNKNOWN"
    )
    billmsec = None
    if b_end is not None:
        raw = b_end.variable("billmsec")
        billmsec = int(raw) if is_digits(raw) else None
    fallback = None
    answered_us = done.get("Other-Leg-Channel-Answered-Time")
    ended_us = done.get("Event-Date-Timestamp")
    if answered_us and ended_us and is_digits(answered_us) and is_digits(ended_us) and int(answered_us):
        fallback = max(0, math.ceil((int(ended_us) - int(answered_us)) / 1000))
    answered = bool(bridged_cause) or bool(billmsec)
    # The CDR's times come from FreeSWITCH's clock, as its own CDR's do
    # (cdr_http): cardd's clock minus billmsec can land before the call began.
    if b_end is not None:
        answered_at = _uepoch(b_end.variable("answer_uepoch"))
        ended_at = _uepoch(b_end.variable("end_uepoch"))
    else:
        answered_at, ended_at = _uepoch(answered_us), _uepoch(ended_us)
    return BridgeOutcome(
        answered=answered,
        cause=cause,
        dialstatus=done.variable("DIALSTATUS"),
        billmsec=billmsec,
        fallback_msec=fallback,
        answered_at=answered_at if answered else None,
        ended_at=ended_at,
    )


def _uepoch(text: str | None) -> datetime | None:
    """A FreeSWITCH microsecond epoch (answer_uepoch, ...) as a UTC time;
    None for absent, 0 (never happened) or garbage."""
    if not text or not is_digits(text) or int(text) <= 0:
        return None
    try:
        return datetime.fromtimestamp(int(text) / 1_000_000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None
