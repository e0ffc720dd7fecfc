"""Replaying a real FreeSWITCH capture through the simulator.

The simulator is seeded with the capture's identities (Core-UUID, hostname,
the A leg's channel data from the connect reply, Event-Sequence start, the
clock) and outcome choices (callee behaviour, caller DTMF, hangup moments),
and fed the capture's SENT bytes; what it sends back is compared with the
capture's RECV frames by `compare()`, with volatile values masked. Nothing
of the capture's RECV bytes except the connect reply's channel data (the
identity of the call) is used to produce the simulator's output.
"""

from __future__ import annotations

import functools
import random
import re
import socket as pysocket
from dataclasses import dataclass, field
from pathlib import Path

import gevent
import gevent.event
from gevent import socket

from cardd.esl.protocol import FrameParser, url_decode
from cardd.sim import apps
from cardd.sim.caller import Callee, Caller
from cardd.sim.channel import Identity, Leg, Profile
from cardd.sim.clock import VirtualClock
from cardd.sim.sofia import SofiaSetup, inbound_leg
from cardd.sim.switch import SimCall, Switch

_RECORD = re.compile(rb"@@ (\w+) (\d+) t=([\d.]+) len=(\d+)\n")


@dataclass(frozen=True)
class Record:
    kind: str
    seq: int
    t: float
    data: bytes


def read_capture(path: str | Path) -> list[Record]:
    raw = Path(path).read_bytes()
    out, pos = [], 0
    while pos < len(raw):
        m = _RECORD.match(raw, pos)
        if not m:
            raise ValueError(f"{path}: bad record header at byte {pos}")
        n = int(m.group(4))
        out.append(Record(m.group(1).decode(), int(m.group(2)), float(m.group(3)), raw[m.end() : m.end() + n]))
        pos = m.end() + n + 1
    return out


# --- seeding ---------------------------------------------------------------------


def _pairs(block: bytes) -> list[tuple[str, str]]:
    out = []
    for line in block.decode("utf-8").split("\n"):
        if line:
            name, _, value = line.partition(": ")
            out.append((name, url_decode(value)))
    return out


def seed_from_connect(reply: bytes, t_reply: float) -> tuple[Identity, Leg, float, str]:
    """-> (identity, A leg, epoch of t=0, socket app data) from a connect reply."""
    pairs = _pairs(reply)
    h = dict(pairs)
    idn = Identity(
        h["Core-UUID"],
        h["FreeSWITCH-Hostname"],
        h["FreeSWITCH-IPv4"],
        h["FreeSWITCH-IPv6"],
        sequence=int(h["Event-Sequence"]) - 1,
    )
    c = {k[len("Channel-") :]: v for k, v in pairs if k.startswith("Channel-")}
    prof = Profile(
        direction=c["Direction"],
        logical_direction=c["Logical-Direction"],
        username=c["Username"],
        dialplan=c["Dialplan"],
        cid_name=c["Caller-ID-Name"],
        cid_number=c["Caller-ID-Number"],
        orig_cid_name=c["Orig-Caller-ID-Name"],
        orig_cid_number=c["Orig-Caller-ID-Number"],
        network_addr=c["Network-Addr"],
        ani=c["ANI"],
        destination=c["Destination-Number"],
        uuid=c["Unique-ID"],
        source=c["Source"],
        context=c["Context"],
        channel_name=c["Channel-Name"],
        rdnis=c.get("RDNIS"),
    )
    for name in prof.times:
        if name in c:
            prof.times[name] = int(c[name])
    leg = Leg(
        idn,
        prof,
        name=h["Channel-Name"],
        direction=h["Call-Direction"],
        call_uuid=h["Channel-Call-UUID"],
        hit_dialplan=h["Channel-HIT-Dialplan"] == "true",
    )
    leg.set_state(h["Channel-State"], int(h["Channel-State-Number"]))
    leg.call_state = h["Channel-Call-State"]
    leg.answer_state = h["Answer-State"]
    leg.has_codec = "Channel-Read-Codec-Name" in h
    leg.created_us = prof.times["Channel-Created-Time"]
    for k, v in pairs:
        if k.startswith("variable_"):
            leg.vars[k[len("variable_") :]] = v
    epoch0 = int(h["Event-Date-Timestamp"]) / 1e6 - t_reply
    return idn, leg, epoch0, leg.vars.get("current_application_data", "")


