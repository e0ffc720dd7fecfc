"""One outbound Event Socket connection: cardd's thin layer over greenswitch.

greenswitch's OutboundSession gives us the class shape and the FIFO of
command replies. What it gets wrong for a calling-card IVR (ESL.md) is
replaced here:

- frames are cut by cardd.esl.protocol (bytes, Content-Length) instead of
  readline + unquote of the whole block;
- events are dispatched inline by the reader greenlet: no second greenlet
  polling a queue once a second;
- every execute carries an Event-UUID and completes on the matching
  Application-UUID, never on the application name;
- every wait has a deadline, and every waiter is released with CallGone when
  the call goes away;
- events are accepted only when their Unique-ID is one of this call's legs.
"""

from __future__ import annotations

import logging
import time
import uuid as uuidlib
from collections import deque
from collections.abc import Callable

import gevent
from gevent.event import AsyncResult
from greenswitch.esl import OutboundSession

from cardd.errors import CallGone, ESLTimeout, ProtocolError
from cardd.esl.protocol import Event, Frame, FrameParser, Headers, encode_command, encode_execute

log = logging.getLogger(__name__)

# What cardd subscribes to: A's and B's legs through `filter Unique-ID`,
# never myevents (which hides B's billmsec; captures 08b, 14-20). Only the
# events cardd acts on: the rest (CHANNEL_EXECUTE, CHANNEL_STATE, ...) would
# double the bytes FreeSWITCH serialises and cardd parses per call.
EVENTS = "CHANNEL_EXECUTE_COMPLETE CHANNEL_HANGUP CHANNEL_HANGUP_COMPLETE DTMF"

_RECV_BYTES = 65536

CHANNEL_DATA_KEPT = ("Unique-ID", "Channel-Name", "Caller-Caller-ID-Number",
                     "Caller-Caller-ID-Name", "Caller-Destination-Number", "Caller-RDNIS",
                     "Caller-Network-Addr", "variable_rdnis", "variable_sip_from_user")


