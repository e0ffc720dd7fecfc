"""Operator prompts (ivr_prompts, ivr_prompt_audio): the lookups the IVR makes for a greeting, and the
operations `cardd prompt create|update|list` (cardd.admin.prompts) run.

Any audio sox reads is converted to the telephony format (8 kHz, 16-bit, mono wav) and stored under
daemon.sounds_dir as custom/<id>/default.wav or custom/<id>/<lang>.wav; the database keeps the path relative to
sounds_dir, so a FreeSWITCH that mounts the same directory elsewhere only needs another sounds_dir.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Any

from cardd.billing.repository import Repository, query
from cardd.errors import PromptError

log = logging.getLogger(__name__)

CUSTOM_DIR = "custom"
DEFAULT_AUDIO = "default"
# sox's own conversion is fast; a minute guards against a pathological input.
SOX_TIMEOUT_S = 60
_LANG = re.compile(r"^[a-z]{2}$")


@dataclass(frozen=True)
class OperatorPrompt:
    id: int
    name: str
    description: str
    default_path: str | None  # relative to sounds_dir (or absolute)
    audio: dict[str, str]  # lang -> path


# --- lookups (the IVR and the commands) -------------------------------------------------------------------------


def get_prompt(pool: Any, prompt_id: int) -> OperatorPrompt | None:
    """The prompt with its recordings, or None when no such id exists."""
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT id, name, description, default_path FROM ivr_prompts WHERE id = %s", (prompt_id,)
        ).fetchone()
        if row is None:
            return None
        audio = dict(
            conn.execute(
                "SELECT lang, path FROM ivr_prompt_audio WHERE prompt_id = %s ORDER BY lang", (prompt_id,)
            ).fetchall()
        )
    return OperatorPrompt(id=row[0], name=row[1], description=row[2], default_path=row[3], audio=audio)


def list_prompts(pool: Any) -> list[OperatorPrompt]:
    with pool.connection() as conn:
        rows = conn.execute("SELECT id, name, description, default_path FROM ivr_prompts ORDER BY id").fetchall()
        audio: dict[int, dict[str, str]] = {}
        for prompt_id, lang, path in conn.execute(
            "SELECT prompt_id, lang, path FROM ivr_prompt_audio ORDER BY prompt_id, lang"
        ):
            audio.setdefault(prompt_id, {})[lang] = path
    return [
        OperatorPrompt(id=r[0], name=r[1], description=r[2], default_path=r[3], audio=audio.get(r[0], {})) for r in rows
    ]


def resolve(sounds_dir: str, path: str) -> str:
    """The absolute path FreeSWITCH plays for a stored path."""
    return os.path.join(sounds_dir, path)


# --- conversion -------------------------------------------------------------------------------------------------


def convert(source: str, target: str) -> None:
    """Convert any audio sox reads to 8 kHz 16-bit mono wav at `target`, atomically: a call playing the old
    recording never reads a half-written file."""
    sox = shutil.which("sox")
    if sox is None:
        raise PromptError(
            "sox is not installed (Debian: apt-get install sox); cardd needs it to convert "
            "prompts to 8 kHz 16-bit mono wav"
        )
    if not os.path.isfile(source):
        raise PromptError(f"{source}: no such file")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".wav", prefix=".converting-", dir=os.path.dirname(target))
    os.close(fd)
    try:
        # -V1: errors only. --no-dither keeps the output reproducible.
        cmd = [sox, "-V1", source, "-r", "8000", "-b", "16", "-c", "1", "-e", "signed-integer", "--no-dither", tmp]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=SOX_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise PromptError(f"{source}: sox did not finish in {SOX_TIMEOUT_S} s") from None
        if done.returncode != 0:
            reason = " ".join(done.stderr.split()) or f"sox exit status {done.returncode}"
            raise PromptError(f"{source}: not audio sox can read ({reason})")
        if os.path.getsize(tmp) <= 44:
            raise PromptError(f"{source}: no audio in it")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _relative_path(prompt_id: int, lang: str | None) -> str:
    return os.path.join(CUSTOM_DIR, str(prompt_id), f"{lang or DEFAULT_AUDIO}.wav")


# --- operations -------------------------------------------------------------------------------------------------


def create_prompt(pool: Any, sounds_dir: str, source: str, name: str, description: str) -> int:
    """A new prompt whose default recording is `source`; its id. Nothing is stored when the audio is bad."""
    if not name.strip():
        raise PromptError("a prompt needs a name")
    with pool.connection() as conn, conn.transaction():
        if conn.execute("SELECT 1 FROM ivr_prompts WHERE name = %s", (name,)).fetchone():
            raise PromptError(f"a prompt named {name!r} already exists")
        (prompt_id,) = conn.execute(
            "INSERT INTO ivr_prompts (name, description) VALUES (%s, %s) RETURNING id", (name, description)
        ).fetchone()
        rel = _relative_path(prompt_id, None)
        target = resolve(sounds_dir, rel)
        # Converted inside the transaction: a file sox cannot read leaves no row behind (nor a directory).
        try:
            convert(source, target)
        except PromptError:
            with contextlib.suppress(OSError):
                os.rmdir(os.path.dirname(target))
            raise
        conn.execute("UPDATE ivr_prompts SET default_path = %s WHERE id = %s", (rel, prompt_id))
    log.info("prompt %s (%s) created from %s", prompt_id, name, source)
    return int(prompt_id)


def update_prompt(
    pool: Any,
    sounds_dir: str,
    prompt_id: int,
    *,
    audio: str | None = None,
    lang: str | None = None,
    name: str | None = None,
    description: str | None = None,
) -> None:
    """Add or replace a recording (a language's, or the default one without `lang`), rename, re-describe."""
    if lang is not None and not _LANG.match(lang):
        raise PromptError(f"bad language {lang!r}: a two-letter code such as th")
    if lang is not None and audio is None:
        raise PromptError("--lang needs --audio")
    if audio is None and name is None and description is None:
        raise PromptError("nothing to update: give --audio FILE [--lang xx], --name or --description")
    with pool.connection() as conn, conn.transaction():
        if not conn.execute("SELECT 1 FROM ivr_prompts WHERE id = %s FOR UPDATE", (prompt_id,)).fetchone():
            raise PromptError(f"no prompt {prompt_id}")
        if name is not None:
            if conn.execute("SELECT 1 FROM ivr_prompts WHERE name = %s AND id <> %s", (name, prompt_id)).fetchone():
                raise PromptError(f"a prompt named {name!r} already exists")
            conn.execute("UPDATE ivr_prompts SET name = %s WHERE id = %s", (name, prompt_id))
        if description is not None:
            conn.execute("UPDATE ivr_prompts SET description = %s WHERE id = %s", (description, prompt_id))
        if audio is not None:
            rel = _relative_path(prompt_id, lang)
            convert(audio, resolve(sounds_dir, rel))
            if lang is None:
                conn.execute("UPDATE ivr_prompts SET default_path = %s WHERE id = %s", (rel, prompt_id))
            else:
                conn.execute(
                    "INSERT INTO ivr_prompt_audio (prompt_id, lang, path) VALUES (%s, %s, %s) "
                    "ON CONFLICT (prompt_id, lang) DO UPDATE SET path = EXCLUDED.path, updated_at = now()",
                    (prompt_id, lang, rel),
                )
    log.info("prompt %s updated", prompt_id)


class PromptStore(Repository):
    """Operator prompts, for a call (the greetings): get_prompt timed as cardd_db_query_seconds{op=get_prompt}."""

    @query
    def get_prompt(self, prompt_id: int) -> OperatorPrompt | None:
        return get_prompt(self.pool, prompt_id)
