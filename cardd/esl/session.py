"""One outbound Event Socket connection: the socket driver around EslConnection.

The rules (reply order, completion by Application-UUID, which legs' events
count, who is released when the call goes away) live in
cardd.esl.connection, sans-IO. This module only moves bytes and time:

- one reader greenlet reads the socket, feeds the connection and wakes the
  callers whose tickets it completed; events are dispatched inline, no second
  greenlet polling a queue;
- every wait has a deadline (ESLTimeout), and every waiter is released with
  CallGone when the call goes away.

It does not subclass greenswitch's OutboundSession: that class's send,
hangup, playback, bridge, ... wait on a queue of its own reader with no
deadline, so one accidental call would hang a call's greenlet. Composition
leaves nothing of the kind to inherit (greenswitch stays the benchmarks'
baseline, bench/serve.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import gevent
from gevent.event import Event as Wakeup

from cardd.errors import CallGone, ESLTimeout, ProtocolError, RemoteProtocolError
from cardd.esl.connection import EslConnection, Output, Ticket
from cardd.esl.protocol import Event, Frame, Headers

log = logging.getLogger(__name__)

# What cardd subscribes to: A's and B's legs through `filter Unique-ID`,
# never myevents (which hides B's billmsec; captures 08b, 14-20). Only the
# events cardd acts on: the rest (CHANNEL_EXECUTE, CHANNEL_STATE, ...) would
# double the bytes FreeSWITCH serialises and cardd parses per call.
EVENTS = "CHANNEL_EXECUTE_COMPLETE CHANNEL_HANGUP CHANNEL_HANGUP_COMPLETE DTMF"

_RECV_BYTES = 65536

T = TypeVar("T", Frame, Event)


class EslSession:
    """The daemon side of one call's socket."""

    def __init__(
        self,
        sock: Any,
        address: Any,
        *,
        reply_timeout: float = 10.0,
        on_protocol_error: Callable[[], None] | None = None,
    ):
        self.sock = sock
        self.address = address
        self._conn = EslConnection()
        self._wakeups: dict[Ticket[Any], Wakeup] = {}
        self._listeners: list[Callable[[Event], None]] = []
        self._reply_timeout = reply_timeout
        self._on_protocol_error = on_protocol_error
        self._reader = gevent.spawn(self._read)

    # -- what the connection knows ----------------------------------------------

    @property
    def uuid(self) -> str | None:
        return self._conn.uuid

    @property
    def session_data(self) -> Headers | None:
        return self._conn.channel_data

    @property
    def a_hungup(self) -> bool:
        return self._conn.a_hungup

    @property
    def hangup_cause(self) -> str | None:
        return self._conn.hangup_cause

    @property
    def dtmf_count(self) -> int:
        return self._conn.dtmf_count

    @property
    def closed(self) -> bool:
        return self._conn.closed

    # -- the call's side: commands and waits ------------------------------------

    def command(self, text: str, *, timeout: float | None = None) -> Frame:
        """A plain command; returns its command/reply or api/response frame."""
        data, reply = self._conn.send_command(text)
        self._send(data)
        return self._wait_reply(reply, timeout or self._reply_timeout, reply.what)

    def api(self, command: str, *, timeout: float | None = None) -> str:
        frame = self.command("api " + command, timeout=timeout)
        return frame.body.decode("utf-8", "replace")

    def connect(self) -> Headers:
        frame = self.command("connect")
        self._conn.channel_connected(frame)
        return frame.headers

    def subscribe(self) -> None:
        """linger, then A's filter and the plain event list (capture 14's order)."""
        self.command("linger")
        self.command(f"filter Unique-ID {self.uuid}")
        self.command(f"event plain {EVENTS}")

    def add_leg(self, leg_uuid: str) -> None:
        """Let a B leg's events through (its uuid was chosen by cardd)."""
        self._conn.add_leg(leg_uuid)
        self.command(f"filter Unique-ID {leg_uuid}")

    def execute(self, app: str, arg: str = "", *, timeout: float, event_lock: bool = True) -> Event:
        """Run a dialplan application on A and wait for its completion."""
        data, reply, done = self._conn.send_execute(app, arg, event_lock=event_lock)
        deadline = time.monotonic() + timeout
        try:
            self._send(data)
            frame = self._wait_reply(reply, self._reply_timeout, app)
            if not (frame.reply_text or "").startswith("+OK"):
                raise RemoteProtocolError(f"{app} refused: {frame.reply_text}")
            return self._wait(done, max(0.0, deadline - time.monotonic()), app)
        finally:
            self._conn.forget_execution(done)

    def wait_leg_end(self, leg_uuid: str, timeout: float) -> Event | None:
        """B's CHANNEL_HANGUP_COMPLETE, or None when it does not come in time."""
        ticket = self._conn.leg_end(leg_uuid)
        if ticket is None:
            return None
        try:
            return self._wait(ticket, timeout, f"the end of B {leg_uuid}")
        except (ESLTimeout, CallGone):
            return None

    def add_listener(self, listener: Callable[[Event], None]) -> None:
        """Call `listener(event)` in the reader greenlet for every event of
        this call's legs (cardd.channel's B-answered watch)."""
        self._listeners.append(listener)

    def stop(self) -> None:
        """Say `exit` (bounded) and close. Safe to call twice."""
        if not self.closed:
            try:
                self.command("exit", timeout=2.0)
            except (CallGone, ESLTimeout, OSError):
                pass
        self._close("stopped")
        try:
            self.sock.close()
        except OSError:
            pass

    # -- bytes and time ----------------------------------------------------------

    def _send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            self._close(f"send failed: {exc}")
            raise CallGone(f"send failed: {exc}") from None

    def _wait(self, ticket: Ticket[T], timeout: float, what: str) -> T:
        if not ticket.done:
            wakeup = self._wakeups[ticket] = Wakeup()
            try:
                wakeup.wait(timeout)
            finally:
                self._wakeups.pop(ticket, None)
            if not ticket.done:
                raise ESLTimeout(f"no answer to {what} within {timeout:g} s")
        return ticket.result()

    def _wait_reply(self, ticket: Ticket[Frame], timeout: float, what: str) -> Frame:
        try:
            return self._wait(ticket, timeout, what)
        except ESLTimeout:
            # Replies are matched in order: once one is missing, every later
            # reply would land on the wrong waiter. The socket is done.
            self._close(f"no reply to {what}")
            raise

    def _wake(self, outputs: list[Output]) -> None:
        for ticket in outputs:
            wakeup = self._wakeups.get(ticket) if isinstance(ticket, Ticket) else None
            if wakeup is not None:
                wakeup.set()

    def _read(self) -> None:
        conn = self._conn
        try:
            while True:
                data = self.sock.recv(_RECV_BYTES)
                if not data:
                    break
                out = conn.receive_data(data)
                self._wake(out)
                if self._listeners:
                    for item in out:
                        if isinstance(item, Event):
                            for listener in self._listeners:
                                listener(item)
                # Drop the last chunk and events before blocking in recv():
                # held for the life of a bridged call, they cost ~90 KB each.
                del data, out
        except ProtocolError as exc:
            log.error("ESL protocol error from FreeSWITCH: %s", exc, extra={"call_uuid": self.uuid})
            if self._on_protocol_error:
                self._on_protocol_error()
        except OSError as exc:
            log.debug("socket error: %s", exc, extra={"call_uuid": self.uuid})
        finally:
            self._close("socket closed")

    def _close(self, why: str) -> None:
        self._wake(self._conn.close(why))
        # Tickets completed in a batch cut short by a malformed frame.
        for ticket, wakeup in list(self._wakeups.items()):
            if ticket.done:
                wakeup.set()
