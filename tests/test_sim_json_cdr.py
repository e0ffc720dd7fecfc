"""mod_json_cdr on the simulated switch, as FreeSWITCH 1.10.12's module does it
(src/mod/event_handlers/mod_json_cdr/mod_json_cdr.c, quoted in cardd/sim/cdr.py):
the post runs in the hanging-up leg's own thread before its
CHANNEL_HANGUP_COMPLETE unless queue-capacity is set, `delay` counts seconds,
and the shipped freeswitch-conf/autoload_configs/json_cdr.conf.xml is read as
the module reads it."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from xml.etree import ElementTree

from gevent.pywsgi import WSGIServer

from cardd.sim import Callee, Caller, Switch
from cardd.sim.cdr import JsonCdrPoster
from cardd.sim.toyd import ToyDaemon
from tests.test_sim_flows import B, bridge_flow, ts

SHIPPED = Path(__file__).resolve().parent.parent / "freeswitch-conf" / "autoload_configs" / "json_cdr.conf.xml"


class CdrSink:
    """An HTTP endpoint that answers 503 to the first `fail` posts, then 200."""

    def __init__(self, fail: int = 0):
        self.fail = fail
        self.requests: list[dict] = []
        self.server = WSGIServer(("127.0.0.1", 0), self.app, log=None)
        self.server.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.address[1]}/cdr"

    def app(self, environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        self.requests.append(
            {
                "query": environ.get("QUERY_STRING", ""),
                "type": environ.get("CONTENT_TYPE", ""),
                "auth": environ.get("HTTP_AUTHORIZATION"),
                "agent": environ.get("HTTP_USER_AGENT"),
                "body": body,
            }
        )
        status = "503 Service Unavailable" if len(self.requests) <= self.fail else "200 OK"
        start_response(status, [("Content-Length", "0")])
        return [b""]

    def stop(self) -> None:
        self.server.stop()


# FreeSWITCH global variables ($${name}) the shipped file may use, given test values.
SHIPPED_VARS = {name: f"value-of-{name}" for name in re.findall(r"\$\$\{([^}]+)\}", SHIPPED.read_text())}


def shipped_setting(name: str) -> str | None:
    for param in ElementTree.parse(SHIPPED).getroot().iter("param"):
        if param.get("name") == name:
            return re.sub(r"\$\$\{([^}]+)\}", lambda m: SHIPPED_VARS[m.group(1)], param.get("value", ""))
    return None


def bridged_call(switch: Switch, talk: float = 3):
    """A toy daemon bridges to a callee who talks `talk` s; returns what it saw."""

    def after(conn, out):
        out["b_complete"] = conn.wait_event(lambda e: e.name == "CHANNEL_HANGUP_COMPLETE" and e.unique_id == B)

    out: dict = {}
    flow = bridge_flow(f"{{origination_uuid={B}}}sofia/external/1000@x", after=after)

    def serve(conn):
        out["conn"] = conn
        flow(conn, out)

    daemon = ToyDaemon(serve)
    try:
        call = switch.call("127.0.0.1", daemon.port, Caller(), Callee(talk=talk))
        out["t"] = call.wait(30)
        daemon.join(1, 30)
    finally:
        daemon.stop()
    assert not daemon.errors, daemon.errors
    return out


def b_events(out, name, state=None):
    return [
        e
        for e in out["conn"].events
        if e.unique_id == B and e.name == name and (state is None or e.get("Channel-State") == state)
    ]


def test_without_queue_capacity_a_failed_post_holds_the_legs_hangup_complete_for_delay_seconds(tmp_path):
    conf = tmp_path / "json_cdr.conf.xml"
    conf.write_text(
        '<configuration name="json_cdr.conf"><settings>'
        '<param name="url" value="http://127.0.0.1:9/cdr"/>'
        '<param name="retries" value="2"/><param name="delay" value="1"/>'
        '<param name="log-b-leg" value="true"/></settings></configuration>'
    )
    sink = CdrSink(fail=2)
    switch = Switch()
    poster = JsonCdrPoster.from_conf(switch, conf, url=sink.url)
    try:
        out = bridged_call(switch)
    finally:
        sink.stop()
    (reporting,) = b_events(out, "CHANNEL_STATE", "CS_REPORTING")
    # two failures, 1 s apart each (seconds: milliseconds would hold it
    # 2 ms), then the third try lands.
    assert ts(out["b_complete"]) - ts(reporting) >= 2.0
    b_posts = [r for r in sink.requests if r["query"] == f"uuid={B}"]
    assert len(b_posts) == 3
    assert [json.loads(r["body"])["variables"]["uuid"] for r in b_posts] == [B] * 3
    assert [d["variables"]["uuid"] for d in poster.posted].count(B) == 1
    # B's thread was held, not A's: the bridge returned before B's HANGUP_COMPLETE.
    bridge_done = out["bridge"]
    assert ts(bridge_done) < ts(out["b_complete"])


def test_with_queue_capacity_a_background_thread_posts_and_hangup_complete_is_not_held(tmp_path):
    conf = tmp_path / "json_cdr.conf.xml"
    conf.write_text(
        '<configuration name="json_cdr.conf"><settings>'
        '<param name="url" value="http://127.0.0.1:9/cdr"/>'
        '<param name="retries" value="1"/><param name="delay" value="1"/>'
        '<param name="queue-capacity" value="100"/></settings></configuration>'
    )
    sink = CdrSink(fail=1)
    switch = Switch()
    poster = JsonCdrPoster.from_conf(switch, conf, url=sink.url)
    try:
        out = bridged_call(switch)
        poster.wait(30)
    finally:
        sink.stop()
    (reporting,) = b_events(out, "CHANNEL_STATE", "CS_REPORTING")
    assert ts(out["b_complete"]) == ts(reporting)
    assert B in [d["variables"]["uuid"] for d in poster.posted]


def test_the_shipped_json_cdr_conf_is_modelled_as_the_module_reads_it():
    """Whatever the shipped file says now: retries, delay (seconds), cred,
    queue-capacity and the encodings, read at run time."""
    sink = CdrSink()
    switch = Switch()
    poster = JsonCdrPoster.from_conf(switch, SHIPPED, url=sink.url, variables=SHIPPED_VARS)
    try:
        out = bridged_call(switch)
        poster.wait(30)
    finally:
        sink.stop()
    retries = int(shipped_setting("retries") or 0)
    delay = int(shipped_setting("delay") or 0) or (5 if retries else 0)
    assert (poster.retries, poster.delay) == (retries, delay)
    assert poster.queue_capacity == (int(shipped_setting("queue-capacity") or 0) or None)
    b_post = next(r for r in sink.requests if r["query"] == f"uuid={B}")
    assert b_post["agent"] == "freeswitch-json/1.0"
    cred = shipped_setting("cred")
    if cred:
        assert b_post["auth"] == "Basic " + base64.b64encode(cred.encode()).decode()
    else:
        assert b_post["auth"] is None
    # disable-100-continue replaces curl's header list: the form type goes out
    if (shipped_setting("disable-100-continue") or "").lower() == "true":
        assert b_post["type"] == "application/x-www-form-urlencoded"
    doc_vars = json.loads(b_post["body"])["variables"] if b_post["body"].startswith(b"{") else None
    if doc_vars is not None:
        assert doc_vars["billmsec"] == str(out["t"].bridges[0].billmsec)


def test_a_cred_setting_is_sent_as_http_basic_auth(tmp_path):
    conf = tmp_path / "json_cdr.conf.xml"
    conf.write_text(
        '<configuration name="json_cdr.conf"><settings>'
        '<param name="url" value="http://127.0.0.1:9/cdr"/>'
        '<param name="cred" value="fs:s3cret"/></settings></configuration>'
    )
    sink = CdrSink()
    switch = Switch()
    JsonCdrPoster.from_conf(switch, conf, url=sink.url)
    try:
        bridged_call(switch)
    finally:
        sink.stop()
    assert {r["auth"] for r in sink.requests} == {"Basic " + base64.b64encode(b"fs:s3cret").decode()}
    # encode-values defaults to true in the module: values arrive url-encoded
    a_doc = json.loads(next(r["body"] for r in sink.requests if r["query"] != f"uuid={B}"))
    assert "%" in a_doc["variables"]["caller_id"]
