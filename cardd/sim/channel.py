"""The simulated channel: state, caller profile, variables, and the events a
FreeSWITCH 1.10 channel emits, header by header in FreeSWITCH's order.

Header layout (captures, README facts 3 and 21): the event's own headers
(Event-Name, Core-UUID, FreeSWITCH-*, Event-Date-*, Event-Calling-*,
Event-Sequence), then the channel data (switch_channel_event_set_basic_data:
state, name, Unique-ID, Answer-State, Hangup-Cause, codecs), the caller
profile as Caller-*, the bridged or originating partner as Other-Leg-*, then
variable_* (switch_channel_event_set_extended_data), then the event's own
trailing headers (Application*, DTMF-*).
"""

from __future__ import annotations

import time
import uuid as uuidlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

import gevent.event

if TYPE_CHECKING:  # sofia imports this module
    from cardd.sim.sofia import SipFrom

# switch_channel_state_t numbering (switch_types.h).
STATE_NUMBER = {
    "CS_NEW": 0,
    "CS_INIT": 1,
    "CS_ROUTING": 2,
    "CS_SOFT_EXECUTE": 3,
    "CS_EXECUTE": 4,
    "CS_EXCHANGE_MEDIA": 5,
    "CS_PARK": 6,
    "CS_CONSUME_MEDIA": 7,
    "CS_HIBERNATE": 8,
    "CS_RESET": 9,
    "CS_HANGUP": 10,
    "CS_REPORTING": 11,
    "CS_DESTROY": 12,
}

# Where FreeSWITCH 1.10.12 raises each event (Event-Calling-* headers, captured).
CALLING = {
    "CHANNEL_DATA": ("mod_event_socket.c", "parse_command", "2021"),
    "CHANNEL_PARK": ("switch_ivr.c", "switch_ivr_park", "1002"),
    "CHANNEL_UNPARK": ("switch_ivr.c", "switch_ivr_park", "1213"),
    "CHANNEL_EXECUTE": ("switch_core_session.c", "switch_core_session_exec", "2944"),
    "CHANNEL_EXECUTE_COMPLETE": ("switch_core_session.c", "switch_core_session_exec", "2967"),
    "CHANNEL_ANSWER": ("switch_channel.c", "switch_channel_perform_mark_answered", "3846"),
    "CHANNEL_HANGUP": ("switch_channel.c", "switch_channel_perform_hangup", "3445"),
    "CHANNEL_STATE": ("switch_channel.c", "switch_channel_perform_set_running_state", "2408"),
    "CHANNEL_HANGUP_COMPLETE": ("switch_core_state_machine.c", "switch_core_session_reporting_state", "943"),
    "CHANNEL_CREATE": ("switch_core_state_machine.c", "switch_core_session_run", "626"),
    "CHANNEL_PROGRESS": ("switch_channel.c", "switch_channel_perform_mark_ring_ready_value", "3505"),
    "CHANNEL_BRIDGE": ("switch_ivr_bridge.c", "switch_ivr_multi_threaded_bridge", "1689"),
    "CHANNEL_UNBRIDGE": ("switch_ivr_bridge.c", "switch_ivr_multi_threaded_bridge", "1879"),
    "DTMF": ("switch_channel.c", "switch_channel_dequeue_dtmf", "677"),
}

# Q.850 codes of the causes the simulator produces (switch_channel.c table).
Q850 = {
    "NORMAL_CLEARING": 16,
    "USER_BUSY": 17,
    "NO_USER_RESPONSE": 18,
    "NO_ANSWER": 19,
    "CALL_REJECTED": 21,
    "NORMAL_TEMPORARY_FAILURE": 41,
    "ORIGINATOR_CANCEL": 487,
    "ALLOTTED_TIMEOUT": 602,
    "UNALLOCATED_NUMBER": 1,
    "NO_ROUTE_DESTINATION": 3,
    "DESTINATION_OUT_OF_ORDER": 27,
    "RECOVERY_ON_TIMER_EXPIRE": 102,
    "LOSE_RACE": 502,
}

