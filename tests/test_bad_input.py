"""Bad input from callers, SIP and broken peers: the right prompt, counted
attempts, safe storage, an unchanged dial string, and never an exception.

Everything goes through cardd (in-process) and the simulator, like a real call.
"""

from __future__ import annotations

import logging
import re
import socket

import pytest

from cardd.esl.protocol import url_decode, url_encode
from cardd.sim import Callee, Caller

UK_MOBILE = "447700900123"


def card_caller(demo, *entries, cli="15555550100", destination="cc", **kw) -> Caller:
    digits = [demo.card_number + "#", demo.pin + "#", *entries]
    return Caller(cli=cli, destination=destination, digits=digits, type_after=6, **kw)


def bridge_args(t) -> list[str]:
    return [arg for app, arg in t.apps if app == "bridge"]


def dial_vars(dial: str) -> dict[str, str]:
    inside = dial[1 : dial.index("}")]
    return dict(re.findall(r"(\w+)=('[^']*'|[^,]*)", inside))


@pytest.fixture
def no_flow_errors(caplog):
    """Fails the test when a call flow raised (cardd.server logs it) or
    anything logged at ERROR."""
    caplog.set_level(logging.INFO)
    yield caplog
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]


# -- caller digits ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "entries",
    [
        ["*" * 30 + "#"] * 3,  # star flood
        ["#"] * 3,  # only the terminator
        ["#" * 20] * 3,  # pound flood
        ["1" * 200 + "#"] * 3,  # far too long
        ["ABCD#", "*0*0#", "D" * 10 + "#"],  # what broken gateways send
    ],
)
def test_garbage_at_the_card_number_prompt_is_invalid_three_times_then_goodbye(
    cardd, demo_data, no_flow_errors, entries
):
    t = cardd.call(Caller(digits=entries, type_after=6))
    heard = cardd.heard(t)
    assert heard.count("invalid_card_number") == 3
    assert t.apps[-1] == ("hangup", "NORMAL_CLEARING")
    assert bridge_args(t) == []
    if "*" not in "".join(entries):
        assert heard[-2:] == ["too_many_attempts", "goodbye"]
    # With `*` typed ahead, FreeSWITCH's default playback_terminators (`*`,
    # capture 19 / fact 30) cut the goodbye sentence short: the caller may not
    # hear "too many attempts", but the attempts are counted and the call ends.


@pytest.mark.parametrize("entry", ["*" * 40 + "#", "#", "9" * 100 + "#", "4477*00#", "ABC#"])
def test_garbage_destinations_are_never_dialled(cardd, demo_data, ledger, no_flow_errors, entry):
    t = cardd.call(card_caller(demo_data, entry, entry, entry, destination="cc.noredial"), Callee(talk=5))
    assert bridge_args(t) == []
    assert ledger.open_reservations(demo_data.card_id) == []
    assert ledger.cdrs_for(demo_data.card_id) == []
    assert t.hangup_cause is not None


def test_digits_cannot_add_a_dial_string_parameter(cardd, demo_data, no_flow_errors):
    """A broken or hostile gateway passes characters no phone has: none reaches the dial string."""
    evil = UK_MOBILE + ",origination_caller_id_number=666}sofia/external/666"
    t = cardd.call(card_caller(demo_data, evil + "#", destination="cc.noredial"), Callee(talk=5))
    for dial in bridge_args(t):
        assert "666" not in dial and dial.count("{") == 1


# -- CLI and CLD strings from SIP ------------------------------------------------------

HOSTILE_CLIS = [
    "9" * 1000,
    "ñandú 日本 😀",
    "'\"`",
    "1'; DROP TABLE accounts; --",
    "anonymous",
    "",
    "15551234567\r\nX-Injected: yes",
    "%00%0a%27",
]


