"""The simulator as the daemon sees it: real TCP, scripted caller and callees,
FreeSWITCH's semantics for each application, and the virtual clock."""

from __future__ import annotations

import time
import wave

import gevent
import pytest

from cardd.sim import Callee, Caller, Switch
from cardd.sim.toyd import ToyDaemon

EVENTS = (
    "CHANNEL_CREATE CHANNEL_PROGRESS CHANNEL_PROGRESS_MEDIA CHANNEL_ANSWER CHANNEL_BRIDGE "
    "CHANNEL_UNBRIDGE CHANNEL_HANGUP CHANNEL_HANGUP_COMPLETE CHANNEL_EXECUTE "
    "CHANNEL_EXECUTE_COMPLETE CHANNEL_PARK CHANNEL_UNPARK CHANNEL_STATE DTMF"
)
PAGD = "4 10 3 5000 # tone_stream://%(500,0,440) tone_stream://%(300,0,300) cc_pin ^\\d{4,10}$ 3000"


def start(conn, *, linger=True, events=True):
    reply = conn.command("connect")
    a = reply.headers["Unique-ID"]
    if linger:
        conn.command("linger")
    if events:
        conn.command(f"filter Unique-ID {a}")
        conn.command(f"event plain {EVENTS}")
    return a


def finish(conn, a):
    conn.execute("hangup", "NORMAL_CLEARING")
    conn.wait_event(lambda e: e.name == "CHANNEL_HANGUP_COMPLETE" and e.unique_id == a)
    conn.command("exit")
    conn.wait_closed()


def run(flow, caller=None, callees=None, *, timeout=20.0, **switch_kw):
    out = {}

    def wrapped(conn):
        out["conn"] = conn
        flow(conn, out)

    daemon = ToyDaemon(wrapped)
    try:
        call = Switch(**switch_kw).call("127.0.0.1", daemon.port, caller or Caller(), callees)
        transcript = call.wait(timeout)
        daemon.join(1, timeout)
    finally:
        daemon.stop()
    assert not daemon.errors, daemon.errors
    out["t"] = transcript
    return out


def ts(event) -> float:
    return int(event.get("Event-Date-Timestamp")) / 1e6


# --- connect, replies, the end of the connection ---------------------------------


def test_connect_reply_is_one_frame_of_url_encoded_channel_data():
    def flow(conn, out):
        out["reply"] = conn.command("connect")
        conn.command("exit")

    out = run(flow, Caller(cli="15551234567", destination="cc.en.es", rdnis="8005550100"))
    r = out["reply"]
    raw = out["conn"].frames[0]
    assert "Content-Length" not in r.headers and r.body == b""
    assert list(r.headers.raw)[-4:] == ["Content-Type", "Reply-Text", "Socket-Mode", "Control"]
    assert r.headers.raw["Reply-Text"] == "%2BOK%0A"
    assert (r.headers["Socket-Mode"], r.headers["Control"]) == ("async", "full")
    assert r.headers["Event-Name"] == "CHANNEL_DATA"
    assert r.headers["Caller-Caller-ID-Number"] == "15551234567"
    assert r.headers["Caller-Destination-Number"] == "cc.en.es"
    assert r.headers["Caller-RDNIS"] == "8005550100"
    assert r.headers["variable_current_application"] == "socket"
    assert raw is not None


def test_exit_replies_bye_then_disconnect_notice_and_closes():
    def flow(conn, out):
        start(conn)
        out["bye"] = conn.command("exit")
        conn.wait_closed()

    out = run(flow)
    last = out["conn"].frames[-1]
    assert out["bye"].reply_text == "+OK bye"
    assert last.content_type == "text/disconnect-notice"
    assert last.headers["Content-Disposition"] == "disconnect"
    assert last.body == b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"


def test_linger_notice_after_hangup_complete_and_socket_stays_open_until_exit():
    def flow(conn, out):
        a = start(conn)
        conn.execute("answer")
        conn.execute("hangup", "NORMAL_CLEARING", wait=False)
        conn.wait_event(lambda e: e.name == "CHANNEL_HANGUP_COMPLETE")
        gevent.sleep(0.2)
        out["open"] = not conn.closed
        out["api"] = conn.command(f"api uuid_getvar {a} uuid")
        conn.command("exit")
        conn.wait_closed()

    out = run(flow)
    notices = [f for f in out["conn"].frames if f.content_type == "text/disconnect-notice"]
    assert [n.headers["Content-Disposition"] for n in notices] == ["linger", "disconnect"]
    assert notices[0].headers["Linger-Time"] == "-1"
    assert out["open"] and out["api"].body == b"-ERR No such channel!\n"


def test_linger_with_seconds_closes_by_itself():
    def flow(conn, out):
        conn.command("connect")
        out["reply"] = conn.command("linger 1")
        conn.command("myevents")
        conn.execute("hangup", "NORMAL_CLEARING", wait=False)
        conn.wait_closed()

    out = run(flow)
    assert out["reply"].reply_text == "+OK will linger 1 seconds"
    assert out["t"].closed_by == "linger-timeout"


def test_without_linger_the_switch_disconnects_at_hangup():
    def flow(conn, out):
        start(conn, linger=False)
        conn.execute("hangup", "USER_BUSY", wait=False)
        conn.wait_closed()

    out = run(flow)
    assert out["conn"].frames[-1].headers["Content-Disposition"] == "disconnect"
    assert out["t"].hangup_cause == "USER_BUSY"


