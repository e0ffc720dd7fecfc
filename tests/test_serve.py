"""`cardd serve` as a real process: start on the embedded database, take
calls, drain on SIGTERM; and `cardd call` against it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cardd.sim import Callee, Caller, Switch

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    def __init__(self, proc: subprocess.Popen, port: int, config: Path, log: Path):
        self.proc, self.port, self.config, self.log = proc, port, config, log

    def stderr(self) -> str:
        return self.log.read_text()

    def cardd(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cardd", "-c", str(self.config), *args],
                              cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout)


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO))


@pytest.fixture
def served(tmp_path):
    port = free_port()
    config = tmp_path / "cardd.yaml"
    config.write_text(
        "daemon:\n"
        f"  listen: 127.0.0.1:{port}\n"
        f"  metrics_listen: 127.0.0.1:{free_port()}\n"
        f"  data_dir: {tmp_path / 'var'}\n"
        "  shutdown_grace: 4\n"
        "  outbound_proxy: 198.51.100.7:5060\n"
        "instances:\n  cc: {}\n")
    log = tmp_path / "serve.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "cardd", "-c", str(config), "serve", "--demo"],
                                cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 90
    while "ready:" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"cardd serve did not come up:\n{log.read_text()}")
        time.sleep(0.1)
    yield Served(proc, port, config, log)
    if proc.poll() is None:
        # SIGTERM first: cardd then stops its embedded PostgreSQL too.
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_serve_logs_ready_with_its_addresses_and_takes_a_call(served):
    assert f"127.0.0.1:{served.port}" in served.stderr()
    done = served.cardd("call", "--digits", "1000000001#", "--digits", "1234#",
                        "--digits", "442071234567#", "--talk", "42")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert '"Welcome." [en/welcome]' in out          # prompts shown as catalogue text
    assert "types   1000000001#" in out
    assert "sched_hangup +3600 ALLOTTED_TIMEOUT" in out
    assert "bridge to 442071234567: SUCCESS, billsec 42" in out
    show = served.cardd("card", "show", "1000000001")
    assert show.returncode == 0, show.stderr
    # 42 s to London on the demo tariff (rate 44: 0.10 + 0.03 + 2 * 0.006)
    assert "9.85800" in show.stdout


def test_sigterm_drains_calls_and_exits_0_without_traceback(served):
    switch = Switch(virtual_clock=False)
    # Callers who stay silent: each call sits in identification on the wall clock.
    calls = [switch.call("127.0.0.1", served.port, Caller(digits=[], cli=f"1555000000{i}"))
             for i in range(3)]
    time.sleep(1.0)
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(timeout=30) == 0
    for call in calls:
        # cardd let go of every call (FreeSWITCH then ends the caller's leg
        # when its running app returns, as the dialplan has nothing left).
        assert call.closed.wait(30)
        assert call.transcript.closed_by in ("exit", "daemon-close")
    err = served.stderr()
    assert "Traceback" not in err
    assert "stopped" in err


def test_new_calls_are_refused_once_draining_starts(served):
    switch = Switch(virtual_clock=False)
    call = switch.call("127.0.0.1", served.port, Caller(digits=[]))
    time.sleep(0.5)
    served.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    with pytest.raises(OSError):
        switch.call("127.0.0.1", served.port, Caller(digits=[]))
    assert served.proc.wait(timeout=30) == 0
    assert call.closed.wait(30)


def test_sigterm_lets_a_bridged_call_finish_within_the_grace_time(served):
    switch = Switch(virtual_clock=False)
    caller = Caller(digits=["1000000001#", "1234#", "442071234567#"], type_after=0.3,
                    digit_interval=0.02)
    call = switch.call("127.0.0.1", served.port, caller, Callee(answer_after=0.2, talk=2.0))
    deadline = time.monotonic() + 30
    while not any(e.kind == "bridged" for e in call.transcript.entries):
        assert time.monotonic() < deadline, call.transcript.text()
        time.sleep(0.05)
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(timeout=30) == 0
    (bridge,) = call.transcript.bridges
    assert bridge.disposition == "SUCCESS" and bridge.b_hangup_cause == "NORMAL_CLEARING"
    assert 1900 <= bridge.billmsec <= 2600
    show = served.cardd("card", "show", "1000000001")
    # 2 s to the 44 rate: 0.10 connect + the whole first 30 s interval (0.03)
    assert "9.87000" in show.stdout, show.stdout
