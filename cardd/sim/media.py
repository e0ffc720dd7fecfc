"""How long the simulated switch takes to play something.

A wav file that exists plays for its real length; a missing local file is
FILE NOT FOUND; tone_stream:// and silence_stream:// last what their
arguments say; file_string://a!b plays its parts in turn.
"""

from __future__ import annotations

import functools
import os
import re
import wave

DEFAULT_SECONDS = 1.0
_TONE = re.compile(r"%\(([\d.]+),([\d.]+)(?:,[^)]*)?\)")


def split_file_string(path: str) -> list[str]:
    if path.startswith("file_string://"):
        return [p for p in path[len("file_string://") :].split("!") if p]
    return [path]


@functools.lru_cache(maxsize=4096)
def _wav_seconds(path: str, mtime: float) -> float:
    try:
        with wave.open(path, "rb") as w:
            return w.getnframes() / float(w.getframerate() or 8000)
    except (wave.Error, EOFError, OSError):
        # Not a PCM wav we can read: FreeSWITCH would still play something.
        return DEFAULT_SECONDS


def part_seconds(part: str, sound_prefix: str | None = None) -> float | None:
    """Seconds one (non file_string) part plays, or None when not found."""
    if part.startswith("tone_stream://"):
        body = part[len("tone_stream://") :]
        loops = 1
        m = re.search(r";loops=(-?\d+)", body)
        if m:
            loops = max(int(m.group(1)), 1)
        ms = sum(float(a) + float(b) for a, b in _TONE.findall(body))
        return (ms * loops) / 1000.0 if ms else DEFAULT_SECONDS
    if part.startswith("silence_stream://"):
        m = re.match(r"silence_stream://(\d+)", part)
        return int(m.group(1)) / 1000.0 if m else DEFAULT_SECONDS
    if "://" in part:
        return DEFAULT_SECONDS
    path = part
    if not os.path.isabs(path):
        if not sound_prefix:
            return None
        path = os.path.join(sound_prefix, path)
    try:
        st = os.stat(path)
    except OSError:
        return None
    if path.endswith(".wav"):
        return _wav_seconds(path, st.st_mtime)
    return DEFAULT_SECONDS
