"""Issue 12, section 6: the CDR and metrics listeners bound what a client can hold.

Idle and half-sent connections are closed at the read deadline
(daemon.http_read_timeout), a connection over daemon.http_max_connections is
answered 503 and closed, a body over the limit is refused unread, and a client
that goes away costs one log line, never a traceback. Then a call is billed as
usual and the money invariant holds.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import socket
from decimal import Decimal as D

import pytest

from cardd.daemon import Daemon
from cardd.metrics import Metrics
from cardd.sim import Callee, Caller
from tests.callfixtures import Cardd, make_settings
from tests.test_cdr_security import assert_money_holds, wait_for
from tests.test_orphans import CRED, UK_MOBILE, free_port

CAP = 40


@pytest.fixture
def served(database, tmp_path):
    cdr_port, metrics_port = free_port(), free_port()
    settings = make_settings(
        data_dir=str(tmp_path / "var"),
        cdr_listen=f"127.0.0.1:{cdr_port}",
        metrics_listen=f"127.0.0.1:{metrics_port}",
        cdr_credentials=CRED,
        http_read_timeout=0.5,
        http_max_connections=CAP,
    )
    d = Daemon(settings, database=database, metrics=Metrics(), serve_metrics=True, serve_cdr=True)
    d.start()
    yield Cardd(d), cdr_port, metrics_port
    d.stop()


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    return s


def closed_by_server(s: socket.socket) -> bool:
    """True once the server has closed (EOF or reset); reads what it said first."""
    s.settimeout(30)
    try:
        while True:
            data = s.recv(65536)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True


@pytest.mark.parametrize("which", ["cdr", "metrics"])
def test_idle_and_half_sent_connections_are_closed_at_the_deadline_and_the_cap_refuses_more(
    served, which, caplog, demo_data
):
    caplog.set_level(logging.INFO)
    cardd, cdr_port, metrics_port = served
    port = cdr_port if which == "cdr" else metrics_port
    idle = [connect(port) for _ in range(CAP // 2)]
    half = []
    for _ in range(CAP // 2):
        s = connect(port)
        # A head that never ends, or a body that never comes.
        s.sendall(
            b'POST /cdr HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{"vari'
            if len(half) % 2 and which == "cdr"
            else b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
        )
        half.append(s)
    wait_for(
        lambda: cardd.daemon.cdr_endpoint.active == CAP if which == "cdr" else cardd.metrics._http.active == CAP,
        "the connections were not all accepted",
    )
    # One more than the cap: answered 503 at once and closed.
    extra = connect(port)
    extra.settimeout(30)
    assert extra.recv(12) == b"HTTP/1.1 503"
    assert closed_by_server(extra)
    extra.close()
    # Every held connection is closed by the server at the read deadline.
    for s in idle + half:
        assert closed_by_server(s)
        s.close()
    wait_for(
        lambda: cardd.metric("cardd_http_refused_total", listener=which, reason="timeout") == CAP,
        "not every connection was counted as timed out",
    )
    assert cardd.metric("cardd_http_refused_total", listener=which, reason="cap") == 1
    # The listener serves again.
    if which == "metrics":
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        assert resp.status == 200 and b"cardd_http_refused_total" in resp.read()
        conn.close()
    # Clients that went away: one line each, never a traceback.
    assert not [r for r in caplog.records if r.exc_info]
    assert "Traceback" not in caplog.text
    # Calls and money are untouched.
    t = cardd.call(
        Caller(digits=[demo_data.card_number + "#", demo_data.pin + "#", UK_MOBILE + "#"], type_after=6),
        Callee(talk=31),
        timeout=60,
    )
    assert t.bridges[0].answered
    assert_money_holds(cardd.daemon.reconciler.ledger, demo_data.card_id, D("10.00000"))
    assert cardd.daemon.reconciler.ledger.get_card(demo_data.card_id).balance == D("10.00000") - D("0.13600")


def test_a_body_over_the_limit_is_refused_unread_and_a_client_gone_mid_body_leaves_no_traceback(served, caplog):
    caplog.set_level(logging.INFO)
    cardd, cdr_port, _ = served
    s = connect(cdr_port)
    auth = base64.b64encode(CRED.encode()).decode()
    s.sendall(
        f"POST /cdr HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n"
        f"Content-Length: {64 * 1024 * 1024}\r\n\r\n".encode()
    )
    s.settimeout(30)
    assert s.recv(12) == b"HTTP/1.1 413"
    s.close()
    # Half a body, then the client vanishes.
    s = connect(cdr_port)
    s.sendall(
        f"POST /cdr HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n"
        f'Content-Length: 1000\r\n\r\n{{"variables":'.encode()
    )
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()  # RST
    wait_for(lambda: cardd.daemon.cdr_endpoint.active == 0, "the connection was not released")
    # A well-formed, authenticated CDR is still taken.
    conn = http.client.HTTPConnection("127.0.0.1", cdr_port, timeout=10)
    conn.request(
        "POST",
        "/cdr",
        body=json.dumps({"variables": {"uuid": "9b2d1c7e-0000-4000-8000-000000000001", "billmsec": "0"}}),
        headers={"Authorization": f"Basic {auth}"},
    )
    assert conn.getresponse().status == 200
    conn.close()
    assert not [r for r in caplog.records if r.exc_info]
    assert "Traceback" not in caplog.text
