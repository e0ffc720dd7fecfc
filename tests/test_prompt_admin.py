"""`cardd prompt create|update|list` as operators run it: the real CLI as a subprocess, on a test database,
with audio sox makes here (a CD-quality stereo tone, converted to 8 kHz 16-bit mono wav)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import pytest

from cardd.billing.prompt_store import get_prompt

REPO = Path(__file__).resolve().parent.parent

needs_sox = pytest.mark.skipif(
    shutil.which("sox") is None, reason="sox is not installed (apt-get install sox): prompt conversion needs it"
)


@pytest.fixture
def operator(dsn, tmp_path):
    """Runs `cardd -c <yaml> prompt ...` with the test database and a sounds_dir of its own."""
    sounds = tmp_path / "sounds"
    config = tmp_path / "cardd.yaml"
    config.write_text(f"daemon:\n  dsn: '{dsn}'\n  sounds_dir: {sounds}\n  log_level: warning\n")

    def run(*args: str, path_env: str | None = None) -> subprocess.CompletedProcess:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        if path_env is not None:
            env["PATH"] = path_env
        return subprocess.run(
            [sys.executable, "-m", "cardd", "-c", str(config), "prompt", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            cwd=tmp_path,
        )

    run.sounds = sounds
    return run


def tone(path: Path, *, rate: int = 44100, channels: int = 2, seconds: float = 0.5, freq: int = 440) -> str:
    subprocess.run(
        ["sox", "-n", "-r", str(rate), "-c", str(channels), str(path), "synth", str(seconds), "sine", str(freq)],
        check=True,
    )
    return str(path)


def wav_format(path: Path) -> tuple[int, int, int]:
    with wave.open(str(path)) as w:
        return w.getframerate(), w.getsampwidth() * 8, w.getnchannels()


@needs_sox
def test_create_prints_the_new_id_and_stores_telephony_audio(operator, tmp_path, database):
    done = operator("create", tone(tmp_path / "promo.wav"), "promo", "Christmas promotion")
    assert done.returncode == 0, done.stderr
    prompt_id = int(done.stdout.strip())
    stored = operator.sounds / "custom" / str(prompt_id) / "default.wav"
    assert wav_format(stored) == (8000, 16, 1)
    with wave.open(str(stored)) as w:
        assert abs(w.getnframes() - 4000) <= 10  # the half second survived the conversion
    prompt = get_prompt(database.pool, prompt_id)
    assert (prompt.name, prompt.description, prompt.default_path) == (
        "promo",
        "Christmas promotion",
        f"custom/{prompt_id}/default.wav",
    )
    second = operator("create", tone(tmp_path / "b.wav", freq=550), "thanks", "thank you")
    assert int(second.stdout) == prompt_id + 1


@needs_sox
def test_update_adds_a_language_and_list_shows_it(operator, tmp_path, database):
    prompt_id = int(operator("create", tone(tmp_path / "a.wav"), "promo", "promotion").stdout)
    # Any format sox reads: here an 8-bit 22 kHz mono AIFF.
    thai = tmp_path / "thai.aiff"
    subprocess.run(
        ["sox", "-n", "-r", "22050", "-b", "8", "-c", "1", str(thai), "synth", "0.3", "sine", "300"], check=True
    )
    done = operator("update", str(prompt_id), "--audio", str(thai), "--lang", "th")
    assert done.returncode == 0, done.stderr
    assert wav_format(operator.sounds / "custom" / str(prompt_id) / "th.wav") == (8000, 16, 1)
    assert get_prompt(database.pool, prompt_id).audio == {"th": f"custom/{prompt_id}/th.wav"}
    listing = operator("list")
    assert listing.returncode == 0
    lines = listing.stdout.splitlines()
    assert lines[0] == "id\tname\tlanguages\tdefault audio\tdescription"
    assert lines[1] == f"{prompt_id}\tpromo\tth\tyes\tpromotion"


@needs_sox
def test_update_replaces_a_recording_and_the_default_audio(operator, tmp_path, database):
    prompt_id = int(operator("create", tone(tmp_path / "a.wav", seconds=0.5), "promo", "x").stdout)
    assert operator("update", str(prompt_id), "--audio", tone(tmp_path / "es1.wav"), "--lang", "es").returncode == 0
    assert (
        operator(
            "update", str(prompt_id), "--audio", tone(tmp_path / "es2.wav", seconds=1.0), "--lang", "es"
        ).returncode
        == 0
    )
    with wave.open(str(operator.sounds / "custom" / str(prompt_id) / "es.wav")) as w:
        assert abs(w.getnframes() - 8000) <= 10
    assert operator("update", str(prompt_id), "--audio", tone(tmp_path / "d.wav", seconds=2.0)).returncode == 0
    with wave.open(str(operator.sounds / "custom" / str(prompt_id) / "default.wav")) as w:
        assert abs(w.getnframes() - 16000) <= 10
    assert operator("update", str(prompt_id), "--name", "promo2", "--description", "new").returncode == 0
    prompt = get_prompt(database.pool, prompt_id)
    assert (prompt.name, prompt.description, list(prompt.audio)) == ("promo2", "new", ["es"])
    # No stray temporary files next to the recordings.
    assert sorted(os.listdir(operator.sounds / "custom" / str(prompt_id))) == ["default.wav", "es.wav"]


@needs_sox
def test_a_file_sox_cannot_read_is_refused_and_nothing_is_stored(operator, tmp_path, database):
    bad = tmp_path / "notes.wav"
    bad.write_text("this is not audio\n")
    done = operator("create", str(bad), "promo", "x")
    assert done.returncode == 2
    assert "notes.wav: not audio sox can read" in done.stderr
    assert "Traceback" not in done.stderr
    assert operator("list").stdout.splitlines()[1:] == []
    assert not (operator.sounds / "custom").exists() or os.listdir(operator.sounds / "custom") == []
    # The name is free again: the failed create left no row.
    assert operator("create", tone(tmp_path / "ok.wav"), "promo", "x").returncode == 0


@needs_sox
def test_update_errors_are_clear(operator, tmp_path):
    prompt_id = int(operator("create", tone(tmp_path / "a.wav"), "promo", "x").stdout)
    cases = [
        (("update", "999", "--audio", str(tmp_path / "a.wav"), "--lang", "th"), "no prompt 999"),
        (
            ("update", str(prompt_id), "--audio", str(tmp_path / "missing.wav"), "--lang", "th"),
            "missing.wav: no such file",
        ),
        (("update", str(prompt_id), "--audio", str(tmp_path / "a.wav"), "--lang", "THA"), "bad language 'THA'"),
        (("update", str(prompt_id)), "nothing to update"),
        (("create", str(tmp_path / "a.wav"), "promo", "again"), "a prompt named 'promo' already exists"),
    ]
    for args, message in cases:
        done = operator(*args)
        assert done.returncode == 2, args
        assert message in done.stderr, (args, done.stderr)


def test_missing_sox_is_a_clear_error(operator, tmp_path):
    # A PATH without sox: the conversion cannot start, and the operator is told what to install.
    empty = tmp_path / "bin"
    empty.mkdir()
    source = tmp_path / "a.wav"
    source.write_bytes(b"RIFF")
    done = operator("create", str(source), "promo", "x", path_env=str(empty))
    assert done.returncode == 2
    assert "sox is not installed" in done.stderr and "apt-get install sox" in done.stderr
    assert "Traceback" not in done.stderr
