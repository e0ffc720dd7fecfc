"""Options of the calling-card application, each pinned by a call through cardd (in-process `cardd serve`)
and the FreeSWITCH simulator (issue 13 sections 2 and 3, issue 10's outbound-proxy and display-name points).

Demo tariff (tests/dbfixtures.py): 44 = 0.06/min, 30 s then 6 s, connect fee 0.10; 4420 = 0.03/min per
minute. Card 1234567890, PIN 4321, 10.00000 USD.
"""

from __future__ import annotations

import logging
from decimal import Decimal

from cardd import speech
from cardd.billing import catalog, identity
from cardd.sim import Callee, Caller
from tests.dbfixtures import create_demo_data
from tests.test_flow_calls import LONDON, UK_MOBILE, bridge_args, card_caller, dial_vars

CLI = "15555550100"


def contains(heard: list, ids: list) -> bool:
    """Whether `ids` is heard as one run, in order."""
    return any(heard[i : i + len(ids)] == ids for i in range(len(heard) - len(ids) + 1))


def spoken(cardd, transcript) -> list[tuple[str, str]]:
    """(lang, prompt id) of every file the caller heard."""
    return [cardd.prompts.id_for_path(p) or ("", p) for p in transcript.prompts]


def set_language(pool, card_id: int, lang: str) -> None:
    with pool.connection() as conn:
        conn.execute("UPDATE accounts SET language = %s WHERE id = %s", (lang, card_id))


def give_plan(
    pool, card_id: int, *, minutes_on_44: int = 0, minutes_plan: bool = False, suspended: bool = False
) -> None:
    with pool.connection() as conn:
        plan_id = conn.execute(
            "INSERT INTO service_plans (name, minutes_plan, suspended) VALUES ('plan', %s, %s) RETURNING id",
            (minutes_plan, suspended),
        ).fetchone()[0]
        if minutes_on_44:
            conn.execute("INSERT INTO service_plan_minutes VALUES (%s, '44', %s)", (plan_id, minutes_on_44))
        conn.execute("UPDATE accounts SET service_plan_id = %s WHERE id = %s", (plan_id, card_id))


# -- noredial: one call attempt per session, whatever its outcome --------------------------------------------


def test_noredial_allows_one_attempt_when_the_callee_is_busy(cardd, demo_data):
    t = cardd.call(
        card_caller(demo_data, UK_MOBILE + "#", LONDON + "#", destination="cc.noredial"), Callee(outcome="busy")
    )
    assert len(t.bridges) == 1
    heard = cardd.heard(t)
    assert heard[-2:] == ["destination_busy", "goodbye"]
    assert heard.count("enter_destination") == 1


def test_noredial_allows_one_attempt_when_nobody_answers(cardd, demo_data):
    t = cardd.call(
        card_caller(demo_data, UK_MOBILE + "#", LONDON + "#", destination="cc.noredial"), Callee(outcome="no_answer")
    )
    assert len(t.bridges) == 1
    assert cardd.heard(t)[-2:] == ["no_answer", "goodbye"]


def test_noredial_ends_the_session_after_insufficient_funds(cardd, database, ledger):
    demo = create_demo_data(database.pool, balance="0.05000")  # below 44's connect fee, enough for London
    t = cardd.call(card_caller(demo, UK_MOBILE + "#", LONDON + "#", destination="cc.noredial"), Callee(talk=5))
    assert cardd.heard(t)[-2:] == ["insufficient_funds", "goodbye"]
    assert bridge_args(t) == []
    # the same caller without noredial gets the second attempt
    again = cardd.call(card_caller(demo, UK_MOBILE + "#", LONDON + "#", destination="cc"), Callee(talk=5))
    assert [b.number for b in again.bridges] == [LONDON]


# -- destination check script under the reference product's function name ------------------------------------


def test_a_destination_check_script_defining_checkDestination_refuses_calls(cardd_with, database, demo_data, tmp_path):
    script = tmp_path / "check.py"
    script.write_text(
        "def checkDestination(cli, translated_cli, cld, translated_cld, username, original_cli):\n"
        "    return not translated_cld.startswith('44')\n"
    )
    running = cardd_with(database, f"calling_card:\n  destination_check_script: {script}\n", tmp_path=tmp_path)
    t = running.call(card_caller(demo_data, UK_MOBILE + "#", destination="cc.noredial"), Callee(talk=5))
    assert "destination_forbidden" in running.heard(t) and t.bridges == []
    assert running.metric("cardd_script_load_errors_total", reason="no_function") == 0