# --- scenario ---------------------------------------------------------------------


@dataclass
class Scenario:
    """Outcome choices for one capture (what the humans and sipp did)."""

    callees: list[Callee] = field(default_factory=list)  # one per bridge attempt
    caller_bye_at: float | None = None  # t (s since accept) the caller hangs up
    b_bye_after_answer: float | None = None
    close_at: float | None = None  # the daemon closes its socket (16)
    emit_park: bool = True
    say_sound_prefix: str | None = None  # a `languages` section configured (06)
    b_uuids: list[str] = field(default_factory=list)  # B uuids FreeSWITCH picked


# The captures' setup (README "Setup used"): sipp calls 8084 on the sofia
# profile `lo`, whose dialplan runs `socket 127.0.0.1:8084 async full`.
CAPTURE_SETUP = SofiaSetup(
    profile="lo",
    ip="127.0.0.1",
    port=5080,
    caller_ip="127.0.0.1",
    caller_port=5090,
    caller_media_port=6100,
    context="public",
    socket_data="127.0.0.1:8084 async full",
)
CAPTURE_CALLER = ("15555550100", "8084")


class Replayer:
    """Feeds a capture's SENT records to a seeded SimCall over a socketpair.

    fresh=True: the A leg is not taken from the connect reply but built by
    the simulator's own channel model (cardd.sim.sofia) from the capture's
    setup; only identities (uuids, Core-UUID, host, clock) are seeded."""

    def __init__(self, path: str | Path, scenario: Scenario, *, fresh: bool = False):
        self.fresh = fresh
        self.path = Path(path)
        self.records = read_capture(self.path)
        self.scenario = scenario
        self.frames: list[bytes] = []
        self.frame_times: list[float] = []
        self._counted = 0
        self._frame_ev = gevent.event.Event()

    def run(self, timeout: float = 20.0) -> list[bytes]:
        recs = self.records
        first_recv = next(r for r in recs if r.kind == "RECV")
        first_sent = next(r for r in recs if r.kind == "SENT")
        # t=0 is pinned so that the connect command arrives at the very
        # microsecond of the captured reply's Event-Date-Timestamp.
        idn, leg, epoch0, sock_data = seed_from_connect(first_recv.data, first_sent.t)
        switch = Switch(
            core_uuid=idn.core_uuid,
            hostname=idn.hostname,
            ipv4=idn.ipv4,
            ipv6=idn.ipv6,
            socket_data=sock_data,
            say_sound_prefix=self.scenario.say_sound_prefix,
        )
        switch.identity = idn
        switch._session_id = int(leg.vars.get("session_id", "1"))
        if self.fresh:
            rnd = random.Random(leg.uuid)
            switch._session_id = rnd.randrange(1, 100)
            leg = inbound_leg(
                idn,
                CAPTURE_SETUP,
                uuid=leg.uuid,
                cli=CAPTURE_CALLER[0],
                destination=CAPTURE_CALLER[1],
                now_us=int((epoch0 + first_sent.t) * 1e6) - 20_000,
                session_id=switch.next_session_id(),
                rnd=rnd,
            )
        clock = VirtualClock(epoch0, quiet=0.002, idle_quiet=0.002, idle_jumps=True)
        callees = list(self.scenario.callees)
        call = SimCall(switch, Caller(cli=leg.profile.cid_number), _CalleeQueue(callees), clock=clock, a_leg=leg)
        call.dtmf_source = "APP"
        call.b_uuids = list(self.scenario.b_uuids)
        call.emit_park = self.scenario.emit_park
        self.call = call
        ours, theirs = socket.socketpair(pysocket.AF_UNIX, pysocket.SOCK_STREAM)
        server = gevent.spawn(call.serve, theirs)
        reader = gevent.spawn(self._read, ours, clock)
        self._schedule_notes(call, clock, epoch0)
        try:
            with gevent.Timeout(timeout, TimeoutError(f"replay of {self.path.name} stalled")):
                self._drive(ours, call, clock, epoch0)
                eof = any(r.kind == "EOF" for r in recs)
                if eof:
                    reader.join()
                else:
                    # Let the switch finish what it does by itself.
                    clock.sleep(30)
        finally:
            clock.stop()
            reader.kill()
            server.kill()
            ours.close()
        return self.frames

    def _read(self, sock, clock) -> None:
        parser = FrameParser()
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            parser.feed(data)
            while True:
                frame = parser.next_frame()
                if frame is None:
                    break
                data = _frame_bytes(frame)
                self.frames.append(data)
                self.frame_times.append(clock.now())
                if not _position_free(data):
                    self._counted += 1
                self._frame_ev.set()

    def _drive(self, sock, call: SimCall, clock: VirtualClock, epoch0: float) -> None:
        recv_before = 0
        for r in self.records:
            if r.kind == "RECV":
                if not _position_free(r.data):
                    recv_before += 1
            elif r.kind == "SENT":
                # React like the listener did: after the frames it had seen,
                # and not before the moment it sent.
                while self._counted < recv_before:
                    # Blocked on the switch, not on time: the clock may jump.
                    self._frame_ev.clear()
                    if self._counted < recv_before:
                        self._frame_ev.wait()
                delay = epoch0 + r.t - clock.now()
                if delay > 0:
                    clock.sleep(delay)
                sock.sendall(r.data)
                clock.touch()
            elif r.kind == "NOTE" and b"closing the outbound socket" in r.data:
                delay = epoch0 + r.t - clock.now()
                if delay > 0:
                    clock.sleep(delay)
                sock.shutdown(pysocket.SHUT_RDWR)
                return

    def _schedule_notes(self, call: SimCall, clock: VirtualClock, epoch0: float) -> None:
        for r in self.records:
            if r.kind != "NOTE":
                continue
            text = r.data.decode("utf-8", "replace")
            m = re.search(r"api uuid_recv_dtmf (\S+) (\S+) ->", text)
            if m:
                digits = m.group(2)
                clock.call_later(epoch0 + r.t - clock.now(), functools.partial(_inject_dtmf, call, digits))
                continue
            m = re.search(r"api uuid_kill (\S+) ->", text)
            if m:
                clock.call_later(epoch0 + r.t - clock.now(), lambda: call.hangup_a("NORMAL_CLEARING", remote=False))
        if self.scenario.caller_bye_at is not None:
            clock.call_later(
                epoch0 + self.scenario.caller_bye_at - clock.now(),
                lambda: call.hangup_a("NORMAL_CLEARING", remote=True),
            )


