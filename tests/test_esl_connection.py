"""The rules of one outbound ESL connection (cardd.esl.connection), without sockets.

Each case is a script of steps against a fresh connection whose A leg is
connected: commands and executes sent (each naming the ticket it takes), bytes
FreeSWITCH sent fed in, and the connection closed; then what every ticket is
(pending, its value, or released with CallGone) and what the connection knows
of the call. The bytes are built with the same encoders the simulator uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from cardd.errors import CallGone, ProtocolError
from cardd.esl.connection import EslConnection, Ticket
from cardd.esl.protocol import DISCONNECT_BODY, Event, Frame, Headers, encode_api_response, encode_event, encode_reply

A = "aaaaaaaa-0000-0000-0000-000000000001"
B = "bbbbbbbb-0000-0000-0000-000000000002"
C = "cccccccc-0000-0000-0000-000000000003"  # another channel on the same box

PENDING, GONE = "pending", "gone"


# --- steps --------------------------------------------------------------------------


def command(name: str, text: str | None = None):
    return ("command", name, text or name)


def execute(name: str, app: str = "playback"):
    """An execute whose Event-UUID is `name`; its reply ticket is `name.reply`."""
    return ("execute", name, app)


def leg(uuid: str):
    return ("leg", uuid, None)


def forget(name: str):
    return ("forget", name, None)


def feed(data: bytes):
    return ("feed", data, None)


def close(why: str):
    return ("close", why, None)


def reply(text: str = "+OK") -> tuple:
    return feed(encode_reply(text))


def event(name: str, uuid: str = A, **headers: str) -> tuple:
    pairs = [("Event-Name", name), ("Unique-ID", uuid)]
    pairs += [(k if k.startswith("variable_") else k.replace("_", "-"), v) for k, v in headers.items()]
    return feed(encode_event(pairs))


def completion(app_uuid: str, uuid: str = A, response: str = "FILE PLAYED") -> tuple:
    return event(
        "CHANNEL_EXECUTE_COMPLETE",
        uuid,
        Application="playback",
        Application_UUID=app_uuid,
        Application_Response=response,
    )


LINGER = feed(
    b"Content-Type: text/disconnect-notice\nControlled-Session-UUID: "
    + A.encode()
    + b"\nContent-Disposition: linger\nLinger-Time: -1\nContent-Length: 0\n\n"
)
DISCONNECT = feed(
    b"Content-Type: text/disconnect-notice\nContent-Disposition: disconnect\n"
    b"Content-Length: %d\n\n" % len(DISCONNECT_BODY) + DISCONNECT_BODY
)


# --- running a case -----------------------------------------------------------------


def outcome(ticket: Ticket) -> str:
    """A ticket as the table states it."""
    if not ticket.done:
        return PENDING
    if isinstance(ticket.error, CallGone):
        return GONE
    value = ticket.value
    if isinstance(value, Frame):
        return value.reply_text or value.body.decode()
    if isinstance(value, Event):
        return value.get("Application-Response") or value.variable("billmsec") or value.name
    raise AssertionError(f"unexpected ticket value {value!r}")


def connected() -> EslConnection:
    conn = EslConnection()
    conn.send_command("connect")
    conn.receive_data(
        b"Event-Name: CHANNEL_DATA\nUnique-ID: "
        + A.encode()
        + b"\nContent-Type: command/reply\nReply-Text: %2BOK%0A\nSocket-Mode: async\n\n"
    )
    conn.channel_connected(Frame(Headers({"Unique-ID": A, "Channel-Name": "sofia/lo/1"})))
    return conn


def run(steps) -> tuple[EslConnection, dict[str, Ticket], list[Event]]:
    conn = connected()
    tickets: dict[str, Ticket] = {}
    events: list[Event] = []
    for kind, a, b in steps:
        if kind == "command":
            _, tickets[a] = conn.send_command(b)
        elif kind == "execute":
            _, tickets[a + ".reply"], tickets[a] = conn.send_execute(b, "/s/a.wav", app_uuid=a)
        elif kind == "leg":
            tickets[a] = conn.add_leg(a)
        elif kind == "forget":
            conn.forget_execution(tickets[a])
        elif kind == "feed":
            out = conn.receive_data(a)
            for item in out:
                assert isinstance(item, (Ticket, Event))
                # A completed ticket is reported once, in the feed that completed it.
                assert not isinstance(item, Ticket) or item.done
            events += [item for item in out if isinstance(item, Event)]
        elif kind == "close":
            released = conn.close(a)
            assert all(t.done and isinstance(t.error, CallGone) for t in released)
    return conn, tickets, events


@dataclass
class Case:
    rule: str
    steps: list
    tickets: dict[str, str]
    state: dict[str, object] = field(default_factory=dict)


CASES = [
    Case(
        "replies complete commands in the order they were sent",
        [command("linger"), command("filter", f"filter Unique-ID {A}"), reply("+OK will linger")],
        {"linger": "+OK will linger", "filter": PENDING},
    ),
    Case(
        "an api response is a reply like any other: it completes the oldest command",
        [
            command("event", "event plain DTMF"),
            command("api", "api uuid_exists x"),
            reply("+OK event listener"),
            feed(encode_api_response("true")),
        ],
        {"event": "+OK event listener", "api": "true"},
    ),
    Case(
        "an execute's reply completes its reply ticket, not its completion",
        [execute("x"), reply()],
        {"x.reply": "+OK", "x": PENDING},
    ),
    Case(
        "completion is matched by Application-UUID, not by the application's name",
        [execute("x"), reply(), completion("someone-else")],
        {"x": PENDING},
    ),
    Case(
        "the completion carrying the execute's Event-UUID completes it",
        [execute("x"), reply(), completion("someone-else", response="EARLIER"), completion("x")],
        {"x": "FILE PLAYED"},
    ),
    Case(
        "two executes in flight complete independently, in any order",
        [execute("x"), execute("y"), reply(), reply(), completion("y", response="Y"), completion("x", response="X")],
        {"x": "X", "y": "Y"},
    ),
    Case(
        "a completion of an execute no longer waited for is dropped",
        [execute("x"), reply(), forget("x"), completion("x")],
        {"x": PENDING},
    ),
    Case(
        "a foreign channel's completion does not count",
        [execute("x"), reply(), completion("x", uuid=C)],
        {"x": PENDING},
    ),
    Case(
        "a foreign channel's hangup does not mark the caller gone",
        [event("CHANNEL_HANGUP", C, Hangup_Cause="NORMAL_CLEARING")],
        {},
        {"a_hungup": False, "hangup_cause": None},
    ),
    Case(
        "A's hangup marks the caller gone with its cause; a running app may still complete (linger)",
        [execute("x"), reply(), event("CHANNEL_HANGUP", Hangup_Cause="NORMAL_CLEARING")],
        {"x": PENDING},
        {"a_hungup": True, "hangup_cause": "NORMAL_CLEARING"},
    ),
    Case(
        "A's hangup-complete, its last event, releases every execute still waiting",
        [execute("x"), reply(), event("CHANNEL_HANGUP"), event("CHANNEL_HANGUP_COMPLETE")],
        {"x": GONE},
        {"a_hungup": True, "closed": False},
    ),
    Case(
        "a linger notice keeps the app's wait: its completion still comes (capture 11b)",
        [execute("x"), reply(), event("CHANNEL_HANGUP", Hangup_Cause="NORMAL_CLEARING"), LINGER, completion("x")],
        {"x": "FILE PLAYED"},
        {"lingering": True, "closed": False},
    ),
    Case(
        "a disconnect notice releases every waiter: command, execute, B leg",
        [leg(B), execute("x"), reply(), command("api", "api uuid_exists x"), DISCONNECT],
        {"x": GONE, "api": GONE, B: GONE},
        {"closed": True},
    ),
    Case(
        "B's hangup-complete ends B's wait and leaves the caller up",
        [
            leg(B),
            event("CHANNEL_HANGUP", B, Hangup_Cause="ALLOTTED_TIMEOUT"),
            event("CHANNEL_HANGUP_COMPLETE", B, variable_billmsec="9520"),
        ],
        {B: "9520"},
        {"a_hungup": False},
    ),
    Case(
        "a B leg cardd did not name is another channel",
        [event("CHANNEL_HANGUP_COMPLETE", B, variable_billmsec="9520")],
        {},
        {"a_hungup": False},
    ),
    Case(
        "DTMF is counted on A only",
        [
            leg(B),
            event("DTMF", DTMF_Digit="1"),
            event("DTMF", DTMF_Digit="#"),
            event("DTMF", B, DTMF_Digit="5"),
            event("DTMF", C, DTMF_Digit="7"),
        ],
        {B: PENDING},
        {"dtmf_count": 2},
    ),
    Case(
        "a reply nobody waits for is dropped",
        [reply("+OK stray"), command("linger"), reply("+OK will linger")],
        {"linger": "+OK will linger"},
    ),
    Case(
        "closing the connection releases every waiter",
        [leg(B), command("linger"), execute("x"), close("socket closed")],
        {"linger": GONE, "x": GONE, "x.reply": GONE, B: GONE},
        {"closed": True, "close_reason": "socket closed"},
    ),
    Case(
        "a completion after the close changes nothing",
        [execute("x"), reply(), close("stopped"), completion("x")],
        {"x": GONE},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.rule for c in CASES])
def test_connection_rule(case: Case):
    conn, tickets, _ = run(case.steps)
    assert {name: outcome(tickets[name]) for name in case.tickets} == case.tickets
    assert {name: getattr(conn, name) for name in case.state} == case.state


@pytest.mark.parametrize("case", CASES, ids=[c.rule for c in CASES])
def test_the_rules_hold_whatever_the_read_sizes(case: Case):
    """FreeSWITCH's bytes arrive as the kernel cuts them: fed one byte at a time,
    every case ends the same."""
    steps = []
    for step in case.steps:
        if step[0] == "feed":
            steps += [feed(step[1][i : i + 1]) for i in range(len(step[1]))]
        else:
            steps.append(step)
    conn, tickets, _ = run(steps)
    assert {name: outcome(tickets[name]) for name in case.tickets} == case.tickets
    assert {name: getattr(conn, name) for name in case.state} == case.state


def test_the_connect_reply_gives_the_a_leg_and_keeps_only_what_cardd_reads():
    conn = EslConnection()
    data, ticket = conn.send_command("connect")
    assert data == b"connect\n\n"
    big = "".join(f"variable_x{i}: {i}\n" for i in range(150))
    conn.receive_data(
        (
            "Content-Type: command/reply\nReply-Text: %2BOK\nUnique-ID: "
            + A
            + "\nCaller-Caller-ID-Number: 15555550100\n"
            + big
            + "\n"
        ).encode()
    )
    conn.channel_connected(ticket.result())
    assert conn.uuid == A
    assert dict(conn.channel_data) == {"Unique-ID": A, "Caller-Caller-ID-Number": "15555550100"}


def test_events_of_the_calls_legs_are_handed_out_and_foreign_ones_are_not():
    _, _, events = run(
        [leg(B), event("DTMF", DTMF_Digit="1"), event("DTMF", C, DTMF_Digit="2"), event("CHANNEL_HANGUP", B)]
    )
    assert [(e.name, e.unique_id) for e in events] == [("DTMF", A), ("CHANNEL_HANGUP", B)]


def test_an_execute_carries_its_event_uuid_and_event_lock():
    conn = connected()
    data, _, _ = conn.send_execute("bridge", "sofia/gw/x", app_uuid="e-1", event_lock=False)
    assert data == (
        b"sendmsg\ncall-command: execute\nexecute-app-name: bridge\nexecute-app-arg: sofia/gw/x\nEvent-UUID: e-1\n\n"
    )
    data, _, _ = conn.send_execute("playback", "/s/a.wav", app_uuid="e-2")
    assert b"event-lock: true\n" in data and b"Event-UUID: e-2\n" in data


def test_an_execute_after_the_caller_hung_up_is_refused_at_once():
    conn, _, _ = run([event("CHANNEL_HANGUP", Hangup_Cause="NORMAL_CLEARING")])
    with pytest.raises(CallGone, match="NORMAL_CLEARING"):
        conn.send_execute("playback", "/s/a.wav")
    assert not conn._replies  # nothing left waiting for a reply that will not come


def test_a_command_on_a_closed_connection_is_refused_at_once():
    conn, _, _ = run([close("no reply to linger")])
    with pytest.raises(CallGone, match="no reply to linger"):
        conn.send_command("linger")


def test_a_command_with_a_line_break_is_refused_and_leaves_no_waiter():
    conn = connected()
    with pytest.raises(ProtocolError):
        conn.send_command("api uuid_kill x\nevent plain ALL")
    _, linger = conn.send_command("linger")
    conn.receive_data(encode_reply("+OK will linger"))
    assert linger.result().reply_text == "+OK will linger"


def test_a_malformed_frame_is_a_protocol_error():
    conn = connected()
    with pytest.raises(ProtocolError):
        conn.receive_data(b"Content-Length: bogus\n\n")
