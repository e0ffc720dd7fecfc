"""Calls through `cardd serve` (in-process) and the FreeSWITCH simulator:
what the caller heard, what FreeSWITCH was asked to do, what the database
holds afterwards.

Demo tariff (tests/dbfixtures.py): 44 = the spec's worked example (0.06/min,
30 s then 6 s, connect fee 0.10); 4420 = 0.03/min per minute; 1 = 0.60/min
first minute then per second, 5 s grace; 4490 forbidden. Card 1234567890,
PIN 4321, 10.00000 USD.
"""

from __future__ import annotations

import re
from decimal import Decimal

import gevent
import pytest

from cardd.billing import catalog
from cardd.sim import Callee, Caller

UK_MOBILE = "447700900123"  # rate 44
LONDON = "442071234567"  # rate 4420
PREMIUM = "449012345678"  # rate 4490: forbidden
NOWHERE = "3312345678"  # no rate


def card_caller(demo, *entries, cli="15555550100", destination="cc", **kw) -> Caller:
    """A caller who types card number and PIN, then the given entries.
    Typing starts 6 s into each question, after its prompt."""
    digits = [demo.card_number + "#", demo.pin + "#", *entries]
    return Caller(cli=cli, destination=destination, digits=digits, type_after=6, **kw)


def bridge_args(transcript) -> list[str]:
    return [arg for app, arg in transcript.apps if app == "bridge"]


def dial_vars(dial_string: str) -> dict[str, str]:
    inside = dial_string[1 : dial_string.index("}")]
    return dict(re.findall(r"(\w+)=('[^']*'|[^,]*)", inside))


def balance(ledger, demo) -> Decimal:
    return ledger.get_card(demo.card_id).balance


# -- the whole flow -----------------------------------------------------------------


def test_card_call_is_bridged_with_timer_and_warning_and_billed_the_tariff_cost(cardd, demo_data, ledger):
    # 30 s of talk: billmsec 30020 as on the real switch, 31 billed seconds
    t = cardd.call(card_caller(demo_data, UK_MOBILE + "#"), Callee(talk=30))
    heard = cardd.heard(t)
    assert heard[:3] == ["welcome", "enter_card_number", "enter_pin"]
    assert heard[3:7] == ["you_have", "num_10", "cur_usd_majors", "remaining"]
    assert "you_can_talk_for" in heard
    (dial,) = bridge_args(t)
    v = dial_vars(dial)
    # 10.00 buys 9900 s at this rate; max_call_duration caps it at 3600.
    assert v["execute_on_answer_1"] == "'sched_hangup +3600 ALLOTTED_TIMEOUT'"
    assert v["execute_on_answer_2"].startswith("'sched_broadcast +3540 playback::file_string://")
    assert v["execute_on_answer_2"].endswith(" bleg'")
    assert "call_will_be_disconnected_in.wav" in v["execute_on_answer_2"]
    assert v["origination_uuid"] == t.bridges[0].b_uuid
    assert v["origination_caller_id_number"] == demo_data.card_number
    # the display name too, or FreeSWITCH shows the caller's own number to the callee
    assert v["origination_caller_id_name"] == demo_data.card_number
    assert dial.endswith(f"sofia/external/{UK_MOBILE}@198.51.100.7:5060")
    # 31 s: 0.10 + 0.06*30/60 + 0.06*6/60 = 0.136
    assert balance(ledger, demo_data) == Decimal("9.86400")
    (cdr,) = ledger.cdrs_for(demo_data.card_id)
    assert (cdr.billed_seconds, cdr.cost, cdr.rate_prefix) == (31, Decimal("0.13600"), "44")
    assert cdr.cld == UK_MOBILE and cdr.cli == "15555550100"
    assert ledger.open_reservations(demo_data.card_id) == []


def test_call_is_cut_when_the_credit_runs_out_and_never_overspends(cardd, database, ledger):
    from tests.dbfixtures import create_demo_data

    demo = create_demo_data(database.pool, balance="0.50000")
    t = cardd.call(card_caller(demo, UK_MOBILE + "#"), Callee(talk=None))
    v = dial_vars(bridge_args(t)[0])
    # 0.50 - 0.10 - 0.03 = 0.37 buys 61 six-second intervals: 30 + 366 = 396 s
    assert v["execute_on_answer_1"] == "'sched_hangup +396 ALLOTTED_TIMEOUT'"
    assert t.bridges[0].b_hangup_cause == "ALLOTTED_TIMEOUT"
    (cdr,) = ledger.cdrs_for(demo.card_id)
    assert cdr.billed_seconds <= 396
    assert ledger.get_card(demo.card_id).balance >= 0


