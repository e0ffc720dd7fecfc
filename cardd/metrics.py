"""Prometheus metrics, all in one place.

No card numbers, CLIs or UUIDs in labels. Tests pass their own registry.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Every label value cardd can give, created at start with zero, so that each
# series exists from the first scrape: `increase()` needs a sample before the
# first event, and an alert on `result="answered"` needs that series to exist
# before the first answer (tests/test_monitoring.py checks the code uses no other).
CALL_OUTCOMES = (
    "bridged",
    "failed",
    "caller_hung_up",
    "auth_failed",
    "card_refused",
    "blacklisted",
    "no_language",
    "input_timeout",
    "service_unavailable",
    "not_accepting",
    "topup",
    "throttled",
)
AUTH_FAILURE_REASONS = (
    "unknown",
    "wrong_pin",
    "empty_pin",
    "blocked",
    "expired",
    "low_balance",
    "throttled",
    "blacklisted",
    "malformed",
    "cli_not_mapped",
    "voucher",
)
BRIDGE_RESULTS = ("answered", "failed")
DB_ERROR_STEPS = ("call", "settle", "gauges")
IVR_STEPS = ("greeting", "identify", "balance", "destination", "dial")
SCRIPT_LOAD_ERROR_REASONS = ("missing", "unreadable", "syntax", "exception", "timeout", "no_function")
DESTINATION_CHECK_ERROR_REASONS = ("exception", "not_bool", "timeout")
DURATION_SCRIPT_ERROR_REASONS = ("start_failed", "timeout", "exit_status", "bad_output", "negative")
CDR_REFUSED_REASONS = ("source", "credentials", "call_up")
DISAGREEMENT_KINDS = ("repeat_differs", "estimate_below_real", "estimate_shortfall")
HTTP_REFUSED_REASONS = ("cap", "timeout", "too_large", "bad_request")
ORPHAN_SETTLEMENTS = ("cdr", "estimated")


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.calls_active = Gauge("cardd_calls_active", "Calls being handled now", registry=r)
        # `instance` is Prometheus's own label (the scrape target): the
        # calling-card instance is `cc_instance`, one of cardd.yaml's
        # instances or "other" (never a raw CLD string: it is unbounded).
        self.instance_calls_active = Gauge(
            "cardd_instance_calls_active",
            "Calls being handled now, by calling-card instance",
            ["cc_instance"],
            registry=r,
        )
        self.calls = Counter("cardd_calls_total", "Finished calls by outcome", ["outcome"], registry=r)
        self.auth_failures = Counter("cardd_auth_failures_total", "Failed identifications", ["reason"], registry=r)
        self.bridges = Counter("cardd_bridge_attempts_total", "Bridge attempts by result", ["result"], registry=r)
        self.billed_seconds = Counter("cardd_billed_seconds_total", "Billed seconds", ["currency"], registry=r)
        self.revenue = Counter("cardd_revenue_total", "Money charged", ["currency"], registry=r)
        self.db_errors = Counter("cardd_db_errors_total", "Database failures", ["step"], registry=r)
        self.esl_errors = Counter("cardd_esl_protocol_errors_total", "Malformed ESL input", registry=r)
        self.unknown_cld_tokens = Counter("cardd_unknown_cld_tokens_total", "CLD tokens cardd did not know", registry=r)
        self.script_load_errors = Counter(
            "cardd_script_load_errors_total", "Custom scripts that failed to load (and are off)", ["reason"], registry=r
        )
        self.destination_check_errors = Counter(
            "cardd_destination_check_errors_total",
            "Destination-check runs that failed (call refused)",
            ["reason"],
            registry=r,
        )
        self.duration_script_errors = Counter(
            "cardd_duration_script_errors_total",
            "Duration-script runs that failed (computed duration said)",
            ["reason"],
            registry=r,
        )
        # Observed once per call, when its first bridge is sent (ivr/dial.py):
        # greeting, card, PIN and destination, the caller's typing included.
        self.setup_seconds = Histogram(
            "cardd_call_setup_seconds",
            "From the call's connect to its first bridge sent",
            registry=r,
            buckets=(1, 2.5, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300),
        )
        # Bridge answers are cardd_bridge_attempts_total{result="answered"}.
        # The IVR wraps each step of IVR_STEPS in `with metrics.step("identify"):`
        # (caller think time included); `balance` is working out the balance
        # announced, `dial` is from the destination typed to the bridge sent
        # (rating, reservation, the duration announcement), not the talk time.
        self.ivr_step_seconds = Histogram(
            "cardd_ivr_step_seconds",
            "Duration of one IVR step",
            ["step"],
            registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120),
        )
        self.db_query_seconds = Histogram(
            "cardd_db_query_seconds",
            "Billing database operations (one transaction each)",
            ["op"],
            registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.open_reservations = Gauge(
            "cardd_open_reservations", "Open reservations in the database (all cardd processes)", registry=r
        )
        self.expired_reservations = Gauge(
            "cardd_expired_reservations", "Open reservations past their expiry (orphan candidates)", registry=r
        )
        # Issue 12: CDRs refused at the door or for a leg still up, settlements that
        # disagree with the first one (ledger.DisagreementHook kinds), and connections
        # the HTTP listeners (cardd/httpd.py) closed before a request was served.
        self.cdr_refused = Counter("cardd_cdr_refused_total", "CDR POSTs refused, by reason", ["reason"], registry=r)
        self.settlement_disagreements = Counter(
            "cardd_settlement_disagreements_total",
            "Settlements that differ from the one already recorded (logged with both figures)",
            ["kind"],
            registry=r,
        )
        self.http_refused = Counter(
            "cardd_http_refused_total",
            "HTTP connections refused or closed unserved, by listener and reason",
            ["listener", "reason"],
            registry=r,
        )
        for reason in CDR_REFUSED_REASONS:
            self.cdr_refused.labels(reason)
        for kind in DISAGREEMENT_KINDS:
            self.settlement_disagreements.labels(kind)
        for listener in ("cdr", "metrics"):
            for reason in HTTP_REFUSED_REASONS:
                self.http_refused.labels(listener, reason)
        # Per carrier (least-cost routing): `carrier` is an operator-chosen name from
        # the carriers table, a bounded set. ASR = answers / attempts, ACD =
        # talk seconds / answers; margin = revenue - buy cost.
        self.carrier_attempts = Counter(
            "cardd_carrier_attempts_total", "Bridge attempts per carrier", ["carrier"], registry=r
        )
        self.carrier_answers = Counter(
            "cardd_carrier_answers_total", "Answered attempts per carrier", ["carrier"], registry=r
        )
        self.carrier_failovers = Counter(
            "cardd_carrier_failovers_total",
            "Attempts that failed on the carrier and went on to the next route",
            ["carrier"],
            registry=r,
        )
        self.carrier_talk_seconds = Counter(
            "cardd_carrier_talk_seconds_total",
            "Billed seconds of answered attempts per carrier",
            ["carrier"],
            registry=r,
        )
        self.carrier_buy_cost = Counter(
            "cardd_carrier_buy_cost_total", "What the carrier charges (buy deck)", ["carrier", "currency"], registry=r
        )
        self.carrier_revenue = Counter(
            "cardd_carrier_revenue_total", "What the cards paid for calls on it", ["carrier", "currency"], registry=r
        )
        # Signed (a call routed at a loss lowers it): a gauge summing margins since start.
        self.carrier_margin = Gauge(
            "cardd_carrier_margin", "Sum of call margins (sell - buy) since start", ["carrier", "currency"], registry=r
        )
        # The settlement journal (cardd/billing/journal.py) and the orphan rule (cardd/orphans.py).
        self.settlements_journalled = Counter(
            "cardd_settlements_journalled_total",
            "Settlements journalled while the database was unreachable",
            registry=r,
        )
        self.settlements_replayed = Counter(
            "cardd_settlements_replayed_total", "Journalled settlements applied once the database was back", registry=r
        )
        self.orphans_settled = Counter(
            "cardd_orphans_settled_total", "Reservations settled by the orphan rule, by source", ["how"], registry=r
        )
        self.settlements_held = Gauge(
            "cardd_settlements_held",
            "Settlements in memory only: neither the database nor the journal took them "
            "(new calls are refused meanwhile)",
            registry=r,
        )
        self.journal_write_errors = Counter(
            "cardd_journal_write_errors_total",
            "Failed writes of the settlement journal (full disk, I/O error)",
            registry=r,
        )
        self._http: Any = None
        self._initialise_labels()

    def _initialise_labels(self) -> None:
        for family, values in (
            (self.calls, CALL_OUTCOMES),
            (self.auth_failures, AUTH_FAILURE_REASONS),
            (self.bridges, BRIDGE_RESULTS),
            (self.db_errors, DB_ERROR_STEPS),
            (self.ivr_step_seconds, IVR_STEPS),
            (self.script_load_errors, SCRIPT_LOAD_ERROR_REASONS),
            (self.destination_check_errors, DESTINATION_CHECK_ERROR_REASONS),
            (self.duration_script_errors, DURATION_SCRIPT_ERROR_REASONS),
            (self.orphans_settled, ORPHAN_SETTLEMENTS),
        ):
            for value in values:
                family.labels(value)

    def initialise_instances(self, names: Any) -> None:
        """cardd_instance_calls_active at zero for every configured instance (and `other`)."""
        for name in [*names, "other"]:
            self.instance_calls_active.labels(name)

    def initialise_currencies(self, currencies: Any) -> None:
        """The money counters at zero for every currency a tariff is in."""
        for currency in currencies:
            self.billed_seconds.labels(currency)
            self.revenue.labels(currency)

    def initialise_carriers(self, names: Any) -> None:
        """Every carrier's attempt, answer, failover and talk counters at zero from
        the start, so `increase()` sees a carrier's first attempt (the ASR alert)."""
        for name in names:
            for family in (
                self.carrier_attempts,
                self.carrier_answers,
                self.carrier_failovers,
                self.carrier_talk_seconds,
            ):
                family.labels(name)

    def carrier_attempt(self, carrier: str, *, answered: bool, cdr: Any) -> None:
        """Count one attempt on a carrier; `cdr` (None when the settlement was
        journalled) brings its seconds and money."""
        # A carrier's answers and failovers exist from its first attempt, at 0: a
        # carrier that never answers still has an ASR (0), and the alert sees it.
        answers = self.carrier_answers.labels(carrier)
        self.carrier_failovers.labels(carrier)
        self.carrier_attempts.labels(carrier).inc()
        if answered:
            answers.inc()
        if cdr is None or cdr.buy_cost is None:
            return
        self.carrier_talk_seconds.labels(carrier).inc(cdr.billed_seconds)
        self.carrier_buy_cost.labels(carrier, cdr.currency).inc(float(cdr.buy_cost))
        self.carrier_revenue.labels(carrier, cdr.currency).inc(float(cdr.cost))
        self.carrier_margin.labels(carrier, cdr.currency).inc(float(cdr.margin))

    def observe_query(self, op: str, seconds: float) -> None:
        """A repository's query observer (cardd.billing.repository): cardd_db_query_seconds{op}."""
        self.db_query_seconds.labels(op).observe(seconds)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Observe the wall time of one IVR step (a fixed name, never a number or UUID)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.ivr_step_seconds.labels(name).observe(time.perf_counter() - started)

    def serve(self, host: str, port: int, *, read_timeout: float = 10.0, max_connections: int = 64) -> None:
        """The exporter, on cardd's bounded HTTP listener (cardd/httpd.py): read
        deadlines and a connection cap, like the CDR endpoint."""
        from cardd.httpd import HttpListener, Response

        def scrape(request) -> Response:
            if request.method != "GET":
                return Response(405, b"GET the metrics\n")
            return Response(200, generate_latest(self.registry), content_type=CONTENT_TYPE_LATEST)

        self._http = HttpListener(
            (host, port),
            scrape,
            name="metrics",
            read_timeout=read_timeout,
            max_connections=max_connections,
            max_body=0,
            on_refused=lambda reason: self.http_refused.labels("metrics", reason).inc(),
        )
        self._http.start()

    def stop_serving(self) -> None:
        if self._http is not None:
            self._http.stop()
            self._http = None
