"""`cardd api` as a process of its own, through its real entry points: `cardd apikey add` makes a key,
the README's walk-through over HTTP (a tariff, a rate, a card), a simulated call with `cardd call`
against cardd, and its CDR read back through the API; the limits of the `api:` section."""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import logging
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

import gevent
import psycopg
import pytest

from cardd import cli
from cardd.api.server import RequestDeadline
from cardd.billing import pins

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


class Api:
    def __init__(self, base: str, key: str | None = None):
        self.base = base
        self.key = key

    def __call__(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        h = {"Content-Type": "application/json", **(headers or {})}
        if self.key:
            h["Authorization"] = f"Bearer {self.key}"
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, head, text = response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            status, head, text = exc.code, dict(exc.headers), exc.read()
        is_json = "json" in head.get("Content-Type", "")
        return status, head, json.loads(text) if is_json and text else text.decode()


@pytest.fixture
def api_process(dsn, tmp_path, restore_logging):
    yield from running_api(dsn, tmp_path, "  max_body_bytes: 4096\n")


def running_api(dsn: str, tmp_path: Path, api_lines: str):
    """`cardd api` as a process on a free port with these lines in its api: section: (base URL, config, log)."""
    port = free_port()
    config = tmp_path / "cardd.yaml"
    config.write_text(
        "daemon:\n"
        f'  dsn: "{dsn}"\n'
        f"  pin_key_file: {pins.installed_key().path}\n"
        "api:\n"
        f"  listen: 127.0.0.1:{port}\n" + api_lines
    )
    log = tmp_path / "api.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cardd", "-c", str(config), "api"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=err
        )
    base = f"http://127.0.0.1:{port}/api/v1"
    deadline = time.monotonic() + 60
    while "API listening" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"cardd api did not come up:\n{log.read_text()}")
        time.sleep(0.05)
    yield base, config, log
    proc.terminate()
    assert proc.wait(30) == 0, log.read_text()


def cardd(config: Path, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["-c", str(config), *argv])
    return code, out.getvalue()


def test_the_readme_walk_through_a_key_a_tariff_a_card_a_call_and_its_cdr(api_process, cardd_with, database):
    base, config, log = api_process
    code, out = cardd(config, "apikey", "add", "ops", "--role", "admin", "--by", "pytest")
    assert code == 0
    api = Api(base, out.strip())
    assert api("POST", "/tariffs", {"name": "retail", "currency": "USD"})[0] == 201
    status, _, rate = api(
        "PUT",
        "/tariffs/retail/rates",
        {
            "prefix": "44",
            "price_1": "0.06",
            "interval_1": 30,
            "price_n": "0.06",
            "interval_n": 6,
            "connect_fee": "0.10",
        },
    )
    assert status == 200, rate
    status, _, card = api(
        "POST",
        "/cards",
        {"number": "1000000001", "tariff": "retail", "currency": "USD", "balance": "10", "pin": "1234"},
    )
    assert status == 201, card
    status, _, lookup = api("GET", "/tariffs/retail/lookup?number=442071234567&card=1000000001")
    assert lookup["rate"]["prefix"] == "44" and lookup["max_duration_s"] > 0

    running = cardd_with(database)
    host, port = running.address
    code, out = cardd(
        config,
        "call",
        "--server",
        f"{host}:{port}",
        "--digits",
        "1000000001#",
        "--digits",
        "1234#",
        "--digits",
        "442071234567#",
        "--talk",
        "31",
    )
    assert code == 0, out
    status, _, page = api("GET", "/cdrs?card=1000000001")
    assert status == 200
    [cdr] = page["items"]
    assert cdr["billed_seconds"] in (31, 32) and cdr["currency"] == "USD"
    status, head, text = api("GET", "/cdrs?card=1000000001&format=csv")
    assert head["Content-Type"].startswith("text/csv") and cdr["b_uuid"] in text
    status, _, shown = api("GET", "/cards/1000000001")
    assert Decimal(shown["balance"]) == Decimal("10") - Decimal(cdr["cost"])
    assert [h["kind"] for h in shown["history"]] == ["call", "initial"]
    # the key never reaches the log
    assert api.key.rsplit("_", 1)[1] not in log.read_text()


def test_the_api_section_limits_the_body_size(api_process):
    base, config, log = api_process
    _, out = cardd(config, "apikey", "add", "ops", "--role", "admin")
    api = Api(base, out.strip())
    status, head, body = api(
        "POST",
        "/tariffs",
        raw=b'{"name": "' + b"x" * 8000 + b'", "currency": "USD"}',
        headers={"Content-Type": "application/json"},
    )
    assert status == 413 and head["Content-Type"] == "application/problem+json" and body["status"] == 413
    # A rates CSV has its own limit, api.max_upload_bytes (128 MiB by default): read, and refused for its tariff.
    status, _, body = api("POST", "/tariffs/x/rates/import", raw=b"1," * 4000, headers={"Content-Type": "text/csv"})
    assert status == 422 and "unknown tariff" in body["detail"]


