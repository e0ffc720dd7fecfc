"""The prompt catalogue, its committed audio, and cardd.prompts.Prompts."""

import importlib.util
import json
import logging
import os
import sys
import wave
from types import SimpleNamespace

import pytest
import yaml

from cardd import prompts as prompts_mod
from cardd.errors import ConfigError
from cardd.prompts import FILE_STRING, Prompts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOUNDS = os.path.join(ROOT, "sounds")
with open(os.path.join(SOUNDS, "catalogue.yaml"), encoding="utf-8") as _f:
    CATALOGUE: dict[str, dict[str, str]] = yaml.safe_load(_f)
LANGUAGES = ("en", "es", "fr")

# the prompt ids the IVR flow is built on (the lead's cardd/ivr uses these names)
FLOW_IDS = """
welcome enter_card_number enter_card_number_no_pound enter_pin_word enter_pin_word_no_pound enter_pin
enter_pin_no_pound invalid_card_number invalid_pin_word wrong_pin card_blocked card_expired no_balance_left
card_in_use you_have remaining minus enter_destination enter_destination_no_pound invalid_destination
destination_forbidden destination_unavailable insufficient_funds you_can_talk_for call_failed destination_busy
no_answer call_will_be_disconnected_in invalid_input no_input too_many_attempts goodbye service_unavailable
for_english for_spanish for_french press
enter_voucher_number enter_voucher_number_no_pound topup_successful enter_new_pin
enter_new_pin_no_pound pin_changed register_cli_offer cli_registered enter_hot_dial_key hot_dial_key_not_set
hot_dial_saved
""".split()