# -- direct hot dial: keys 1, 2, 3 unless direct_hot_dial_any_key ----------------------------------------------


def test_direct_hot_dial_keys_are_1_2_3_by_default(cardd, database, demo_data):
    identity.hot_dial_set(database.pool, demo_data.card_id, "2", UK_MOBILE)
    identity.hot_dial_set(database.pool, demo_data.card_id, "5", LONDON)
    t = cardd.call(card_caller(demo_data, "5#", "2#", destination="cc.directhotdial"), Callee(talk=5))
    assert [b.number for b in t.bridges] == [UK_MOBILE]
    heard = cardd.heard(t)
    assert heard[heard.index("enter_destination") + 1] == "invalid_hot_dial_key"


def test_direct_hot_dial_any_key_makes_every_digit_a_hot_key(cardd_with, database, demo_data, tmp_path):
    identity.hot_dial_set(database.pool, demo_data.card_id, "5", LONDON)
    running = cardd_with(database, "calling_card:\n  direct_hot_dial_any_key: true\n", tmp_path=tmp_path)
    t = running.call(card_caller(demo_data, "5#", destination="cc.directhotdial.noredial"), Callee(talk=5))
    assert [b.number for b in t.bridges] == [LONDON]


# -- the card's language (accounts.language) -----------------------------------------------------------------


def test_a_card_known_by_its_cli_skips_the_language_menu_and_speaks_its_language(cardd, database, demo_data):
    set_language(database.pool, demo_data.card_id, "es")
    identity.map_cli(database.pool, CLI, demo_data.card_id)
    caller = Caller(cli=CLI, destination="cc.en.es.trustcli.noredial", digits=[UK_MOBILE + "#"], type_after=6)
    t = cardd.call(caller, Callee(talk=5))
    heard = spoken(cardd, t)
    assert not [pid for _, pid in heard if pid.startswith("for_")]
    assert heard[0] == ("es", "welcome")
    assert {lang for lang, _ in heard} == {"es"}
    assert len(t.bridges) == 1


def test_a_smart_dial_caller_skips_the_language_menu_in_the_cards_language(cardd, database, demo_data):
    set_language(database.pool, demo_data.card_id, "es")
    identity.map_cli(database.pool, CLI, demo_data.card_id)
    identity.smart_dial_add(database.pool, "18005550001", demo_data.card_id, UK_MOBILE, exclusive=False)
    caller = Caller(cli=CLI, destination="cc.en.es.noredial", rdnis="18005550001", digits=[], type_after=6)
    t = cardd.call(caller, Callee(talk=5))
    heard = spoken(cardd, t)
    assert not [pid for _, pid in heard if pid.startswith("for_")]
    assert ("es", "you_can_talk_for") in heard and [b.number for b in t.bridges] == [UK_MOBILE]


def test_a_card_language_the_access_number_does_not_offer_leaves_the_menu(cardd, database, demo_data):
    set_language(database.pool, demo_data.card_id, "fr")
    identity.map_cli(database.pool, CLI, demo_data.card_id)
    caller = Caller(cli=CLI, destination="cc.en.es.trustcli.noredial", digits=["2", UK_MOBILE + "#"], type_after=6)
    heard = spoken(cardd, cardd.call(caller, Callee(talk=5)))
    assert ("en", "for_english") in heard and ("es", "for_spanish") in heard
    assert ("es", "welcome") in heard and not [lang for lang, _ in heard if lang == "fr"]