class EslSession(OutboundSession):
    """The daemon side of one call's socket."""

    def __init__(self, sock, address, *, reply_timeout: float = 10.0,
                 on_protocol_error: Callable[[], None] | None = None):
        # Set before the base class spawns the reader greenlet.
        self._parser = FrameParser()
        self._replies: deque[AsyncResult] = deque()
        self._executions: dict[str, AsyncResult] = {}
        self._leg_ends: dict[str, AsyncResult] = {}
        self._legs: set[str] = set()
        self._listeners: list[Callable[[Event], None]] = []
        self._reply_timeout = reply_timeout
        self._on_protocol_error = on_protocol_error
        self.a_hungup = False
        self.hangup_cause: str | None = None
        # DTMF events seen on A: tells "typed nothing" from "typed only #",
        # which play_and_get_digits reports alike (captures 04, 19).
        self.dtmf_count = 0
        self.closed = False
        super().__init__(address, sock)

    # -- greenswitch hooks ---------------------------------------------------

    def start_event_handlers(self) -> None:
        self._receive_events_greenlet = gevent.spawn(self.receive_events)

    def receive_events(self) -> None:
        parser = self._parser
        try:
            while True:
                data = self.sock.recv(_RECV_BYTES)
                if not data:
                    break
                parser.feed(data)
                for frame in parser:
                    self._dispatch(frame)
                # Drop the last chunk and frame before blocking in recv():
                # held for the life of a bridged call, they cost ~90 KB each.
                data = frame = None
        except ProtocolError as exc:
            log.error("[%s] ESL protocol error from FreeSWITCH: %s", self.uuid, exc)
            if self._on_protocol_error:
                self._on_protocol_error()
        except OSError as exc:
            log.debug("[%s] socket error: %s", self.uuid, exc)
        finally:
            self._close("socket closed")

    def stop(self) -> None:
        """Say `exit` (bounded) and close. Safe to call twice."""
        if not self.closed:
            try:
                self.command("exit", timeout=2.0)
            except (CallGone, ESLTimeout, OSError):
                pass
        self._close("stopped")
        for closable in (self.sock_file, self.sock):
            try:
                closable.close()
            except OSError:
                pass

    # -- sending ---------------------------------------------------------------

    def _write(self, data: bytes) -> AsyncResult:
        if self.closed:
            raise CallGone("socket closed")
        waiter = AsyncResult()
        self._replies.append(waiter)
        try:
            self.sock.sendall(data)
        except OSError as exc:
            self._close(f"send failed: {exc}")
            raise CallGone(f"send failed: {exc}") from None
        return waiter

    def _wait(self, waiter: AsyncResult, timeout: float, what: str):
        try:
            return waiter.get(timeout=timeout)
        except gevent.Timeout:
            raise ESLTimeout(f"no answer to {what} within {timeout:g} s") from None

    def _wait_reply(self, waiter: AsyncResult, timeout: float, what: str) -> Frame:
        try:
            return self._wait(waiter, timeout, what)
        except ESLTimeout:
            # Replies are matched in order: once one is missing, every later
            # reply would land on the wrong waiter. The socket is done.
            self._close(f"no reply to {what}")
            raise

    def command(self, text: str, *, timeout: float | None = None) -> Frame:
        """A plain command; returns its command/reply or api/response frame."""
        waiter = self._write(encode_command(text))
        return self._wait_reply(waiter, timeout or self._reply_timeout, text.split(" ", 1)[0])

    def api(self, command: str, *, timeout: float | None = None) -> str:
        frame = self.command("api " + command, timeout=timeout)
        return frame.body.decode("utf-8", "replace")

    def connect(self) -> Headers:
        frame = self.command("connect")
        # The connect reply is the whole channel (~150 headers); a call keeps
        # only what cardd reads, as a bridged call may live for an hour.
        raw = frame.headers.raw
        self.session_data = Headers({k: raw[k] for k in CHANNEL_DATA_KEPT if k in raw})
        self._outbound_connected = True
        self._legs.add(self.uuid)
        return frame.headers

    @property
    def uuid(self) -> str | None:
        data = self.session_data
        return data.get("Unique-ID") if data is not None else None

    def subscribe(self) -> None:
        """linger, then A's filter and the plain event list (capture 14's order)."""
        self.command("linger")
        self.command(f"filter Unique-ID {self.uuid}")
        self.command(f"event plain {EVENTS}")

    def add_leg(self, leg_uuid: str) -> None:
        """Let a B leg's events through (its uuid was chosen by cardd)."""
        self._legs.add(leg_uuid)
        self._leg_ends[leg_uuid] = AsyncResult()
        self.command(f"filter Unique-ID {leg_uuid}")

    def execute(self, app: str, arg: str = "", *, timeout: float,
                event_lock: bool = True) -> Event:
        """Run a dialplan application on A and wait for its completion."""
        if self.a_hungup:
            raise CallGone(f"call already hung up ({self.hangup_cause})")
        app_uuid = str(uuidlib.uuid4())
        done = AsyncResult()
        self._executions[app_uuid] = done
        deadline = time.monotonic() + timeout
        try:
            reply = self._wait_reply(self._write(encode_execute(
                app, arg, event_uuid=app_uuid, event_lock=event_lock)),
                self._reply_timeout, app)
            if not (reply.reply_text or "").startswith("+OK"):
                raise ProtocolError(f"{app} refused: {reply.reply_text}")
            return self._wait(done, max(0.0, deadline - time.monotonic()), app)
        finally:
            self._executions.pop(app_uuid, None)

    def wait_leg_end(self, leg_uuid: str, timeout: float) -> Event | None:
        """B's CHANNEL_HANGUP_COMPLETE, or None when it does not come in time."""
        waiter = self._leg_ends.get(leg_uuid)
        if waiter is None:
            return None
        try:
            return waiter.get(timeout=timeout)
        except (gevent.Timeout, CallGone):
            return None

    def add_listener(self, listener: Callable[[Event], None]) -> None:
        self._listeners.append(listener)

    # -- receiving -------------------------------------------------------------

    def _dispatch(self, frame: Frame) -> None:
        ctype = frame.content_type
        if ctype == "text/event-plain":
            self._on_event(frame.event())
        elif ctype in ("command/reply", "api/response"):
            if self._replies:
                self._replies.popleft().set(frame)
            else:
                log.warning("[%s] reply with no command waiting: %r", self.uuid, frame)
        elif ctype == "text/disconnect-notice":
            if frame.headers.get("Content-Disposition") == "linger":
                # Events keep flowing after a linger notice (captures 11b, 20).
                self._lingering = True
            else:
                self._close("disconnected by FreeSWITCH")
        else:
            log.debug("[%s] ignored frame %r", self.uuid, frame)

    def _on_event(self, event: Event) -> None:
        leg = event.unique_id
        if leg not in self._legs:
            return  # another channel's event: never ours to act on
        name = event.name
        if name == "CHANNEL_EXECUTE_COMPLETE":
            waiter = self._executions.get(event.application_uuid or "")
            if waiter is not None:
                waiter.set(event)
        elif leg == self.uuid:
            if name == "DTMF":
                self.dtmf_count += 1
            elif name == "CHANNEL_HANGUP":
                self.a_hungup = True
                self.hangup_cause = event.get("Hangup-Cause")
            elif name == "CHANNEL_HANGUP_COMPLETE":
                self.a_hungup = True
                # A's last event: every app that ran has completed by now.
                self._release_executions(CallGone("call ended"))
        elif name == "CHANNEL_HANGUP_COMPLETE":
            waiter = self._leg_ends.get(leg)
            if waiter is not None:
                waiter.set(event)
        for listener in self._listeners:
            listener(event)

    def _release_executions(self, exc: Exception) -> None:
        for waiter in self._executions.values():
            if not waiter.ready():
                waiter.set_exception(exc)

    def _close(self, why: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.connected = False
        self._outbound_connected = False
        exc = CallGone(why)
        while self._replies:
            waiter = self._replies.popleft()
            if not waiter.ready():
                waiter.set_exception(exc)
        self._release_executions(exc)
        for waiter in self._leg_ends.values():
            if not waiter.ready():
                waiter.set_exception(exc)