def test_api_and_command_replies():
    def flow(conn, out):
        a = start(conn)
        conn.execute("set", "cc_balance=12.35")
        out["get"] = conn.command(f"api uuid_getvar {a} cc_balance").body
        out["undef"] = conn.command(f"api uuid_getvar {a} nothing").body
        out["setvar"] = conn.command(f"api uuid_setvar {a} x y z").body
        out["x"] = conn.command(f"api uuid_getvar {a} x").body
        out["exists"] = conn.command(f"api uuid_exists {a}").body
        out["nochan"] = conn.command("api uuid_getvar 00000000-0000-0000-0000-000000000000 x").body
        out["nocmd"] = conn.command("api no_such_command foo").body
        out["bgapi"] = conn.command(f"bgapi uuid_getvar {a} x")
        out["myevents2"] = conn.command("myevents").reply_text
        out["myevents3"] = conn.command("myevents").reply_text
        finish(conn, a)

    out = run(flow)
    assert out["get"] == b"12.35" and out["undef"] == b"_undef_"
    assert out["setvar"] == b"+OK\n" and out["x"] == b"y z"
    assert out["exists"] == b"true"
    assert out["nochan"] == b"-ERR No such channel!\n"
    assert out["nocmd"] == b"-ERR no_such_command Command not found!\n"
    job = out["bgapi"].headers["Job-UUID"]
    assert out["bgapi"].reply_text == f"+OK Job-UUID: {job}"
    assert (out["myevents2"], out["myevents3"]) == ("+OK Events Enabled", "-ERR aready enabled.")


def test_execute_echoes_event_uuid_as_application_uuid():
    def flow(conn, out):
        a = start(conn)
        out["done"] = conn.execute("answer")
        finish(conn, a)

    out = run(flow)
    e = out["done"]
    ex = [x for x in out["conn"].events if x.name == "CHANNEL_EXECUTE"][0]
    assert e.get("Application-Response") == "_none_"
    assert ex.get("Application-UUID") == e.get("Application-UUID")


# --- play_and_get_digits, playback, barge-in ---------------------------------------


def test_pagd_success_sets_the_variable_without_the_terminator():
    def flow(conn, out):
        a = start(conn)
        conn.execute("answer")
        out["e"] = conn.execute("play_and_get_digits", PAGD)
        finish(conn, a)

    out = run(flow, Caller(digits=["1234#"]))
    e = out["e"]
    assert (e.variable("cc_pin"), e.variable("read_result"), e.variable("read_terminator_used")) == (
        "1234",
        "success",
        "#",
    )
    dtmf = [x.get("DTMF-Digit") for x in out["conn"].events if x.name == "DTMF"]
    assert dtmf == list("1234#")
    assert out["t"].digits == ["1234#"]


def test_pagd_silent_caller_fails_after_all_tries_with_no_variable():
    def flow(conn, out):
        a = start(conn)
        conn.execute("answer")
        ex = conn.execute("play_and_get_digits", PAGD, wait=False)
        out["e"] = conn.wait_event(lambda e: e.name == "CHANNEL_EXECUTE_COMPLETE" and e.get("Application-UUID") == ex)
        out["start"] = [x for x in conn.events if x.get("Application-UUID") == ex][0]
        finish(conn, a)

    out = run(flow, Caller(digits=[None]))
    e = out["e"]
    assert e.variable("cc_pin") is None and e.variable("read_result") == "failure"
    # 3 tries x (0.5 s prompt + 5 s timeout + 0.3 s invalid prompt), like capture 04
    assert ts(e) - ts(out["start"]) == pytest.approx(17.4, abs=0.05)
    assert out["t"].prompts.count("tone_stream://%(300,0,300)") == 3


def test_pagd_regex_mismatch_sets_invalid_and_reports_success():
    def flow(conn, out):
        a = start(conn)
        conn.execute("answer")
        out["e"] = conn.execute("play_and_get_digits", PAGD.replace("^\\d{4,10}$", "^1\\d{3,9}$"))
        finish(conn, a)

    out = run(flow, Caller(digits=[("5555#", "5555#", "5555#")]))
    e = out["e"]
    assert e.variable("cc_pin") is None
    assert (e.variable("cc_pin_invalid"), e.variable("read_result")) == ("5555", "success")


def test_pagd_terminator_only_fails_without_invalid_variable():
    def flow(conn, out):
        a = start(conn)
        conn.execute("answer")
        out["e"] = conn.execute("play_and_get_digits", PAGD.replace(" 3 5000", " 1 5000"))
        finish(conn, a)

    out = run(flow, Caller(digits=["#"]))
    e = out["e"]
    assert e.variable("cc_pin") is None and e.variable("cc_pin_invalid") is None
    assert (e.variable("read_result"), e.variable("read_terminator_used")) == ("failure", "#")


def test_pagd_second_try_succeeds_after_invalid_prompt():
    def flow(conn, out):
        a = start(conn)
        conn.execute("answer")
        out["e"] = conn.execute("play_and_get_digits", PAGD)
        finish(conn, a)

    out = run(flow, Caller(digits=[("99#", "4321#")]))
    assert out["e"].variable("cc_pin") == "4321"
    assert out["t"].prompts == [
        "tone_stream://%(500,0,440)",
        "tone_stream://%(300,0,300)",
        "tone_stream://%(500,0,440)",
    ]


