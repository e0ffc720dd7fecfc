"""The daemon side of one socket, driven byte by byte from the test.

The peer here is the test itself writing FreeSWITCH frames (built with the
shared encoders) into a socketpair, so each test pins one rule of the
session layer: completion by Application-UUID, Unique-ID filtering, every
waiter released when the call goes away, deadlines.
"""

from __future__ import annotations

import socket
import time

import gevent
import pytest

from cardd.errors import CallGone, ESLTimeout
from cardd.esl.protocol import FrameParser, encode_event, encode_reply
from cardd.esl.session import EslSession

A = "aaaaaaaa-0000-0000-0000-000000000001"
B = "bbbbbbbb-0000-0000-0000-000000000002"


class Peer:
    """The FreeSWITCH end of the socketpair."""

    def __init__(self, sock):
        self.sock = sock
        self.parser = FrameParser(commands=True)

    def read_command(self):
        while True:
            frame = self.parser.next_frame()
            if frame is not None:
                return frame
            data = self.sock.recv(65536)
            assert data, "daemon closed the socket"
            self.parser.feed(data)

    def send(self, data: bytes):
        self.sock.sendall(data)

    def reply(self, text="+OK"):
        self.send(encode_reply(text))

    def event(self, name, uuid=A, **headers):
        pairs = [("Event-Name", name), ("Unique-ID", uuid)]
        pairs += [(k.replace("_", "-") if not k.startswith("variable_") else k, v) for k, v in headers.items()]
        self.send(encode_event(pairs))


@pytest.fixture
def pair():
    daemon_sock, fs_sock = socket.socketpair()
    session = EslSession(daemon_sock, ("127.0.0.1", 0), reply_timeout=2.0)
    peer = Peer(fs_sock)
    connect = gevent.spawn(session.connect)
    assert peer.read_command().headers["Command"] == "connect"
    peer.send(
        b"Event-Name: CHANNEL_DATA\nUnique-ID: " + A.encode() + b"\nContent-Type: command/reply\nReply-Text: %2BOK%0A\n"
        b"Socket-Mode: async\nControl: full\n\n"
    )
    connect.get(timeout=30)
    yield session, peer
    fs_sock.close()
    session.stop()


def _execute_in_background(session, app, **kw):
    return gevent.spawn(session.execute, app, kw.pop("arg", ""), timeout=kw.pop("timeout", 2.0), **kw)


def test_connect_reply_gives_the_a_leg_uuid(pair):
    session, _ = pair
    assert session.uuid == A


def test_completion_is_matched_by_application_uuid_not_by_name(pair):
    session, peer = pair
    job = _execute_in_background(session, "playback", arg="/s/a.wav")
    cmd = peer.read_command()
    peer.reply()
    mine = cmd.headers["Event-UUID"]
    # A late completion of an earlier playback must not end this wait.
    peer.event(
        "CHANNEL_EXECUTE_COMPLETE",
        Application="playback",
        Application_UUID="someone-else",
        Application_Response="FILE PLAYED",
    )
    gevent.sleep(0.05)
    assert not job.ready()
    peer.event(
        "CHANNEL_EXECUTE_COMPLETE", Application="playback", Application_UUID=mine, Application_Response="FILE PLAYED"
    )
    assert job.get(timeout=30).get("Application-Response") == "FILE PLAYED"


def test_events_of_a_foreign_channel_are_ignored(pair):
    session, peer = pair
    job = _execute_in_background(session, "playback", arg="/s/a.wav")
    cmd = peer.read_command()
    peer.reply()
    peer.event(
        "CHANNEL_EXECUTE_COMPLETE",
        uuid="cccccccc-0000",
        Application="playback",
        Application_UUID=cmd.headers["Event-UUID"],
    )
    peer.event("CHANNEL_HANGUP", uuid="cccccccc-0000", Hangup_Cause="NORMAL_CLEARING")
    gevent.sleep(0.05)
    assert not job.ready()
    assert not session.a_hungup


def test_b_leg_hangup_does_not_mark_the_caller_gone(pair):
    session, peer = pair
    add = gevent.spawn(session.add_leg, B)
    assert peer.read_command().headers["Command"] == f"filter Unique-ID {B}"
    peer.reply(f"+OK filter added. [Unique-ID]=[{B}]")
    add.get(timeout=30)
    peer.event("CHANNEL_HANGUP", uuid=B, Hangup_Cause="ALLOTTED_TIMEOUT")
    peer.event("CHANNEL_HANGUP_COMPLETE", uuid=B, variable_billmsec="9520")
    end = session.wait_leg_end(B, timeout=2)
    assert end.variable("billmsec") == "9520"
    assert not session.a_hungup


