"""A tiny scripted outbound-ESL server for testing the simulator itself.

Not the daemon: a test writes the call flow as a function of a `ToyConn`
(send a command, execute an app and wait for its completion by
Application-UUID, read events), and the simulator calls into it.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable

import gevent
import gevent.event
import gevent.queue
from gevent.server import StreamServer

from cardd.esl.protocol import Frame, FrameParser, encode_command, encode_execute


class ToyConn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.parser = FrameParser()
        self.frames: list[Frame] = []  # everything received, in order
        self.events: list = []  # parsed events, in order
        self._replies: gevent.queue.Queue = gevent.queue.Queue()
        self._new = gevent.event.Event()
        self.closed = False
        self._reader = gevent.spawn(self._read)

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                self.closed = True
                self._replies.put(None)
                self._new.set()
                return
            self.parser.feed(data)
            for frame in self.parser:
                self.frames.append(frame)
                ct = frame.content_type
                if ct in ("command/reply", "api/response"):
                    self._replies.put(frame)
                elif ct == "text/event-plain":
                    self.events.append(frame.event())
                self._new.set()

    def command(self, text: str, headers: dict | None = None, timeout: float = 10) -> Frame:
        self.sock.sendall(encode_command(text, headers))
        return self._replies.get(timeout=timeout)

    def execute(self, app: str, arg: str = "", *, lock: bool = True, wait: bool = True, timeout: float = 30):
        ev_uuid = str(uuid.uuid4())
        self.sock.sendall(encode_execute(app, arg, event_uuid=ev_uuid, event_lock=lock))
        self._replies.get(timeout=timeout)
        if not wait:
            return ev_uuid
        return self.wait_event(
            lambda e: e.name == "CHANNEL_EXECUTE_COMPLETE" and e.headers.raw.get("Application-UUID") == ev_uuid, timeout
        )

    def wait_event(self, pred: Callable, timeout: float = 30):
        seen = 0
        with gevent.Timeout(timeout):
            while True:
                for e in self.events[seen:]:
                    if pred(e):
                        return e
                seen = len(self.events)
                if self.closed:
                    return None
                self._new.clear()
                if len(self.events) == seen and not self.closed:
                    self._new.wait()

    def wait_closed(self, timeout: float = 30) -> None:
        self._reader.join(timeout)


class ToyDaemon:
    """StreamServer on an ephemeral port running `flow(conn)` per call."""

    def __init__(self, flow: Callable[[ToyConn], None]):
        self.flow = flow
        self.conns: list[ToyConn] = []
        self.errors: list[BaseException] = []
        self.finished = 0
        self._finished_ev = gevent.event.Event()
        self.server = StreamServer(("127.0.0.1", 0), self._handle)
        self.server.start()

    @property
    def port(self) -> int:
        return self.server.address[1]

    def _handle(self, sock, addr) -> None:
        conn = ToyConn(sock)
        self.conns.append(conn)
        try:
            self.flow(conn)
        except BaseException as exc:  # reported by the test, never swallowed
            self.errors.append(exc)
            raise
        finally:
            try:
                sock.close()
            except OSError:
                pass
            self.finished += 1
            self._finished_ev.set()

    def join(self, n: int = 1, timeout: float = 30) -> None:
        """Wait until `n` connections' flows have returned."""
        with gevent.Timeout(timeout):
            while self.finished < n:
                self._finished_ev.clear()
                self._finished_ev.wait()

    def stop(self) -> None:
        self.server.stop()
