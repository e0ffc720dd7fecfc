"""What a sub-application (top-up, password change, CLI registration, hot dial)
returns to the destination prompt that started it.

Its own module so that the sub-applications and the menu that dispatches to
them (cardd.ivr.menu) both depend on it, and not on each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class Silences(Protocol):
    """The session's count of input time-outs (cardd.ivr.identify.InputTimeouts)."""

    def silent(self) -> bool:
        """Record one silence; True when the caller has used them all up."""
        ...


@dataclass(frozen=True)
class MenuResult:
    """Back to the destination prompt (the default), a destination to dial now
    (hot dial), or the end of the session."""

    dial: str | None = None  # dial this destination now
    end: str | None = None  # the session is over; the outcome to count
    farewell: tuple[str, ...] = ()  # said before goodbye when the session ends

    @classmethod
    def timed_out(cls, timeouts: Silences) -> MenuResult:
        """One silence inside a sub-application: back to the menu, or the end."""
        return cls(end="input_timeout") if timeouts.silent() else cls()
