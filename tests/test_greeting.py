"""Greetings around the language menu, end to end through cardd and the simulated switch.

custom greeting file, then the early greeting prompt (greet<id>, not localised), then the language menu, then
the late greeting prompt (lgreet<id>, in the caller's language, else the prompt's default audio). Operator
prompts are created with cardd.billing.prompt_store, from wavs sox makes here, in a sounds_dir of the test's own (the
catalogue's languages linked in).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess

import pytest

from cardd.billing.prompt_store import create_prompt, update_prompt
from cardd.logs import CallUuidFilter
from cardd.sim import Caller

pytestmark = pytest.mark.skipif(
    shutil.which("sox") is None, reason="sox is not installed (apt-get install sox): operator prompts need it"
)

REPO_SOUNDS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sounds")


def tone(path, freq: int, seconds: float = 0.3) -> str:
    """A CD-quality stereo tone: prompt_store must convert it."""
    subprocess.run(
        ["sox", "-n", "-r", "44100", "-c", "2", str(path), "synth", str(seconds), "sine", str(freq)], check=True
    )
    return str(path)


@pytest.fixture
def sounds(tmp_path):
    """A sounds_dir: the repo's catalogue and audio, plus room for operator prompts."""
    d = tmp_path / "sounds"
    d.mkdir()
    for name in os.listdir(REPO_SOUNDS):
        src = os.path.join(REPO_SOUNDS, name)
        if name == "catalogue.yaml" or (os.path.isdir(src) and len(name) == 2):
            os.symlink(src, d / name)
    return d


@pytest.fixture
def greetings(database, sounds, tmp_path):
    """Two operator prompts: `early` (default audio only), `late` (default audio + a Spanish recording)."""
    early = create_prompt(database.pool, str(sounds), tone(tmp_path / "e.wav", 440), "promo", "this month's promo")
    late = create_prompt(database.pool, str(sounds), tone(tmp_path / "l.wav", 550), "thanks", "thank you")
    update_prompt(database.pool, str(sounds), late, audio=tone(tmp_path / "l_es.wav", 660), lang="es")
    return early, late


def custom(sounds, prompt_id, name) -> str:
    return str(sounds / "custom" / str(prompt_id) / f"{name}.wav")


def heard(running, transcript) -> list[str]:
    """Catalogue prompts as lang/id, other files as their path."""
    out = []
    for path in transcript.prompts:
        found = running.prompts.id_for_path(path)
        out.append(f"{found[0]}/{found[1]}" if found else path)
    return out


def pagd_prompts(transcript) -> list[str]:
    return [arg for app, arg in transcript.apps if app == "play_and_get_digits"]


def test_early_greeting_before_the_menu_and_late_greeting_in_the_chosen_language(
    cardd_with, database, sounds, greetings
):
    early, late = greetings
    running = cardd_with(database, sounds_dir=str(sounds))
    t = running.call(Caller(destination=f"cc.en.es.greet{early}.lgreet{late}", digits=["2"], type_after=6))
    h = heard(running, t)
    assert h[:7] == [
        custom(sounds, early, "default"),
        "en/for_english",
        "en/press",
        "en/num_1",
        "es/for_spanish",
        "es/press",
        "es/num_2",
    ]
    # The early greeting is the start of the menu's prompt: a key pressed over it counts.
    assert pagd_prompts(t)[0].split(" ")[5].startswith("file_string://" + custom(sounds, early, "default"))
    assert h[7] == custom(sounds, late, "es")
    assert h[8:10] == ["es/welcome", "es/enter_card_number"]


def test_late_greeting_falls_back_to_the_default_audio(cardd_with, database, sounds, greetings):
    early, late = greetings
    running = cardd_with(database, sounds_dir=str(sounds))
    t = running.call(Caller(destination=f"cc.en.es.lgreet{late}", digits=["1"], type_after=6))
    h = heard(running, t)
    assert h[6] == custom(sounds, late, "default")
    assert h[7] == "en/welcome"


def test_early_greeting_is_not_localised(cardd_with, database, sounds, greetings):
    _, late = greetings  # has a Spanish recording, which the early greeting must not pick
    running = cardd_with(database, sounds_dir=str(sounds))
    t = running.call(Caller(destination=f"cc.es.greet{late}", type_after=6))
    assert heard(running, t)[:2] == [custom(sounds, late, "default"), "es/welcome"]


def test_greetings_with_one_language_play_without_a_menu(cardd_with, database, sounds, greetings):
    early, late = greetings
    running = cardd_with(database, sounds_dir=str(sounds))
    t = running.call(Caller(destination=f"cc.es.greet{early}.lgreet{late}", type_after=6))
    h = heard(running, t)
    assert h[:4] == [custom(sounds, early, "default"), custom(sounds, late, "es"), "es/welcome", "es/enter_card_number"]
    assert not any("for_" in x for x in h)


def test_custom_greeting_file_plays_first(cardd_with, database, sounds, greetings, tmp_path):
    early, _ = greetings
    hello = tone(tmp_path / "hello.wav", 330)
    yaml_text = f"calling_card:\n  custom_greeting: true\n  custom_greeting_file: {hello}\n"
    running = cardd_with(database, yaml_text, tmp_path=tmp_path, sounds_dir=str(sounds))
    t = running.call(Caller(destination=f"cc.en.es.greet{early}", digits=["1"], type_after=6))
    h = heard(running, t)
    assert h[:3] == [hello, custom(sounds, early, "default"), "en/for_english"]


