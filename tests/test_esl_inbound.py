"""cardd's inbound ESL client (cardd.esl.inbound): every wait ends by its deadline.

The peer is a listening socket the test drives itself, so each test is one way
a FreeSWITCH box can misbehave where greenswitch's InboundESL would wait for
ever (see the module's docstring). The happy path against the simulator is in
tests/test_orphans.py.
"""

from __future__ import annotations

import gevent
import pytest
from gevent import socket
from gevent.event import Event

from cardd.esl.inbound import InboundEsl, InboundEslError
from cardd.esl.protocol import FrameParser, encode_reply

AUTH_REQUEST = b"Content-Type: auth/request\n\n"


class Box:
    """A listening socket; `script(conn, commands)` plays FreeSWITCH's side
    of one connection, `commands()` reads the next command the client sent."""

    def __init__(self, script):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.address = self.listener.getsockname()
        self.done = Event()
        self._greenlet = gevent.spawn(self._serve, script)

    def _serve(self, script) -> None:
        conn, _ = self.listener.accept()
        parser = FrameParser(commands=True)

        def command() -> str:
            while (frame := parser.next_frame()) is None:
                data = conn.recv(65536)
                if not data:
                    return ""
                parser.feed(data)
            return frame.headers["Command"]

        try:
            script(conn, command)
            self.done.wait()  # hold the connection open until the test is over
        finally:
            conn.close()

    def close(self) -> None:
        self.done.set()
        self._greenlet.join(timeout=30)
        self.listener.close()


@pytest.fixture
def box():
    boxes = []

    def make(script):
        boxes.append(Box(script))
        return boxes[-1]

    yield make
    for b in boxes:
        b.close()


def test_a_box_that_accepts_and_never_asks_for_auth_is_given_up_at_the_deadline(box):
    silent = box(lambda conn, command: None)
    with pytest.raises(InboundEslError, match="timed out"):
        InboundEsl(silent.address, "ClueCon", timeout=0.2).connect()


def test_a_reply_that_never_comes_is_given_up_at_the_deadline(box):
    def script(conn, command):
        conn.sendall(AUTH_REQUEST)
        assert command() == "auth ClueCon"
        conn.sendall(encode_reply("+OK accepted"))
        assert command() == "api switchname"  # and no answer

    mute = box(script)
    esl = InboundEsl(mute.address, "ClueCon", timeout=0.2)
    esl.connect()
    try:
        with pytest.raises(InboundEslError, match="timed out"):
            esl.switchname()
    finally:
        esl.close()


def test_an_answer_cut_short_by_a_closed_socket_is_an_error_not_a_wait(box):
    def script(conn, command):
        conn.sendall(AUTH_REQUEST)
        command()
        conn.sendall(encode_reply("+OK accepted"))
        command()
        conn.sendall(b"Content-Type: api/response\nContent-Length: 100\n\ntru")
        conn.close()

    cut = box(script)
    esl = InboundEsl(cut.address, "ClueCon", timeout=30)
    esl.connect()
    try:
        with pytest.raises(InboundEslError, match="closed"):
            esl.uuid_exists("bbbbbbbb-0000-0000-0000-000000000002")
    finally:
        esl.close()


def test_a_refused_password_is_an_inbound_esl_error(box):
    def script(conn, command):
        conn.sendall(AUTH_REQUEST)
        command()
        conn.sendall(encode_reply("-ERR invalid"))

    refusing = box(script)
    with pytest.raises(InboundEslError, match="refused"):
        InboundEsl(refusing.address, "wrong", timeout=30).connect()
