"""What happened on a simulated call, in order, for assertions and reading."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Entry:
    t: float  # virtual seconds since the daemon accepted the call
    leg: str  # "A" or "B"
    kind: str  # connect, command, execute, prompt, digits, dtmf, bridge, hangup, ...
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class BridgeOutcome:
    b_uuid: str
    number: str
    dial_string: str
    disposition: str  # SUCCESS, USER_BUSY, NO_ANSWER, ...
    answered: bool
    b_hangup_cause: str | None = None
    answer_epoch_us: int = 0
    end_epoch_us: int = 0
    billsec: int = 0
    billmsec: int = 0
    # The From of the INVITE the callee got (cardd.sim.sofia.SipFrom):
    # .display is the name its phone shows, .user the number.
    sip_from: Any = None


class Transcript:
    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.bridges: list[BridgeOutcome] = []
        self.hangup_cause: str | None = None
        self.a_uuid: str | None = None
        self.closed_by: str | None = None  # "exit", "daemon-close", "linger-timeout"
        self.errors: list[str] = []

    def add(self, t: float, leg: str, kind: str, **data: Any) -> None:
        self.entries.append(Entry(round(t, 3), leg, kind, data))

    # --- views ----------------------------------------------------------------
    def of(self, kind: str) -> list[Entry]:
        return [e for e in self.entries if e.kind == kind]

    @property
    def prompts(self) -> list[str]:
        """Every audio file the caller heard (file_string parts split)."""
        return [e.data["path"] for e in self.entries if e.kind == "prompt" and e.leg == "A"]

    @property
    def apps(self) -> list[tuple[str, str]]:
        return [(e.data["app"], e.data["arg"]) for e in self.entries if e.kind == "execute" and e.leg == "A"]

    @property
    def digits(self) -> list[str]:
        return [e.data["digits"] for e in self.entries if e.kind == "digits"]

    def text(self, prompts: Mapping[str, Any] | None = None, lang_hint: str | None = None) -> str:
        """Readable transcript. `prompts` maps a prompt id to text, or to
        {lang: text}; `<dir>/<lang>/<id>.wav` paths are shown as that text."""
        lines = []
        for e in self.entries:
            d = e.data
            if e.kind == "prompt":
                what = _prompt_text(d["path"], prompts) if prompts else d["path"]
                lines.append(f"{e.t:9.3f} {e.leg} hears   {what}")
            elif e.kind == "execute":
                lines.append(f"{e.t:9.3f} {e.leg} execute {d['app']} {d['arg']}".rstrip())
            elif e.kind == "digits":
                lines.append(f"{e.t:9.3f} {e.leg} types   {d['digits']}")
            else:
                rest = " ".join(f"{k}={v}" for k, v in d.items())
                lines.append(f"{e.t:9.3f} {e.leg} {e.kind:7s} {rest}".rstrip())
        return "\n".join(lines) + "\n"


def _prompt_text(path: str, prompts: Mapping[str, Any]) -> str:
    head, fname = os.path.split(path)
    pid, ext = os.path.splitext(fname)
    lang = os.path.basename(head)
    entry = prompts.get(pid)
    if entry is None:
        return path
    if isinstance(entry, Mapping):
        text = entry.get(lang) or next(iter(entry.values()), None)
        return f'"{text}" [{lang}/{pid}]' if text else path
    return f'"{entry}" [{pid}]'