def test_custom_greeting_file_is_off_unless_custom_greeting_is_set(cardd_with, database, sounds, tmp_path):
    hello = tone(tmp_path / "hello.wav", 330)
    yaml_text = f"calling_card:\n  custom_greeting_file: {hello}\n"
    running = cardd_with(database, yaml_text, tmp_path=tmp_path, sounds_dir=str(sounds))
    t = running.call(Caller(destination="cc", type_after=6))
    assert heard(running, t)[0] == "en/welcome"


def test_greeting_prompts_from_the_instance_settings(cardd_with, database, sounds, greetings, tmp_path):
    early, late = greetings
    yaml_text = (
        f"instances:\n  shop:\n    languages: [es]\n    early_greeting_prompt: {early}\n"
        f"    late_greeting_prompt: {late}\n"
    )
    running = cardd_with(database, yaml_text, tmp_path=tmp_path, sounds_dir=str(sounds))
    t = running.call(Caller(destination="shop", type_after=6))
    assert heard(running, t)[:3] == [custom(sounds, early, "default"), custom(sounds, late, "es"), "es/welcome"]


def test_the_cld_greeting_token_overrides_the_instance_setting(cardd_with, database, sounds, greetings, tmp_path):
    early, late = greetings
    yaml_text = f"instances:\n  shop:\n    early_greeting_prompt: {early}\n"
    running = cardd_with(database, yaml_text, tmp_path=tmp_path, sounds_dir=str(sounds))
    t = running.call(Caller(destination=f"shop.greet{late}", type_after=6))
    assert heard(running, t)[:2] == [custom(sounds, late, "default"), "en/welcome"]


def test_an_updated_recording_is_played_on_the_next_call(cardd_with, database, sounds, greetings, tmp_path):
    early, _ = greetings
    running = cardd_with(database, sounds_dir=str(sounds))
    update_prompt(database.pool, str(sounds), early, audio=tone(tmp_path / "e_fr.wav", 770), lang="fr")
    t = running.call(Caller(destination=f"cc.fr.lgreet{early}", type_after=6))
    assert heard(running, t)[:2] == [custom(sounds, early, "fr"), "fr/welcome"]


def test_a_missing_greeting_prompt_is_logged_and_the_call_goes_on(cardd_with, database, sounds, caplog):
    caplog.set_level(logging.WARNING)
    caplog.handler.addFilter(CallUuidFilter())  # as cardd's own handler does (cardd/logs.py)
    running = cardd_with(database, sounds_dir=str(sounds))
    t = running.call(Caller(destination="cc.greet4242.lgreet4343", type_after=6))
    assert heard(running, t)[:2] == ["en/welcome", "en/enter_card_number"]
    records = [r for r in caplog.records if "does not exist" in r.getMessage()]
    assert len(records) == 2 and all(r.call_uuid == t.a_uuid for r in records)
    logged = [r.getMessage() for r in records]
    assert "4242" in logged[0] and "4343" in logged[1]


def test_a_key_pressed_during_the_early_greeting_chooses_the_language(cardd_with, database, sounds, tmp_path):
    # A caller who knows the menu need not wait for it: the greeting is part of the menu's prompt.
    long_one = create_prompt(
        database.pool, str(sounds), tone(tmp_path / "long.wav", 440, seconds=4.0), "long", "a long welcome"
    )
    running = cardd_with(database, sounds_dir=str(sounds))
    t = running.call(Caller(destination=f"cc.en.es.greet{long_one}", digits=["2"], type_after=1.0))
    h = heard(running, t)
    assert h[0] == custom(sounds, long_one, "default")
    assert "en/for_english" not in h
    assert h[1:3] == ["es/welcome", "es/enter_card_number"]


def test_a_prompt_without_default_audio_plays_the_default_language_recording(
    cardd_with, database, sounds, tmp_path, caplog
):
    # Rows written by other tools (or an older cardd) may lack the default recording: the default
    # language's recording beats silence; a prompt with no recording at all is logged and skipped.
    en = tone(tmp_path / "en.wav", 500)
    with database.pool.connection() as conn:
        (only_en,) = conn.execute("INSERT INTO ivr_prompts (name) VALUES ('only-en') RETURNING id").fetchone()
        conn.execute("INSERT INTO ivr_prompt_audio (prompt_id, lang, path) VALUES (%s, 'en', %s)", (only_en, en))
        (silent,) = conn.execute("INSERT INTO ivr_prompts (name) VALUES ('silent') RETURNING id").fetchone()
    caplog.set_level(logging.WARNING)
    running = cardd_with(database, sounds_dir=str(sounds))
    t = running.call(Caller(destination=f"cc.es.greet{only_en}.lgreet{silent}", type_after=6))
    assert heard(running, t)[:2] == [en, "es/welcome"]
    assert any(f"greeting prompt {silent} has no recording" in r.getMessage() for r in caplog.records)
