"""The rules of one outbound Event Socket connection, sans-IO.

Bytes in, outcomes out; no sockets, no greenlets, no clocks. The way h11 keeps
HTTP's state machine apart from any I/O, this object holds what cardd knows
about one call's socket and what each waiting caller is owed:

- command replies (command/reply, api/response) come back in the order the
  commands were sent: each one completes the oldest outstanding command;
- every execute carries an Event-UUID and completes on the
  CHANNEL_EXECUTE_COMPLETE whose Application-UUID matches, never on the
  application name (a late completion of an earlier playback ends nothing);
- only events of this call's legs count (A's Unique-ID, and the B legs cardd
  named); a foreign channel's events are dropped;
- A's CHANNEL_HANGUP marks the caller gone; A's CHANNEL_HANGUP_COMPLETE, its
  last event, releases every execute still waiting with CallGone; a B leg's
  CHANNEL_HANGUP_COMPLETE ends that leg's wait;
- a linger disconnect-notice keeps events flowing (captures 11b, 20); any other
  disconnect-notice, a closed socket or a missing reply closes the connection
  and releases every waiter with CallGone.

cardd.esl.session drives it: it writes the bytes this object hands out, feeds it
what the socket reads, and wakes whoever waits on a Ticket once it is done.
Deadlines are the driver's: here a wait is only ever done or not yet.
"""

from __future__ import annotations

import logging
import uuid as uuidlib
from collections import deque
from collections.abc import Iterable
from typing import Generic, TypeVar

from cardd.errors import CallGone
from cardd.esl.protocol import Event, Frame, FrameParser, Headers, encode_command, encode_execute

log = logging.getLogger(__name__)

# What a call keeps of the connect reply (~150 headers): what cardd reads, as a
# bridged call may live for an hour.
CHANNEL_DATA_KEPT = (
    "Unique-ID",
    "Channel-Name",
    "Caller-Caller-ID-Number",
    "Caller-Caller-ID-Name",
    "Caller-Destination-Number",
    "Caller-RDNIS",
    "Caller-Network-Addr",
    "variable_rdnis",
    "variable_sip_from_user",
)


T = TypeVar("T", Frame, Event)


class Ticket(Generic[T]):
    """One thing a caller waits for: a command's reply (a Frame), an execute's
    completion or a B leg's end (an Event). Done once, with a value or an error."""

    __slots__ = ("what", "done", "value", "error")

    def __init__(self, what: str):
        self.what = what
        self.done = False
        self.value: T | None = None
        self.error: BaseException | None = None

    def resolve(self, value: T) -> bool:
        if self.done:
            return False
        self.done, self.value = True, value
        return True

    def fail(self, error: BaseException) -> bool:
        if self.done:
            return False
        self.done, self.error = True, error
        return True

    def result(self) -> T:
        """The value, or the error raised; only once done."""
        assert self.done, f"{self.what}: not done"
        if self.error is not None:
            raise self.error
        assert self.value is not None
        return self.value

    def __repr__(self) -> str:
        state = "pending" if not self.done else ("failed" if self.error is not None else "done")
        return f"Ticket({self.what!r}, {state})"


Output = Ticket[Frame] | Ticket[Event] | Event
"""What receive_data() returns: the tickets it completed, and the accepted
events of this call's legs (for listeners), in the order they happened."""