def test_after_identification_the_card_speaks_its_language_when_nobody_chose_one(
    cardd_with, database, demo_data, tmp_path
):
    set_language(database.pool, demo_data.card_id, "es")
    running = cardd_with(database, "calling_card:\n  fallback_to_default_language: true\n", tmp_path=tmp_path)
    # silent through the three menu attempts: the call goes on in the default language (en)
    caller = Caller(
        destination="cc.en.es.noredial",
        type_after=6,
        digits=[None, None, None, demo_data.card_number + "#", demo_data.pin + "#", UK_MOBILE + "#"],
    )
    heard = spoken(running, running.call(caller, Callee(talk=5)))
    start = heard.index(("en", "welcome"))
    assert heard[start : start + 3] == [("en", "welcome"), ("en", "enter_card_number"), ("en", "enter_pin")]
    # from the card on, its language
    assert heard[start + 3] == ("es", "you_have")
    assert ("es", "enter_destination") in heard


def test_a_language_the_caller_chose_in_the_menu_beats_the_cards(cardd, database, demo_data):
    set_language(database.pool, demo_data.card_id, "es")
    caller = Caller(
        destination="cc.en.es.noredial",
        type_after=6,
        digits=["1", demo_data.card_number + "#", demo_data.pin + "#", UK_MOBILE + "#"],
    )
    heard = spoken(cardd, cardd.call(caller, Callee(talk=5)))
    assert ("en", "you_have") in heard and ("es", "you_have") not in heard


# -- time-outs at identification end with the goodbye ----------------------------------------------------------


def test_silence_at_the_pin_prompt_ends_with_the_goodbye(cardd, demo_data):
    t = cardd.call(Caller(digits=[demo_data.card_number + "#"], type_after=6))
    heard = cardd.heard(t)
    assert heard.count("enter_pin") == 3
    assert heard[-1] == "goodbye"


# -- cli_translation before identification and CLI registration (the reference's Note 1) -----------------------


def test_cli_translation_applies_before_cli_identification(cardd_with, database, demo_data, ledger, tmp_path):
    identity.map_cli(database.pool, "447700900999", demo_data.card_id)
    running = cardd_with(
        database,
        'calling_card:\n  trusted_cli_auth: true\n  cli_translation: [{match: "^0", replace: "44"}]\n',
        tmp_path=tmp_path,
    )
    caller = Caller(cli="07700900999", destination="cc.noredial", digits=[UK_MOBILE + "#"], type_after=6)
    t = running.call(caller, Callee(talk=5))
    assert "enter_card_number" not in running.heard(t)
    assert len(t.bridges) == 1
    (cdr,) = ledger.cdrs_for(demo_data.card_id)
    assert (cdr.cli, cdr.translated_cli) == ("07700900999", "447700900999")


def test_a_cli_translation_rule_blocks_a_bogus_cli_from_cli_authentication(cardd_with, database, demo_data, tmp_path):
    identity.map_cli(database.pool, "1234567", demo_data.card_id)
    yaml_text = 'calling_card:\n  trusted_cli_auth: true\n  cli_translation: [{match: "^1234567$", replace: ""}]\n'
    running = cardd_with(database, yaml_text, tmp_path=tmp_path)
    caller = Caller(cli="1234567", destination="cc.noredial", digits=[], type_after=6)
    heard = running.heard(running.call(caller))
    assert "enter_card_number" in heard


def test_a_cli_translation_rule_keeps_a_bogus_cli_from_being_registered(cardd_with, database, demo_data, tmp_path):
    yaml_text = 'calling_card:\n  auto_cli_registration: true\n  cli_translation: [{match: "^0+$", replace: ""}]\n'
    running = cardd_with(database, yaml_text, tmp_path=tmp_path)
    running.call(card_caller(demo_data, cli="0000000000", destination="cc.noredial"))
    assert identity.card_id_for_cli(database.pool, "0000000000") is None
    # an ordinary CLI is still registered under the same settings
    running.call(card_caller(demo_data, cli="15555550177", destination="cc.noredial"))
    assert identity.card_id_for_cli(database.pool, "15555550177") == demo_data.card_id


# -- options that change what is said ---------------------------------------------------------------------------


def test_no_hours_in_duration_says_an_hour_as_minutes(cardd_with, database, demo_data, tmp_path):
    running = cardd_with(database, "calling_card:\n  no_hours_in_duration: true\n", tmp_path=tmp_path)
    t = running.call(card_caller(demo_data, UK_MOBILE + "#", destination="cc.noredial"), Callee(talk=5))
    heard = running.heard(t)
    assert contains(heard, speech.talk_time_ids(3600, "en", no_hours=True))  # "sixty minutes"
    assert not contains(heard, speech.talk_time_ids(3600, "en"))  # not "one hour"


