"""monitoring/: the dashboard and alert rules use only metrics cardd really exports (with their real labels);
the metrics cardd added for operations are fed (database latency, IVR steps, open reservations)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from prometheus_client import CollectorRegistry

from cardd.billing.ledger import Ledger
from cardd.daemon import Daemon
from cardd.metrics import Metrics
from tests.dbfixtures import create_demo_data

REPO = Path(__file__).resolve().parent.parent
MONITORING = REPO / "monitoring"
# Series Prometheus itself adds to every target, and labels it attaches when scraping.
PROMETHEUS_SERIES = {"up"}
TARGET_LABELS = {"instance", "job", "service"}
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported() -> dict[str, set[str]]:
    """Every series name cardd's Metrics can export -> the labels it may carry."""
    series: dict[str, set[str]] = {}
    metrics = Metrics(CollectorRegistry())
    collectors = [v for v in vars(metrics).values() if hasattr(v, "_labelnames")]
    for collector in collectors:
        family = next(iter(collector.describe()))
        for suffix in SUFFIXES[family.type]:
            labels = set(collector._labelnames)
            if suffix == "_bucket":
                labels.add("le")
            series[family.name + suffix] = labels
    return series


def dashboard_exprs() -> list[str]:
    dash = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def alert_exprs() -> list[str]:
    rules = yaml.safe_load((MONITORING / "cardd-alerts.yml").read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names used in its {selector}) for every series an expression reads."""
    found = []
    for m in re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{([^}]*)\})?", expr):
        name = m.group(1)
        if not (name.startswith("cardd_") or name in PROMETHEUS_SERIES):
            continue
        labels = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", m.group(3) or ""))
        found.append((name, labels))
    return found


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_every_metric_and_label_in_monitoring_exists_in_cardd_metrics(source):
    exprs = dashboard_exprs() if source == "dashboard" else alert_exprs()
    assert exprs
    known = exported()
    for expr in exprs:
        used = selectors(expr)
        assert used, expr
        for name, labels in used:
            if name in PROMETHEUS_SERIES:
                continue
            assert name in known, f"{name} (in {expr!r}) is not a cardd metric"
            assert labels <= known[name] | TARGET_LABELS, f"{name} has no label(s) {labels - known[name]}"
        # `by (...)` groups only by labels the metric has (or Prometheus' target labels)
        for group in re.findall(r"by \(([^)]*)\)", expr):
            names = {g.strip() for g in group.split(",")}
            allowed = set().union(*(known.get(n, set()) for n, _ in used)) | TARGET_LABELS
            assert names <= allowed, f"{expr!r} groups by {names - allowed}"


def test_dashboard_covers_the_issue_metrics():
    text = " ".join(dashboard_exprs())
    for name in (
        "cardd_calls_active",
        "cardd_calls_total",
        "cardd_auth_failures_total",
        "cardd_bridge_attempts_total",
        "cardd_call_setup_seconds_bucket",
        "cardd_ivr_step_seconds_bucket",
        "cardd_billed_seconds_total",
        "cardd_revenue_total",
        "cardd_db_errors_total",
        "cardd_db_query_seconds_bucket",
        "cardd_esl_protocol_errors_total",
        "cardd_unknown_cld_tokens_total",
        "cardd_script_load_errors_total",
        "cardd_open_reservations",
    ):
        assert name in text, name


def test_alert_rules_cover_script_load_database_and_no_calls():
    rules = yaml.safe_load((MONITORING / "cardd-alerts.yml").read_text())
    by_name = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    assert "cardd_script_load_errors_total" in by_name["CarddScriptLoadErrors"]["expr"]
    assert "cardd_db_errors_total" in by_name["CarddDatabaseErrors"]["expr"]
    assert "cardd_calls_total" in by_name["CarddNoCalls"]["expr"]
    for rule in by_name.values():
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]


def test_prometheus_example_scrapes_the_metrics_port_and_loads_the_rules():
    conf = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    (job,) = [j for j in conf["scrape_configs"] if j["job_name"] == "cardd"]
    targets = job["static_configs"][0]["targets"]
    assert targets and all(t.endswith(":9108") for t in targets)
    assert "cardd-alerts.yml" in conf["rule_files"]


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_the_ledger_observes_database_latency_per_operation(database):
    demo = create_demo_data(database.pool)
    metrics = Metrics(CollectorRegistry())
    ledger = Ledger(database.pool, observe=metrics.observe_query)
    card = ledger.find_card(demo.card_number)
    assert ledger.verify_pin(card, demo.pin)
    grant = ledger.grant(card.id, a_uuid=uuid.uuid4(), b_uuid=uuid.uuid4(), destination="4412345")
    ledger.settle(grant.b_uuid, billmsec=31_000, hangup_cause="NORMAL_CLEARING")
    assert ledger.pool is database.pool
    for op in ("find_card", "grant", "settle"):
        assert sample(metrics, "cardd_db_query_seconds_count", op=op) == 1
        assert sample(metrics, "cardd_db_query_seconds_sum", op=op) > 0
    assert sample(metrics, "cardd_db_query_seconds_count", op="verify_pin") is None


def test_reservation_gauges_count_open_and_expired_reservations(database):
    demo = create_demo_data(database.pool)
    ledger = Ledger(database.pool)
    for _ in range(3):
        ledger.grant(
            demo.card_id, a_uuid=uuid.uuid4(), b_uuid=uuid.uuid4(), destination="4412345", max_call_duration=60
        )
    stale = ledger.grant(
        demo.card_id, a_uuid=uuid.uuid4(), b_uuid=uuid.uuid4(), destination="4412345", max_call_duration=60
    )
    with database.pool.connection() as conn:
        conn.execute("UPDATE reservations SET expires_at = now() - interval '1 s' WHERE b_uuid = %s", (stale.b_uuid,))
    metrics = Metrics(CollectorRegistry())
    daemon = Daemon(SimpleNamespace(), metrics=metrics, database=database, serve_metrics=False)
    daemon.refresh_reservation_gauges()
    assert sample(metrics, "cardd_open_reservations") == 4
    assert sample(metrics, "cardd_expired_reservations") == 1


def test_ivr_step_timer_observes_under_the_step_name():
    metrics = Metrics(CollectorRegistry())
    with metrics.step("identify"):
        pass
    with pytest.raises(RuntimeError), metrics.step("dial"):
        raise RuntimeError("a step that fails is still timed")
    assert sample(metrics, "cardd_ivr_step_seconds_count", step="identify") == 1
    assert sample(metrics, "cardd_ivr_step_seconds_count", step="dial") == 1


# --- production packaging (freeswitch-conf/) -----------------------------------------


def unit_settings() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in (REPO / "freeswitch-conf/systemd/cardd.service").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, _, value = line.partition("=")
            found[key.strip()] = value.strip()
    return found


def test_systemd_unit_runs_serve_and_outlasts_the_drain_grace():
    from cardd.config import load_settings

    unit = unit_settings()
    assert unit["ExecStart"].endswith(" -c /etc/cardd/cardd.yaml serve")
    assert unit["Restart"] == "on-failure" and unit["KillSignal"] == "SIGTERM"
    assert unit["StandardOutput"] == "journal" and unit["StandardError"] == "journal"
    grace = max(
        load_settings(None).daemon.shutdown_grace,
        load_settings(str(REPO / "freeswitch-conf/cardd-external-postgres.yaml")).daemon.shutdown_grace,
    )
    assert float(unit["TimeoutStopSec"]) > grace


def test_external_postgres_sample_is_a_valid_config():
    from cardd.config import load_settings

    settings = load_settings(str(REPO / "freeswitch-conf/cardd-external-postgres.yaml"))
    assert "dbname=cardd" in settings.daemon.dsn
    assert settings.daemon.log_format == "json"


def test_gateway_example_is_xml_and_its_dial_string_is_accepted(tmp_path):
    import xml.etree.ElementTree as ET

    from cardd.config import load_settings

    root = ET.parse(REPO / "freeswitch-conf/gateway-example.xml").getroot()
    names = [g.get("name") for g in root.iter("gateway")]
    assert names == ["carrier", "carrier-backup"]
    config = tmp_path / "cardd.yaml"
    config.write_text(
        'daemon:\n  dial_string: "sofia/gateway/carrier/{number}|sofia/gateway/carrier-backup/{number}"\n'
    )
    assert load_settings(str(config)).daemon.dial_string.startswith("sofia/gateway/carrier/")


# --- label values exist from the start; promtool unit tests for every alert ---------------


def test_every_known_label_value_is_exported_at_zero_from_the_start():
    from cardd import metrics as m

    metrics = Metrics(CollectorRegistry())
    for name, label, values in (
        ("cardd_calls_total", "outcome", m.CALL_OUTCOMES),
        ("cardd_auth_failures_total", "reason", m.AUTH_FAILURE_REASONS),
        ("cardd_bridge_attempts_total", "result", m.BRIDGE_RESULTS),
        ("cardd_db_errors_total", "step", m.DB_ERROR_STEPS),
        ("cardd_ivr_step_seconds_count", "step", m.IVR_STEPS),
    ):
        for value in values:
            assert sample(metrics, name, **{label: value}) == 0.0, (name, value)
    # the two series the alerts needed before their first event
    assert sample(metrics, "cardd_bridge_attempts_total", result="answered") == 0.0
    assert sample(metrics, "cardd_db_errors_total", step="call") == 0.0


def test_the_code_uses_only_label_values_initialised_at_start():
    """A label value the code can give but Metrics does not create at start would be born at 1,
    and increase() (CarddDatabaseErrors and the like) would miss that first event."""
    from cardd import metrics as m

    known = {
        "calls": m.CALL_OUTCOMES,
        "auth_failures": m.AUTH_FAILURE_REASONS,
        "bridges": m.BRIDGE_RESULTS,
        "db_errors": m.DB_ERROR_STEPS,
    }
    sources = {p: p.read_text() for p in (REPO / "cardd").rglob("*.py")}
    for path, text in sources.items():
        for attr, value in re.findall(r"\.(\w+)\.labels\(\s*\"(\w+)\"", text):
            if attr in known:
                assert value in known[attr], f"{path.name}: {attr} label {value!r} is not initialised"
        for step in re.findall(r"\.step\(\s*\"(\w+)\"", text):
            assert step in m.IVR_STEPS, f"{path.name}: IVR step {step!r} is not initialised"
    ivr = REPO / "cardd/ivr"
    outcomes = set(re.findall(r"outcome = \"(\w+)\"", sources[ivr / "session.py"]))
    outcomes |= set(re.findall(r"return \"(\w+)\"", sources[ivr / "session.py"]))
    for path in ivr.glob("*.py"):
        outcomes |= set(re.findall(r"end=\"(\w+)\"", sources[path]))
    assert outcomes and outcomes <= set(m.CALL_OUTCOMES), outcomes - set(m.CALL_OUTCOMES)
    # identification refusals are counted by name; "timeout" is the one that is not counted
    refusals = set(re.findall(r"return \"(\w+)\"", sources[ivr / "identify.py"])) - {"timeout"}
    assert refusals <= set(m.AUTH_FAILURE_REASONS), refusals - set(m.AUTH_FAILURE_REASONS)


def promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail("promtool is missing in CI (Debian: apt-get install prometheus; tests/run.sh does it as root)")
    pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")


def rule_files() -> list[Path]:
    return [
        p
        for p in sorted(MONITORING.glob("*.yml"))
        if "test" not in p.name and "groups" in (yaml.safe_load(p.read_text()) or {})
    ]


def test_alert_rules_pass_promtool_check_and_their_unit_tests():
    tool = promtool()
    checked = subprocess.run([tool, "check", "rules", *map(str, rule_files())], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tests = sorted(MONITORING.glob("*test*.yml"))
    assert tests
    ran = subprocess.run([tool, "test", "rules", *map(str, tests)], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stdout + ran.stderr


def test_every_alert_rule_has_a_promtool_test_that_sees_it_fire():
    rules = {
        r["alert"]
        for path in rule_files()
        for g in yaml.safe_load(path.read_text())["groups"]
        for r in g["rules"]
        if "alert" in r
    }
    fired: set[str] = set()
    for path in MONITORING.glob("*test*.yml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                if check.get("exp_alerts"):
                    fired.add(check["alertname"])
    assert rules and rules <= fired, f"alerts without a firing promtool test: {sorted(rules - fired)}"