def test_digits_during_the_prompt_barge_in_and_stop_it():
    prompt = "file_string://tone_stream://%(2000,0,440)!tone_stream://%(2000,0,480)"

    def flow(conn, out):
        a = start(conn)
        conn.execute("answer")
        ex = conn.execute(
            "play_and_get_digits", f"1 10 1 5000 # {prompt} tone_stream://%(300,0,300) cc_pin \\d+ 3000", wait=False
        )
        out["e"] = conn.wait_event(lambda e: e.name == "CHANNEL_EXECUTE_COMPLETE" and e.get("Application-UUID") == ex)
        out["start"] = [x for x in conn.events if x.get("Application-UUID") == ex][0]
        finish(conn, a)

    out = run(flow, Caller(digits=["12#"], type_after=0.5, digit_interval=0.01))
    assert out["e"].variable("cc_pin") == "12"
    assert ts(out["e"]) - ts(out["start"]) == pytest.approx(0.52, abs=0.03)
    assert out["t"].prompts == ["tone_stream://%(2000,0,440)"]  # the 2nd part never played


def test_digits_during_a_playback_are_dropped():
    def flow(conn, out):
        a = start(conn)
        conn.execute("answer")
        out["p"] = conn.execute("playback", "tone_stream://%(500,0,440);loops=6")
        out["e"] = conn.execute(
            "play_and_get_digits", "1 10 1 5000 # silence_stream://100 tone_stream://%(300,0,300) cc_pin \\d+ 3000"
        )
        finish(conn, a)

    out = run(flow, Caller(playback_digits=["44"], digits=["#"]))
    assert out["p"].get("Application-Response") == "FILE PLAYED"
    assert out["e"].variable("cc_pin") is None
    assert out["e"].variable("read_result") == "failure"
    assert [x.get("DTMF-Digit") for x in out["conn"].events if x.name == "DTMF"] == ["4", "4", "#"]


def test_keys_pressed_between_applications_wait_for_the_next_reader():
    """A full play_and_get_digits returns at max digits; the keys that follow
    stay in the channel's DTMF queue and the next reader gets them."""
    one = "1 1 1 5000 # silence_stream://100 silence_stream://1 cc_d \\d 3000"
    then = "1 1 1 5000 # silence silence_stream://1 cc_d \\d 3000"

    def flow(conn, out):
        a = start(conn)
        conn.execute("answer")
        out["got"] = [conn.execute("play_and_get_digits", one).variable("cc_d")]
        for _ in range(2):
            out["got"].append(conn.execute("play_and_get_digits", then).variable("cc_d"))
        finish(conn, a)

    out = run(flow, Caller(digits=["123"], type_after=0.2, digit_interval=0.01))
    assert out["got"] == ["1", "2", "3"]


def test_playback_of_missing_file_and_real_wav_length(tmp_path):
    wav = tmp_path / "prompt.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 12000)  # 1.5 s

    def flow(conn, out):
        a = start(conn)
        conn.execute("answer")
        out["missing"] = conn.execute("playback", str(tmp_path / "nope.wav"))
        ex = conn.execute("playback", str(wav), wait=False)
        out["done"] = conn.wait_event(
            lambda e: e.name == "CHANNEL_EXECUTE_COMPLETE" and e.get("Application-UUID") == ex
        )
        out["start"] = [x for x in conn.events if x.get("Application-UUID") == ex][0]
        out["say"] = conn.execute("say", "en CURRENCY PRONOUNCED 12.35")
        finish(conn, a)

    out = run(flow)
    assert out["missing"].get("Application-Response") == "FILE NOT FOUND"
    assert out["done"].get("Application-Response") == "FILE PLAYED"
    assert ts(out["done"]) - ts(out["start"]) == pytest.approx(1.5, abs=0.01)
    assert out["say"].get("Application-Response") == "_none_"
    assert out["t"].prompts == [str(wav)]


def test_caller_hangup_during_playback_gives_playback_error_and_teardown_order():
    def flow(conn, out):
        start(conn)
        conn.execute("answer")
        out["p"] = conn.execute("playback", "tone_stream://%(500,0,440);loops=20")
        conn.wait_event(lambda e: e.name == "CHANNEL_HANGUP_COMPLETE")
        conn.command("exit")
        conn.wait_closed()

    out = run(flow, Caller(hangup_at=("playback", 1), hangup_delay=3.0))
    assert out["p"].get("Application-Response") == "PLAYBACK ERROR"
    names = [(e.name, e.get("Application") or e.get("Channel-State")) for e in out["conn"].events]
    tail = names[names.index(("CHANNEL_HANGUP", "CS_EXECUTE")) :]
    assert tail == [
        ("CHANNEL_HANGUP", "CS_EXECUTE"),
        ("CHANNEL_EXECUTE_COMPLETE", "playback"),
        ("CHANNEL_UNPARK", "CS_EXECUTE"),
        ("CHANNEL_EXECUTE_COMPLETE", "socket"),
        ("CHANNEL_STATE", "CS_HANGUP"),
        ("CHANNEL_STATE", "CS_REPORTING"),
        ("CHANNEL_HANGUP_COMPLETE", "CS_REPORTING"),
    ]
    assert out["t"].hangup_cause == "NORMAL_CLEARING"


# --- bridge ----------------------------------------------------------------------------

B = "6d96c5bf-eced-40c6-85f7-eec822e2c465"