def test_no_seconds_in_duration_leaves_the_seconds_out(cardd_with, database, tmp_path):
    demo = create_demo_data(database.pool, balance="0.50000")  # buys 396 s on 44: 6 min 36 s
    running = cardd_with(database, "calling_card:\n  no_seconds_in_duration: true\n", tmp_path=tmp_path)
    t = running.call(card_caller(demo, UK_MOBILE + "#", destination="cc.noredial"), Callee(talk=5))
    heard = running.heard(t)
    said = speech.talk_time_ids(396, "en", no_seconds=True)
    assert said == ["you_can_talk_for", "num_6", "minutes"]
    assert contains(heard, said)
    assert "seconds" not in heard[heard.index("you_can_talk_for") :]
    assert "sched_hangup +396 ALLOTTED_TIMEOUT" in bridge_args(t)[0]


def test_a_negative_balance_is_said_as_zero_unless_the_option_is_off(cardd_with, database, tmp_path):
    demo = create_demo_data(database.pool, balance="-1.50000")
    as_zero = cardd_with(database, tmp_path=tmp_path)
    heard = as_zero.heard(as_zero.call(card_caller(demo, destination="cc.noredial")))
    assert contains(heard, speech.balance_ids(Decimal("-1.5"), "USD", "en"))
    assert contains(heard, ["you_have", "num_0", "cur_usd_majors", "remaining"])
    (tmp_path / "minus").mkdir()
    minus = cardd_with(database, "calling_card:\n  say_negative_balance_as_zero: false\n", tmp_path=tmp_path / "minus")
    heard = minus.heard(minus.call(card_caller(demo, destination="cc.noredial")))
    said = speech.balance_ids(Decimal("-1.5"), "USD", "en", negative_as_zero=False)
    assert said[:2] == ["you_have", "minus"] and contains(heard, said)


def test_ignore_connect_fee_leaves_the_fee_out_of_the_duration(cardd_with, database, tmp_path):
    # 0.12 less 44's connect fee (0.10) does not buy the first 30 s (0.03): insufficient funds ...
    demo = create_demo_data(database.pool, balance="0.12000")
    plain = cardd_with(database, tmp_path=tmp_path)
    t = plain.call(card_caller(demo, UK_MOBILE + "#", destination="cc.noredial"), Callee(talk=5))
    assert "insufficient_funds" in plain.heard(t) and bridge_args(t) == []
    # ... without the fee it buys 30 s (0.03) + 15 x 6 s (0.09) = 120 s
    (tmp_path / "nofee").mkdir()
    nofee = cardd_with(database, "calling_card:\n  ignore_connect_fee: true\n", tmp_path=tmp_path / "nofee")
    t = nofee.call(card_caller(demo, UK_MOBILE + "#", destination="cc.noredial"), Callee(talk=5))
    assert "sched_hangup +120 ALLOTTED_TIMEOUT" in bridge_args(t)[0]


def test_suppress_pound_phrase_uses_the_prompts_without_the_pound_key(cardd_with, database, demo_data, tmp_path):
    running = cardd_with(database, "calling_card:\n  suppress_pound_phrase: true\n", tmp_path=tmp_path)
    heard = running.heard(
        running.call(card_caller(demo_data, UK_MOBILE + "#", destination="cc.noredial"), Callee(talk=5))
    )
    for prompt in ("enter_card_number", "enter_pin", "enter_destination"):
        assert prompt + "_no_pound" in heard and prompt not in heard


def test_planminutes_announces_the_plan_minutes_but_the_timer_stays_the_whole_grant(cardd, database, demo_data):
    give_plan(database.pool, demo_data.card_id, minutes_on_44=2)
    t = cardd.call(card_caller(demo_data, UK_MOBILE + "#", destination="cc.planminutes.noredial"), Callee(talk=5))
    heard = cardd.heard(t)
    assert contains(heard, speech.talk_time_ids(120, "en"))
    assert "sched_hangup +3600 ALLOTTED_TIMEOUT" in bridge_args(t)[0]
    # without the token the whole grant is announced
    t = cardd.call(card_caller(demo_data, UK_MOBILE + "#", destination="cc.noredial"), Callee(talk=5))
    assert contains(cardd.heard(t), speech.talk_time_ids(3600, "en"))