# Caller-profile fields in switch_caller_profile_event_set_data order; the
# Callee-ID pair appears once the profile has one (B legs, A after a bridge).
_TIME_FIELDS = (
    "Profile-Created-Time",
    "Channel-Created-Time",
    "Channel-Answered-Time",
    "Channel-Progress-Time",
    "Channel-Progress-Media-Time",
    "Channel-Hangup-Time",
    "Channel-Transfer-Time",
    "Channel-Resurrect-Time",
    "Channel-Bridged-Time",
    "Channel-Last-Hold",
    "Channel-Hold-Accum",
)


def new_uuid() -> str:
    return str(uuidlib.uuid4())


def hangup_cause_name(text: str | None) -> str:
    """A cause as FreeSWITCH reads one: unknown names become NORMAL_CLEARING
    (README fact 15: `alloted_timeout` hung up with NORMAL_CLEARING)."""
    if not text:
        return "NORMAL_CLEARING"
    name = text.strip().upper()
    if name.isdigit():
        for cause, code in Q850.items():
            if code == int(name):
                return cause
        return "NORMAL_CLEARING"
    return name if name in Q850 else "NORMAL_CLEARING"


class Profile:
    """A caller profile (switch_caller_profile_t) with its timestamps (µs)."""

    __slots__ = (
        "direction",
        "logical_direction",
        "username",
        "dialplan",
        "cid_name",
        "cid_number",
        "orig_cid_name",
        "orig_cid_number",
        "callee_name",
        "callee_number",
        "network_addr",
        "ani",
        "destination",
        "uuid",
        "source",
        "context",
        "channel_name",
        "times",
        "rdnis",
        "transfer_source",
        "index",
    )

    def __init__(self, **kw):
        self.direction = kw.get("direction", "inbound")
        self.logical_direction = kw.get("logical_direction", self.direction)
        self.username = kw.get("username", "")
        self.dialplan = kw.get("dialplan", "XML")
        self.cid_name = kw.get("cid_name", "")
        self.cid_number = kw.get("cid_number", "")
        self.orig_cid_name = kw.get("orig_cid_name", self.cid_name)
        self.orig_cid_number = kw.get("orig_cid_number", self.cid_number)
        self.callee_name = kw.get("callee_name")
        self.callee_number = kw.get("callee_number")
        self.network_addr = kw.get("network_addr", "127.0.0.1")
        self.ani = kw.get("ani", self.cid_number)
        self.destination = kw.get("destination", "")
        self.uuid = kw.get("uuid", "")
        self.source = kw.get("source", "mod_sofia")
        self.context = kw.get("context", "public")
        self.channel_name = kw.get("channel_name", "")
        self.rdnis = kw.get("rdnis")
        self.transfer_source = kw.get("transfer_source")
        self.index = kw.get("index", "1")
        self.times = dict.fromkeys(_TIME_FIELDS, 0)

    def headers(self, prefix: str, *, index: bool = True, times: dict[str, int] | None = None) -> list[tuple[str, str]]:
        p = prefix
        out = [
            (p + "Direction", self.direction),
            (p + "Logical-Direction", self.logical_direction),
            (p + "Username", self.username),
            (p + "Dialplan", self.dialplan),
            (p + "Caller-ID-Name", self.cid_name),
            (p + "Caller-ID-Number", self.cid_number),
            (p + "Orig-Caller-ID-Name", self.orig_cid_name),
            (p + "Orig-Caller-ID-Number", self.orig_cid_number),
        ]
        if self.callee_name is not None:
            out.append((p + "Callee-ID-Name", self.callee_name))
            out.append((p + "Callee-ID-Number", self.callee_number or ""))
        out += [
            (p + "Network-Addr", self.network_addr),
            (p + "ANI", self.ani),
            (p + "Destination-Number", self.destination),
            (p + "Unique-ID", self.uuid),
            (p + "Source", self.source),
        ]
        # switch_caller_profile_event_set_data order (switch_caller.c)
        if self.transfer_source:
            out.append((p + "Transfer-Source", self.transfer_source))
        out.append((p + "Context", self.context))
        if self.rdnis:
            out.append((p + "RDNIS", self.rdnis))
        out.append((p + "Channel-Name", self.channel_name))
        if index:
            out.append((p + "Profile-Index", self.index))
        t = self.times if times is None else times
        out += [(p + name, str(t[name])) for name in _TIME_FIELDS]
        out += [(p + "Screen-Bit", "true"), (p + "Privacy-Hide-Name", "false"), (p + "Privacy-Hide-Number", "false")]
        return out