def fs_chosen_uuids(records: list[Record]) -> list[str]:
    """B-leg uuids FreeSWITCH picked itself (no origination_uuid), in order
    of first appearance: part of the capture's identities, like the A uuid."""
    first = next(r for r in records if r.kind == "RECV")
    a_uuid = dict(_pairs(first.data))["Unique-ID"]
    seen: list[str] = []
    sent = ""  # uuids the daemon chose (origination_uuid) come first in SENT
    for r in records:
        if r.kind == "SENT":
            sent += r.data.decode("utf-8", "replace")
        if r.kind != "RECV" or b"text/event-plain" not in r.data[:60]:
            continue
        for k, v in _pairs(r.data.partition(b"\n\n")[2].partition(b"\n\n")[0]):
            if k in (
                "Other-Leg-Unique-ID",
                "Unique-ID",
                "variable_originate_causes",
                "variable_originated_legs",
                "variable_originate_signal_bond",
            ):
                for u in _UUID.findall(v):
                    if u != a_uuid and u not in sent and u not in seen:
                        seen.append(u)
    return seen


def _inject_dtmf(call: SimCall, digits: str) -> None:
    """uuid_recv_dtmf: `~` sends the digits through the digit-action parser;
    without it they skip it (README, capture 12)."""
    if not call.a.alive:
        return
    through_parser = digits.startswith("~")
    digits = digits.lstrip("~")

    def run() -> None:
        for i, d in enumerate(digits):
            if i:
                call.clock.sleep(0.02)
            if not call.a.alive:
                return
            if through_parser:
                apps.receive_dtmf(call, call.a, d)
            else:
                apps._deliver_dtmf(call, call.a, d)

    gevent.spawn(run)


class _CalleeQueue(dict):
    """Callees handed out one per bridge attempt, whatever the number."""

    def __init__(self, callees: list[Callee]):
        super().__init__()
        self._callees = callees

    def __contains__(self, key) -> bool:
        return key == "*"

    def __getitem__(self, key):
        return self._callees.pop(0) if self._callees else Callee(outcome="unreachable")

    def __bool__(self) -> bool:
        return True


