"""Calls through cardd and the simulator where the simulator now behaves as
FreeSWITCH 1.10.12 measured or as its source says (cardd/sim/apps.py
_sched_delay, cardd/sim/bridge.py CALLEE_BYE_LAG, cardd/sim/sofia.py
outgoing_from), and `cardd call`'s phone options (issue 10 §6)."""

from __future__ import annotations

import time
from decimal import Decimal

import gevent
import pytest

from cardd import cli
from cardd.sim import Callee
from tests.dbfixtures import create_demo_data
from tests.test_flow_calls import UK_MOBILE, bridge_args, card_caller, dial_vars

# -- sched_hangup overshoots the grant; billing caps it -------------------------------


@pytest.mark.parametrize("answered_in_second, billmsec", [(0.25, 396_020), (0.75, 395_520)])
def test_a_call_cut_past_its_grant_is_billed_the_grant_and_no_more(
    cardd, database, ledger, answered_in_second, billmsec
):
    """sched_hangup +396 answered at x.25 s cuts at 396.02 s, as on the real
    switch (12020 ms for +12): billmsec exceeds the grant and cardd bills
    min(ceil(billmsec / 1000), granted) = 396, not 397."""
    demo = create_demo_data(database.pool, balance="0.50000")
    t = cardd.call(card_caller(demo, UK_MOBILE + "#"), Callee(talk=None, answer_in_second=answered_in_second))
    assert dial_vars(bridge_args(t)[0])["execute_on_answer_1"] == "'sched_hangup +396 ALLOTTED_TIMEOUT'"
    (bridge,) = t.bridges
    assert (bridge.billmsec, bridge.b_hangup_cause) == (billmsec, "ALLOTTED_TIMEOUT")
    (cdr,) = ledger.cdrs_for(demo.card_id)
    assert cdr.granted_seconds == 396
    assert cdr.billed_seconds == 396
    # 0.10 + 0.03 (first 30 s) + 61 six-second intervals at 0.006: all of the credit
    assert cdr.cost == Decimal("0.49600")
    assert ledger.get_card(demo.card_id).balance == Decimal("0.00400")
    assert ledger.open_reservations(demo.card_id) == []


def test_a_callee_talking_whole_seconds_is_billed_one_second_more_as_on_the_real_switch(cardd, demo_data, ledger):
    """31 s of talk is billmsec 31020 on FreeSWITCH (realfs: 8020, 6020, 5020)."""
    t = cardd.call(card_caller(demo_data, UK_MOBILE + "#"), Callee(talk=31))
    assert t.bridges[0].billmsec == 31_020
    (cdr,) = ledger.cdrs_for(demo_data.card_id)
    assert cdr.billed_seconds == 32


# -- what the callee's phone shows ------------------------------------------------------


def test_the_callee_sees_the_presented_number_not_the_callers_own_as_display_name(cardd, demo_data):
    """preserve_original_cli off: the card's number is presented. Before
    origination_caller_id_name was set, sofia put the caller's own number
    in the display name: From: "15555550100" <sip:1234567890@...>."""
    caller = card_caller(demo_data, UK_MOBILE + "#", cli="15555550100")
    t = cardd.call(caller, Callee(talk=5))
    seen = t.bridges[0].sip_from
    assert seen.user == demo_data.card_number
    assert seen.display != "15555550100"
    assert seen.display == demo_data.card_number


# -- cardd call: the phone's options ------------------------------------------------------


def phone(cardd, tmp_path, *args: str) -> list[str]:
    config = tmp_path / "phone.yaml"
    config.write_text("{}\n")
    host, port = cardd.address
    return [
        "-c",
        str(config),
        "call",
        "--server",
        f"{host}:{port}",
        "--inbound-esl",
        "off",
        "--cli",
        "15555550100",
        *args,
    ]


def card_digits(demo, *more: str) -> list[str]:
    out = []
    for d in (demo.card_number + "#", demo.pin + "#", *more):
        out += ["--digits", d]
    return out


