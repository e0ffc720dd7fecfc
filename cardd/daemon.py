"""The running daemon: database, prompts, metrics and the ESL listener,
started and stopped in the right order. `cardd serve` and the tests both
run this."""

from __future__ import annotations

import functools
import logging

from cardd.billing.ledger import Ledger
from cardd.db import Database
from cardd.demo import ensure_demo_data
from cardd.hooks import ScriptHooks
from cardd.ivr import session as ivr
from cardd.ivr.call import Services
from cardd.metrics import Metrics
from cardd.prompts import Prompts
from cardd.server import CallServer

log = logging.getLogger(__name__)


def parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


class Daemon:
    def __init__(self, settings, *, metrics: Metrics | None = None,
                 database: Database | None = None, serve_metrics: bool = True):
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.database = database
        self._own_database = database is None
        self._serve_metrics = serve_metrics
        self.server: CallServer | None = None

    def start(self, *, demo: bool = False) -> None:
        d = self.settings.daemon
        if self.database is None:
            self.database = Database(d.dsn, d.data_dir, pool_size=d.pool_size)
            self.database.start()
        self.database.migrate()
        ledger = Ledger(self.database.pool)
        if demo:
            ensure_demo_data(self.database.pool)
        m = self.metrics
        hooks = ScriptHooks(
            on_load_error=lambda path, reason: m.script_load_errors.labels(reason).inc(),
            on_run_error=lambda path, reason: m.destination_check_errors.labels(reason).inc(),
            on_duration_error=lambda path, reason: m.duration_script_errors.labels(reason).inc())
        services = Services(settings=self.settings, prompts=Prompts(d.sounds_dir),
                            ledger=ledger, metrics=m, hooks=hooks)
        if self._serve_metrics:
            host, port = parse_address(d.metrics_listen)
            self.metrics.serve(host, port)
        self.server = CallServer(parse_address(d.listen),
                                 functools.partial(ivr.run, services=services),
                                 metrics=self.metrics, reply_timeout=d.esl_reply_timeout)
        self.server.start()
        if not d.outbound_proxy and "{proxy}" in d.dial_string:
            log.warning("daemon.outbound_proxy is empty: calls cannot be dialled until it is set "
                        "(cardd.yaml, or serve --outbound-proxy HOST:PORT)")
        host, port = self.server.address[:2]
        log.info("ready: FreeSWITCH outbound socket on %s:%d, metrics on %s, database %s",
                 host, port, d.metrics_listen if self._serve_metrics else "(off)",
                 "embedded" if not d.dsn else "external")

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(self.settings.daemon.shutdown_grace)
        if self._own_database and self.database is not None:
            self.database.close()
