"""mod_json_cdr on the simulated switch: each leg's CDR POSTed as JSON when the
leg reaches CS_REPORTING (its CHANNEL_HANGUP_COMPLETE).

    poster = JsonCdrPoster(switch, "http://127.0.0.1:8085/cdr", retries=5, delay=0.2)

The document has mod_json_cdr's shape: `core-uuid`, `switchname`,
`channel_data`, `variables` (every channel variable; values url-encoded when
`encode_values`, as the module's default), and a short `callflow`. Like the
module it retries a failed POST `retries` times, `delay` seconds apart (the
module counts milliseconds), and keeps what it could not deliver in `failed`
(its err-log-dir), from where `resend_failed()` delivers it later, as an
operator would.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
from urllib.parse import quote, urlsplit

import gevent

log = logging.getLogger(__name__)


class JsonCdrPoster:
    """Registers on `switch.inbound` (it is offered every event of every call)."""

    def __init__(self, switch, url: str, *, retries: int = 2, delay: float = 0.5,
                 encode: str = "false", encode_values: bool = False,
                 legs: str = "ab", timeout: float = 5.0):
        if encode not in ("false", "true", "base64"):
            raise ValueError("encode must be false, true or base64")
        self.switch = switch
        self.url = url
        self.retries = retries
        self.delay = delay
        self.encode = encode
        self.encode_values = encode_values
        self.legs = legs
        self.timeout = timeout
        self.enabled = True
        self.posted: list[dict] = []     # documents delivered (2xx)
        self.failed: list[dict] = []     # documents given up on (the err-log-dir)
        self._greenlets: list[gevent.Greenlet] = []
        switch.inbound.append(self)

    # -- the switch side -------------------------------------------------------

    def offer(self, name: str, headers: list[tuple[str, str]]) -> None:
        if name != "CHANNEL_HANGUP_COMPLETE" or not self.enabled:
            return
        hd = dict(headers)
        direction = hd.get("Call-Direction", "")
        leg = "b" if direction == "outbound" else "a"
        if leg not in self.legs:
            return
        doc = self.document(headers)
        g = gevent.spawn(self._deliver, doc)
        g.name = "sim-json-cdr"
        self._greenlets.append(g)

    def document(self, headers: list[tuple[str, str]]) -> dict:
        """The JSON CDR of the leg whose CHANNEL_HANGUP_COMPLETE these are."""
        hd = dict(headers)
        variables: dict[str, str] = {}
        channel_data: dict[str, str] = {}
        for k, v in headers:
            if k.startswith("variable_"):
                name = k[len("variable_"):]
                variables.setdefault(name, quote(v, safe="") if self.encode_values else v)
        for k in ("Channel-State", "Channel-State-Number", "Channel-Name", "Unique-ID",
                  "Call-Direction", "Answer-State"):
            if k in hd:
                channel_data[k.lower().replace("-", "_")] = hd[k]
        variables.setdefault("uuid", hd.get("Unique-ID", ""))
        return {
            "core-uuid": hd.get("Core-UUID", ""),
            "switchname": hd.get("FreeSWITCH-Switchname", ""),
            "channel_data": channel_data,
            "variables": variables,
            "callflow": [{"profile_index": "1", "caller_profile": {
                "uuid": hd.get("Unique-ID", ""),
                "caller_id_number": hd.get("Caller-Caller-ID-Number", ""),
                "destination_number": hd.get("Caller-Destination-Number", "")}}],
        }

    def body(self, doc: dict) -> tuple[bytes, str]:
        data = json.dumps(doc)
        if self.encode == "true":
            return ("cdr=" + quote(data, safe="")).encode("ascii"), "application/x-www-form-urlencoded"
        if self.encode == "base64":
            return ("cdr=" + base64.b64encode(data.encode()).decode("ascii")).encode("ascii"), \
                "application/x-www-form-urlencoded"
        return data.encode("utf-8"), "application/json"

    # -- delivery ------------------------------------------------------------------

    def post(self, doc: dict) -> int:
        """One POST; the HTTP status, or 0 when the endpoint is unreachable."""
        parts = urlsplit(self.url)
        body, ctype = self.body(doc)
        conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=self.timeout)
        try:
            conn.request("POST", parts.path or "/", body=body, headers={"Content-Type": ctype})
            resp = conn.getresponse()
            resp.read()
            return resp.status
        except OSError:
            return 0
        finally:
            conn.close()

    def _deliver(self, doc: dict) -> None:
        for attempt in range(self.retries + 1):
            if attempt:
                gevent.sleep(self.delay)
            status = self.post(doc)
            if 200 <= status < 300:
                self.posted.append(doc)
                return
        log.info("json_cdr: giving up on %s after %d tries", doc["variables"].get("uuid"),
                 self.retries + 1)
        self.failed.append(doc)

    def resend_failed(self) -> int:
        """Deliver the documents given up on (an operator re-posting the
        err-log-dir); returns how many were accepted."""
        pending, self.failed = self.failed, []
        ok = 0
        for doc in pending:
            if 200 <= self.post(doc) < 300:
                self.posted.append(doc)
                ok += 1
            else:
                self.failed.append(doc)
        return ok

    def wait(self, timeout: float | None = None) -> None:
        """Until every delivery started so far has succeeded or given up."""
        gevent.joinall(self._greenlets, timeout=timeout)

    def close(self) -> None:
        self.enabled = False
        try:
            self.switch.inbound.remove(self)
        except ValueError:
            pass