def bridge_flow(dial, *, after=None):
    def flow(conn, out):
        a = start(conn)
        conn.execute("answer")
        conn.execute("set", "continue_on_fail=true")
        conn.execute("set", "hangup_after_bridge=false")
        conn.command(f"filter Unique-ID {B}")
        out["bridge"] = conn.execute("bridge", dial, lock=False, timeout=60)
        if after:
            after(conn, out)
        finish(conn, a)

    return flow


@pytest.mark.parametrize(
    "outcome,cause,dialstatus",
    [
        ("busy", "USER_BUSY", "BUSY"),
        ("unreachable", "NORMAL_TEMPORARY_FAILURE", "NORMAL_TEMPORARY_FAILURE"),
        ("no_answer", "NO_ANSWER", "NOANSWER"),
    ],
)
def test_failed_bridge_outcome_variables(outcome, cause, dialstatus):
    def flow(conn, out):
        a = start(conn)
        conn.execute("answer")
        conn.execute("set", "continue_on_fail=true")
        out["e"] = conn.execute("bridge", f"{{origination_uuid={B},originate_timeout=5}}sofia/gateway/gw1/442071234567")
        finish(conn, a)

    out = run(flow, callees={"442071234567": Callee(outcome)})
    e = out["e"]
    assert e.get("Application-Response") == "_none_"
    for var in ("last_bridge_hangup_cause", "originate_disposition", "originate_failed_cause"):
        assert e.variable(var) == cause
    assert e.variable("DIALSTATUS") == dialstatus
    assert e.variable("bridge_hangup_cause") is None
    assert e.variable("originate_causes") == f"{B};{cause}"
    assert not any(x.name == "CHANNEL_BRIDGE" for x in out["conn"].events)
    assert out["t"].bridges[0].disposition == cause and not out["t"].bridges[0].answered


def test_failed_bridge_without_continue_on_fail_hangs_up_the_caller():
    def flow(conn, out):
        start(conn)
        conn.execute("answer")
        conn.execute("bridge", "sofia/gateway/gw1/442071234567", wait=False)
        conn.wait_event(lambda e: e.name == "CHANNEL_HANGUP_COMPLETE")
        conn.command("exit")
        conn.wait_closed()

    out = run(flow, callees=Callee("busy"))
    names = [e.name for e in out["conn"].events]
    assert names.index("CHANNEL_HANGUP") < max(
        i
        for i, e in enumerate(out["conn"].events)
        if e.name == "CHANNEL_EXECUTE_COMPLETE" and e.get("Application") == "bridge"
    )
    assert out["t"].hangup_cause == "USER_BUSY"


def test_failover_tries_the_next_gateway():
    def flow(conn, out):
        a = start(conn)
        conn.execute("answer")
        conn.execute("set", "continue_on_fail=true")
        out["e"] = conn.execute("bridge", "sofia/gateway/gw1/4420|sofia/gateway/gw2/4420")
        finish(conn, a)

    out = run(flow, callees={"sofia/gateway/gw1/4420": Callee("unreachable"), "sofia/gateway/gw2/4420": Callee(talk=5)})
    assert [b.dial_string for b in out["t"].bridges] == ["sofia/gateway/gw2/4420"]
    assert out["e"].variable("originate_disposition") == "SUCCESS"
    assert out["e"].variable("bridge_hangup_cause") == "NORMAL_CLEARING"


def test_3000_second_call_costs_no_real_time_and_bills_whole_epoch_seconds():
    dial = (
        f"{{origination_uuid={B},origination_caller_id_number=15551230000,"
        "execute_on_answer_1='sched_hangup +3000 ALLOTTED_TIMEOUT',"
        "execute_on_answer_2='sched_broadcast +2940 playback::tone_stream://%(400,0,600) bleg'}"
        "sofia/external/442071234567@198.51.100.7:5060"
    )

    def after(conn, out):
        out["hc"] = conn.wait_event(lambda e: e.name == "CHANNEL_HANGUP_COMPLETE" and e.unique_id == B)

    began = time.monotonic()
    out = run(bridge_flow(dial, after=after), callees={"442071234567": Callee(answer_after=1)})
    assert time.monotonic() - began < 60  # virtual: far from the call's 3000 s, even on a busy machine
    hc, br = out["hc"], out["bridge"]
    assert hc.variable("hangup_cause") == "ALLOTTED_TIMEOUT"
    answer, end = int(hc.variable("answer_epoch")), int(hc.variable("end_epoch"))
    assert int(hc.variable("billsec")) == end - answer == 3000
    # cut between N-0.48 and N+0.02 s (see test_sched_hangup_...)
    assert 2999_520 <= int(hc.variable("billmsec")) <= 3000_020
    # the warning played on A during the bridge leaks into the bridge's response (14)
    assert br.get("Application-Response") == "FILE PLAYED"
    assert br.variable("bridge_hangup_cause") == "ALLOTTED_TIMEOUT"
    plays = [e for e in out["conn"].events if e.get("Application") == "playback" and e.name == "CHANNEL_EXECUTE"]
    assert plays and plays[0].unique_id != B  # `bleg` from B's execute_on_answer plays on A
    t = out["t"]
    assert t.bridges[0].billsec == 3000 and t.bridges[0].b_hangup_cause == "ALLOTTED_TIMEOUT"


