"""Prometheus metrics, all in one place.

No card numbers, CLIs or UUIDs in labels. Tests pass their own registry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.calls_active = Gauge("cardd_calls_active", "Calls being handled now", registry=r)
        self.calls = Counter("cardd_calls_total", "Finished calls by outcome", ["outcome"], registry=r)
        self.auth_failures = Counter("cardd_auth_failures_total", "Failed identifications",
                                     ["reason"], registry=r)
        self.bridges = Counter("cardd_bridge_attempts_total", "Bridge attempts by result",
                               ["result"], registry=r)
        self.billed_seconds = Counter("cardd_billed_seconds_total", "Billed seconds",
                                      ["currency"], registry=r)
        self.revenue = Counter("cardd_revenue_total", "Money charged", ["currency"], registry=r)
        self.db_errors = Counter("cardd_db_errors_total", "Database failures", ["step"], registry=r)
        self.esl_errors = Counter("cardd_esl_protocol_errors_total", "Malformed ESL input", registry=r)
        self.unknown_cld_tokens = Counter("cardd_unknown_cld_tokens_total",
                                          "CLD tokens cardd did not know", registry=r)
        self.script_load_errors = Counter("cardd_script_load_errors_total",
                                          "Custom scripts that failed to load (and are off)",
                                          ["reason"], registry=r)
        self.destination_check_errors = Counter("cardd_destination_check_errors_total",
                                                "Destination-check runs that failed (call refused)",
                                                ["reason"], registry=r)
        self.duration_script_errors = Counter("cardd_duration_script_errors_total",
                                              "Duration-script runs that failed (computed duration said)",
                                              ["reason"], registry=r)
        self.setup_seconds = Histogram("cardd_call_setup_seconds",
                                       "From connect to bridge", registry=r)

    def serve(self, host: str, port: int) -> None:
        start_http_server(port, addr=host, registry=self.registry)