def test_min_card_number_length_refuses_short_entries_without_asking_a_pin(cardd_with, database, demo_data, tmp_path):
    running = cardd_with(database, "calling_card:\n  min_card_number_length: 8\n", tmp_path=tmp_path)
    caller = Caller(
        digits=["12345#", demo_data.card_number + "#", demo_data.pin + "#"], type_after=6, destination="cc.noredial"
    )
    t = running.call(caller)
    heard = running.heard(t)
    assert heard[:5] == ["welcome", "enter_card_number", "invalid_input", "invalid_card_number", "enter_card_number"]
    assert heard.count("enter_pin") == 1 and "you_have" in heard
    first = next(arg for app, arg in t.apps if app == "play_and_get_digits")
    assert "{8,10}$" in first  # the regex FreeSWITCH checks: 8 to 10 digits


def test_nokeepcli_calls_out_with_the_card_number_where_keepcli_is_configured(
    cardd_with, database, demo_data, tmp_path
):
    running = cardd_with(database, "calling_card:\n  preserve_original_cli: true\n", tmp_path=tmp_path)
    kept = running.call(card_caller(demo_data, UK_MOBILE + "#", destination="cc.noredial"), Callee(talk=5))
    assert dial_vars(bridge_args(kept)[0])["origination_caller_id_number"] == CLI
    t = running.call(card_caller(demo_data, UK_MOBILE + "#", destination="cc.nokeepcli.noredial"), Callee(talk=5))
    v = dial_vars(bridge_args(t)[0])
    assert v["origination_caller_id_number"] == v["origination_caller_id_name"] == demo_data.card_number


def test_playbalance_token_says_the_balance_where_it_is_off(cardd_with, database, demo_data, tmp_path):
    running = cardd_with(database, "calling_card:\n  announce_balance: false\n", tmp_path=tmp_path)
    off = running.call(card_caller(demo_data, destination="cc.noredial"))
    assert "you_have" not in running.heard(off)
    on = running.call(card_caller(demo_data, destination="cc.playbalance.noredial"))
    assert contains(running.heard(on), speech.balance_ids(Decimal("10"), "USD", "en"))


def test_no_balance_is_said_for_a_minutes_plan(cardd, database, demo_data):
    give_plan(database.pool, demo_data.card_id, minutes_on_44=10, minutes_plan=True)
    assert "you_have" not in cardd.heard(cardd.call(card_caller(demo_data, destination="cc.noredial")))


def test_no_balance_is_said_for_a_suspended_plan(cardd, database, demo_data):
    give_plan(database.pool, demo_data.card_id, suspended=True)
    assert "you_have" not in cardd.heard(cardd.call(card_caller(demo_data, destination="cc.noredial")))


def test_no_balance_is_said_when_it_is_zero(cardd, database):
    demo = create_demo_data(database.pool, balance="0")
    heard = cardd.heard(cardd.call(card_caller(demo, destination="cc.noredial")))
    assert "you_have" not in heard and "enter_destination" in heard


# -- beyond the reference: the rate before the bridge, the balance after the call ------------------------------


def test_the_rate_is_said_before_the_bridge_with_playrate(cardd, demo_data):
    t = cardd.call(card_caller(demo_data, UK_MOBILE + "#", destination="cc.playrate.noredial"), Callee(talk=5))
    heard = cardd.heard(t)
    rate = speech.rate_ids(Decimal("0.06"), "USD", "en")
    assert rate == ["this_call_costs", "num_6", "cur_usd_minors", "per_minute"]
    start = heard.index("this_call_costs")
    assert heard[start : start + len(rate)] == rate
    assert heard[start + len(rate)] == "you_can_talk_for"
    # said before the bridge: the last playback before it ends with the duration
    assert t.bridges and heard.index("this_call_costs") < heard.index("you_can_talk_for")


