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
from cardd.ivr.call import CallLog

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


def test_json_lines_parse_and_carry_the_call_uuid_of_a_call_log(restore_logging):
    stream = capture("json")
    call_uuid = str(uuid.uuid4())
    call_log = CallLog(logging.getLogger("cardd.ivr.session"), {"uuid": call_uuid})
    call_log.warning("unknown CLD token %r in %r", 'x"y', "cc.x\"y\nz")
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


def test_call_uuid_given_as_extra_and_bracketed_non_uuid_left_alone(restore_logging):
    stream = capture("json")
    log = logging.getLogger("cardd.x")
    log.info("settled", extra={"call_uuid": "abc-123"})
    log.info("[not a uuid] kept")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["call_uuid"] == "abc-123"
    assert second["msg"] == "[not a uuid] kept" and "call_uuid" not in second


def test_text_lines_are_key_value_with_the_call_uuid(restore_logging):
    stream = capture("text")
    call_uuid = str(uuid.uuid4())
    CallLog(logging.getLogger("cardd.ivr.dial"), {"uuid": call_uuid}).info('bridge to "44" ok')
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
    config.write_text(f"daemon:\n  dsn: \"{dsn}\"\n  log_format: json\n  log_level: info\n")
    rates = tmp_path / "r.csv"
    rates.write_text("prefix,price_1,interval_1,price_n,interval_n\n44,0.06,30,0.06,6\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for argv in (["tariff", "add", "t", "--currency", "USD"], ["rate", "import", str(rates), "--tariff", "t"]):
        done = subprocess.run([sys.executable, "-m", "cardd", "-c", str(config), *argv], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert any(r["msg"].startswith("rate import: tariff t, 1 rows") for r in records)
    # every stderr line of the process is JSON (the count line is on stdout)
    assert all(line.startswith("{") for line in done.stderr.splitlines())