class Identity:
    """What every event of one switch carries (FreeSWITCH-* and Core-UUID)."""

    def __init__(
        self,
        core_uuid: str,
        hostname: str = "fs1",
        ipv4: str = "192.0.2.2",
        ipv6: str = "2001:db8::2",
        sequence: int = 400,
    ):
        self.core_uuid = core_uuid
        self.hostname = hostname
        self.ipv4 = ipv4
        self.ipv6 = ipv6
        self.sequence = sequence

    def next_sequence(self) -> int:
        self.sequence += 1
        return self.sequence


def date_headers(epoch: float) -> list[tuple[str, str]]:
    us = int(round(epoch * 1_000_000))
    secs = us // 1_000_000
    return [
        ("Event-Date-Local", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(secs))),
        ("Event-Date-GMT", time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(secs))),
        ("Event-Date-Timestamp", str(us)),
    ]


class Leg:
    """One channel. Variables keep insertion order; setting one moves it to
    the end, as switch_channel_set_variable deletes then appends."""

    def __init__(
        self,
        identity: Identity,
        profile: Profile,
        *,
        name: str,
        direction: str,
        call_uuid: str | None = None,
        hit_dialplan: bool = True,
    ):
        self.identity = identity
        self.profile = profile
        self.uuid = profile.uuid
        self.name = name
        self.direction = direction
        self.call_uuid = call_uuid or self.uuid
        self.hit_dialplan = hit_dialplan
        self.running_state = "CS_NEW"
        self.state_number = 0
        self.call_state = "DOWN"
        self.answer_state = "ringing"
        self.hangup_cause: str | None = None
        self.has_codec = False
        self.vars: dict[str, str] = {}
        self.other: Leg | None = None
        self.other_type: str | None = None
        self.other_times: dict[str, int] | None = None
        self.other_profile: Profile | None = None
        self.presence_id: str | None = None
        self.created_us = 0
        self.answered_us = 0
        self.progress_us = 0
        self.bridged_us = 0
        self.hangup_us = 0
        self.alive = True
        self.hangup_remote = False
        self.pending_destroy = False
        self.sip_from: SipFrom | None = None  # an outgoing leg's INVITE From
        # posting its CDR before CHANNEL_HANGUP_COMPLETE (cardd.sim.cdr)
        self.reporting = False
        self.destroy_wanted = False
        # Woken on every DTMF delivered to a collector and on hangup.
        self.wake = gevent.event.Event()
        self.collector: list[str] | None = None
        # Keys pressed while no application reads them wait in the channel's
        # DTMF queue for the next reader (switch_channel_queue_dtmf).
        self.dtmf_queue: list[str] = []
        self.playback_stop: set[str] | None = None
        self.playback_stopped = False
        self.last_app: tuple[str, str] | None = None
        self.sip_disposition: str | None = None
        self.digits_dialed = ""
        self.timers: list = []  # clock timers that die with this leg
        self.finished = False  # CHANNEL_HANGUP_COMPLETE sent

    # --- variables ----------------------------------------------------------
    def set_var(self, name: str, value: str | None) -> None:
        self.vars.pop(name, None)
        if value is not None and value != "":
            self.vars[name] = value

    def replace_var(self, name: str, value: str) -> None:
        """Change a value where it stands (some mod_sofia updates do)."""
        self.vars[name] = value

    def push_var(self, name: str, value: str) -> None:
        """Append to an array variable in place (ARRAY::a|:b), as
        switch_channel_add_variable_var_check with SWITCH_STACK_PUSH does."""
        old = self.vars.get(name)
        if old is None:
            self.vars[name] = value
        else:
            base = old if old.startswith("ARRAY::") else "ARRAY::" + old
            self.vars[name] = f"{base}|:{value}"

    def get_var(self, name: str) -> str | None:
        return self.vars.get(name)

    # --- state ----------------------------------------------------------------
    def set_state(self, running: str, number: int | None = None) -> None:
        self.running_state = running
        self.state_number = STATE_NUMBER[running] if number is None else number

    # --- events -------------------------------------------------------------
    def event(
        self,
        name: str,
        epoch: float,
        *,
        variables: bool = True,
        pre: Iterable[tuple[str, str]] = (),
        post: Iterable[tuple[str, str]] = (),
        calling: tuple[str, str, str] | None = None,
    ) -> list[tuple[str, str]]:
        """One event of this channel as (name, plain value) pairs."""
        idn = self.identity
        f, fn, line = calling or CALLING[name]
        out = [
            ("Event-Name", name),
            ("Core-UUID", idn.core_uuid),
            ("FreeSWITCH-Hostname", idn.hostname),
            ("FreeSWITCH-Switchname", idn.hostname),
            ("FreeSWITCH-IPv4", idn.ipv4),
            ("FreeSWITCH-IPv6", idn.ipv6),
        ]
        out += date_headers(epoch)
        out += [
            ("Event-Calling-File", f),
            ("Event-Calling-Function", fn),
            ("Event-Calling-Line-Number", line),
            ("Event-Sequence", str(idn.next_sequence())),
        ]
        out += pre
        out += self.basic_data()
        out += self.profile.headers("Caller-")
        out += self.other_headers()
        if variables:
            out += [("variable_" + k, v) for k, v in self.vars.items()]
        out += post
        return out

    def basic_data(self) -> list[tuple[str, str]]:
        out = [
            ("Channel-State", self.running_state),
            ("Channel-Call-State", self.call_state),
            ("Channel-State-Number", str(self.state_number)),
            ("Channel-Name", self.name),
            ("Unique-ID", self.uuid),
            ("Call-Direction", self.direction),
            ("Presence-Call-Direction", self.direction),
            ("Channel-HIT-Dialplan", "true" if self.hit_dialplan else "false"),
        ]
        if self.presence_id:
            out.append(("Channel-Presence-ID", self.presence_id))
        out += [("Channel-Call-UUID", self.call_uuid), ("Answer-State", self.answer_state)]
        if self.hangup_cause:
            out.append(("Hangup-Cause", self.hangup_cause))
        if self.has_codec:
            out += [
                ("Channel-Read-Codec-Name", "PCMU"),
                ("Channel-Read-Codec-Rate", "8000"),
                ("Channel-Read-Codec-Bit-Rate", "64000"),
                ("Channel-Write-Codec-Name", "PCMU"),
                ("Channel-Write-Codec-Rate", "8000"),
                ("Channel-Write-Codec-Bit-Rate", "64000"),
            ]
        return out

    def other_headers(self) -> list[tuple[str, str]]:
        if self.other_profile is None or self.other_type is None:
            return []
        out = [("Other-Type", self.other_type)]
        out += self.other_profile.headers("Other-Leg-", index=False, times=self.other_times)
        return out

    def data_headers(self, epoch: float) -> list[tuple[str, str]]:
        """The connect reply's header block (CHANNEL_DATA): the profile comes
        first under the Channel- prefix, then the usual layout."""
        idn = self.identity
        f, fn, line = CALLING["CHANNEL_DATA"]
        out = [
            ("Event-Name", "CHANNEL_DATA"),
            ("Core-UUID", idn.core_uuid),
            ("FreeSWITCH-Hostname", idn.hostname),
            ("FreeSWITCH-Switchname", idn.hostname),
            ("FreeSWITCH-IPv4", idn.ipv4),
            ("FreeSWITCH-IPv6", idn.ipv6),
        ]
        out += date_headers(epoch)
        out += [
            ("Event-Calling-File", f),
            ("Event-Calling-Function", fn),
            ("Event-Calling-Line-Number", line),
            ("Event-Sequence", str(idn.next_sequence())),
        ]
        out += self.profile.headers("Channel-")
        out += self.basic_data()
        out += self.profile.headers("Caller-")
        out += self.other_headers()
        out += [("variable_" + k, v) for k, v in self.vars.items()]
        return out