def _frame_bytes(frame) -> bytes:
    out = "".join(f"{k}: {v}\n" for k, v in frame.headers.raw.items())
    return (out + "\n").encode("utf-8") + frame.body


def _position_free(frame: bytes) -> bool:
    """Frames whose presence or position depends on timing in FreeSWITCH:
    CHANNEL_PARK (README fact 7), the linger notice (fact 17) and B's
    CS_DESTROY (fact 26)."""
    head = frame[:1200]
    return (
        b"Event-Name: CHANNEL_PARK\n" in head
        or b"Content-Disposition: linger" in head
        or b"Channel-State: CS_DESTROY\n" in head
    )


def _floating(frames: list[bytes]) -> list[str]:
    """The position-free frames that must still be there (all but PARK)."""
    out = []
    for f in frames:
        if b"Content-Disposition: linger" in f[:300]:
            out.append("linger notice")
        elif b"Channel-State: CS_DESTROY\n" in f[:1200]:
            out.append("CS_DESTROY")
    return sorted(out)


# --- comparison -------------------------------------------------------------------

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_MASK_ALWAYS = {"Event-Date-Local", "Event-Date-GMT", "Event-Date-Timestamp", "Event-Sequence", "Content-Length"}
# Values that are clocks: compared as zero / non-zero only.
_TIMEISH = re.compile(
    r"(-Time$|-Last-Hold$|-Hold-Accum$|epoch$|_stamp$|"
    r"^variable_(bill|answer|flow_bill)[mu]sec$|"
    r"^variable_mduration$|^variable_uduration$|_ms$|"
    r"^variable_sip_invite_stamp$|^variable_playback_)"
)
# Whole-second differences: zero or not depends on where second boundaries fall.
_SECONDS = re.compile(
    r"^variable_(duration|billsec|progresssec|answersec|waitsec|"
    r"progress_mediasec|flow_billsec|playback_seconds|"
    r"(progress|wait|progress_media)[mu]sec)$"
)
# SIP/RTP identities and negotiation results: random per call in FreeSWITCH.
_VOLATILE = re.compile(
    r"^variable_(session_id|local_media_port|rtp_use_ssrc|rtp_local_sdp_str|"
    r"switch_m_sdp|switch_r_sdp|sip_call_id|sip_.*tag|sip_cseq|sip_full_.*|"
    r"sip_recover_.*|sip_via_.*|last_sched_id)$"
)


class Normalizer:
    """Masks volatile values; UUIDs become U1, U2… in order of first use."""

    def __init__(self) -> None:
        self.aliases: dict[str, str] = {}

    def uuid(self, m: re.Match) -> str:
        u = m.group(0)
        if u not in self.aliases:
            self.aliases[u] = f"U{len(self.aliases) + 1}"
        return self.aliases[u]

    def value(self, name: str, value: str) -> str:
        if name in _MASK_ALWAYS:
            return "*"
        if _VOLATILE.match(name) or _SECONDS.match(name):
            return "V"
        if _TIMEISH.search(name) and re.fullmatch(r"-?[\d.]+", value or "0"):
            return "0" if float(value or 0) == 0 else "T"
        if _TIMEISH.search(name) and name.endswith("_stamp"):
            return "T"
        return _UUID.sub(self.uuid, value)

    def frame(self, data: bytes) -> dict:
        head, _, body = data.partition(b"\n\n")
        outer = [(k, self.value(k, v)) for k, v in _pairs(head)]
        ct = dict(outer).get("Content-Type", "")
        out = {"outer": outer, "type": ct, "event": None, "body": None}
        if ct == "text/event-plain":
            ev = [(k, self.value(k, v)) for k, v in _pairs(body.partition(b"\n\n")[0])]
            out["event"] = ev
        elif body.startswith(b"Event-Name: "):
            # uuid_dump: an event's header block as the api body
            out["event"] = [(k, self.value(k, v)) for k, v in _pairs(body.rstrip(b"\n"))]
            out["body"] = "<dump>" if body.endswith(b"\n\n") else "<dump without blank line>"
        elif body:
            out["body"] = _UUID.sub(self.uuid, body.decode("utf-8", "replace"))
        return out


