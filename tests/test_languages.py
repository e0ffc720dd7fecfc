"""The language menu, end to end through cardd and the simulated switch.

Call flow step 1: "For English press 1, para español marque 2 ..." when the
CLD (or the instance) lists more than one language; one language -> no menu;
wrong keys or silence up to card_entry_attempts, then the default language
(fallback_to_default_language) or goodbye. Demo card 1234567890, PIN 4321,
10.00000 USD (tests/dbfixtures.py).
"""

from __future__ import annotations

import logging
from decimal import Decimal

from cardd import speech
from cardd.logs import CallUuidFilter
from cardd.sim import Callee, Caller

UK_MOBILE = "447700900123"


def spoken(cardd, transcript) -> list[tuple[str, str]]:
    """(lang, prompt id) of every file the caller heard; ("", path) for files outside the catalogue."""
    out = []
    for path in transcript.prompts:
        found = cardd.prompts.id_for_path(path)
        out.append(found if found else ("", path))
    return out


def menu_entries(heard: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(lang, pid) for lang, pid in heard if pid.startswith("for_")]


def caller(demo, *entries, destination: str, **kw) -> Caller:
    return Caller(destination=destination, digits=list(entries), type_after=6, **kw)


def pagd_count(transcript) -> int:
    return sum(1 for app, _ in transcript.apps if app == "play_and_get_digits")


def test_two_languages_play_the_menu_and_a_spanish_choice_gives_spanish_prompts_and_amounts(cardd, demo_data):
    t = cardd.call(
        caller(
            demo_data,
            "2",
            demo_data.card_number + "#",
            demo_data.pin + "#",
            UK_MOBILE + "#",
            destination="cc.en.es.noredial",
        ),
        Callee(talk=5),
    )
    heard = spoken(cardd, t)
    # The menu: each entry in its own language, keys by position.
    assert heard[:6] == [
        ("en", "for_english"),
        ("en", "press"),
        ("en", "num_1"),
        ("es", "for_spanish"),
        ("es", "press"),
        ("es", "num_2"),
    ]
    after = heard[6:]
    assert after[:3] == [("es", "welcome"), ("es", "enter_card_number"), ("es", "enter_pin")]
    # Everything after the choice is Spanish, the balance spoken by the Spanish rules and words.
    assert {lang for lang, _ in after} == {"es"}
    said = [pid for _, pid in after]
    balance = speech.balance_ids(Decimal("10.00000"), "USD", "es")
    start = said.index("you_have")
    assert said[start : start + len(balance)] == balance
    assert "you_can_talk_for" in said
    assert len(t.bridges) == 1


def test_first_choice_gives_english(cardd, demo_data):
    t = cardd.call(caller(demo_data, "1", destination="cc.en.es"))
    heard = spoken(cardd, t)
    assert ("en", "welcome") in heard and not any(lang == "es" for lang, pid in heard[6:])


def test_the_menu_order_is_the_cld_order(cardd, demo_data):
    t = cardd.call(caller(demo_data, "1", destination="cc.fr.es.en"))
    heard = spoken(cardd, t)
    assert menu_entries(heard) == [("fr", "for_french"), ("es", "for_spanish"), ("en", "for_english")]
    assert ("fr", "num_1") in heard[:3] and ("en", "num_3") in heard[6:9]
    assert heard[9] == ("fr", "welcome")


def test_one_language_plays_no_menu(cardd, demo_data):
    t = cardd.call(caller(demo_data, destination="cc.es"))
    heard = spoken(cardd, t)
    assert menu_entries(heard) == []
    assert heard[0] == ("es", "welcome")


def test_instance_languages_from_cardd_yaml_give_the_menu(cardd_with, database, demo_data, tmp_path):
    running = cardd_with(database, "instances:\n  intl:\n    languages: [es, fr]\n", tmp_path=tmp_path)
    t = running.call(caller(demo_data, "2", destination="intl"))
    heard = spoken(running, t)
    assert menu_entries(heard) == [("es", "for_spanish"), ("fr", "for_french")]
    assert heard[6] == ("fr", "welcome")