def test_london_prefix_beats_the_uk_prefix(cardd, demo_data, ledger):
    cardd.call(card_caller(demo_data, LONDON + "#"), Callee(talk=31))
    (cdr,) = ledger.cdrs_for(demo_data.card_id)
    assert (cdr.rate_prefix, cdr.cost) == ("4420", Decimal("0.03000"))


# -- identification -------------------------------------------------------------


def test_unknown_card_number_is_asked_its_pin_and_gets_three_tries(cardd, demo_data):
    caller = Caller(digits=["1111111111#", "1234#", "2222222222#", "1234#", "3333333333#", "1234#"], type_after=6)
    t = cardd.call(caller)
    heard = cardd.heard(t)
    assert heard.count("enter_pin") == 3
    assert heard.count("invalid_card_or_pin") == 3
    assert heard[-2:] == ["too_many_attempts", "goodbye"]
    assert bridge_args(t) == []
    assert cardd.metric("cardd_auth_failures_total", reason="unknown") == 3
    assert cardd.metric("cardd_ivr_step_seconds_count", step="identify") == 1


def test_wrong_pin_is_refused_and_counted(cardd, demo_data):
    caller = Caller(digits=[demo_data.card_number + "#", "9999#"] * 3, type_after=6)
    t = cardd.call(caller)
    assert cardd.heard(t).count("invalid_card_or_pin") == 3
    assert cardd.metric("cardd_auth_failures_total", reason="wrong_pin") == 3


def test_a_wrong_number_and_a_wrong_pin_sound_alike(cardd, demo_data):
    """A guesser cannot tell real card numbers from the prompts: both are
    asked for a PIN and refused with the same words."""
    unknown = cardd.call(Caller(digits=["1111111111#", "4321#"], type_after=6))
    wrong_pin = cardd.call(Caller(digits=[demo_data.card_number + "#", "9999#"], type_after=6))
    assert cardd.heard(unknown) == cardd.heard(wrong_pin)


def test_garbage_entries_get_the_invalid_prompt_and_use_up_attempts(cardd, demo_data):
    caller = Caller(digits=["*#", "12345678901234#", "#"], type_after=6)
    t = cardd.call(caller)
    heard = cardd.heard(t)
    assert heard.count("invalid_card_number") == 3
    assert heard[-2:] == ["too_many_attempts", "goodbye"]


def test_silence_ends_the_call_after_the_input_timeouts(cardd, demo_data):
    t = cardd.call(Caller(digits=[]))
    heard = cardd.heard(t)
    assert heard.count("enter_card_number") == 3
    assert heard.count("no_input") == 2
    assert heard[-1] == "goodbye"  # as at the destination prompt, never a silent drop
    assert t.hangup_cause == "NORMAL_CLEARING"


def test_blocked_card_hears_card_blocked(cardd, database, demo_data):
    catalog.create_card(
        database.pool, "5550001111", tariff=demo_data.tariff, currency="USD", pin="1111", balance="5", status="blocked"
    )
    t = cardd.call(Caller(digits=["5550001111#", "1111#"], type_after=6))
    # said only to a caller who proved the PIN
    assert cardd.heard(t)[-2:] == ["card_blocked", "goodbye"]


def test_word_pin_identifies_by_number_alone(cardd_with, database, demo_data, tmp_path):
    running = cardd_with(database, "calling_card:\n  use_word_pin: true\n", tmp_path=tmp_path)
    t = running.call(Caller(digits=[demo_data.card_number + "#", UK_MOBILE + "#"], type_after=6), Callee(talk=10))
    heard = running.heard(t)
    assert "enter_pin_word" in heard and "enter_pin" not in heard
    assert len(t.bridges) == 1


