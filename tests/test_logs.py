"""Log lines: JSON (one json.loads-able object per line) and key=value text, both carrying the call UUID."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from cardd import cli, logs

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def capture(fmt: str) -> io.StringIO:
    stream = io.StringIO()
    logs.setup_logging("debug", fmt, stream)
    return stream


def test_json_lines_parse_and_carry_the_call_uuid_of_the_call_context(restore_logging):
    stream = capture("json")
    call_uuid = str(uuid.uuid4())
    with logs.call_context(call_uuid):
        logging.getLogger("cardd.ivr.session").warning("unknown CLD token %r in %r", 'x"y', 'cc.x"y\nz')
    logging.getLogger("cardd.server").info("ready: tab\there, unicode \u00e9\u20ac")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["call_uuid"] == call_uuid
    assert first["msg"] == "unknown CLD token 'x\"y' in 'cc.x\"y\\nz'"
    assert first["level"] == "WARNING" and first["logger"] == "cardd.ivr.session"
    assert first["time"].endswith("Z") and first["time"][10] == "T"
    assert "call_uuid" not in second
    assert second["msg"] == "ready: tab\there, unicode \u00e9\u20ac"


def test_json_line_of_a_multiline_message_and_exception_stays_one_line(restore_logging):
    stream = capture("json")
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        logging.getLogger("cardd.x").exception("failed:\n%s", "details")
    (line,) = stream.getvalue().splitlines()
    obj = json.loads(line)
    assert obj["msg"] == "failed:\ndetails"
    assert "ValueError: boom" in obj["exc"] and "Traceback" in obj["exc"]


def test_call_uuid_given_as_extra_wins_and_a_message_is_never_parsed_for_one(restore_logging):
    stream = capture("json")
    log = logging.getLogger("cardd.x")
    bracketed = f"[{uuid.uuid4()}] kept as written"
    with logs.call_context("the-call"):
        log.info("settled", extra={"call_uuid": "abc-123"})  # e.g. the ESL reader naming its call
    log.info("[not a uuid] kept")
    log.info(bracketed)
    first, second, third = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["call_uuid"] == "abc-123"
    assert second["msg"] == "[not a uuid] kept" and "call_uuid" not in second
    assert third["msg"] == bracketed and "call_uuid" not in third


def test_text_lines_are_key_value_with_the_call_uuid(restore_logging):
    stream = capture("text")
    call_uuid = str(uuid.uuid4())
    with logs.call_context(call_uuid):
        logging.getLogger("cardd.ivr.dial").info('bridge to "44" ok')
    logging.getLogger("cardd").info("stopped")
    first, second = stream.getvalue().splitlines()
    assert f"level=INFO logger=cardd.ivr.dial call_uuid={call_uuid} " in first
    assert first.endswith('msg="bridge to \\"44\\" ok"')
    assert first.startswith("time=")
    assert second.endswith("logger=cardd msg=stopped")


def test_cli_setup_logging_uses_the_configured_format(restore_logging, capsys):
    cli.setup_logging("info", "json")
    logging.getLogger("cardd.t").info("hello")
    logging.getLogger("cardd.t").debug("hidden")
    (line,) = capsys.readouterr().err.splitlines()
    assert json.loads(line)["msg"] == "hello"


def test_a_cardd_process_with_log_format_json_writes_json_lines(dsn, tmp_path):
    config = tmp_path / "cardd.yaml"
    config.write_text(f'daemon:\n  dsn: "{dsn}"\n  log_format: json\n  log_level: info\n')
    rates = tmp_path / "r.csv"
    rates.write_text("prefix,price_1,interval_1,price_n,interval_n\n44,0.06,30,0.06,6\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for argv in (["tariff", "add", "t", "--currency", "USD"], ["rate", "import", str(rates), "--tariff", "t"]):
        done = subprocess.run(
            [sys.executable, "-m", "cardd", "-c", str(config), *argv],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert any(r["msg"].startswith("rate import: tariff t, 1 rows") for r in records)
    # every stderr line of the process is JSON (the count line is on stdout)
    assert all(line.startswith("{") for line in done.stderr.splitlines())


def test_lines_logged_inside_a_call_context_carry_its_uuid_per_greenlet(restore_logging):
    import gevent

    stream = capture("json")
    ledger_log = logging.getLogger("cardd.billing.ledger")

    def call(call_uuid: str) -> None:
        with logs.call_context(call_uuid):
            ledger_log.info("grant for %s", call_uuid)
            gevent.sleep(0.01)  # the other call's greenlet runs meanwhile
            ledger_log.info("settle for %s", call_uuid)
        ledger_log.info("after the call")

    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    gevent.joinall([gevent.spawn(call, a), gevent.spawn(call, b)])
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    inside = [r for r in records if r["msg"] != "after the call"]
    assert len(inside) == 4
    assert all(r["msg"].endswith(r["call_uuid"]) for r in inside)
    assert all("call_uuid" not in r for r in records if r["msg"] == "after the call")


def test_every_line_of_a_real_call_carries_its_uuid_in_json(cardd, demo_data, restore_logging):
    from cardd.sim import Callee, Caller

    stream = capture("json")
    caller = Caller(
        cli="15555550100", destination="cc", digits=[demo_data.card_number + "#", demo_data.pin + "#", "447700900123#"]
    )
    transcript = cardd.call(caller, Callee(talk=31))
    assert transcript.bridges
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    grant = [r for r in records if r["logger"] == "cardd.billing.ledger" and r["msg"].startswith("grant ")]
    assert len(grant) == 1
    call_uuid = transcript.a_uuid
    assert call_uuid and grant[0]["call_uuid"] == call_uuid
    # the ledger's own lines, without any prefix, are tagged with the call they belong to
    for r in records:
        if r["logger"].startswith(("cardd.billing", "cardd.ivr", "cardd.server", "cardd.esl")):
            assert r.get("call_uuid") == call_uuid, r
        # the UUID is a field, never text in the message
        assert f"[{call_uuid}]" not in r["msg"], r
    assert any(r["logger"].startswith("cardd.ivr") for r in records)