# Variables FreeSWITCH's SIP stack and RTP engine add that the simulator does
# not model (negotiation details and media statistics); their absence in the
# simulator's events is tolerated, nothing else is.
UNMODELLED = re.compile(
    r"^variable_(sip_.*|rtp_.*|switch_.*_sdp|local_media_ip|advertised_media_ip|"
    r"remote_media_.*|remote_.*_media_flow|.*_media_flow|ep_codec_string|local_media_port|"
    r"originator_codec|sofia_profile_.*|recovery_profile_name|max_forwards|"
    r"endpoint_disposition|write_codec|write_rate|read_codec|read_rate|"
    r"original_read_codec|original_read_rate|dtmf_type|DP_MATCH)$"
)


def _summary(ev: list[tuple[str, str]] | None) -> str:
    if not ev:
        return ""
    d = dict(ev)
    return " ".join(
        x for x in (d.get("Event-Name"), d.get("Unique-ID"), d.get("Application"), d.get("Application-Response")) if x
    )


def compare(expected: list[bytes], actual: list[bytes]) -> list[str]:
    """Frame-by-frame differences (empty = equal under the masks)."""
    problems: list[str] = []
    exp = [f for f in expected if not _position_free(f)]
    act = [f for f in actual if not _position_free(f)]
    if _floating(expected) != _floating(actual):
        problems.append(f"position-free frames: expected {_floating(expected)}, got {_floating(actual)}")
    ne, na = Normalizer(), Normalizer()
    for i in range(max(len(exp), len(act))):
        if i >= len(exp):
            problems.append(f"frame {i}: extra frame {_summary(na.frame(act[i])['event'])} {act[i][:80]!r}")
            break
        if i >= len(act):
            problems.append(f"frame {i}: missing frame {_summary(ne.frame(exp[i])['event'])} {exp[i][:80]!r}")
            break
        e, a = ne.frame(exp[i]), na.frame(act[i])
        diff = _diff_frame(e, a)
        if diff:
            problems.append(f"frame {i} ({_summary(e['event']) or e['type']}): {diff}")
            if len(problems) > 8:
                break
    return problems


def _diff_frame(e: dict, a: dict) -> str:
    if e["outer"] != a["outer"]:
        return f"outer headers differ: {e['outer']} != {a['outer']}"
    if e["body"] != a["body"]:
        return f"body differs: {e['body']!r} != {a['body']!r}"
    if e["event"] is None:
        return ""
    ev, av = e["event"], a["event"]
    e_plain = [(k, v) for k, v in ev if not k.startswith("variable_")]
    a_plain = [(k, v) for k, v in av if not k.startswith("variable_")]
    if e_plain != a_plain:
        for j, (x, y) in enumerate(zip(e_plain, a_plain)):
            if x != y:
                return f"header {j}: expected {x}, got {y}"
        return (
            f"header count: expected {len(e_plain)}, got {len(a_plain)}: "
            f"{e_plain[len(a_plain) :][:3]} / {a_plain[len(e_plain) :][:3]}"
        )
    e_vars = [(k, v) for k, v in ev if k.startswith("variable_")]
    a_vars = [(k, v) for k, v in av if k.startswith("variable_")]
    # every simulated variable must be in the capture with the same value, in order
    j = 0
    for k, v in a_vars:
        while j < len(e_vars) and e_vars[j][0] != k:
            j += 1
        if j == len(e_vars):
            ed = dict(e_vars)
            if k in ed:
                return f"variable {k} out of order"
            return f"variable {k}={v!r} not in the capture"
        if e_vars[j][1] != v:
            return f"variable {k}: expected {e_vars[j][1]!r}, got {v!r}"
        j += 1
    names = {k for k, _ in a_vars}
    missing = [k for k, _ in e_vars if k not in names and not UNMODELLED.match(k)]
    if missing:
        return f"variables missing: {missing}"
    return ""


def replay(
    path: str | Path, scenario: Scenario, timeout: float = 20.0, *, fresh: bool = False
) -> tuple[list[bytes], list[bytes]]:
    """-> (the capture's RECV frames, the simulator's frames)."""
    r = Replayer(path, scenario, fresh=fresh)
    actual = r.run(timeout)
    expected = [rec.data for rec in r.records if rec.kind == "RECV"]
    return expected, actual


__all__ = [
    "Record",
    "read_capture",
    "seed_from_connect",
    "Scenario",
    "Replayer",
    "compare",
    "replay",
    "Normalizer",
    "fs_chosen_uuids",
    "CAPTURE_SETUP",
    "UNMODELLED",
]