def test_card_without_pin_is_refused_when_empty_pins_are_not_allowed(cardd_with, database, demo_data, tmp_path):
    catalog.create_card(database.pool, "5550002222", tariff=demo_data.tariff, currency="USD", balance="5")
    running = cardd_with(database, "calling_card:\n  allow_empty_pin: false\n", tmp_path=tmp_path)
    t = running.call(Caller(digits=["5550002222#", "#"] * 3, type_after=6))
    assert running.heard(t).count("invalid_card_or_pin") == 3


def test_card_below_minimum_balance_hears_wrong_card_or_no_balance(cardd_with, database, demo_data, tmp_path):
    yaml_text = "calling_card:\n  minimum_balance: 20 USD\n  say_no_card_on_low_balance: false\n"
    running = cardd_with(database, yaml_text, tmp_path=tmp_path)
    t = running.call(card_caller(demo_data))
    assert "no_balance_left" in running.heard(t)


# -- balance and duration announcements --------------------------------------------


def test_noplaybalance_token_skips_the_balance(cardd, demo_data):
    t = cardd.call(card_caller(demo_data, UK_MOBILE + "#", destination="cc.noplaybalance"), Callee(talk=5))
    heard = cardd.heard(t)
    assert "you_have" not in heard and "you_can_talk_for" in heard


def test_noduration_token_skips_the_duration(cardd, demo_data):
    t = cardd.call(card_caller(demo_data, UK_MOBILE + "#", destination="cc.noduration"), Callee(talk=5))
    assert "you_can_talk_for" not in cardd.heard(t)


def test_spanish_caller_hears_spanish_prompts(cardd, demo_data):
    t = cardd.call(card_caller(demo_data, destination="cc.es"))
    assert "/es/welcome.wav" in t.prompts[0]


# -- destinations ---------------------------------------------------------------


def test_forbidden_destination_is_refused_without_dialling(cardd, demo_data, ledger):
    t = cardd.call(card_caller(demo_data, PREMIUM + "#", destination="cc.noredial"))
    assert "destination_forbidden" in cardd.heard(t)
    assert bridge_args(t) == []
    assert ledger.open_reservations(demo_data.card_id) == []


def test_destination_without_rate_is_unavailable(cardd, demo_data):
    t = cardd.call(card_caller(demo_data, NOWHERE + "#"))
    assert "destination_unavailable" in cardd.heard(t)
    assert bridge_args(t) == []


def test_too_little_credit_for_the_minimum_call_says_insufficient_funds(cardd, database):
    from tests.dbfixtures import create_demo_data

    demo = create_demo_data(database.pool, balance="0.05000")  # less than the 0.10 connect fee
    t = cardd.call(card_caller(demo, UK_MOBILE + "#"))
    assert "insufficient_funds" in cardd.heard(t)
    assert bridge_args(t) == []


def test_busy_callee_costs_nothing_and_leaves_a_zero_cdr(cardd, demo_data, ledger):
    t = cardd.call(card_caller(demo_data, UK_MOBILE + "#"), Callee(outcome="busy"))
    assert "destination_busy" in cardd.heard(t)
    assert balance(ledger, demo_data) == Decimal("10.00000")
    (cdr,) = ledger.cdrs_for(demo_data.card_id)
    assert (cdr.billed_seconds, cdr.cost, cdr.hangup_cause) == (0, Decimal("0"), "USER_BUSY")
    assert ledger.open_reservations(demo_data.card_id) == []


def test_each_attempt_of_a_session_is_billed_on_its_own(cardd, demo_data, ledger):
    t = cardd.call(
        card_caller(demo_data, UK_MOBILE + "#", LONDON + "#"), {UK_MOBILE: Callee(talk=30), LONDON: Callee(talk=59)}
    )  # 31 and 60 billed seconds
    assert len(t.bridges) == 2
    cdrs = ledger.cdrs_for(demo_data.card_id)
    assert sorted(c.cost for c in cdrs) == [Decimal("0.03000"), Decimal("0.13600")]
    assert balance(ledger, demo_data) == Decimal("9.83400")