def test_a_price_below_the_minor_unit_is_said_rounded_up(cardd, database, demo_data):
    # 0.035 a minute is said as four cents: never a cheaper call than the one billed
    catalog.add_rate(
        database.pool,
        demo_data.tariff,
        "4477",
        price_1="0.035",
        interval_1=60,
        price_n="0.035",
        interval_n=60,
        connect_fee="0",
        free_seconds=0,
        grace=0,
        forbidden=False,
    )
    t = cardd.call(card_caller(demo_data, UK_MOBILE + "#", destination="cc.playrate.noredial"), Callee(talk=5))
    assert contains(cardd.heard(t), ["this_call_costs", "num_4", "cur_usd_minors", "per_minute"])


def test_the_rate_is_not_said_by_default(cardd, demo_data):
    t = cardd.call(card_caller(demo_data, UK_MOBILE + "#", destination="cc.noredial"), Callee(talk=5))
    assert "this_call_costs" not in cardd.heard(t) and len(t.bridges) == 1


def test_the_rate_is_said_in_the_cards_currency_and_the_callers_language(cardd, database):
    demo = create_demo_data(database.pool, tariff="eu", currency="EUR", card_number="5550003333")
    t = cardd.call(card_caller(demo, UK_MOBILE + "#", destination="cc.es.playrate.noredial"), Callee(talk=5))
    heard = spoken(cardd, t)
    rate = [("es", pid) for pid in speech.rate_ids(Decimal("0.06"), "EUR", "es")]
    assert ("es", "cur_eur_minors") in rate and contains(heard, rate)


def test_the_new_balance_is_said_back_at_the_destination_prompt_after_an_answered_call(cardd, demo_data):
    caller = card_caller(demo_data, UK_MOBILE + "#", LONDON + "#", destination="cc.playbalanceaftercall")
    t = cardd.call(caller, {UK_MOBILE: Callee(talk=31), LONDON: Callee(outcome="busy")})
    heard = cardd.heard(t)
    # 31 s on 44 cost 0.136: 9.864 left, said as 9 dollars 86 cents, then the destination prompt
    after_call = speech.balance_ids(Decimal("9.864"), "USD", "en") + ["enter_destination"]
    assert contains(heard, after_call)
    # said once at the start and once after the answered call; not after the busy attempt
    assert heard.count("you_have") == 2, heard
    assert heard[heard.index("destination_busy") + 1] == "enter_destination"


def test_the_balance_after_the_call_is_off_by_default(cardd, demo_data):
    caller = card_caller(demo_data, UK_MOBILE + "#", LONDON + "#")
    t = cardd.call(caller, Callee(talk=31))
    assert len(t.bridges) == 2 and cardd.heard(t).count("you_have") == 1


# -- issue 10: no outbound proxy, no dialling ------------------------------------------------------------------


def test_without_an_outbound_proxy_the_call_is_refused_and_the_start_says_so(
    cardd_with, database, demo_data, ledger, caplog
):
    with caplog.at_level(logging.WARNING):
        running = cardd_with(database, outbound_proxy="")
    assert "outbound_proxy is empty" in caplog.text
    t = running.call(card_caller(demo_data, UK_MOBILE + "#", destination="cc.noredial"), Callee(talk=5))
    assert bridge_args(t) == []
    assert running.heard(t)[-2:] == ["call_failed", "goodbye"]
    # nothing owed, nothing held: the attempt is on record as not dialled
    assert ledger.open_reservations() == []
    assert [(c.cost, c.hangup_cause) for c in ledger.cdrs_for(demo_data.card_id)] == [(0, "NOT_DIALLED")]


def test_an_instance_with_its_own_outbound_proxy_still_dials_without_the_daemons(
    cardd_with, database, demo_data, tmp_path
):
    running = cardd_with(
        database, "instances:\n  vip:\n    outbound_proxy: 203.0.113.9:5060\n", tmp_path=tmp_path, outbound_proxy=""
    )
    t = running.call(card_caller(demo_data, UK_MOBILE + "#", destination="vip.noredial"), Callee(talk=5))
    (dial,) = bridge_args(t)
    assert dial.endswith(f"sofia/external/{UK_MOBILE}@203.0.113.9:5060")
