"""Only cardd/channel.py knows FreeSWITCH: the IVR (cardd/ivr/) speaks in calling-card terms
(a prompt, a hard limit, a disconnect warning, early media or ringback, keys pressed) and never
names a FreeSWITCH application, variable, sound URL or hangup cause, nor reaches past the Channel
into the ESL session. Comments and docstrings may explain FreeSWITCH's behaviour; code may not use it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import cardd

IVR = Path(cardd.__file__).parent / "ivr"
CHANNEL = Path(cardd.__file__).parent / "channel.py"

# FreeSWITCH applications, channel variables, sound URLs and causes, as they appear in strings.
FREESWITCH_NAMES = [
    r"sched_",
    r"\bplayback\b",
    r"play_and_get_digits",
    r"silence_stream",
    r"tone_stream",
    r"file_string",
    r"execute_on_answer",
    r"origination_",
    r"originate_",
    r"ignore_early_media",
    r"bridge_",
    r"hangup_cause",
    r"\buuid_",
    r"^(bg)?api ",
    r"continue_on_fail",
    r"\bringback\b",
    r"digit_action",
    r"flush_dtmf",
    r"\bvariable_",
    r"^Caller-",
    r"ALLOTTED_TIMEOUT",
    r"NORMAL_CLEARING",
    r"DIALSTATUS",
    r"read_result",
    r"%\(\d",
    r"^silence$",
]
# What the ESL session offers: the IVR goes through the Channel instead.
ESL_ATTRIBUTES = {
    "session",
    "dtmf_count",
    "session_data",
    "execute",
    "add_leg",
    "wait_leg_end",
    "add_listener",
    "a_hungup",
}


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def freeswitch_in(path: Path) -> list[str]:
    """Every FreeSWITCH name used by the code of `path` (file:line what)."""
    tree = ast.parse(path.read_text(), str(path))
    docstrings = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        where = f"{path.name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            found += [
                f"{where} {node.value!r} names {pattern}"
                for pattern in FREESWITCH_NAMES
                if re.search(pattern, node.value)
            ]
        elif isinstance(node, ast.Attribute) and node.attr in ESL_ATTRIBUTES:
            found.append(f"{where} .{node.attr} reaches the ESL session")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            found += [f"{where} imports {m}" for m in modules if m.startswith("cardd.esl")]
    return found


def test_the_ivr_names_no_freeswitch_application_or_variable():
    modules = sorted(IVR.glob("*.py"))
    assert len(modules) > 10, modules
    found = [hit for path in modules for hit in freeswitch_in(path)]
    assert found == [], "FreeSWITCH names belong in cardd/channel.py:\n" + "\n".join(found)


def test_the_guard_sees_the_names_the_channel_uses():
    # Not a vacuous guard: run on cardd/channel.py, it finds what the IVR must not say.
    found = "\n".join(freeswitch_in(CHANNEL))
    for name in [
        "sched_hangup",
        "sched_broadcast",
        "silence_stream",
        "ignore_early_media",
        "execute_on_answer",
        "origination_",
        "%(2000",
        "'silence'",
        ".dtmf_count",
        ".execute",
        "imports cardd.esl",
    ]:
        assert name in found, name