@pytest.mark.parametrize("answered_in_second, talk_ms", [(0.3, 10_020), (0.0, 10_020), (0.7, 9_520), (0.5, 9_520)])
def test_sched_hangup_fires_on_the_schedulers_half_second_check_after_the_whole_second(answered_in_second, talk_ms):
    """switch_scheduler.c: runtime = epoch second + N, checked when the task
    is added and every 0.5 s after; the hang-up is stamped on the next 20 ms
    tick. Measured N-0.5..N+0.02 (README fact 23: 9.52 and 10.02 s for +10)."""
    dial = (
        f"{{origination_uuid={B},execute_on_answer='sched_hangup +10 ALLOTTED_TIMEOUT'}}sofia/external/1000@127.0.0.1"
    )

    def after(conn, out):
        out["hc"] = conn.wait_event(lambda e: e.name == "CHANNEL_HANGUP_COMPLETE" and e.unique_id == B)

    out = run(
        bridge_flow(dial, after=after),
        callees=Callee(answer_after=1.0, answer_in_second=answered_in_second),
        start_epoch=1_800_000_000.1,
    )
    hc = out["hc"]
    answered = int(hc.variable("answer_uepoch")) / 1e6
    assert answered % 1 == pytest.approx(answered_in_second, abs=1e-6)
    assert int(hc.variable("billmsec")) == talk_ms
    assert hc.variable("hangup_cause") == "ALLOTTED_TIMEOUT"


def test_a_callee_talking_n_seconds_is_billed_n_seconds_and_20_ms():
    """realfs: sipp callees holding 8, 6, 5 s gave billmsec 8020, 6020, 5020."""
    dial = f"{{origination_uuid={B}}}sofia/external/1000@127.0.0.1"

    def after(conn, out):
        out["hc"] = conn.wait_event(lambda e: e.name == "CHANNEL_HANGUP_COMPLETE" and e.unique_id == B)

    out = run(bridge_flow(dial, after=after), callees=Callee(talk=8))
    assert out["hc"].variable("billmsec") == "8020"
    assert out["t"].bridges[0].billmsec == 8020


@pytest.mark.parametrize("start_epoch", [1772622800.8245795, 1_765_112_345.1234565, 1_800_000_000.9999995])
def test_talk_time_is_whole_microseconds_whatever_the_epochs_fraction(start_epoch):
    """Float epochs near 1.8e9 s carry ~0.24 us of error: unrounded, answer + 8.02 s
    stamped 8019.999 ms (billmsec 8019) from 1772622800.8245795 (found by search). FreeSWITCH's stamps are
    integer microseconds, and so are the simulator's."""
    dial = f"{{origination_uuid={B}}}sofia/external/1000@127.0.0.1"

    def after(conn, out):
        out["hc"] = conn.wait_event(lambda e: e.name == "CHANNEL_HANGUP_COMPLETE" and e.unique_id == B)

    out = run(bridge_flow(dial, after=after), callees=Callee(talk=8), start_epoch=start_epoch)
    assert out["hc"].variable("billmsec") == "8020"


def test_billsec_is_the_difference_of_whole_epoch_seconds():
    dial = f"{{origination_uuid={B}}}sofia/external/1000@127.0.0.1"

    def after(conn, out):
        out["hc"] = conn.wait_event(lambda e: e.name == "CHANNEL_HANGUP_COMPLETE" and e.unique_id == B)

    # B answers at x.9 s and talks 3.2 s (+20 ms, the BYE's tick): billmsec
    # 3220, billsec 4 (README fact 22)
    out = run(bridge_flow(dial, after=after), callees=Callee(answer_after=0.88, talk=3.2), start_epoch=1_800_000_000.0)
    hc = out["hc"]
    assert (hc.variable("billmsec"), hc.variable("billsec")) == ("3220", "4")


def test_double_hash_ends_the_answered_callee_and_the_socket_keeps_control():
    def flow(conn, out):
        a = start(conn)
        conn.execute("answer")
        conn.execute("bind_digit_action", "ccbreak,##,exec[H]:hangup,NORMAL_CLEARING,self,peer")
        conn.execute("digit_action_set_realm", "ccbreak")
        out["e"] = conn.execute("bridge", f"{{origination_uuid={B}}}sofia/external/1000@x", lock=False)
        conn.execute("clear_digit_action", "ccbreak")
        out["p"] = conn.execute("playback", "tone_stream://%(100,0,440)")
        finish(conn, a)

    out = run(flow, Caller(bridge_digits=[(5.0, "##")], digit_interval=0.02), callees=Callee(answer_after=1))
    assert out["e"].variable("bridge_hangup_cause") == "NORMAL_CLEARING"
    assert out["p"].get("Application-Response") == "FILE PLAYED"
    assert not [e for e in out["conn"].events if e.name == "DTMF"]  # consumed by the parser
    assert out["t"].bridges[0].answered


def test_double_hash_while_ringing_cancels_the_call():
    def flow(conn, out):
        a = start(conn)
        conn.execute("answer")
        conn.execute("set", "continue_on_fail=true")
        conn.execute("bind_digit_action", "ccbreak,##,exec[H]:hangup,NORMAL_CLEARING,self,peer")
        conn.execute("digit_action_set_realm", "ccbreak")
        conn.command(f"filter Unique-ID {B}")
        out["e"] = conn.execute("bridge", f"{{origination_uuid={B}}}sofia/external/1000@x", lock=False)
        out["hc"] = conn.wait_event(lambda e: e.name == "CHANNEL_HANGUP_COMPLETE" and e.unique_id == B)
        finish(conn, a)

    out = run(flow, Caller(bridge_digits=[(2.0, "##")]), callees=Callee(answer_after=5))
    e = out["e"]
    assert e.variable("originate_disposition") == "NORMAL_CLEARING"
    assert e.variable("bridge_hangup_cause") is None
    assert (out["hc"].variable("billsec"), out["hc"].variable("sip_hangup_disposition")) == ("0", "send_cancel")
    assert not any(x.name == "CHANNEL_BRIDGE" for x in out["conn"].events)


