"""The prompt catalogue and cardd's code agree: every prompt id cardd can play exists in every language (text and
rendered audio), and no catalogue entry is dead weight.

"Used" is found in the source, not by running calls: prompt ids are string literals handed to the speaking
functions (Call.queue/ask/goodbye, Prompts.path/sentence/has/text, CardRefused), the ids the variant pickers of
prompts.py can return, the language-menu ids, and every id speech.py can generate (speech.all_ids()).
The simulator (cardd/sim) is not cardd's code and does not count.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import os
import re
from pathlib import Path

import pytest

from cardd import prompts as prompts_mod
from cardd import speech
from cardd.prompts import LANGUAGE_MENU_IDS, Prompts

REPO = Path(__file__).resolve().parent.parent
CARDD = REPO / "cardd"
SOUNDS = REPO / "sounds"
_ID = re.compile(r"^[a-z][a-z0-9_]*$")
LANGUAGES = set(Prompts(SOUNDS).languages)

# name of the callable -> which positional argument(s) hold prompt ids (None: all of them)
SPEAKERS: dict[str, int | None] = {
    "queue": None,
    "ask": None,
    "goodbye": None,
    "CardRefused": 0,
    "path": 0,
    "has": 0,
    "text": 0,
    "sentence": 1,
}


def cardd_sources() -> list[Path]:
    return sorted(p for p in CARDD.rglob("*.py") if "sim" not in p.relative_to(CARDD).parts)


def _callee_name(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    if isinstance(node.func, ast.Name):
        return node.func.id
    return None


def _strings(node: ast.AST) -> set[str]:
    """String literals that are whole values of an expression (through `a if c else b`, `x or y`, lists)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.IfExp):
        return _strings(node.body) | _strings(node.orelse)
    if isinstance(node, ast.BoolOp):
        return set().union(*(_strings(v) for v in node.values))
    if isinstance(node, (ast.List, ast.Tuple)):
        return set().union(set(), *(_strings(e) for e in node.elts))
    if isinstance(node, ast.Starred):
        return _strings(node.value)
    if isinstance(node, ast.Call):
        # a helper that picks the variant: `_prompt(call, "enter_old_pin")`, `prompts.path("x", lang)`
        return set().union(set(), *(_strings(a) for a in node.args))
    return set()


def spoken_literals() -> dict[str, list[str]]:
    """Prompt-id literals handed to the speaking functions: id -> where (file:line)."""
    found: dict[str, list[str]] = {}
    for path in cardd_sources():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Dict):
                # a table of prompts by outcome: `_FAILURE_PROMPTS = {"USER_BUSY": "destination_busy", ...}`
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Name) and "PROMPT" in t.id.upper() for t in targets):
                    for value in node.value.values:
                        for s in _strings(value):
                            if _ID.match(s):
                                found.setdefault(s, []).append(f"{path.relative_to(REPO)}:{node.lineno}")
                continue
            if not isinstance(node, ast.Call):
                continue
            which = SPEAKERS.get(_callee_name(node) or "", -1)
            if which == -1:
                continue
            args = node.args if which is None else node.args[which : which + 1]
            for arg in args:
                for s in _strings(arg):
                    if _ID.match(s) and s not in LANGUAGES:
                        found.setdefault(s, []).append(f"{path.relative_to(REPO)}:{node.lineno}")
    return found


def picker_ids() -> set[str]:
    """Every id the variant pickers of prompts.py return, over every combination of their flags."""
    ids: set[str] = set()
    for name in prompts_mod.__all__:
        fn = getattr(prompts_mod, name)
        if not inspect.isfunction(fn):
            continue
        flags = [p.name for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY]
        for values in itertools.product((False, True), repeat=len(flags)):
            ids.add(fn(**dict(zip(flags, values))))
    return ids


def all_literals() -> set[str]:
    """Every string literal of cardd's code (a table of ids, a dict of failure prompts, ...), and each of them
    with every suffix literal of the code (`base + "_no_pound"`) appended."""
    out: set[str] = set()
    for path in cardd_sources():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                out.add(node.value)
    suffixes = {s for s in out if s.startswith("_") and _ID.match(s[1:])}
    return out | {s + suffix for s in out if _ID.match(s) for suffix in suffixes}


@pytest.fixture(scope="module")
def catalogue() -> Prompts:
    return Prompts(SOUNDS)


def test_the_source_scan_finds_the_prompts_every_call_plays(catalogue):
    # Guards the scanner itself: a refactor that hid these from it would make the other tests vacuous.
    found = spoken_literals()
    for pid in (
        "welcome",
        "goodbye",
        "invalid_input",
        "destination_forbidden",
        "card_blocked",
        "destination_busy",
        "call_failed",
    ):
        assert pid in found, pid
    assert {"enter_card_number", "enter_pin_word_no_pound", "enter_destination"} <= picker_ids()


def test_every_prompt_id_cardd_plays_exists_in_every_language(catalogue):
    used = set(spoken_literals()) | picker_ids() | set(LANGUAGE_MENU_IDS.values()) | speech.all_ids()
    missing = []
    for pid in sorted(used):
        for lang in catalogue.languages:
            if not catalogue.has(pid, lang):
                where = spoken_literals().get(pid, ["(generated)"])
                missing.append(f"{pid} [{lang}] used at {', '.join(where)}")
    assert missing == [], "prompt ids without text or audio:\n" + "\n".join(missing)


def test_every_catalogue_entry_has_text_and_8khz_audio_in_every_language(catalogue):
    import wave

    problems = []
    for pid in catalogue.ids:
        for lang in catalogue.languages:
            path = SOUNDS / lang / f"{pid}.wav"
            if not catalogue.has(pid, lang):
                problems.append(f"{lang}/{pid}: no text or no audio")
                continue
            with wave.open(str(path)) as w:
                if (w.getframerate(), w.getsampwidth(), w.getnchannels()) != (8000, 2, 1):
                    problems.append(f"{lang}/{pid}: not 8 kHz 16-bit mono")
    assert problems == []


def unused_entries(catalogue: Prompts) -> list[str]:
    used = all_literals() | picker_ids() | set(LANGUAGE_MENU_IDS.values()) | speech.all_ids()
    return sorted(set(catalogue.ids) - used)


# Unused when this test was written (commit 3d1adf5's catalogue): for the lead to decide — remove them from
# sounds/catalogue.yaml (and their wavs), or play them. Kept out of the strict check below so it stays useful.
KNOWN_UNUSED: list[str] = []


def test_no_catalogue_entry_is_unused(catalogue):
    unused = unused_entries(catalogue)
    assert unused == [], (
        "catalogue entries no code plays (remove them from sounds/catalogue.yaml and "
        "re-render, or use them): " + ", ".join(unused)
    )


def test_no_catalogue_entry_is_unused_beyond_the_known_ones(catalogue):
    newly = sorted(set(unused_entries(catalogue)) - set(KNOWN_UNUSED))
    assert newly == [], "catalogue entries no code plays: " + ", ".join(newly)


def test_no_audio_file_is_left_without_a_catalogue_entry(catalogue):
    stray = []
    for lang in catalogue.languages:
        for name in sorted(os.listdir(SOUNDS / lang)):
            stem, ext = os.path.splitext(name)
            if ext == ".wav" and stem not in catalogue.ids:
                stray.append(f"{lang}/{name}")
    assert stray == []