def test_a_busy_attempt_after_an_answered_call_is_not_taken_for_answered(cardd, demo_data, ledger):
    # FreeSWITCH keeps bridge_hangup_cause on A after the first call; the second must not read it.
    t = cardd.call(
        card_caller(demo_data, UK_MOBILE + "#", LONDON + "#"),
        {UK_MOBILE: Callee(talk=31), LONDON: Callee(outcome="busy")},
    )
    assert [b.answered for b in t.bridges] == [True, False]
    heard = cardd.heard(t)
    assert heard[heard.index("destination_busy") - 1] == "hour"  # right after "you can talk for one hour"
    assert cardd.metric("cardd_bridge_attempts_total", result="answered") == 1
    assert cardd.metric("cardd_bridge_attempts_total", result="failed") == 1
    assert sorted(c.billed_seconds > 0 for c in ledger.cdrs_for(demo_data.card_id)) == [False, True]


def test_calls_active_are_counted_by_calling_card_instance(cardd, demo_data):
    caller = card_caller(demo_data, UK_MOBILE + "#", destination="cc.noredial")
    call = cardd.dial(caller, Callee(talk=30))
    with gevent.Timeout(30):
        while not any(e.kind == "bridged" for e in call.transcript.entries):
            gevent.sleep(0.01)
    assert cardd.metric("cardd_instance_calls_active", cc_instance="other") == 1
    call.wait(30)
    assert cardd.metric("cardd_instance_calls_active", cc_instance="other") == 0


def test_noredial_ends_after_one_call(cardd, demo_data):
    t = cardd.call(card_caller(demo_data, UK_MOBILE + "#", LONDON + "#", destination="cc.noredial"), Callee(talk=5))
    assert len(t.bridges) == 1
    assert cardd.heard(t)[-1] == "goodbye"


def test_disconnect_on_failure_ends_after_a_failed_attempt(cardd_with, database, demo_data, tmp_path):
    running = cardd_with(database, "calling_card:\n  disconnect_on_failure: true\n", tmp_path=tmp_path)
    t = running.call(card_caller(demo_data, UK_MOBILE + "#", LONDON + "#"), Callee(outcome="busy"))
    assert len(t.bridges) == 1


def test_wrong_destinations_in_a_row_end_the_session(cardd, demo_data):
    t = cardd.call(card_caller(demo_data, NOWHERE + "#", NOWHERE + "#", NOWHERE + "#", UK_MOBILE + "#"))
    assert cardd.heard(t).count("destination_unavailable") == 3
    assert bridge_args(t) == []


def test_nodial_allows_no_normal_calls(cardd, demo_data):
    t = cardd.call(card_caller(demo_data, UK_MOBILE + "#", destination="cc.nodial.noredial"))
    assert bridge_args(t) == []


# -- the outgoing leg --------------------------------------------------------------


def test_keepcli_calls_out_with_the_callers_number(cardd, demo_data):
    t = cardd.call(card_caller(demo_data, UK_MOBILE + "#", destination="cc.keepcli"), Callee(talk=5))
    v = dial_vars(bridge_args(t)[0])
    assert v["origination_caller_id_number"] == v["origination_caller_id_name"] == "15555550100"


def test_ringback_is_played_unless_early_media_is_kept(cardd, demo_data):
    t = cardd.call(card_caller(demo_data, UK_MOBILE + "#"), Callee(talk=5))
    assert ("set", "ringback=%(2000,4000,440,480)") in t.apps
    assert dial_vars(bridge_args(t)[0])["ignore_early_media"] == "true"
    t = cardd.call(card_caller(demo_data, UK_MOBILE + "#", destination="cc.earlymedia"), Callee(talk=5))
    assert "ignore_early_media" not in dial_vars(bridge_args(t)[0])


def test_double_hash_ends_the_call_and_returns_to_the_destination_prompt(cardd, demo_data, ledger):
    caller = card_caller(demo_data, UK_MOBILE + "#", LONDON + "#", bridge_digits=[(10.0, "##")])
    t = cardd.call(caller, {UK_MOBILE: Callee(talk=None, answer_after=1.0), LONDON: Callee(talk=5)})
    assert ("bind_digit_action", "ccbreak,##,exec[H]:hangup,NORMAL_CLEARING,self,peer") in t.apps
    assert len(t.bridges) == 2
    first = next(c for c in ledger.cdrs_for(demo_data.card_id) if c.rate_prefix == "44")
    assert 8 <= first.billed_seconds <= 10


