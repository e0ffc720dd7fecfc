"""Scripted people on both ends of a simulated call."""

from __future__ import annotations

from collections.abc import Sequence
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


OUTCOMES = ("answer", "busy", "no_answer", "unreachable")


@dataclass
class Callee:
    """Who answers a dialled number.

    outcome: "answer" (after answer_after s, talks `talk` s then hangs up, or
    until hung up when talk is None), "busy" (486 after busy_after s),
    "no_answer" (rings until originate_timeout), "unreachable" (fails at once).
    """

    outcome: str = "answer"
    answer_after: float = 1.0
    talk: float | None = None
    busy_after: float = 0.5

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"Callee outcome must be one of {OUTCOMES}, not {self.outcome!r}")
