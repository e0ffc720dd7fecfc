"""`cardd serve` killed with SIGKILL while calls are bridged, then restarted.

The real CLI as a subprocess (embedded PostgreSQL under its data_dir, which the
restarted process reuses), the simulator in this process with its inbound
Event Socket and mod_json_cdr poster. While cardd is dead the B legs' own
sched_hangup ends the calls (capture 16) and the CDR POSTs fail and are
retried, as mod_json_cdr's `retries`/`delay` do. The restarted cardd settles
every reservation once: 0 lost, 0 charged twice.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import gevent
import gevent.event
import pytest

from cardd.sim import Callee, Caller, Switch
from cardd.sim.cdr import JsonCdrPoster
from tests.test_orphans import Gate

REPO = Path(__file__).resolve().parent.parent
CALLS = 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO))


def wait_ready(proc: subprocess.Popen, log: Path, count: int) -> None:
    deadline = time.monotonic() + 90
    while log.read_text().count("ready:") < count:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"cardd serve did not come up:\n{log.read_text()}")
        gevent.sleep(0.1)


def card_show(config: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "cardd", "-c", str(config), "card", "show", "1000000001"],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


CRED = "freeswitch:cdr-s3cret"


def write_config(tmp_path: Path, port: int, cdr_port: int, inbound) -> Path:
    config = tmp_path / "cardd.yaml"
    config.write_text(
        "daemon:\n"
        f"  listen: 127.0.0.1:{port}\n"
        f"  metrics_listen: 127.0.0.1:{free_port()}\n"
        f"  cdr_listen: 127.0.0.1:{cdr_port}\n"
        f"  cdr_credentials: {CRED}\n"
        f"  inbound_esl: 127.0.0.1:{inbound.address[1]}\n"
        f"  data_dir: {tmp_path / 'var'}\n"
        "  outbound_proxy: 198.51.100.7:5060\n"
        "calling_card:\n  max_call_duration: 20\n"
        "instances:\n  cc: {}\n"
    )
    return config


def test_sigkill_mid_bridge_then_restart_settles_every_call_once_from_freeswitch_cdrs(tmp_path):
    switch = Switch()
    inbound = switch.listen_inbound()
    port, cdr_port = free_port(), free_port()
    # mod_json_cdr retrying every 0.25 s for 60 s: longer than a restart.
    poster = JsonCdrPoster(switch, f"http://127.0.0.1:{cdr_port}/cdr", retries=240, delay=0.25, cred=CRED)
    gate = Gate(switch)
    config = write_config(tmp_path, port, cdr_port, inbound)
    log = tmp_path / "serve.log"
    log.write_text("")
    with open(log, "a") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cardd", "-c", str(config), "serve", "--demo"],
            cwd=REPO,
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        wait_ready(proc, log, 1)
        calls = [
            switch.call(
                "127.0.0.1",
                port,
                Caller(cli=f"1555000000{i}", digits=["1000000001#", "1234#", "442071234567#"], type_after=6),
                Callee(talk=None),
            )
            for i in range(CALLS)
        ]
        deadline = time.monotonic() + 60
        while not (len(gate.bridged) == CALLS and all(e.is_set() for e in gate.bridged.values())):
            assert time.monotonic() < deadline, [c.transcript.text() for c in calls]
            gevent.sleep(0.05)
        assert "open reservations: 5" in card_show(config)

        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        gate.release([c.a_uuid for c in calls])
        transcripts = [c.wait(60) for c in calls]
        for t in transcripts:
            # Nobody was there to hang up: the B leg's own timer ended the call.
            assert t.bridges[0].b_hangup_cause == "ALLOTTED_TIMEOUT"
            assert 19_000 < t.bridges[0].billmsec <= 21_000  # whole-second timer (fact 22)
        assert not poster.posted  # cardd is dead: every POST failed so far

        with open(log, "a") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "cardd", "-c", str(config), "serve", "--demo"],
                cwd=REPO,
                env=_env(),
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        wait_ready(proc, log, 2)
        poster.wait(90)
        assert not poster.failed
        deadline = time.monotonic() + 30
        while True:
            shown = card_show(config)
            if "open reservations: 0" in shown and "(estimated)" not in shown:
                break
            assert time.monotonic() < deadline, shown
            gevent.sleep(0.5)
        # 5 calls of 20 s at the 44 rate (0.10 + 0.03 each), charged once each.
        assert "balance    9.35000 USD" in shown, shown
        assert len(re.findall(r"\s20 s\s", shown)) == CALLS, shown
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        poster.close()
        inbound.stop()
    assert "Traceback" not in log.read_text()


class SetupGate:
    """Holds a call's clock at its first playback after the destination was
    asked (the duration announcement: granted, bridge not sent yet)."""

    def __init__(self, switch: Switch):
        self.switch = switch
        self.asked: dict[str, int] = {}
        self.held: dict[str, gevent.event.Event] = {}
        self.release = gevent.event.Event()
        switch.inbound.append(self)

    def offer(self, name, headers) -> None:
        hd = dict(headers)
        a = hd.get("Unique-ID", "")
        found = self.switch.find(a)
        if name != "CHANNEL_EXECUTE" or found is None or found[0].a.uuid != a:
            return
        app = hd.get("Application")
        if app == "play_and_get_digits":
            self.asked[a] = self.asked.get(a, 0) + 1  # card number, PIN, destination
        elif app == "playback" and self.asked.get(a) == 3 and a not in self.held:
            self.held[a] = gevent.event.Event()

            def hold() -> None:
                self.held[a].set()
                self.release.wait()

            found[0].clock.call_later(0, hold)


def test_sigkill_during_call_set_up_releases_every_undialled_grant_at_no_cost(tmp_path):
    """Issue 12 section 2: granted, never dialled, cardd SIGKILLed: the restarted
    cardd releases each reservation at 0 (it charged each its full grant)."""
    switch = Switch()
    inbound = switch.listen_inbound()
    port, cdr_port = free_port(), free_port()
    gate = SetupGate(switch)
    config = write_config(tmp_path, port, cdr_port, inbound)
    log = tmp_path / "serve.log"
    log.write_text("")
    with open(log, "a") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cardd", "-c", str(config), "serve", "--demo"],
            cwd=REPO,
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    calls = []
    try:
        wait_ready(proc, log, 1)
        calls = [
            switch.call(
                "127.0.0.1",
                port,
                Caller(cli=f"1555000000{i}", digits=["1000000001#", "1234#", "442071234567#"], type_after=6),
                Callee(talk=10),
            )
            for i in range(CALLS)
        ]
        deadline = time.monotonic() + 60
        while not (len(gate.held) == CALLS and all(e.is_set() for e in gate.held.values())):
            assert time.monotonic() < deadline, [c.transcript.text()[-800:] for c in calls]
            gevent.sleep(0.05)
        assert f"open reservations: {CALLS}" in card_show(config)

        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        with open(log, "a") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "cardd", "-c", str(config), "serve", "--demo"],
                cwd=REPO,
                env=_env(),
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        wait_ready(proc, log, 2)
        deadline = time.monotonic() + 30
        while "open reservations: 0" not in (shown := card_show(config)):
            assert time.monotonic() < deadline, shown
            gevent.sleep(0.5)
        # Money: 10.00000 in, nothing charged, nothing estimated, nothing open.
        assert "balance    10.00000 USD" in shown, shown
        assert "(estimated)" not in shown, shown
        assert len(re.findall(r"NOT_DIALLED", shown)) == CALLS, shown
    finally:
        gate.release.set()
        for c in calls:
            c.wait(60)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        inbound.stop()
    assert "Traceback" not in log.read_text()