@pytest.mark.parametrize("cli", HOSTILE_CLIS)
def test_untrusted_cli_is_stored_verbatim_and_never_reaches_the_dial_string(
    cardd_with, database, demo_data, ledger, tmp_path, no_flow_errors, cli
):
    # keepcli: the caller's own CLI would be used if it were a number.
    running = cardd_with(database, tmp_path=tmp_path)
    t = running.call(
        card_caller(demo_data, UK_MOBILE + "#", cli=cli, destination="cc.keepcli.noredial"), Callee(talk=7)
    )
    (dial,) = bridge_args(t)
    v = dial_vars(dial)
    assert v["origination_caller_id_number"] == demo_data.card_number
    assert dial.count("{") == 1 and dial.count("}") == 1
    assert dial.endswith(f"sofia/external/{UK_MOBILE}@198.51.100.7:5060")
    (cdr,) = ledger.cdrs_for(demo_data.card_id)
    # Billed from the CDR's billmsec, rounded up: a callee talking 7 s gives
    # 7020 ms as on a real FreeSWITCH (tests/fixtures/SIMULATOR.md), so 8 s.
    assert cdr.billed_seconds == -(-t.bridges[0].billmsec // 1000)
    # Stored as FreeSWITCH gave it (parameters, never SQL text), less control
    # characters: a NUL is one PostgreSQL text cannot hold.
    on_the_wire = url_decode(url_encode(cli))
    assert cdr.cli == re.sub(r"[\x00-\x1f\x7f]", "", on_the_wire)
    with database.pool.connection() as conn:
        assert conn.execute("SELECT count(*) FROM accounts").fetchone()[0] >= 1


def test_keepcli_with_a_numeric_cli_carrying_a_parameter_is_not_used(cardd, demo_data, no_flow_errors):
    cli = "15551234567,origination_caller_id_name=evil"
    t = cardd.call(card_caller(demo_data, UK_MOBILE + "#", cli=cli, destination="cc.keepcli.noredial"), Callee(talk=5))
    (dial,) = bridge_args(t)
    assert "evil" not in dial
    assert dial_vars(dial)["origination_caller_id_number"] == demo_data.card_number


def test_keepcli_with_a_plain_numeric_cli_uses_it(cardd, demo_data, no_flow_errors):
    t = cardd.call(
        card_caller(demo_data, UK_MOBILE + "#", cli="15551234567", destination="cc.keepcli.noredial"), Callee(talk=5)
    )
    (dial,) = bridge_args(t)
    assert dial_vars(dial)["origination_caller_id_number"] == "15551234567"


@pytest.mark.parametrize(
    "cld",
    [
        "",
        "cc.",
        "cc..en",
        "CC.EN",
        "cc.$$$",
        "cc." + "x" * 300,
        "x" * 1000,
        "cc.en.'; DROP TABLE cdrs;--",
        "../../etc/passwd",
        "cc.chpassext",
        "cc.topupextZ",
        "cc.zz.yy",
        "ñ.ü",
        "cc.en\r\nX: y",
    ],
)
def test_malformed_cld_strings_still_get_a_polite_call(cardd, demo_data, no_flow_errors, cld):
    t = cardd.call(Caller(destination=cld, digits=[], type_after=6), timeout=60)
    assert t.hangup_cause is not None
    # Either the IVR ran with defaults (it greeted) or it refused politely.
    assert t.prompts, "the caller heard nothing"


# -- a broken ESL peer ------------------------------------------------------------------


@pytest.mark.parametrize(
    "junk",
    [
        b"",  # connects and leaves
        b"Content-Type: command/reply\n",  # a truncated frame, then gone
        b"Content-Length: 99999999999\n\n",  # an absurd body
        b"\xff\xfe\x00garbage\n\n" * 10,  # not even text
        b"Content-Type: command/reply\nReply-Text: +OK\n\n",  # a reply to nothing, no channel data
    ],
)
def test_a_broken_esl_peer_ends_its_own_call_only(cardd, demo_data, ledger, junk):
    host, port = cardd.address
    with socket.create_connection((host, port), timeout=5) as s:
        s.settimeout(5)
        if junk:
            s.sendall(junk)
        s.shutdown(socket.SHUT_WR)
        try:
            while s.recv(65536):
                pass
        except OSError:
            pass
    # The daemon serves the next call as usual.
    t = cardd.call(card_caller(demo_data, UK_MOBILE + "#", destination="cc.noredial"), Callee(talk=5))
    assert len(bridge_args(t)) == 1
    # billmsec rounded up (5 s of talk is 5020 ms on a real FreeSWITCH).
    assert ledger.cdrs_for(demo_data.card_id)[0].billed_seconds == -(-t.bridges[0].billmsec // 1000)
