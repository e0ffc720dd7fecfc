"""The running daemon: database, prompts, metrics and the ESL listener,
started and stopped in the right order. `cardd serve` and the tests both
run this."""

from __future__ import annotations

import functools
import logging
import os

import gevent

from cardd.billing import pins
from cardd.billing.identity import Identity
from cardd.billing.journal import SettlementJournal, journal_path
from cardd.billing.ledger import Ledger
from cardd.billing.prompt_store import PromptStore
from cardd.billing.vouchers import Vouchers
from cardd.cdr_http import CdrEndpoint, CdrStore
from cardd.db import Database
from cardd.demo import ensure_demo_data
from cardd.errors import ListenError
from cardd.hooks import ScriptHooks
from cardd.ivr import session as ivr
from cardd.ivr.call import Services
from cardd.metrics import Metrics
from cardd.nodes import NodeRegistry
from cardd.orphans import OrphanReconciler
from cardd.prompts import Prompts
from cardd.server import CallServer, listening_socket

log = logging.getLogger(__name__)

# How often the open-reservations gauges are refreshed from the database.
RESERVATIONS_GAUGE_INTERVAL_S = 15.0


def parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


class Daemon:
    def __init__(
        self,
        settings,
        *,
        metrics: Metrics | None = None,
        database: Database | None = None,
        serve_metrics: bool = True,
        serve_cdr: bool | None = None,
    ):
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.database = database
        self._own_database = database is None
        self._serve_metrics = serve_metrics
        # Like the metrics exporter, the CDR endpoint binds a fixed port: off
        # by default where the exporter is (in-process tests).
        self._serve_cdr = serve_metrics if serve_cdr is None else serve_cdr
        self.server: CallServer | None = None
        self._gauges: gevent.Greenlet | None = None
        self.journal: SettlementJournal | None = None
        self.reconciler: OrphanReconciler | None = None
        self.cdr_endpoint: CdrEndpoint | None = None
        self.nodes: NodeRegistry | None = None
        # A legs of the calls this process is handling: never orphans.
        self.live_calls: set[str] = set()

    def start(self, *, demo: bool = False) -> None:
        """Start every part; on any failure stop what was started (the embedded
        PostgreSQL above all) and raise."""
        d = self.settings.daemon
        # The addresses first: a taken port fails at once, before the database starts.
        listener = listening_socket(parse_address(d.listen), "daemon.listen")
        try:
            if self._serve_metrics:
                host, port = parse_address(d.metrics_listen)
                try:
                    self.metrics.serve(
                        host, port, read_timeout=d.http_read_timeout, max_connections=d.http_max_connections
                    )
                except OSError as exc:
                    raise ListenError(
                        f"cannot listen on {d.metrics_listen} (daemon.metrics_listen): "
                        f"{os.strerror(exc.errno) if exc.errno else exc}"
                    ) from None
            self._start_parts(listener, demo)
        except BaseException:
            listener.close()
            self.stop()
            raise

    def _start_parts(self, listener, demo: bool) -> None:
        d = self.settings.daemon
        # The PIN key first (created on the first start): a bad key file stops
        # cardd before anything hashes or checks a PIN (cardd/billing/pins.py).
        pins.use_key_of(d, create=True)
        if self.database is None:
            self.database = Database(d.dsn, d.data_dir, pool_size=d.pool_size)
            self.database.start()
        self.database.migrate()
        pins.refuse_new_key_for_hashed_pins(self.database.pool)
        # This process's heartbeat row: the reservations it grants carry its
        # name, and no other cardd settles them while it lives (cardd/nodes.py).
        self.nodes = NodeRegistry(self.database.pool, interval=d.node_heartbeat_interval)
        self.nodes.start()
        # Every repository times its queries into cardd_db_query_seconds{op}.
        observe = self.metrics.observe_query
        ledger = Ledger(
            self.database.pool,
            node=self.nodes.node,
            observe=observe,
            on_disagreement=lambda kind, *_: self.metrics.settlement_disagreements.labels(kind).inc(),
        )
        if demo:
            ensure_demo_data(self.database.pool)
        m = self.metrics
        hooks = ScriptHooks(
            on_load_error=lambda path, reason: m.script_load_errors.labels(reason).inc(),
            on_run_error=lambda path, reason: m.destination_check_errors.labels(reason).inc(),
            on_duration_error=lambda path, reason: m.duration_script_errors.labels(reason).inc(),
        )

        def journalled() -> None:
            m.db_errors.labels("settle").inc()
            m.settlements_journalled.inc()

        self.journal = SettlementJournal(
            journal_path(d.data_dir),
            ledger,
            on_journalled=journalled,
            on_replayed=m.settlements_replayed.inc,
            on_write_error=lambda exc: m.journal_write_errors.inc(),
        )
        journal = self.journal
        m.settlements_held.set_function(lambda: journal.held_count)
        m.initialise_instances(self.settings.instances)
        self._initialise_currencies()
        self.journal.start()
        store = CdrStore()
        self.reconciler = OrphanReconciler(
            ledger,
            self.journal,
            esl_address=parse_address(d.inbound_esl),
            esl_password=d.inbound_esl_password,
            live_a_uuids=lambda: set(self.live_calls),
            store=store,
            interval=d.orphan_check_interval,
            on_settled=lambda how: m.orphans_settled.labels(how).inc(),
            nodes=self.nodes,
            on_refused=lambda why: m.cdr_refused.labels(why).inc(),
            boxes={name: parse_address(address) for name, address in d.inbound_esl_boxes},
        )
        if self._serve_cdr and d.cdr_listen:
            if not d.cdr_credentials:
                log.warning(
                    "daemon.cdr_credentials is empty: every CDR POST is refused (401); set it "
                    "and json_cdr.conf.xml's cred to the same user:password"
                )
            endpoint = CdrEndpoint(
                parse_address(d.cdr_listen),
                store,
                on_cdr=self.reconciler.on_cdr,
                on_bad=lambda: m.esl_errors.inc(),
                credentials=d.cdr_credentials,
                allowed_sources=d.cdr_allowed_sources,
                read_timeout=d.http_read_timeout,
                max_connections=d.http_max_connections,
                on_refused=lambda why: (
                    m.cdr_refused.labels(why).inc()
                    if why in ("source", "credentials")
                    else m.http_refused.labels("cdr", why).inc()
                ),
            )
            try:
                endpoint.start()
                self.cdr_endpoint = endpoint
            except OSError as exc:
                # Calls matter more: run without it, loudly. Orphans are then
                # settled estimated and never corrected by their real CDR.
                log.error(
                    "CDR endpoint cannot listen on %s (%s): FreeSWITCH's CDRs will not reach cardd", d.cdr_listen, exc
                )
        self.reconciler.start()
        pool = self.database.pool
        services = Services(
            settings=self.settings,
            prompts=Prompts(d.sounds_dir),
            ledger=ledger,
            identity=Identity(pool, observe=observe),
            vouchers=Vouchers(pool, observe=observe),
            prompt_store=PromptStore(pool, observe=observe),
            metrics=m,
            hooks=hooks,
            journal=self.journal,
        )
        flow = functools.partial(self._tracked, functools.partial(ivr.run, services=services))
        self.server = CallServer(listener, flow, metrics=self.metrics, reply_timeout=d.esl_reply_timeout)
        self.server.start()
        self._gauges = gevent.spawn(self._refresh_reservation_gauges, RESERVATIONS_GAUGE_INTERVAL_S)
        if not d.outbound_proxy and "{proxy}" in d.dial_string:
            log.warning(
                "daemon.outbound_proxy is empty: calls cannot be dialled until it is set "
                "(cardd.yaml, or serve --outbound-proxy HOST:PORT)"
            )
        host, port = self.server.address[:2]
        log.info(
            "ready: FreeSWITCH outbound socket on %s:%d, metrics on %s, database %s",
            host,
            port,
            d.metrics_listen if self._serve_metrics else "(off)",
            "embedded" if not d.dsn else "external",
        )

    def _initialise_currencies(self) -> None:
        """The money counters exist, at zero, for every tariff's currency, and the
        carrier counters for every carrier."""
        assert self.database is not None
        try:
            with self.database.pool.connection() as conn:
                currencies = conn.execute("SELECT DISTINCT currency FROM tariffs").fetchall()
                carriers = conn.execute("SELECT name FROM carriers").fetchall()
        except Exception as exc:  # metrics must not stop cardd from starting
            log.warning("cannot list the tariffs' currencies and carriers for the metrics: %s", exc)
            return
        self.metrics.initialise_currencies(row[0] for row in currencies)
        self.metrics.initialise_carriers(row[0] for row in carriers)

    def _tracked(self, flow, channel) -> None:
        """Run one call's flow with its A leg in live_calls (the orphan check
        skips live calls; the A leg is known from the connect reply on)."""
        uuid = channel.uuid
        self.live_calls.add(uuid)
        try:
            flow(channel)  # in the call's greenlet: cardd.server set its UUID for the logs
        finally:
            self.live_calls.discard(uuid)

    def refresh_reservation_gauges(self) -> None:
        """cardd_open_reservations and cardd_expired_reservations, from the database
        (so they count every cardd process's calls, and survive a restart)."""
        assert self.database is not None
        with self.database.pool.connection() as conn:
            row = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE expires_at <= now())  FROM reservations WHERE status = 'open'"
            ).fetchone()
        assert row is not None
        self.metrics.open_reservations.set(row[0])
        self.metrics.expired_reservations.set(row[1])

    def _refresh_reservation_gauges(self, interval: float) -> None:
        while True:
            try:
                self.refresh_reservation_gauges()
            except Exception as exc:  # a database outage must not end the loop
                self.metrics.db_errors.labels("gauges").inc()
                log.warning("cannot refresh the reservation gauges: %s", exc)
            gevent.sleep(interval)

    def stop(self) -> None:
        if self._gauges is not None:
            self._gauges.kill()
            self._gauges = None
        if self.server is not None:
            self.server.stop(self.settings.daemon.shutdown_grace)
        # After the calls: their settlements may still need the journal.
        for part in (self.reconciler, self.cdr_endpoint, self.journal):
            if part is not None:
                part.stop()
        if self.journal is not None and self.journal.path.exists():
            try:
                self.journal.replay()  # a last chance while the database is open
            except Exception:
                log.exception("journal replay at stop failed; entries stay for the next start")
        if self.nodes is not None:
            # Gone cleanly: what this process leaves open is an orphan to the others now.
            self.nodes.stop()
            self.nodes = None
        self.metrics.stop_serving()
        if self._own_database and self.database is not None:
            self.database.close()
