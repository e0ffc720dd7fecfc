"""`cardd serve` as a real process: start on the embedded database, take
calls, drain on SIGTERM; and `cardd call` against it."""

from __future__ import annotations

import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from cardd.sim import Callee, Caller, Switch

REPO = Path(__file__).resolve().parent.parent


def wait_until(condition, timeout: float = 60, what: str = "condition") -> None:
    """Poll `condition` until true; the timeout is a deadline for a stuck test, not a wait."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


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
        return subprocess.run(
            [sys.executable, "-m", "cardd", "-c", str(self.config), *args],
            cwd=REPO,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )


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
        f"  cdr_listen: 127.0.0.1:{free_port()}\n"
        f"  data_dir: {tmp_path / 'var'}\n"
        "  shutdown_grace: 4\n"
        "  outbound_proxy: 198.51.100.7:5060\n"
        "instances:\n  cc: {}\n"
    )
    log = tmp_path / "serve.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cardd", "-c", str(config), "serve", "--demo"],
            cwd=REPO,
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
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
    done = served.cardd(
        "call", "--digits", "1000000001#", "--digits", "1234#", "--digits", "442071234567#", "--talk", "42"
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert '"Welcome." [en/welcome]' in out  # prompts shown as catalogue text
    assert "types   1000000001#" in out
    assert "sched_hangup +3600 ALLOTTED_TIMEOUT" in out
    assert "bridge to 442071234567: SUCCESS, billsec 42" in out
    show = served.cardd("card", "show", "1000000001")
    assert show.returncode == 0, show.stderr
    # 42 s talked (the simulated BYE comes a few ms later, so 42 or 43 whole seconds are
    # billed) to London on the demo tariff: 0.10 + 0.03 for the first 30 s, 0.006 per 6 s after
    seconds, cost = re.search(r"442071234567\s+(\d+) s\s+(\d+\.\d{5})", show.stdout).groups()
    assert int(seconds) in (42, 43)
    assert Decimal(cost) == Decimal("0.13") + Decimal("0.006") * math.ceil((int(seconds) - 30) / 6)
    assert f"balance    {Decimal('10.00000') - Decimal(cost)} USD" in show.stdout


def test_sigterm_drains_calls_and_exits_0_without_traceback(served):
    switch = Switch(virtual_clock=False)
    # Callers who stay silent: each call sits in identification on the wall clock.
    calls = [switch.call("127.0.0.1", served.port, Caller(digits=[], cli=f"1555000000{i}")) for i in range(3)]
    for call in calls:
        # wait_until calls the lambda before the loop moves on: it sees this `call`
        wait_until(lambda: call.transcript.prompts, what="the card-number prompt")  # noqa: B023
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
    wait_until(lambda: call.transcript.prompts, what="the card-number prompt")
    served.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: "no longer taking calls" in served.stderr(), what="the drain to start")
    assert served.proc.poll() is None  # still draining the first call
    with pytest.raises(OSError):
        switch.call("127.0.0.1", served.port, Caller(digits=[]))
    assert served.proc.wait(timeout=30) == 0
    assert call.closed.wait(30)


def test_sigterm_lets_a_bridged_call_finish_within_the_grace_time(served):
    switch = Switch(virtual_clock=False)
    caller = Caller(digits=["1000000001#", "1234#", "442071234567#"], type_after=0.3, digit_interval=0.02)
    call = switch.call("127.0.0.1", served.port, caller, Callee(answer_after=0.2, talk=2.0))
    deadline = time.monotonic() + 30
    while not any(e.kind == "bridged" for e in call.transcript.entries):
        assert time.monotonic() < deadline, call.transcript.text()
        time.sleep(0.05)
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(timeout=30) == 0
    (bridge,) = call.transcript.bridges
    assert bridge.disposition == "SUCCESS" and bridge.b_hangup_cause == "NORMAL_CLEARING"
    assert bridge.billmsec >= 1900  # talked to the end, not cut (a busy machine may add, never take)
    show = served.cardd("card", "show", "1000000001")
    # 2 s to the 44 rate: 0.10 connect + the whole first 30 s interval (0.03)
    assert "9.87000" in show.stdout, show.stdout


# --- signals and ports --------------------------------------------------------------------------


def postmaster_pid(served: Served) -> int:
    return int((served.config.parent / "var" / "pg" / "postmaster.pid").read_text().split()[0])


def running(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGINT, signal.SIGTERM])
def test_each_stop_signal_ends_serve_cleanly_and_stops_its_postgresql(served, signum):
    pg = postmaster_pid(served)
    assert running(pg)
    served.proc.send_signal(signum)
    assert served.proc.wait(timeout=60) == 0
    err = served.stderr()
    assert f"stopping on {signum.name}" in err and "stopped" in err
    assert "Traceback" not in err
    wait_until(lambda: not running(pg), what="the embedded PostgreSQL to stop")
    assert not (served.config.parent / "var" / "pg" / "postmaster.pid").exists()


def test_a_signal_while_postgresql_starts_still_stops_it(tmp_path):
    config = tmp_path / "cardd.yaml"
    config.write_text(
        f"daemon:\n  listen: 127.0.0.1:{free_port()}\n  metrics_listen: 127.0.0.1:{free_port()}\n"
        f'  cdr_listen: ""\n  data_dir: {tmp_path / "var"}\n'
    )
    log = tmp_path / "serve.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cardd", "-c", str(config), "serve"],
            cwd=tmp_path,
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        wait_until(
            lambda: "starting embedded PostgreSQL" in log.read_text() or proc.poll() is not None,
            timeout=90,
            what="the embedded PostgreSQL to start",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "stopping on SIGTERM" in text and "Traceback" not in text
    assert not (tmp_path / "var" / "pg" / "postmaster.pid").exists()


def test_a_second_serve_on_a_taken_port_says_so_in_one_line_and_exits_2(served):
    second = subprocess.run(
        [sys.executable, "-m", "cardd", "-c", str(served.config), "serve"],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert second.returncode == 2
    assert second.stderr.strip().splitlines()[-1] == (
        f"cardd: cannot listen on 127.0.0.1:{served.port} (daemon.listen): Address already in use"
    )
    assert "Traceback" not in second.stderr
    # the first one is untouched: its database still answers
    assert served.proc.poll() is None
    show = served.cardd("card", "show", "1000000001")
    assert show.returncode == 0, show.stderr


def test_a_taken_metrics_port_is_one_line_and_starts_no_database(served, tmp_path):
    metrics = next(line.split()[-1] for line in served.config.read_text().splitlines() if "metrics_listen" in line)
    other = tmp_path / "other.yaml"
    other.write_text(
        f"daemon:\n  listen: 127.0.0.1:{free_port()}\n  metrics_listen: {metrics}\n"
        f'  cdr_listen: ""\n  data_dir: {tmp_path / "other-var"}\n'
    )
    second = subprocess.run(
        [sys.executable, "-m", "cardd", "-c", str(other), "serve"],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert second.returncode == 2
    assert second.stderr.strip().splitlines()[-1] == (
        f"cardd: cannot listen on {metrics} (daemon.metrics_listen): Address already in use"
    )
    assert not (tmp_path / "other-var").exists()  # the ports come first, then the database
