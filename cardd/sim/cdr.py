"""mod_json_cdr on the simulated switch: each leg's CDR POSTed as JSON when the
leg reaches CS_REPORTING.

    poster = JsonCdrPoster.from_conf(switch, "freeswitch-conf/autoload_configs/json_cdr.conf.xml")
    poster = JsonCdrPoster(switch, "http://127.0.0.1:8085/cdr", retries=5, delay=1)

What the module (src/mod/event_handlers/mod_json_cdr/mod_json_cdr.c,
FreeSWITCH 1.10.12) does, and so this model:
- It is a global state handler's on_reporting (my_on_reporting), which
  switch_core_session_reporting_state runs (STATE_MACRO(reporting, ...))
  BEFORE it fires CHANNEL_HANGUP_COMPLETE, in the hanging-up channel's own
  thread. Without `queue-capacity` it calls process_cdr() right there:
      if (globals.queue) { switch_queue_trypush(globals.queue, cdr_data) ... }
      else { process_cdr(cdr_data); }
  so every retry holds that channel and its CHANNEL_HANGUP_COMPLETE.
  With `queue-capacity` > 0 a background cdr_thread posts instead.
- `delay` counts seconds: `switch_yield(globals.delay * 1000000);` between
  tries; `retries` are extra tries (`globals.retries++` at load), and
  `retries` without `delay` makes delay 5.
- Each try POSTs to `<url>?uuid=<leg uuid>` with User-Agent
  freeswitch-json/1.0, `cred` as HTTP basic auth (auth-scheme default
  CURLAUTH_BASIC), CURLOPT_TIMEOUT `timeout` (0: none); any status outside
  2xx (or none) is a failure. Content-Type application/json (encode false),
  application/x-www-form-urlencoded (`cdr=` url-encoded, encode true) or
  application/x-www-form-base64-encoded (encode base64); but
  `disable-100-continue` replaces the header list with "Expect:" alone
  (CURLOPT_HTTPHEADER set twice), so curl sends its POSTFIELDS default,
  application/x-www-form-urlencoded, whatever the body.
- `encode-values` defaults to true; `log-b-leg` to true (B legs are those
  with an originator caller profile).
- What could not be posted goes to err-log-dir (`failed` here), from where
  `resend_failed()` delivers it later, as an operator would.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import re
from typing import Any
from urllib.parse import quote, urlsplit
from xml.etree import ElementTree

import gevent

log = logging.getLogger(__name__)


class JsonCdrPoster:
    """Registers on `switch.inbound` (offered every event of every call) and
    on `switch.cdr_reporters` (run at each leg's CS_REPORTING).

    queue_capacity: None posts in the leg's own thread before its
    CHANNEL_HANGUP_COMPLETE (the module without queue-capacity, as
    from_conf reads a file without it); a number posts from a background
    thread after it (the constructor's default, which tests that kill cardd
    rely on). `delay` is in seconds, on the call's clock when posting in
    the leg's thread, in real time from the background thread."""

    def __init__(
        self,
        switch,
        url: str | list[str],
        *,
        retries: int = 2,
        delay: float = 0.5,
        encode: str = "false",
        encode_values: bool = False,
        legs: str = "ab",
        timeout: float | None = 5.0,
        cred: str | None = None,
        queue_capacity: int | None = 1000,
        disable_100_continue: bool = False,
    ):
        if encode not in ("false", "true", "base64"):
            raise ValueError("encode must be false, true or base64")
        self.switch = switch
        self.urls = [url] if isinstance(url, str) else list(url)
        self.url_index = 0
        self.retries = retries
        self.delay = delay
        self.encode = encode
        self.encode_values = encode_values
        self.legs = legs
        self.timeout = timeout
        self.cred = cred
        self.queue_capacity = queue_capacity
        self.disable_100_continue = disable_100_continue
        self.enabled = True
        self.posted: list[dict] = []  # documents delivered (2xx)
        self.failed: list[dict] = []  # documents given up on (the err-log-dir)
        self.requests: list[dict] = []  # every try: url, headers, status
        self._greenlets: list[gevent.Greenlet] = []
        switch.inbound.append(self)
        switch.cdr_reporters.append(self)

    @property
    def url(self) -> str:
        return self.urls[self.url_index]

    @classmethod
    def from_conf(
        cls, switch, path: str | os.PathLike, *, variables: dict[str, str] | None = None, **override
    ) -> JsonCdrPoster:
        """A poster configured as mod_json_cdr_load reads `path` (a
        json_cdr.conf.xml): the file is read now, so it is whatever it says.
        `variables` stand for FreeSWITCH's global variables (vars.xml) in
        `$${name}` values; err-log-dir and log-dir are not used."""
        params: dict[str, str] = {}
        urls: list[str] = []
        root = ElementTree.parse(path).getroot()
        for param in root.iter("param"):
            name, value = param.get("name", "").lower(), param.get("value", "")
            if name not in ("err-log-dir", "log-dir"):
                value = _expand(value, variables or {}, f"{path}: param {name}")
            if name == "url" and value:
                urls.append(value)
            else:
                params[name] = value

        def true(name: str, default: bool) -> bool:
            """switch_true(): yes/on/true/t/enabled/active/allow or a non-zero number."""
            if name not in params:
                return default
            value = params[name].strip().lower()
            if value.lstrip("-").isdigit():
                return int(value) != 0
            return value in ("yes", "on", "true", "t", "enabled", "active", "allow")

        retries = _atoi(params.get("retries"))
        delay = _atoi(params.get("delay"))
        if retries and not delay:
            delay = 5  # "Retries set but delay 0 setting to 5 seconds"
        encode = params.get("encode", "false").strip().lower()
        encode = "base64" if encode == "base64" else ("true" if true("encode", False) else "false")
        capacity = _atoi(params.get("queue-capacity"))
        kw: dict[str, Any] = dict(
            retries=retries,
            delay=delay,
            encode=encode,
            encode_values=true("encode-values", True),
            legs="ab" if true("log-b-leg", True) else "a",
            timeout=max(_atoi(params.get("timeout")), 0) or None,
            cred=params.get("cred") or None,
            queue_capacity=capacity if capacity > 0 else None,
            disable_100_continue=true("disable-100-continue", False),
        )
        if "url" in override:  # the file's settings, another endpoint (tests)
            urls = [override.pop("url")]
        kw.update(override)
        if not urls:
            raise ValueError(f"{path}: no url param: mod_json_cdr would post nowhere")
        return cls(switch, urls, **kw)

    # -- the switch side -------------------------------------------------------

    def offer(self, name: str, headers: list[tuple[str, str]]) -> None:
        """The background mode: posted after CHANNEL_HANGUP_COMPLETE."""
        if name != "CHANNEL_HANGUP_COMPLETE" or not self.enabled or self.queue_capacity is None:
            return
        hd = dict(headers)
        leg = "b" if hd.get("Call-Direction", "") == "outbound" else "a"
        if leg not in self.legs:
            return
        if len(self._greenlets) - len([g for g in self._greenlets if g.ready()]) >= self.queue_capacity:
            # switch_queue_trypush failed: "Unable to push cdr to queue", backed up
            self.failed.append(self.document(headers))
            return
        g = gevent.spawn(self._deliver, self.document(headers), gevent.sleep)
        g.name = "sim-json-cdr"
        self._greenlets.append(g)

    def report(self, clock, leg, headers: list[tuple[str, str]]) -> None:
        """my_on_reporting without a queue: post now, in the leg's thread,
        before its CHANNEL_HANGUP_COMPLETE; retries wait on the call's clock."""
        if not self.enabled or self.queue_capacity is not None:
            return
        if ("b" if leg.direction == "outbound" else "a") not in self.legs:
            return
        self._deliver(self.document(headers), clock.sleep)

    def document(self, headers: list[tuple[str, str]]) -> dict:
        """The JSON CDR of the leg whose CHANNEL_HANGUP_COMPLETE these are."""
        hd = dict(headers)
        variables: dict[str, str] = {}
        channel_data: dict[str, str] = {}
        for k, v in headers:
            if k.startswith("variable_"):
                name = k[len("variable_") :]
                variables.setdefault(name, quote(v, safe="") if self.encode_values else v)
        for k in (
            "Channel-State",
            "Channel-State-Number",
            "Channel-Name",
            "Unique-ID",
            "Call-Direction",
            "Answer-State",
        ):
            if k in hd:
                channel_data[k.lower().replace("-", "_")] = hd[k]
        variables.setdefault("uuid", hd.get("Unique-ID", ""))
        return {
            "core-uuid": hd.get("Core-UUID", ""),
            "switchname": hd.get("FreeSWITCH-Switchname", ""),
            "channel_data": channel_data,
            "variables": variables,
            "callflow": [
                {
                    "profile_index": "1",
                    "caller_profile": {
                        "uuid": hd.get("Unique-ID", ""),
                        "caller_id_number": hd.get("Caller-Caller-ID-Number", ""),
                        "destination_number": hd.get("Caller-Destination-Number", ""),
                    },
                }
            ],
        }

    def body(self, doc: dict) -> tuple[bytes, str]:
        data = json.dumps(doc)
        if self.encode == "true":
            return ("cdr=" + quote(data, safe="")).encode("ascii"), "application/x-www-form-urlencoded"
        if self.encode == "base64":
            return ("cdr=" + base64.b64encode(data.encode()).decode("ascii")).encode(
                "ascii"
            ), "application/x-www-form-base64-encoded"
        return data.encode("utf-8"), "application/json"

    # -- delivery ------------------------------------------------------------------

    def post(self, doc: dict) -> int:
        """One POST; the HTTP status, or 0 when the endpoint is unreachable."""
        url = f"{self.url}?uuid={doc['variables'].get('uuid', '')}"
        parts = urlsplit(url)
        if not parts.hostname:
            raise ValueError(f"json_cdr url {self.url!r} names no host")
        body, ctype = self.body(doc)
        headers = {"User-Agent": "freeswitch-json/1.0", "Content-Type": ctype}
        if self.disable_100_continue:
            # The second CURLOPT_HTTPHEADER (just "Expect:") replaces the
            # first: curl's own POSTFIELDS type goes out.
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if self.cred:
            headers["Authorization"] = "Basic " + base64.b64encode(self.cred.encode("utf-8")).decode("ascii")
        conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = conn_cls(parts.hostname, parts.port, timeout=self.timeout)
        status = 0
        try:
            conn.request("POST", f"{parts.path or '/'}?{parts.query}", body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            status = resp.status
        except OSError:
            status = 0
        finally:
            conn.close()
            self.requests.append({"url": url, "headers": headers, "status": status})
        return status

    def _deliver(self, doc: dict, sleep) -> None:
        for attempt in range(self.retries + 1):
            if attempt:
                sleep(self.delay)
            status = self.post(doc)
            if 200 <= status < 300:
                self.posted.append(doc)
                return
            # "Got error [%ld] posting to web server": the next try uses the next url.
            self.url_index = (self.url_index + 1) % len(self.urls)
        log.info("json_cdr: giving up on %s after %d tries", doc["variables"].get("uuid"), self.retries + 1)
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
        for registry in (self.switch.inbound, self.switch.cdr_reporters):
            try:
                registry.remove(self)
            except ValueError:
                pass


def _atoi(text: str | None) -> int:
    """C's atoi: the leading digits, 0 when there are none."""
    m = re.match(r"\s*([-+]?\d+)", text or "")
    return int(m.group(1)) if m else 0


def _expand(value: str, variables: dict[str, str], where: str) -> str:
    def one(m: re.Match) -> str:
        if m.group(1) not in variables:
            raise ValueError(
                f"{where}: $${{{m.group(1)}}} is a FreeSWITCH global variable; pass its value in variables="
            )
        return variables[m.group(1)]

    return re.sub(r"\$\$\{([^}]+)\}", one, value)
