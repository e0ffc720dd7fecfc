"""cardd's inbound Event Socket client: auth, api, exit, every wait bounded.

The orphan rule (cardd.orphans) asks FreeSWITCH `api uuid_exists` and
`api switchname` through the inbound socket (8021). This client is cardd's own,
not greenswitch's InboundESL, because InboundESL (greenswitch 0.0.19) cannot
meet cardd's rule that every wait has a deadline:

- connect() waits for auth/request with no deadline (`_auth_request_event.wait()`),
  and then sets the socket's timeout to None: a box that accepts the TCP
  connection and says nothing holds the orphan pass for ever;
- send() waits for its reply with no deadline (`async_response.get()`); bounding
  it from outside (gevent.Timeout) leaves its reply FIFO one behind, so the next
  command would take the late reply of the previous one;
- a body cut short by a closed socket spins for ever in `_read_socket` (it adds
  the empty reads up until the length is reached);
- stop() joins its two greenlets with no deadline, and one of them polls a queue
  once a second;
- it url-decodes a whole header block before splitting it into lines, and an
  unexpected reply pops an empty list (IndexError in its reader).

Here the connection, each reply and each write are bounded by `timeout`; frames are cut
by cardd.esl.protocol; anything wrong is one InboundEslError, so the orphan rule
leaves reservations open rather than settling on a guess. It subscribes to
nothing, so every frame it reads is the reply to its own last command.
"""

from __future__ import annotations

import time

from gevent import socket

from cardd.errors import ESLTimeout, InboundEslError, ProtocolError
from cardd.esl.protocol import Frame, FrameParser, encode_command


class InboundEsl:
    """A minimal inbound Event Socket client: auth, api, exit. Every wait (the
    connection, each reply, each write) is bounded by `timeout` seconds."""

    def __init__(self, address: tuple[str, int], password: str, *, timeout: float = 5.0):
        self.address = address
        self.password = password
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._parser = FrameParser()

    def __enter__(self) -> InboundEsl:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        try:
            self._sock = socket.create_connection(self.address, timeout=self.timeout)
        except OSError as exc:
            raise InboundEslError(f"cannot reach FreeSWITCH at {self.address[0]}:{self.address[1]}: {exc}") from None
        hello = self._read()
        if hello.content_type != "auth/request":
            raise InboundEslError(f"expected auth/request, got {hello.content_type!r}")
        reply = self._command(f"auth {self.password}")
        if not (reply.reply_text or "").startswith("+OK"):
            raise InboundEslError("FreeSWITCH refused the inbound ESL password")

    def api(self, command: str) -> str:
        frame = self._command(f"api {command}")
        if frame.content_type != "api/response":
            raise InboundEslError(f"expected api/response, got {frame.content_type!r}")
        return frame.body.decode("utf-8", errors="replace")

    def uuid_exists(self, leg_uuid: str) -> bool:
        answer = self.api(f"uuid_exists {leg_uuid}").strip()
        if answer not in ("true", "false"):
            raise InboundEslError(f"uuid_exists answered {answer[:60]!r}")
        return answer == "true"

    def switchname(self) -> str:
        """The box's own name (`api switchname`), as its channels report it
        in FreeSWITCH-Switchname."""
        name = self.api("switchname").strip()
        if not name or name.startswith("-ERR") or len(name) > 255:
            raise InboundEslError(f"switchname answered {name[:60]!r}")
        return name

    def close(self) -> None:
        if self._sock is None:
            return
        try:
            self._sock.sendall(encode_command("exit"))
        except OSError:
            pass
        try:
            self._sock.close()
        except OSError:
            pass
        self._sock = None

    def _command(self, text: str) -> Frame:
        if self._sock is None:
            raise InboundEslError("not connected")
        try:
            self._sock.sendall(encode_command(text))
        except OSError as exc:
            raise InboundEslError(f"inbound ESL write failed: {exc}") from None
        return self._read()

    def _read(self) -> Frame:
        assert self._sock is not None
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                frame = self._parser.next_frame()
            except ProtocolError as exc:
                raise InboundEslError(f"malformed inbound ESL frame: {exc}") from None
            if frame is not None:
                if frame.content_type == "text/disconnect-notice":
                    raise InboundEslError("FreeSWITCH closed the inbound connection")
                return frame
            left = deadline - time.monotonic()
            if left <= 0:
                raise InboundEslError("inbound ESL reply timed out")
            self._sock.settimeout(left)
            try:
                data = self._sock.recv(65536)
            except (OSError, ESLTimeout) as exc:
                raise InboundEslError(f"inbound ESL read failed: {exc}") from None
            if not data:
                raise InboundEslError("FreeSWITCH closed the inbound connection")
            self._parser.feed(data)