def test_caller_hangup_mid_bridge_tears_down_b_before_a_unbridges():
    def flow(conn, out):
        a = start(conn)
        conn.execute("answer")
        conn.command(f"filter Unique-ID {B}")
        conn.execute("bridge", f"{{origination_uuid={B}}}sofia/external/1000@x", lock=False, wait=False)
        conn.wait_event(lambda e: e.name == "CHANNEL_HANGUP_COMPLETE" and e.unique_id == a)
        conn.command("exit")
        conn.wait_closed()

    out = run(flow, Caller(hangup_after_talk=4.0), callees=Callee(answer_after=1))
    order = [
        (e.name, "B" if e.unique_id == B else "A")
        for e in out["conn"].events
        if e.name in ("CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE", "CHANNEL_UNBRIDGE")
    ]
    assert order == [
        ("CHANNEL_HANGUP", "A"),
        ("CHANNEL_HANGUP", "B"),
        ("CHANNEL_HANGUP_COMPLETE", "B"),
        ("CHANNEL_UNBRIDGE", "A"),
        ("CHANNEL_HANGUP_COMPLETE", "A"),
    ]
    bill = out["t"].bridges[0]
    assert bill.billmsec == 4000 and bill.b_hangup_cause == "NORMAL_CLEARING"


def test_myevents_carries_only_a_leg_events_and_filters_bring_b_in():
    def flow(conn, out):
        a = conn.command("connect").headers["Unique-ID"]
        conn.command("linger")
        conn.command("myevents")
        conn.execute("answer")
        conn.execute("bridge", f"{{origination_uuid={B}}}sofia/external/1000@x", lock=False)
        finish(conn, a)

    out = run(flow, callees=Callee(answer_after=1, talk=2))
    assert {e.unique_id for e in out["conn"].events} == {out["t"].a_uuid}


def test_daemon_closing_its_socket_mid_bridge_leaves_the_call_to_b_timer():
    dial = f"{{origination_uuid={B},execute_on_answer='sched_hangup +30 ALLOTTED_TIMEOUT'}}sofia/external/1000@x"

    def flow(conn, out):
        start(conn)
        conn.execute("answer")
        conn.execute("bridge", dial, lock=False, wait=False)
        conn.wait_event(lambda e: e.name == "CHANNEL_BRIDGE")
        conn.sock.close()

    out = run(flow, callees=Callee(answer_after=1))
    t = out["t"]
    assert t.bridges[0].b_hangup_cause == "ALLOTTED_TIMEOUT"
    assert 29 <= t.bridges[0].billsec <= 30
    assert t.hangup_cause == "NORMAL_CLEARING"


def test_many_concurrent_calls_each_on_its_own_clock():
    def flow(conn):
        a = start(conn)
        conn.execute("answer")
        conn.execute("play_and_get_digits", PAGD)
        conn.execute("bridge", "{execute_on_answer='sched_hangup +600'}sofia/external/1@x", lock=False, timeout=60)
        finish(conn, a)

    daemon = ToyDaemon(flow)
    switch = Switch()
    began = time.monotonic()
    try:
        calls = [
            switch.call("127.0.0.1", daemon.port, Caller(digits=["1234#"]), Callee(answer_after=2)) for _ in range(50)
        ]
        transcripts = [c.wait(60) for c in calls]
    finally:
        daemon.stop()
    assert not daemon.errors
    assert all(t.bridges[0].billsec in (599, 600) for t in transcripts)
    assert len({t.a_uuid for t in transcripts}) == 50
    assert time.monotonic() - began < 600  # 50 x 600 s virtual; a busy machine may be slow, not that slow


def test_transcript_text_shows_catalogue_text_for_prompt_paths(tmp_path):
    (tmp_path / "en").mkdir()
    path = tmp_path / "en" / "welcome.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 800)

    def flow(conn, out):
        a = start(conn)
        conn.execute("answer")
        conn.execute("playback", str(path))
        finish(conn, a)

    out = run(flow)
    text = out["t"].text({"welcome": {"en": "Welcome to the calling card service"}})
    assert '"Welcome to the calling card service" [en/welcome]' in text
    assert "execute playback" in text


def test_unreachable_daemon_raises_oserror():
    with pytest.raises(OSError):
        Switch().call("127.0.0.1", 1, Caller())


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        "a b",
        "100%",
        "%41%4",
        "%zz",
        "sip:1@2;x=y",
        "v=0\r\no=x",
        "ünï",
        "{k='a b'}",
        "",
        "tone_stream://%(1,0,2)",
    ],
)
def test_fast_event_encoding_is_byte_identical_to_protocol(value):
    from cardd.esl.protocol import encode_event
    from cardd.sim.wire import encode_event as fast

    headers = [("Event-Name", "CHANNEL_EXECUTE"), ("Application-Data", value)]
    assert fast(headers) == fast(headers) == encode_event(headers)