def test_apikey_list_and_revoke_through_the_cli(api_process):
    base, config, log = api_process
    _, key = cardd(config, "apikey", "add", "shop", "--role", "reseller", "--owner", "acme")
    key = key.strip()
    code, listing = cardd(config, "apikey", "list")
    key_id = key.split("_")[1]
    assert code == 0 and f"{key_id}\tshop\treseller\tacme" in listing and key.rsplit("_", 1)[1] not in listing
    assert Api(base, key)("GET", "/cards")[0] == 200
    assert cardd(config, "apikey", "revoke", key_id)[0] == 0
    assert Api(base, key)("GET", "/cards")[0] == 401
    assert cardd(config, "apikey", "revoke", key_id)[0] == 2
    assert cardd(config, "apikey", "add", "shop", "--role", "reseller")[0] == 2  # a reseller needs an owner


def test_a_request_past_the_time_limit_is_answered_503():
    def slow(environ, start_response):
        gevent.sleep(5)
        start_response("200 OK", [])
        return [b"late"]

    statuses = []
    body = RequestDeadline(slow, 0.05)(
        {"REQUEST_METHOD": "GET", "PATH_INFO": "/"}, lambda status, headers, exc=None: statuses.append(status)
    )
    assert statuses == ["503 Service Unavailable"] and json.loads(b"".join(body))["status"] == 503


def test_the_api_section_is_checked_and_shown_by_check_config(tmp_path, restore_logging, capsys):
    config = tmp_path / "cardd.yaml"
    config.write_text("api:\n  listen: 127.0.0.1:9999\n  max_conections: 3\n")
    assert cli.main(["-c", str(config), "check-config"]) == 2
    assert (
        f"{config}:3: api.max_conections: unknown key 'max_conections'; did you mean 'max_connections'?"
        in capsys.readouterr().err
    )
    config.write_text("api:\n  listen: 127.0.0.1:9999\n  request_timeout: 2.5\n")
    assert cli.main(["-c", str(config), "check-config"]) == 0
    shown = capsys.readouterr().out
    # (the comments' column follows the longest setting shown: max_upload_bytes: 134217728)
    assert re.search(r'listen: "127.0.0.1:9999" +# cardd.yaml', shown) and "request_timeout: 2.5" in shown


@pytest.fixture
def api_with_limits(dsn, tmp_path, restore_logging):
    yield from running_api(dsn, tmp_path, "  max_connections: 2\n  request_timeout: 1\n")


def _get(conn: http.client.HTTPConnection, path: str) -> tuple[int, str, Any]:
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    return response.status, response.headers.get("Content-Type", ""), json.loads(body) if body else None


def test_one_connection_over_max_connections_is_answered_503_at_once(api_with_limits):
    base, _, log = api_with_limits
    host, port = base.split("//")[1].split("/")[0].split(":")
    held = [http.client.HTTPConnection(host, int(port), timeout=30) for _ in range(2)]
    for conn in held:  # answered, and kept alive: each holds one of the 2 connections
        assert _get(conn, "/api/v1/openapi.json")[0] == 200
    extra = http.client.HTTPConnection(host, int(port), timeout=30)
    status, content_type, problem = _get(extra, "/api/v1/openapi.json")
    assert (status, content_type) == (503, "application/problem+json")
    assert problem["status"] == 503 and "too many connections" in problem["detail"]
    assert "api.max_connections" in log.read_text()
    held.pop().close()
    deadline = time.monotonic() + 30  # the server sees the close when its handler reads the end of stream
    while True:
        status = _get(http.client.HTTPConnection(host, int(port), timeout=30), "/api/v1/openapi.json")[0]
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert status == 200
    held[0].close()


def test_a_request_blocked_on_a_database_lock_past_the_time_limit_is_answered_503_and_its_query_cancelled(
    api_with_limits, dsn
):
    base, config, _ = api_with_limits
    code, out = cardd(config, "apikey", "add", "ops", "--role", "admin", "--by", "pytest")
    api = Api(base, out.strip())
    assert api("POST", "/tariffs", {"name": "retail", "currency": "USD"})[0] == 201
    assert (
        api("POST", "/cards", {"number": "1000000001", "tariff": "retail", "currency": "USD", "balance": "10"})[0]
        == 201
    )
    with psycopg.connect(dsn, autocommit=False) as locker:
        locker.execute("LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE")
        status, head, problem = api("GET", "/cards/1000000001")
        assert (status, head["Content-Type"]) == (503, "application/problem+json")
        assert "longer than 1 s" in problem["detail"]
        # The query the deadline interrupted is cancelled, not left waiting on the lock with its connection.
        deadline = time.monotonic() + 30
        while True:
            with psycopg.connect(dsn, autocommit=True) as probe:
                waiting = probe.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> %s",
                    (locker.info.backend_pid,),
                ).fetchone()[0]
            if waiting == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert waiting == 0
        locker.rollback()
    status, _, card = api("GET", "/cards/1000000001")
    assert status == 200 and card["balance"] == "10.00000"
