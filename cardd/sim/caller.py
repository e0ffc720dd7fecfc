"""Scripted people on both ends of a simulated call."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# One play_and_get_digits' input: a string typed on its first try (later tries
# stay silent), None (silent: every try times out), or a tuple with one entry
# per try.
DigitsEntry = str | None | tuple[str | None, ...]


@dataclass
class Caller:
    """The person calling the access number.

    digits: one entry per play_and_get_digits/read, consumed in order (see
    DigitsEntry); when the list runs out the caller stays silent.
    playback_digits: one entry per playback (None = nothing); typed
    `playback_type_after` seconds in; FreeSWITCH drops them (capture 19).
    bridge_digits: one entry per bridge attempt: (seconds after the bridge
    started, digits) — e.g. (5.0, "##") — or None.
    hangup_at: ("playback", 2) hangs up `hangup_delay` seconds into the 2nd
    execution of that app on the caller's leg; hangup_after: seconds after the
    call reached the daemon; hangup_after_talk: seconds after a callee answered.
    hear_prompts: start typing `type_after` s after a question's prompt ended
    instead of after it started.
    """

    cli: str = "15555550100"
    destination: str = "cc"
    rdnis: str | None = None
    digits: Sequence[DigitsEntry] = field(default_factory=list)
    playback_digits: Sequence[str | None] = field(default_factory=list)
    bridge_digits: Sequence[tuple[float, str] | None] = field(default_factory=list)
    type_after: float = 0.5
    digit_interval: float = 0.1
    playback_type_after: float = 1.0
    hangup_at: tuple[str, int] | None = None
    hangup_delay: float = 0.5
    hangup_after: float | None = None
    hangup_after_talk: float | None = None
    name: str | None = None
    # Type only once each question's prompt has played to its end (no
    # barge-in): the whole prompt, balance announcement included, is heard.
    hear_prompts: bool = False


OUTCOMES = ("answer", "busy", "no_answer", "unreachable")


@dataclass
class Callee:
    """Who answers a dialled number.

    outcome: "answer" (after answer_after s, talks `talk` s then hangs up, or
    until hung up when talk is None), "busy" (486 after busy_after s),
    "no_answer" (rings until originate_timeout), "unreachable" (fails at once).
    answer_in_second: answer at this fraction of an epoch second (after
    answer_after): FreeSWITCH's scheduler runs on whole seconds, so it
    decides whether `sched_hangup +N` cuts at N+0.02 s (0 to 0.49) or
    N-0.48 s (0.5 to 0.99); None: wherever answer_after lands.
    A callee that talks N s hangs up N s + 20 ms after the answer stamp, as
    measured on the real switch (cardd.sim.bridge.CALLEE_BYE_LAG).
    """

    outcome: str = "answer"
    answer_after: float = 1.0
    talk: float | None = None
    busy_after: float = 0.5
    answer_in_second: float | None = None

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"Callee outcome must be one of {OUTCOMES}, not {self.outcome!r}")
        if self.answer_in_second is not None and not 0 <= self.answer_in_second < 1:
            raise ValueError("Callee answer_in_second is a fraction of a second: 0 <= x < 1")

    def ring_time(self, now: float) -> float:
        """Seconds from the 180 at epoch `now` to the 200 OK."""
        if self.answer_in_second is None:
            return self.answer_after
        at = now + self.answer_after
        return self.answer_after + (self.answer_in_second - at % 1) % 1


# Who answers the B legs of one call: one Callee for every number, or by endpoint or
# number (a list: one per attempt, the last repeating; "*": anyone else), or None: everyone answers.
Callees = Callee | Mapping[str, Callee | list[Callee]] | None


def callee_for(callees: Callees, endpoint: str, number: str) -> Callee:
    """The callee a bridge reaches when it dials `endpoint` for `number`."""
    if callees is None:
        return Callee()
    if isinstance(callees, Callee):
        return callees
    for key in (endpoint, number):
        if key in callees:
            value = callees[key]
            if isinstance(value, list):
                return value.pop(0) if len(value) > 1 else value[0]
            return value
    if "*" in callees:
        value = callees["*"]
        return value[0] if isinstance(value, list) else value
    return Callee(outcome="unreachable")