def _load_render():
    """sounds/render.py is a script, not a package module: load it by path (once)."""
    name = "cardd_sounds_render"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(SOUNDS, "render.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the class is built
        spec.loader.exec_module(module)
    return sys.modules[name]


# --- the catalogue and its audio --------------------------------------------------------------------------------


def test_every_catalogue_entry_has_text_in_every_language():
    for prompt_id, texts in CATALOGUE.items():
        assert isinstance(prompt_id, str), prompt_id  # a bare yes/no/on key would load as a bool
        assert set(texts) == set(LANGUAGES), prompt_id
        for lang, text in texts.items():
            assert isinstance(text, str) and text.strip(), (prompt_id, lang)


def test_catalogue_has_every_prompt_the_flow_uses():
    assert [i for i in FLOW_IDS if i not in CATALOGUE] == []


def test_every_language_menu_entry_exists():
    for lang, prompt_id in prompts_mod.LANGUAGE_MENU_IDS.items():
        assert lang in LANGUAGES and prompt_id in CATALOGUE


def test_every_catalogue_wav_exists_and_is_8khz_16bit_mono():
    for prompt_id in CATALOGUE:
        for lang in LANGUAGES:
            path = os.path.join(SOUNDS, lang, prompt_id + ".wav")
            with wave.open(path, "rb") as w:
                assert (w.getframerate(), w.getsampwidth(), w.getnchannels(), w.getcomptype()) == (
                    8000,
                    2,
                    1,
                    "NONE",
                ), path
                # at least 0.1 s of sound: an empty render would play as silence
                assert w.getnframes() >= 800, path


def test_no_audio_file_without_a_catalogue_entry():
    for lang in LANGUAGES:
        extra = [n for n in os.listdir(os.path.join(SOUNDS, lang)) if n[: -len(".wav")] not in CATALOGUE]
        assert extra == [], lang


def test_audio_was_rendered_from_the_current_texts():
    # editing a text without running sounds/render.py (and committing the audio) fails here
    render = _load_render()
    with open(os.path.join(SOUNDS, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)["files"]
    expected = {job.rel: job.digest() for job in render.load_jobs(os.path.join(SOUNDS, "catalogue.yaml"))}
    stale = sorted(rel for rel in expected if manifest.get(rel) != expected[rel])
    assert stale == [], "run python sounds/render.py: " + ", ".join(stale[:10])
    assert sorted(set(manifest) - set(expected)) == []


def test_render_check_mode_reports_up_to_date_without_tools():
    render = _load_render()
    assert render.main(["--check"]) == 0


def test_total_audio_stays_small():
    total = sum(
        os.path.getsize(os.path.join(SOUNDS, lang, n))
        for lang in LANGUAGES
        for n in os.listdir(os.path.join(SOUNDS, lang))
    )
    assert total < 20_000_000, total


def test_render_digest_changes_with_the_text_only_for_that_file():
    render = _load_render()
    a = render.Job("en", "welcome", "Welcome.")
    b = render.Job("en", "welcome", "Welcome!")
    c = render.Job("en", "goodbye", "Welcome.")
    assert a.digest() != b.digest()
    assert a.digest() == c.digest()  # the id is not part of the audio
    assert a.pad() == render.PAD_SENTENCE and render.Job("en", "and", "and").pad() == render.PAD_WORD


# --- Prompts over the real sounds directory ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def real():
    return Prompts(SOUNDS)


def test_languages_in_catalogue_order(real):
    assert real.languages == LANGUAGES
    assert real.has_language("es") and not real.has_language("de")


def test_path_is_absolute_under_sounds_dir(real):
    assert real.path("welcome", "es") == os.path.join(SOUNDS, "es", "welcome.wav")
    assert os.path.isabs(real.path("welcome", "es"))
    assert real.has("welcome", "fr")


def test_sentence_of_one_id_is_a_plain_path(real):
    assert real.sentence("en", ["goodbye"]) == os.path.join(SOUNDS, "en", "goodbye.wav")


def test_sentence_of_several_ids_is_one_file_string(real):
    s = real.sentence("fr", ["you_have", "num_5", "cur_eur_majors", "remaining"])
    assert s == FILE_STRING + "!".join(
        os.path.join(SOUNDS, "fr", i + ".wav") for i in ("you_have", "num_5", "cur_eur_majors", "remaining")
    )


def test_sentence_refuses_empty_and_bare_string(real):
    with pytest.raises(ValueError):
        real.sentence("en", [])
    with pytest.raises(TypeError):
        real.sentence("en", "welcome")  # type: ignore[arg-type]


def test_unknown_prompt_id_is_a_key_error(real):
    with pytest.raises(KeyError):
        real.path("no_such_prompt", "en")
    with pytest.raises(KeyError):
        real.text("no_such_prompt", "en")


def test_text_per_language(real):
    assert real.text("num_21_a", "es") == "veintiún"
    assert real.text("goodbye", "fr") == "Merci de votre appel. Au revoir."


def test_id_for_path_maps_back_and_understands_file_string(real):
    assert real.id_for_path(real.path("wrong_pin", "es")) == ("es", "wrong_pin")
    assert real.id_for_path(FILE_STRING + real.path("wrong_pin", "es")) == ("es", "wrong_pin")
    two = real.sentence("en", ["you_have", "num_2"])
    assert real.id_for_path(two) is None
    assert real.ids_for_path(two) == [("en", "you_have"), ("en", "num_2")]
    assert real.id_for_path("/usr/share/freeswitch/sounds/en/us/callie/ivr/8000/ivr-welcome.wav") is None
    assert real.id_for_path(os.path.join(SOUNDS, "en", "not_a_prompt.wav")) is None
    assert real.ids_for_path(FILE_STRING + "/tmp/x.wav!" + real.path("and", "fr")) == [None, ("fr", "and")]


def test_describe_reads_a_sentence(real):
    s = real.sentence("en", ["you_have", "num_12", "cur_usd_majors", "remaining"])
    assert real.describe(s) == "You have twelve dollars remaining."
    assert real.describe("tone_stream://%(100,0,440)") == "tone_stream://%(100,0,440)"


def test_language_menu_says_each_entry_in_its_own_language(real):
    menu = real.language_menu(["es", "en"])
    assert real.ids_for_path(menu) == [
        ("es", "for_spanish"),
        ("es", "press"),
        ("es", "num_1"),
        ("en", "for_english"),
        ("en", "press"),
        ("en", "num_2"),
    ]
    assert real.describe(menu) == "Para español, marque uno For English, press two"
    with pytest.raises(KeyError):
        real.language_menu(["de"])


# --- fallback to the default language -----------------------------------------------------------------------------


def _make_sounds(tmp_path, catalogue: dict, audio: list[tuple[str, str]]) -> str:
    (tmp_path / "catalogue.yaml").write_text(yaml.safe_dump(catalogue, allow_unicode=True), encoding="utf-8")
    for lang, prompt_id in audio:
        (tmp_path / lang).mkdir(exist_ok=True)
        (tmp_path / lang / f"{prompt_id}.wav").write_bytes(b"")
    return str(tmp_path)


def test_missing_language_audio_falls_back_to_default_and_logs_once(tmp_path, caplog):
    d = _make_sounds(
        tmp_path,
        {"hello": {"en": "Hello", "es": "Hola"}, "bye": {"en": "Bye", "es": "Adiós"}},
        [("en", "hello"), ("en", "bye"), ("es", "hello")],
    )
    p = Prompts(d)
    assert p.has("hello", "es") and not p.has("bye", "es")
    with caplog.at_level(logging.WARNING, logger="cardd.prompts"):
        assert p.path("bye", "es") == os.path.join(d, "en", "bye.wav")
        assert p.path("bye", "es") == os.path.join(d, "en", "bye.wav")
    lines = [r for r in caplog.records if "bye" in r.getMessage()]
    assert len(lines) == 1 and "es" in lines[0].getMessage()
    assert p.path("hello", "es") == os.path.join(d, "es", "hello.wav")
    assert p.text("bye", "fr") == "Bye"


def test_language_without_text_falls_back_to_default(tmp_path):
    d = _make_sounds(
        tmp_path,
        {"hello": {"en": "Hello", "fr": "Bonjour"}, "bye": {"en": "Bye"}},
        [("en", "hello"), ("en", "bye"), ("fr", "hello")],
    )
    p = Prompts(d)
    assert p.sentence("fr", ["hello", "bye"]) == FILE_STRING + os.path.join(d, "fr", "hello.wav") + "!" + os.path.join(
        d, "en", "bye.wav"
    )
    assert p.text("bye", "fr") == "Bye"


def test_other_default_language(tmp_path):
    d = _make_sounds(tmp_path, {"hello": {"en": "Hello", "es": "Hola"}}, [("es", "hello")])
    p = Prompts(d, default_language="es")
    assert p.path("hello", "en") == os.path.join(d, "es", "hello.wav")


def test_missing_catalogue_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="catalogue"):
        Prompts(tmp_path)


@pytest.mark.parametrize("content", ["- a list", "hello: Hello", "hello: {en: ''}", "hello: {en: [1]}", "a: [b"])
def test_malformed_catalogue_is_a_config_error(tmp_path, content):
    (tmp_path / "catalogue.yaml").write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError):
        Prompts(tmp_path)


