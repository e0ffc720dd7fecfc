"""cardd running in-process on a test database, and simulated calls to it."""

from __future__ import annotations

import pytest

from cardd.billing import pins
from cardd.config import load_settings
from cardd.daemon import Daemon
from cardd.metrics import Metrics
from cardd.prompts import Prompts
from cardd.sim import Switch

PROXY = "198.51.100.7:5060"


def make_settings(yaml_text: str | None = None, *, tmp_path=None, **daemon):
    """Settings for a test: built-in defaults, or a cardd.yaml written from
    `yaml_text`; the daemon listens on an ephemeral port."""
    path = None
    if yaml_text is not None:
        path = tmp_path / "cardd.yaml"
        path.write_text(yaml_text)
    # One PIN key for every in-process daemon (dbfixtures.pin_key), whatever its data_dir:
    # the test's cards were hashed with it.
    base = {
        "listen": "127.0.0.1:0",
        "outbound_proxy": PROXY,
        "shutdown_grace": 5,
        "pin_key_file": pins.installed_key().path,
    }
    base.update(daemon)
    return load_settings(str(path) if path else None).with_daemon(**base)


class Cardd:
    """A started daemon plus a way to call it."""

    def __init__(self, daemon: Daemon):
        self.daemon = daemon
        self.metrics = daemon.metrics
        self.prompts = Prompts(daemon.settings.daemon.sounds_dir)

    @property
    def address(self) -> tuple[str, int]:
        return self.daemon.server.address[:2]

    def call(self, caller, callees=None, *, timeout: float = 120.0):
        """Place one call and return its transcript. The timeout is a deadline for a
        stuck call, not an expected duration: a busy machine may be slow."""
        return self.dial(caller, callees).wait(timeout)

    def dial(self, caller, callees=None, switch: Switch | None = None):
        """Start a call and return the SimCall (for concurrent calls)."""
        host, port = self.address
        return (switch or Switch()).call(host, port, caller, callees)

    def heard(self, transcript) -> list[str]:
        """The prompt ids the caller heard, in order."""
        out = []
        for path in transcript.prompts:
            found = self.prompts.id_for_path(path)
            out.append(found[1] if found else path)
        return out

    def metric(self, name: str, **labels) -> float:
        value = self.metrics.registry.get_sample_value(name, labels or None)
        return value or 0.0


def start_cardd(database, settings=None) -> Cardd:
    daemon = Daemon(settings or make_settings(), database=database, metrics=Metrics(), serve_metrics=False)
    daemon.start()
    return Cardd(daemon)


@pytest.fixture
def cardd(database):
    running = start_cardd(database)
    yield running
    running.daemon.stop()


@pytest.fixture
def cardd_with():
    """cardd with settings of the test's choosing: cardd_with(database, **daemon)."""
    started = []

    def start(database, yaml_text=None, *, tmp_path=None, **daemon):
        running = start_cardd(database, make_settings(yaml_text, tmp_path=tmp_path, **daemon))
        started.append(running)
        return running

    yield start
    for running in started:
        running.daemon.stop()