def test_caller_hanging_up_mid_call_is_billed_and_leaves_no_reservation(cardd, demo_data, ledger):
    caller = card_caller(demo_data, UK_MOBILE + "#", hangup_after_talk=20)
    t = cardd.call(caller, Callee(talk=None))
    assert t.bridges[0].answered
    (cdr,) = ledger.cdrs_for(demo_data.card_id)
    # 20 s: 0.10 + 0.03 (first 30 s, charged whole)
    assert (cdr.billed_seconds, cdr.cost) == (20, Decimal("0.13000"))
    assert ledger.open_reservations() == []


def test_caller_hanging_up_during_identification_leaves_nothing(cardd, demo_data, ledger):
    caller = Caller(digits=[demo_data.card_number + "#"], type_after=6, hangup_at=("play_and_get_digits", 2))
    t = cardd.call(caller)
    assert t.hangup_cause == "NORMAL_CLEARING"
    assert ledger.open_reservations() == []
    assert ledger.cdrs_for(demo_data.card_id) == []


# -- money under concurrency --------------------------------------------------------


def test_fifty_simultaneous_calls_on_one_card_never_overspend(cardd, database, ledger):
    from tests.dbfixtures import create_demo_data

    demo = create_demo_data(database.pool, balance="2.00000")
    calls = [
        cardd.dial(
            card_caller(demo, UK_MOBILE + "#", destination="cc.noredial", cli=f"1555000{i:04d}"), Callee(talk=None)
        )
        for i in range(50)
    ]
    transcripts = [c.wait(60) for c in calls]
    cdrs = ledger.cdrs_for(demo.card_id, limit=100)
    charged = sum(c.cost for c in cdrs)
    assert charged <= Decimal("2.00000")
    assert ledger.get_card(demo.card_id).balance == Decimal("2.00000") - charged
    assert ledger.get_card(demo.card_id).balance >= 0
    assert ledger.open_reservations() == []
    granted = [dial_vars(a)["execute_on_answer_1"] for t in transcripts for a in bridge_args(t)]
    assert granted, "no call was dialled"
    # every call that was dialled got a duration its share of the credit paid for
    for cdr in cdrs:
        assert cdr.billed_seconds <= cdr.granted_seconds
    refused = sum("insufficient_funds" in cardd.heard(t) for t in transcripts)
    assert refused + len(granted) == 50


def test_caller_hanging_up_during_the_duration_announcement_releases_the_reservation(cardd, demo_data, ledger):
    # The reservation is made before "you can talk for …"; the caller leaves
    # during that playback, so nothing is dialled and nothing is owed.
    caller = card_caller(demo_data, UK_MOBILE + "#", hangup_at=("playback", 1))
    t = cardd.call(caller)
    assert bridge_args(t) == []
    assert ledger.open_reservations() == []
    (cdr,) = ledger.cdrs_for(demo_data.card_id)
    assert (cdr.billed_seconds, cdr.cost) == (0, Decimal("0"))
    assert balance(ledger, demo_data) == Decimal("10.00000")


def test_destination_completion_regex_dials_as_soon_as_the_digits_match(cardd_with, database, demo_data, tmp_path):
    # UK numbers are 44 + 10 digits: no pound key, no waiting for a time-out.
    running = cardd_with(database, "calling_card:\n  destination_completion_regex: '44\\d{10}'\n", tmp_path=tmp_path)
    caller = card_caller(demo_data, UK_MOBILE, destination="cc.noredial")
    t = running.call(caller, Callee(talk=5))
    (bridge,) = t.bridges
    assert bridge.number == UK_MOBILE
    # keys were read one at a time, the first over the destination prompt
    reads = [arg for app, arg in t.apps if app == "play_and_get_digits"][2:]
    assert len(reads) == len(UK_MOBILE)
    assert "enter_destination" in reads[0] and reads[1].split()[5] == "silence"


def test_with_a_completion_regex_the_pound_key_still_ends_a_shorter_number(cardd_with, database, demo_data, tmp_path):
    running = cardd_with(database, "calling_card:\n  destination_completion_regex: '44\\d{10}'\n", tmp_path=tmp_path)
    t = running.call(card_caller(demo_data, "1212555#", destination="cc.noredial"), Callee(talk=5))
    assert [b.number for b in t.bridges] == ["1212555"]