def test_cardd_call_presses_hash_hash_in_the_bridge_and_the_caller_is_back_at_the_destination_prompt(
    cardd, demo_data, ledger, tmp_path, capsys
):
    code = cli.main(
        phone(cardd, tmp_path, *card_digits(demo_data, UK_MOBILE + "#"), "--talk", "60", "--press-in-bridge", "5:##")
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "types   ##" in out
    assert f"bridge to {UK_MOBILE}: SUCCESS, billsec" in out
    (cdr,) = ledger.cdrs_for(demo_data.card_id)
    assert cdr.hangup_cause == "NORMAL_CLEARING"
    assert 1 <= cdr.billed_seconds <= 5  # answered 1 s in, ## at 5 s
    # `##` hung the callee up (peer), and the caller is asked for a destination again
    after_hash = out[out.index("types   ##") :]
    assert "B execute hangup NORMAL_CLEARING" in after_hash
    assert "[en/enter_destination]" in after_hash


def test_cardd_call_hangs_up_mid_call_after_the_given_talk(cardd, demo_data, ledger, tmp_path, capsys):
    code = cli.main(
        phone(cardd, tmp_path, *card_digits(demo_data, UK_MOBILE + "#"), "--talk", "600", "--hangup-after-talk", "7")
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "by=caller" in out
    assert f"bridge to {UK_MOBILE}: SUCCESS, billsec 7 (billmsec 7000)" in out
    (cdr,) = ledger.cdrs_for(demo_data.card_id)
    assert cdr.billed_seconds == 7


def test_cardd_call_lets_prompts_play_to_the_end_so_the_balance_is_heard(cardd, demo_data, tmp_path, capsys):
    digits = card_digits(demo_data, UK_MOBILE + "#")
    assert cli.main(phone(cardd, tmp_path, *digits, "--talk", "5")) == 0
    barged = capsys.readouterr().out
    assert cli.main(phone(cardd, tmp_path, *digits, "--talk", "5", "--hear-prompts")) == 0
    heard = capsys.readouterr().out
    # typing over the prompts cuts the balance announcement after its first
    # words; listening hears it to its end
    assert "[en/remaining]" not in barged
    assert '"You have" [en/you_have]' in heard
    assert '"remaining." [en/remaining]' in heard
    assert heard.index("[en/you_have]") < heard.index("[en/remaining]") < heard.index(f"types   {UK_MOBILE}#")


def test_cardd_call_help_shows_every_default(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["call", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for option, default in (
        ("--talk", "(default: 30.0)"),
        ("--type-after", "(default: 0.5)"),
        ("--stay", "(default: 0.0)"),
        ("--hear-prompts", "(default: off)"),
        ("--press-in-bridge", "(default: none)"),
        ("--inbound-esl", "(default: daemon.inbound_esl"),
    ):
        assert default in text[text.index(option + " ") :], option


def test_cardd_call_refuses_a_bad_press_in_bridge_in_one_line(tmp_path, capsys, cardd):
    code = cli.main(phone(cardd, tmp_path, "--press-in-bridge", "soon:##"))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("cardd")]
    assert code == 2
    assert lines == ["cardd: call: --press-in-bridge 'soon:##': expected SECONDS:DIGITS, e.g. 5:##"]


# -- timestamps of a simulated call's CDR ------------------------------------------------


def test_a_simulated_calls_cdr_times_are_ordered_start_answer_end(cardd, demo_data, ledger):
    # answered_at/ended_at are B's answer_uepoch/end_uepoch (FreeSWITCH's
    # clock), not cardd's wall-clock end minus billmsec: a virtual-clock call
    # takes milliseconds of real time, which put the answer before the start.
    t = cardd.call(card_caller(demo_data, UK_MOBILE + "#"), Callee(talk=45))
    (cdr,) = ledger.cdrs_for(demo_data.card_id)
    assert cdr.started_at <= cdr.answered_at <= cdr.ended_at
    assert (cdr.ended_at - cdr.answered_at).total_seconds() == pytest.approx(45.02, abs=0.01)
    assert cdr.answered_at.timestamp() == pytest.approx(t.bridges[0].answer_epoch_us / 1e6, abs=1e-6)
    assert cdr.ended_at.timestamp() == pytest.approx(t.bridges[0].end_epoch_us / 1e6, abs=1e-6)


def test_the_virtual_clock_never_falls_behind_the_wall_clock_while_nothing_is_scheduled():
    """Its stamps are FreeSWITCH's answer_uepoch etc.: a daemon thinking while
    no timer is pending must not find the switch's clock in its past."""
    from cardd.sim.clock import VirtualClock

    clock = VirtualClock()
    began = clock.now()
    while time.time() <= began + 0.01:
        gevent.sleep(0.001)
    assert clock.now() > began + 0.01
    pinned = VirtualClock(1_000_000_000.0)
    assert pinned.now() == 1_000_000_000.0


# -- cardd call's inbound Event Socket: a cardd killed mid-call settles after restart ---------


def test_cardd_killed_mid_call_settles_the_reservation_after_restart_through_cardd_calls_inbound_socket(
    database, tmp_path, capsys, monkeypatch
):
    """`cardd call` serves FreeSWITCH's inbound Event Socket (daemon.inbound_esl),
    so the restarted cardd can ask the switch (switchname, uuid_exists) about
    the call its dead predecessor bridged, and settle it instead of leaving
    it open as "unknown"."""
    from cardd.billing.ledger import Ledger
    from cardd.daemon import Daemon
    from cardd.metrics import Metrics
    from cardd.sim import Switch
    from tests.callfixtures import Cardd, make_settings
    from tests.test_orphans import Gate, free_port, kill, wait_dead

    demo = create_demo_data(database.pool, balance="10.00000")
    ledger = Ledger(database.pool)
    esl = f"127.0.0.1:{free_port()}"
    settings = make_settings(
        "calling_card:\n  max_call_duration: 120\n",
        tmp_path=tmp_path,
        data_dir=str(tmp_path / "var"),
        inbound_esl=esl,
        node_heartbeat_interval=1.0,
    )

    def start() -> Cardd:
        d = Daemon(settings, database=database, metrics=Metrics(), serve_metrics=False)
        d.start()
        return Cardd(d)

    gates: list[Gate] = []

    class HeldSwitch(Switch):
        """The phone's switch, held once bridged until the test releases it."""

        def __init__(self, **kw):
            super().__init__(**kw)
            gates.append(Gate(self))

    monkeypatch.setattr("cardd.sim.Switch", HeldSwitch)
    first = start()
    host, port = first.address
    config = tmp_path / "phone.yaml"
    config.write_text("{}\n")
    phone_call = gevent.spawn(
        cli.main,
        [
            "-c",
            str(config),
            "call",
            "--server",
            f"{host}:{port}",
            "--inbound-esl",
            esl,
            "--stay",
            "600",
            "--talk",
            "20",
            *card_digits(demo, UK_MOBILE + "#"),
        ],
    )
    try:
        deadline = time.monotonic() + 60
        while not (gates and gates[0].bridged) and time.monotonic() < deadline:
            gevent.sleep(0.05)
        (bridged,) = gates[0].bridged.values()
        assert bridged.wait(30)
        assert len(ledger.open_reservations(demo.card_id)) == 1
        first_node = first.daemon.nodes.node
        kill(first.daemon)  # kill -9, in-process
        gates[0].release(list(gates[0].bridged))  # the call goes on, then ends
        deadline = time.monotonic() + 60
        while "call ended:" not in capsys.readouterr().out and time.monotonic() < deadline:
            gevent.sleep(0.05)
        assert len(ledger.open_reservations(demo.card_id)) == 1  # nobody settled it

        wait_dead(database.pool, first_node)
        second = start()
        try:
            deadline = time.monotonic() + 30
            while ledger.open_reservations(demo.card_id) and time.monotonic() < deadline:
                gevent.sleep(0.05)
            assert ledger.open_reservations(demo.card_id) == []
            (cdr,) = ledger.cdrs_for(demo.card_id)
            assert cdr.estimated  # no CDR reached it: bounded estimate
            assert second.daemon.reconciler.last.unknown == 0
        finally:
            second.daemon.stop()
    finally:
        phone_call.kill()


def test_cardd_call_posts_the_legs_cdrs_as_a_json_cdr_conf_says(database, demo_data, ledger, tmp_path, capsys):
    from cardd.daemon import Daemon
    from cardd.metrics import Metrics
    from tests.callfixtures import Cardd, make_settings
    from tests.test_orphans import free_port

    cdr_at = f"127.0.0.1:{free_port()}"
    settings = make_settings(tmp_path=None, cdr_listen=cdr_at, cdr_credentials="fs:s3cret")
    daemon = Daemon(settings, database=database, metrics=Metrics(), serve_metrics=False, serve_cdr=True)
    daemon.start()
    try:
        conf = tmp_path / "json_cdr.conf.xml"
        conf.write_text(
            '<configuration name="json_cdr.conf"><settings>'
            f'<param name="url" value="http://{cdr_at}/cdr"/>'
            '<param name="cred" value="fs:s3cret"/>'
            '<param name="encode-values" value="false"/>'
            "</settings></configuration>"
        )
        code = cli.main(
            phone(
                Cardd(daemon),
                tmp_path,
                *card_digits(demo_data, UK_MOBILE + "#"),
                "--talk",
                "12",
                "--json-cdr",
                str(conf),
            )
        )
        out = capsys.readouterr().out
        assert code == 0, out
        (cdr,) = ledger.cdrs_for(demo_data.card_id)
        assert f"CDR posted: {cdr.b_uuid}" in out
        assert f"CDR posted: {cdr.a_uuid}" in out
        assert "not delivered" not in out
        assert daemon.cdr_endpoint.store.get(str(cdr.b_uuid)).billmsec == 12_020
    finally:
        daemon.stop()