def test_linger_notice_can_come_right_after_channel_hangup():
    def flow(conn, out):
        a = start(conn)
        conn.execute("answer")
        finish(conn, a)

    out = run(flow, early_linger_notice=True, park_event=False)
    kinds = [
        f.headers.get("Content-Disposition") or f.event().name
        for f in out["conn"].frames
        if f.content_type != "command/reply"
    ]
    assert kinds[kinds.index("CHANNEL_HANGUP") + 1] == "linger"
    assert "CHANNEL_PARK" not in kinds


def test_real_time_clock_runs_a_short_flow():
    def flow(conn, out):
        a = start(conn)
        conn.execute("answer")
        out["p"] = conn.execute("playback", "tone_stream://%(200,0,440)")
        finish(conn, a)

    began = time.monotonic()
    out = run(flow, virtual_clock=False)
    assert out["p"].get("Application-Response") == "FILE PLAYED"
    assert time.monotonic() - began >= 0.2  # the 200 ms tone took real time


def test_a_finished_callee_leaves_no_timer_to_jump_the_clock():
    dial = f"{{origination_uuid={B},execute_on_answer='sched_hangup +3000 ALLOTTED_TIMEOUT'}}sofia/external/1000@x"

    def flow(conn, out):
        a = start(conn)
        conn.execute("answer")
        out["b"] = conn.execute("bridge", dial, lock=False)
        gevent.sleep(0.3)  # the daemon thinks (database) with nothing running
        out["next"] = conn.execute("set", "x=1")
        finish(conn, a)

    out = run(flow, callees=Callee(answer_after=1, talk=10))
    assert ts(out["next"]) - ts(out["b"]) < 60  # no jump to the 3000 s timer (a busy machine adds seconds)


def test_inbound_socket_authenticates_answers_uuid_exists_and_observes_calls():
    from gevent import socket

    from cardd.esl.protocol import FrameParser

    switch = Switch()
    inbound = switch.listen_inbound(password="ClueCon")
    seen = {}

    def flow(conn, out):
        a = start(conn)
        conn.execute("answer")
        seen["a"] = a
        seen["ready"].set()
        seen["go"].wait()
        finish(conn, a)

    seen["ready"], seen["go"] = gevent.event.Event(), gevent.event.Event()
    daemon = ToyDaemon(lambda conn: flow(conn, {}))
    sock = socket.create_connection(inbound.address)
    parser = FrameParser()

    def frames(n):
        got = []
        while len(got) < n:
            parser.feed(sock.recv(65536))
            got += list(parser)
        return got

    def ask(text, n=1):
        sock.sendall(text.encode() + b"\n\n")
        return frames(n)

    try:
        assert frames(1)[0].content_type == "auth/request"
        call = switch.call("127.0.0.1", daemon.port, Caller(), None)
        seen["ready"].wait(60)
        a = seen["a"]
        assert ask("api uuid_exists x")[0].reply_text == "-ERR command not found"  # before auth
        assert ask("auth ClueCon")[0].reply_text == "+OK accepted"
        assert ask(f"api uuid_exists {a}")[0].body == b"true"
        assert ask(f"filter Unique-ID {a}")[0].reply_text == f"+OK filter added. [Unique-ID]=[{a}]"
        assert ask("event plain CHANNEL_HANGUP_COMPLETE")[0].reply_text == "+OK event listener enabled plain"
        seen["go"].set()
        hc = frames(1)[0].event()
        assert (hc.name, hc.unique_id) == ("CHANNEL_HANGUP_COMPLETE", a)
        call.wait(60)
        assert ask(f"api uuid_exists {a}")[0].body == b"false"
        bye, notice = ask("exit", 2)
        assert bye.reply_text == "+OK bye"
        assert notice.content_type == "text/disconnect-notice"
        assert "Controlled-Session-UUID" not in notice.headers
    finally:
        sock.close()
        inbound.stop()
        daemon.stop()


def test_without_full_the_socket_refuses_api_linger_and_event():
    def flow(conn, out):
        out["reply"] = conn.command("connect")
        out["linger"] = conn.command("linger").reply_text
        out["api"] = conn.command("api status").reply_text
        out["myevents"] = conn.command("myevents").reply_text
        conn.execute("hangup", "NORMAL_CLEARING", wait=False)
        conn.wait_closed()

    out = run(flow, socket_data="127.0.0.1:8084")
    assert (out["reply"].headers["Socket-Mode"], out["reply"].headers["Control"]) == ("static", "single-channel")
    assert out["linger"] == out["api"] == "-ERR command not found"
    assert out["myevents"] == "+OK Events Enabled"


def test_sendmsg_to_the_b_leg_hangs_it_up_and_to_an_unknown_uuid_is_refused():
    def flow(conn, out):
        a = start(conn)
        conn.execute("answer")
        conn.execute("set", "continue_on_fail=true")
        ex = conn.execute("bridge", f"{{origination_uuid={B}}}sofia/external/1000@x", lock=False, wait=False)
        conn.wait_event(lambda e: e.name == "CHANNEL_BRIDGE")
        out["bad"] = conn.command("sendmsg 00000000-0000-0000-0000-000000000000", {"call-command": "hangup"}).reply_text
        out["ok"] = conn.command(f"sendmsg {B}", {"call-command": "hangup", "hangup-cause": "CALL_REJECTED"}).reply_text
        out["e"] = conn.wait_event(lambda e: e.name == "CHANNEL_EXECUTE_COMPLETE" and e.get("Application-UUID") == ex)
        finish(conn, a)

    out = run(flow, callees=Callee(answer_after=1))
    assert out["bad"] == "-ERR invalid session id [00000000-0000-0000-0000-000000000000]"
    assert out["ok"] == "+OK"
    assert out["e"].variable("bridge_hangup_cause") == "CALL_REJECTED"