def test_a_flood_of_star_and_pound_costs_one_attempt_and_leaves_nothing_for_the_retry(cardd, demo_data):
    caller = Caller(
        digits=["*#*#*#*#", "123456789012345#", demo_data.card_number + "#", demo_data.pin + "#", UK_MOBILE + "#"],
        type_after=6,
        digit_interval=0.05,
    )
    t = cardd.call(caller, Callee(talk=5))
    heard = cardd.heard(t)
    # two bad entries, two invalid prompts; the card still gets through on the third try
    assert heard.count("invalid_card_number") == 2
    assert ("flush_dtmf", "") in t.apps
    assert len(t.bridges) == 1


def test_a_caller_who_knows_the_drill_types_over_the_prompts_and_loses_nothing(cardd, demo_data, ledger):
    # Each entry typed half a second into its question, over the welcome,
    # the PIN prompt and the balance sentence (capture 18: barge-in).
    caller = Caller(
        digits=[demo_data.card_number + "#", demo_data.pin + "#", UK_MOBILE + "#"],
        type_after=0.5,
        destination="cc.noredial",
    )
    t = cardd.call(caller, Callee(talk=31))
    heard = cardd.heard(t)
    assert "enter_card_number" not in heard  # cut short by the first key
    assert heard[:3] == ["welcome", "enter_pin", "you_have"]
    assert len(t.bridges) == 1
    assert balance(ledger, demo_data) == Decimal("9.86400")


def test_double_hash_while_the_callee_rings_cancels_it_and_costs_nothing(cardd, demo_data, ledger):
    caller = card_caller(demo_data, UK_MOBILE + "#", bridge_digits=[(1.0, "##")])
    t = cardd.call(caller, Callee(answer_after=5.0, talk=30))
    assert not t.bridges[0].answered
    heard = cardd.heard(t)
    after_bridge = heard[heard.index("you_can_talk_for") :]
    assert "enter_destination" in after_bridge  # back at the destination prompt
    (cdr,) = ledger.cdrs_for(demo_data.card_id)
    assert (cdr.billed_seconds, cdr.cost) == (0, Decimal("0"))
    assert balance(ledger, demo_data) == Decimal("10.00000")


@pytest.mark.parametrize("delay", [0.0, 0.001, 0.005])
def test_caller_hanging_up_just_before_the_bridge_runs_owes_nothing_and_holds_nothing(cardd, demo_data, ledger, delay):
    # Found by the soak: the hangup crosses the bridge command on the wire.
    caller = card_caller(demo_data, UK_MOBILE + "#", hangup_at=("digit_action_set_realm", 1), hangup_delay=delay)
    t = cardd.call(caller, Callee(talk=30))
    assert not any(b.answered for b in t.bridges)
    assert ledger.open_reservations() == []
    (cdr,) = ledger.cdrs_for(demo_data.card_id)
    assert cdr.cost == Decimal("0")
    assert balance(ledger, demo_data) == Decimal("10.00000")


def test_a_stopped_daemon_leaves_no_greenlet_of_its_own_running(database, demo_data, tmp_path):
    """stop() ends every loop the daemon started (reservation gauges, node
    heartbeat, orphan check, journal retry, listeners): a loop left behind
    outlives the database and logs "Database not started" into a closed stream."""
    import gc

    from cardd.daemon import Daemon
    from cardd.metrics import Metrics
    from tests.callfixtures import Cardd, make_settings

    def live() -> set:
        gc.collect()
        return {g for g in gc.get_objects() if isinstance(g, gevent.Greenlet) and not g.dead}

    before = live()
    settings = make_settings(
        tmp_path=tmp_path, data_dir=str(tmp_path / "var"), cdr_listen="127.0.0.1:0", metrics_listen="127.0.0.1:0"
    )
    daemon = Daemon(settings, database=database, metrics=Metrics(), serve_cdr=True)
    daemon.start()
    t = Cardd(daemon).call(card_caller(demo_data, UK_MOBILE + "#"), Callee(talk=5))
    assert t.bridges[0].answered
    names = {g.name for g in live() - before}
    assert {"node-heartbeat", "orphan-reconciler", "settlement-journal"} <= names
    assert any("_refresh_reservation_gauges" in repr(g._run) for g in live() - before)
    daemon.stop()
    left = live() - before
    assert left == set(), [(g.name, g._run) for g in left]