def test_wrong_keys_without_fallback_end_the_call(cardd, demo_data):
    t = cardd.call(caller(demo_data, "7", "9", "0", demo_data.card_number + "#", destination="cc.en.es"))
    heard = spoken(cardd, t)
    # Three tries (card_entry_attempts), the menu each time, then goodbye: no card question at all.
    assert pagd_count(t) == 3
    assert len(menu_entries(heard)) == 6
    assert all(pid != "enter_card_number" for _, pid in heard)
    assert heard[-1] == ("en", "goodbye")
    assert cardd.metric("cardd_calls_total", outcome="no_language") == 1


def test_wrong_keys_with_fallback_continue_in_the_default_language(cardd_with, database, demo_data, tmp_path):
    yaml_text = "calling_card:\n  fallback_to_default_language: true\n  default_language: es\n"
    running = cardd_with(database, yaml_text, tmp_path=tmp_path)
    t = running.call(
        caller(demo_data, "5", "5", "5", demo_data.card_number + "#", demo_data.pin + "#", destination="cc.en.es")
    )
    heard = spoken(running, t)
    assert len(menu_entries(heard)) == 6
    after_menu = heard[heard.index(("es", "welcome")) :]
    assert after_menu[:3] == [("es", "welcome"), ("es", "enter_card_number"), ("es", "enter_pin")]
    # The caller got in: the balance was said in Spanish.
    assert ("es", "you_have") in after_menu


def test_the_attempt_limit_is_card_entry_attempts(cardd_with, database, demo_data, tmp_path):
    running = cardd_with(database, "calling_card:\n  card_entry_attempts: 2\n", tmp_path=tmp_path)
    t = running.call(caller(demo_data, "8", "8", "1", destination="cc.en.es"))
    assert pagd_count(t) == 2
    assert spoken(running, t)[-1] == ("en", "goodbye")


def test_silence_at_the_menu_counts_as_a_wrong_attempt(cardd_with, database, demo_data, tmp_path):
    running = cardd_with(database, "calling_card:\n  fallback_to_default_language: true\n", tmp_path=tmp_path)
    t = running.call(Caller(destination="cc.es.en", digits=[None, None, None], type_after=6))
    heard = spoken(running, t)
    assert len(menu_entries(heard)) == 6
    # default_language is en: the call goes on in English after three silences.
    assert ("en", "welcome") in heard
    assert heard[heard.index(("en", "welcome")) + 1] == ("en", "enter_card_number")


def test_a_wrong_key_then_a_right_one_picks_the_language(cardd, demo_data):
    t = cardd.call(caller(demo_data, "3", "2", destination="cc.en.es"))
    heard = spoken(cardd, t)
    assert len(menu_entries(heard)) == 4
    assert ("es", "welcome") in heard


def test_a_language_without_prompts_is_skipped_with_a_warning(cardd, demo_data, caplog):
    caplog.set_level(logging.WARNING)
    caplog.handler.addFilter(CallUuidFilter())  # as cardd's own handler does (cardd/logs.py)
    t = cardd.call(caller(demo_data, "2", destination="cc.de.en.es"))
    heard = spoken(cardd, t)
    # German has no prompts: the menu offers English as 1 and Spanish as 2.
    assert menu_entries(heard) == [("en", "for_english"), ("es", "for_spanish")]
    assert ("es", "welcome") in heard
    warnings = [r for r in caplog.records if "'de' has no prompts" in r.getMessage()]
    assert warnings and warnings[0].call_uuid == t.a_uuid


def test_a_language_without_prompts_leaves_one_language_and_no_menu(cardd, demo_data):
    t = cardd.call(caller(demo_data, destination="cc.de.es"))
    heard = spoken(cardd, t)
    assert menu_entries(heard) == [] and heard[0] == ("es", "welcome")


def test_unknown_cld_tokens_are_counted_and_logged_with_the_call_uuid(cardd, demo_data, caplog):
    caplog.set_level(logging.WARNING)
    caplog.handler.addFilter(CallUuidFilter())  # as cardd's own handler does (cardd/logs.py)
    t = cardd.call(caller(demo_data, destination="cc.bogus.es.frobnicate"))
    assert cardd.metric("cardd_unknown_cld_tokens_total") == 2
    records = [r for r in caplog.records if "unknown CLD token" in r.getMessage()]
    assert len(records) == 2
    assert all(r.call_uuid == t.a_uuid for r in records)
    logged = [r.getMessage() for r in records]
    assert "'bogus'" in logged[0] and "'frobnicate'" in logged[1]
    # The call goes on with the rest of the tokens: Spanish, no menu.
    assert spoken(cardd, t)[0] == ("es", "welcome")