def test_while_the_daemon_thinks_time_runs_at_real_speed_not_to_the_next_timer():
    def flow(conn, out):
        a = start(conn)
        out["answer"] = conn.execute("answer")
        gevent.sleep(0.3)  # the daemon thinks with no app running
        out["set"] = conn.execute("set", "x=1")
        finish(conn, a)

    out = run(flow, Caller(hangup_after=5.0))
    assert out["set"] is not None and out["t"].hangup_cause == "NORMAL_CLEARING"
    assert 0.25 <= ts(out["set"]) - ts(out["answer"]) <= 1.0
    assert out["t"].of("hangup")[0].data["by"] == "switch"  # the daemon hung up, not the caller


def test_caller_hanging_up_while_the_callee_rings_cancels_the_callee():
    def flow(conn, out):
        start(conn)
        conn.execute("answer")
        conn.command(f"filter Unique-ID {B}")
        out["e"] = conn.execute("bridge", f"{{origination_uuid={B}}}sofia/external/1000@x", lock=False)
        conn.wait_event(lambda e: e.name == "CHANNEL_HANGUP_COMPLETE" and e.unique_id != B)
        conn.command("exit")
        conn.wait_closed()

    out = run(flow, Caller(hangup_at=("bridge", 1), hangup_delay=2.0), callees=Callee(answer_after=5))
    hc = [e for e in out["conn"].events if e.name == "CHANNEL_HANGUP_COMPLETE" and e.unique_id == B][0]
    assert hc.variable("billsec") == "0" and hc.variable("sip_hangup_disposition") == "send_cancel"
    assert out["t"].bridges[0].answered is False
    assert out["t"].hangup_cause == "NORMAL_CLEARING"


def test_read_collects_digits_into_its_variable():
    def flow(conn, out):
        a = start(conn)
        conn.execute("answer")
        out["e"] = conn.execute("read", "1 4 tone_stream://%(100,0,440) cc_menu 3000 #")
        finish(conn, a)

    out = run(flow, Caller(digits=["2#"]))
    assert out["e"].variable("cc_menu") == "2"
    assert out["e"].variable("read_result") == "success"


def test_parallel_legs_first_answer_wins_and_the_others_lose_the_race():
    def flow(conn, out):
        a = start(conn)
        conn.execute("answer")
        conn.execute("set", "continue_on_fail=true")
        out["e"] = conn.execute("bridge", "sofia/gateway/gw1/111,sofia/gateway/gw1/222,sofia/gateway/gw1/333")
        finish(conn, a)

    out = run(
        flow, callees={"111": Callee(answer_after=3), "222": Callee(answer_after=1, talk=2), "333": Callee("busy")}
    )
    t = out["t"]
    assert [b.number for b in t.bridges] == ["222"]
    assert out["e"].variable("bridge_hangup_cause") == "NORMAL_CLEARING"
    assert [e.data["number"] for e in t.of("dial")] == ["111", "222", "333"]


def test_inbound_observer_sees_the_socket_app_end_before_a_hangs_up_after_a_daemon_crash():
    from gevent import socket

    from cardd.esl.protocol import FrameParser

    switch = Switch()
    inbound = switch.listen_inbound()
    obs = socket.create_connection(inbound.address)
    parser = FrameParser()
    events = []

    def observe():
        while True:
            data = obs.recv(65536)
            if not data:
                return
            parser.feed(data)
            for f in parser:
                if f.content_type == "text/event-plain":
                    events.append(f.event())

    reader = gevent.spawn(observe)
    obs.sendall(b"auth ClueCon\n\nevent plain ALL\n\n")
    dial = f"{{origination_uuid={B},execute_on_answer='sched_hangup +10 ALLOTTED_TIMEOUT'}}sofia/external/1000@x"

    def flow(conn):
        start(conn)
        conn.execute("answer")
        conn.execute("bridge", dial, lock=False, wait=False)
        conn.wait_event(lambda e: e.name == "CHANNEL_BRIDGE")
        conn.sock.close()  # the daemon dies mid-bridge (capture 16)

    daemon = ToyDaemon(flow)
    try:
        call = switch.call("127.0.0.1", daemon.port, Caller(), Callee(answer_after=1))
        t = call.wait(60)
        gevent.sleep(0.05)
    finally:
        reader.kill()
        obs.close()
        inbound.stop()
        daemon.stop()
    a_events = [(e.name, e.get("Application")) for e in events if e.unique_id == t.a_uuid]
    tail = a_events[a_events.index(("CHANNEL_UNBRIDGE", None)) :]
    assert tail[:5] == [
        ("CHANNEL_UNBRIDGE", None),
        ("CHANNEL_EXECUTE_COMPLETE", "bridge"),
        ("CHANNEL_UNPARK", None),
        ("CHANNEL_EXECUTE_COMPLETE", "socket"),
        ("CHANNEL_HANGUP", None),
    ]
    assert t.bridges[0].b_hangup_cause == "ALLOTTED_TIMEOUT" and t.hangup_cause == "NORMAL_CLEARING"