def test_default_language_must_have_prompts(tmp_path):
    d = _make_sounds(tmp_path, {"hello": {"es": "Hola"}}, [])
    with pytest.raises(ConfigError, match="default language"):
        Prompts(d)


# --- variants --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "use_word_pin,suppress,expected",
    [
        (False, False, "enter_card_number"),
        (False, True, "enter_card_number_no_pound"),
        (True, False, "enter_pin_word"),
        (True, True, "enter_pin_word_no_pound"),
    ],
)
def test_card_number_prompt_variants(use_word_pin, suppress, expected):
    assert prompts_mod.card_number_prompt(use_word_pin=use_word_pin, suppress_pound_phrase=suppress) == expected
    options = SimpleNamespace(use_word_pin=use_word_pin, suppress_pound_phrase=suppress)
    assert Prompts(SOUNDS).card_number_prompt(options) == expected


@pytest.mark.parametrize(
    "suppress,pin,dest,voucher,new_pin",
    [
        (False, "enter_pin", "enter_destination", "enter_voucher_number", "enter_new_pin"),
        (
            True,
            "enter_pin_no_pound",
            "enter_destination_no_pound",
            "enter_voucher_number_no_pound",
            "enter_new_pin_no_pound",
        ),
    ],
)
def test_pound_phrase_variants(suppress, pin, dest, voucher, new_pin):
    assert prompts_mod.pin_prompt(suppress_pound_phrase=suppress) == pin
    assert prompts_mod.destination_prompt(suppress_pound_phrase=suppress) == dest
    assert prompts_mod.voucher_prompt(suppress_pound_phrase=suppress) == voucher
    assert prompts_mod.new_pin_prompt(suppress_pound_phrase=suppress) == new_pin
    options = SimpleNamespace(use_word_pin=False, suppress_pound_phrase=suppress)
    assert Prompts(SOUNDS).pin_prompt(options) == pin
    assert Prompts(SOUNDS).destination_prompt(options) == dest


@pytest.mark.parametrize(
    "use_word_pin,no_card,expected",
    [
        (False, True, "invalid_card_number"),
        (True, True, "invalid_pin_word"),
        (False, False, "no_balance_left"),
        (True, False, "no_balance_left"),
    ],
)
def test_low_balance_prompt(use_word_pin, no_card, expected):
    assert prompts_mod.low_balance_prompt(use_word_pin=use_word_pin, say_no_card_on_low_balance=no_card) == expected


def test_every_variant_the_pickers_return_is_in_the_catalogue():
    picked = set()
    for a in (False, True):
        for b in (False, True):
            picked |= {
                prompts_mod.card_number_prompt(use_word_pin=a, suppress_pound_phrase=b),
                prompts_mod.pin_prompt(suppress_pound_phrase=b),
                prompts_mod.destination_prompt(suppress_pound_phrase=b),
                prompts_mod.voucher_prompt(suppress_pound_phrase=b),
                prompts_mod.new_pin_prompt(suppress_pound_phrase=b),
                prompts_mod.invalid_card_prompt(use_word_pin=a),
                prompts_mod.low_balance_prompt(use_word_pin=a, say_no_card_on_low_balance=b),
            }
    assert picked - set(CATALOGUE) == set()


def test_render_respells_only_whole_words_for_espeak():
    render = _load_render()
    job = render.Job("fr", "enter_pin_word", "Votre code PIN, PINS.")
    assert job.spoken() == "Votre code pine, PINS."
    assert job.text == "Votre code PIN, PINS."  # transcripts keep the catalogue spelling