class EslConnection:
    """One call's outbound socket, as state. Not thread- or greenlet-aware:
    one reader feeds it, callers take tickets from it between feeds."""

    def __init__(self) -> None:
        self._parser = FrameParser()
        self._replies: deque[Ticket[Frame]] = deque()
        self._executions: dict[str, Ticket[Event]] = {}
        self._leg_ends: dict[str, Ticket[Event]] = {}
        self._legs: set[str] = set()
        self.channel_data: Headers | None = None
        self.a_hungup = False
        self.hangup_cause: str | None = None
        # DTMF events seen on A: tells "typed nothing" from "typed only #",
        # which play_and_get_digits reports alike (captures 04, 19).
        self.dtmf_count = 0
        self.lingering = False
        self.closed = False
        self.close_reason: str | None = None

    @property
    def uuid(self) -> str | None:
        """A's Unique-ID, once the connect reply was read."""
        data = self.channel_data
        return data.get("Unique-ID") if data is not None else None

    # -- what the daemon sends ---------------------------------------------------

    def send_command(self, text: str) -> tuple[bytes, Ticket[Frame]]:
        """The bytes of a plain command and the ticket its reply completes."""
        data = encode_command(text)  # refused line breaks leave no ticket behind
        return data, self._expect_reply(text.split(" ", 1)[0])

    def send_execute(
        self, app: str, arg: str = "", *, event_lock: bool = True, app_uuid: str | None = None
    ) -> tuple[bytes, Ticket[Frame], Ticket[Event]]:
        """A sendmsg execute on A: (bytes, reply ticket, completion ticket).
        Call forget_execution(completion) once no longer waiting for it."""
        if self.a_hungup:
            raise CallGone(f"call already hung up ({self.hangup_cause})")
        app_uuid = app_uuid or str(uuidlib.uuid4())
        data = encode_execute(app, arg, event_uuid=app_uuid, event_lock=event_lock)
        reply = self._expect_reply(app)
        completion: Ticket[Event] = Ticket(app)
        self._executions[app_uuid] = completion
        return data, reply, completion

    def forget_execution(self, completion: Ticket[Event]) -> None:
        for app_uuid, ticket in list(self._executions.items()):
            if ticket is completion:
                del self._executions[app_uuid]

    def _expect_reply(self, what: str) -> Ticket[Frame]:
        if self.closed:
            raise CallGone(self.close_reason or "socket closed")
        ticket: Ticket[Frame] = Ticket(what)
        self._replies.append(ticket)
        return ticket

    def channel_connected(self, reply: Frame) -> None:
        """The connect reply: the A leg's channel data; A's events count from now."""
        raw = reply.headers.raw
        self.channel_data = Headers({k: raw[k] for k in CHANNEL_DATA_KEPT if k in raw})
        if self.uuid is not None:
            self._legs.add(self.uuid)

    def add_leg(self, leg_uuid: str) -> Ticket[Event]:
        """Let a B leg's events through (its uuid was chosen by cardd); the
        ticket completes with its CHANNEL_HANGUP_COMPLETE."""
        self._legs.add(leg_uuid)
        ticket: Ticket[Event] = Ticket(f"end of {leg_uuid}")
        self._leg_ends[leg_uuid] = ticket
        if self.closed:
            ticket.fail(CallGone(self.close_reason or "socket closed"))
        return ticket

    def leg_end(self, leg_uuid: str) -> Ticket[Event] | None:
        return self._leg_ends.get(leg_uuid)

    # -- what FreeSWITCH sends ---------------------------------------------------

    def receive_data(self, data: bytes) -> list[Output]:
        """Feed bytes read from the socket. Raises ProtocolError on a malformed
        stream (then nothing more can be read: close())."""
        self._parser.feed(data)
        out: list[Output] = []
        for frame in self._parser:
            self._on_frame(frame, out)
        return out

    def close(self, why: str) -> list[Output]:
        """The socket is done (closed, cut, a reply missing): every waiter is
        released with CallGone(why). Returns the tickets so released."""
        if self.closed:
            return []
        self.closed = True
        self.close_reason = why
        exc = CallGone(why)
        released: list[Output] = [t for t in self._replies if t.fail(exc)]
        self._replies.clear()
        released += self._release(self._executions.values(), exc)
        released += self._release(self._leg_ends.values(), exc)
        return released

    def _on_frame(self, frame: Frame, out: list[Output]) -> None:
        ctype = frame.content_type
        if ctype == "text/event-plain":
            self._on_event(frame.event(), out)
        elif ctype in ("command/reply", "api/response"):
            if self._replies:
                ticket = self._replies.popleft()
                if ticket.resolve(frame):
                    out.append(ticket)
            else:
                log.warning("reply with no command waiting: %r", frame, extra={"call_uuid": self.uuid})
        elif ctype == "text/disconnect-notice":
            if frame.headers.get("Content-Disposition") == "linger":
                # Events keep flowing after a linger notice (captures 11b, 20).
                self.lingering = True
            else:
                out.extend(self.close("disconnected by FreeSWITCH"))
        else:
            log.debug("ignored frame %r", frame, extra={"call_uuid": self.uuid})

    def _on_event(self, event: Event, out: list[Output]) -> None:
        leg = event.unique_id
        if leg not in self._legs:
            return  # another channel's event: never ours to act on
        name = event.name
        if name == "CHANNEL_EXECUTE_COMPLETE":
            ticket = self._executions.get(event.application_uuid or "")
            if ticket is not None and ticket.resolve(event):
                out.append(ticket)
        elif leg == self.uuid:
            if name == "DTMF":
                self.dtmf_count += 1
            elif name == "CHANNEL_HANGUP":
                self.a_hungup = True
                self.hangup_cause = event.get("Hangup-Cause")
            elif name == "CHANNEL_HANGUP_COMPLETE":
                self.a_hungup = True
                # A's last event: every app that ran has completed by now.
                out.extend(self._release(self._executions.values(), CallGone("call ended")))
        elif name == "CHANNEL_HANGUP_COMPLETE":
            ticket = self._leg_ends.get(leg)
            if ticket is not None and ticket.resolve(event):
                out.append(ticket)
        out.append(event)

    @staticmethod
    def _release(tickets: Iterable[Ticket[Event]], exc: BaseException) -> list[Output]:
        return [t for t in list(tickets) if t.fail(exc)]