def test_socket_close_releases_every_waiter_with_call_gone(pair):
    session, peer = pair
    job = _execute_in_background(session, "playback", arg="/s/a.wav", timeout=30)
    peer.read_command()
    peer.reply()
    peer.sock.close()
    with pytest.raises(CallGone):
        job.get(timeout=30)


def test_disconnect_notice_releases_waiters(pair):
    session, peer = pair
    job = _execute_in_background(session, "playback", arg="/s/a.wav", timeout=30)
    peer.read_command()
    peer.reply()
    peer.send(
        b"Content-Type: text/disconnect-notice\nContent-Disposition: disconnect\n"
        b"Content-Length: 67\n\nDisconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
    )
    with pytest.raises(CallGone):
        job.get(timeout=30)


def test_linger_notice_keeps_waiting_for_the_running_app(pair):
    """Capture 11b: the linger notice can come before the app's completion."""
    session, peer = pair
    job = _execute_in_background(session, "playback", arg="/s/a.wav", timeout=5)
    cmd = peer.read_command()
    peer.reply()
    peer.event("CHANNEL_HANGUP", Hangup_Cause="NORMAL_CLEARING")
    peer.send(
        b"Content-Type: text/disconnect-notice\nControlled-Session-UUID: "
        + A.encode()
        + b"\nContent-Disposition: linger\nChannel-Name: sofia/lo/1\nLinger-Time: -1\n"
        b"Content-Length: 0\n\n"
    )
    peer.event(
        "CHANNEL_EXECUTE_COMPLETE",
        Application="playback",
        Application_UUID=cmd.headers["Event-UUID"],
        Application_Response="FILE PLAYED",
    )
    assert job.get(timeout=30).get("Application-Response") == "FILE PLAYED"
    assert session.a_hungup and session.hangup_cause == "NORMAL_CLEARING"


def test_execute_after_hangup_fails_at_once(pair):
    session, peer = pair
    peer.event("CHANNEL_HANGUP", Hangup_Cause="NORMAL_CLEARING")
    deadline = time.monotonic() + 30
    while not session.a_hungup:  # the hangup event read, whatever the machine's load
        assert time.monotonic() < deadline
        gevent.sleep(0.01)
    with pytest.raises(CallGone):
        session.execute("playback", "/s/a.wav", timeout=5)


def test_completion_deadline_raises_esl_timeout(pair):
    session, peer = pair
    job = _execute_in_background(session, "playback", arg="/s/a.wav", timeout=0.2)
    peer.read_command()
    peer.reply()
    with pytest.raises(ESLTimeout):
        job.get(timeout=30)


def test_a_missing_reply_closes_the_session(pair):
    session, peer = pair
    with pytest.raises(ESLTimeout):
        session.command("linger", timeout=0.2)
    assert session.closed
    with pytest.raises(CallGone):
        session.command("linger")


def test_malformed_frame_ends_the_call_not_the_daemon(pair):
    session, peer = pair
    errors = []
    session._on_protocol_error = lambda: errors.append(1)
    job = _execute_in_background(session, "playback", arg="/s/a.wav", timeout=5)
    peer.read_command()
    peer.reply()
    peer.send(b"Content-Length: bogus\n\n")
    with pytest.raises(CallGone):
        job.get(timeout=30)
    assert errors == [1]


def test_no_method_waits_without_a_deadline(pair):
    """greenswitch's OutboundSession blocking calls (send, hangup, playback,
    bridge, ...) wait on a queue cardd never fills: none is reachable here."""
    from greenswitch.esl import ESLProtocol, OutboundSession

    session, _ = pair
    assert not isinstance(session, ESLProtocol)
    inherited = {name for name in vars(OutboundSession) | vars(ESLProtocol) if not name.startswith("__")}
    assert [name for name in sorted(inherited) if hasattr(session, name)] == [
        "connect",
        "stop",
        "uuid",
    ]  # cardd's own, with deadlines


def test_listeners_see_the_events_of_the_calls_legs_only(pair):
    session, peer = pair
    seen = []
    session.add_listener(lambda event: seen.append((event.name, event.unique_id)))
    peer.event("DTMF", uuid="cccccccc-0000", DTMF_Digit="1")
    peer.event("DTMF", DTMF_Digit="2")
    deadline = time.monotonic() + 30
    while not seen:
        assert time.monotonic() < deadline
        gevent.sleep(0.01)
    assert seen == [("DTMF", A)] and session.dtmf_count == 1
