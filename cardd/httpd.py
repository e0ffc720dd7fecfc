"""A small HTTP/1.1 listener for cardd's two HTTP ports (CDRs, metrics).

Both face the network, so each bounds what a client can hold: the request
head must arrive within `read_timeout` seconds and the body within another
`read_timeout`; at most `max_connections` are open at once (one more is
answered 503 and closed at once); a head over 16 KB is refused 431, a body
over `max_body` 413, without reading it. One request per connection
(`Connection: close`): mod_json_cdr and Prometheus open one per POST/scrape.
A client that goes away or times out is logged on one line, never with a
traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import gevent
from gevent.server import StreamServer

from cardd.errors import CarddError

log = logging.getLogger(__name__)

MAX_HEAD = 16 * 1024
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    411: "Length Required",
    413: "Payload Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    peer: str  # the client's IP address


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


class _Refused(CarddError):
    def __init__(self, status: int, why: str):
        super().__init__(why)
        self.status = status


class HttpListener:
    """`handler(request) -> Response` runs in the connection's greenlet.
    `on_refused(reason)`: "cap", "timeout", "too_large", "bad_request" (metrics)."""

    def __init__(
        self,
        listen: tuple[str, int],
        handler: Callable[[Request], Response],
        *,
        name: str,
        read_timeout: float = 10.0,
        max_connections: int = 64,
        max_body: int = 1024 * 1024,
        on_refused: Callable[[str], None] | None = None,
    ):
        self.handler = handler
        self.name = name
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self.max_body = max_body
        self.on_refused = on_refused
        self.active = 0
        self._server = StreamServer(listen, self._connection)

    @property
    def address(self) -> tuple[str, int]:
        return self._server.address[:2]

    def start(self) -> None:
        self._server.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._server.stop(timeout=timeout)

    # -- one connection -----------------------------------------------------------

    def _connection(self, sock, addr) -> None:
        if self.active >= self.max_connections:
            # Over the cap: a short answer, no read, closed at once.
            self._refused("cap")
            self._send(sock, Response(503, b"too many connections\n"), timeout=0.5)
            sock.close()
            return
        self.active += 1
        try:
            response = self._serve(sock, str(addr[0]) if addr else "")
            if response is not None:
                self._send(sock, response, timeout=self.read_timeout)
        finally:
            self.active -= 1
            try:
                sock.close()
            except OSError:
                pass

    def _serve(self, sock, peer: str) -> Response | None:
        try:
            head, rest = self._read_head(sock)
            method, path, headers = _parse_head(head)
            body = self._read_body(sock, headers, rest)
        except _Refused as exc:
            reason = {408: "timeout", 413: "too_large", 431: "too_large"}.get(exc.status, "bad_request")
            self._refused(reason)
            log.info("%s: %s from %s: %s", self.name, exc.status, peer, exc)
            return None if exc.status == 408 else Response(exc.status, f"{exc}\n".encode())
        except OSError as exc:
            log.info("%s: client %s went away: %s", self.name, peer, exc)
            return None
        return self.handler(Request(method, path, headers, body, peer))

    def _read_within(self, what: str, read):
        """read() under one deadline of read_timeout seconds; 408 past it."""
        deadline = gevent.Timeout(self.read_timeout)
        deadline.start()
        try:
            return read()
        except gevent.Timeout as exc:
            if exc is not deadline:
                raise
            raise _Refused(408, f"{what} not received within {self.read_timeout:g} s") from None
        finally:
            deadline.close()

    def _read_head(self, sock) -> tuple[bytes, bytes]:
        def read() -> tuple[bytes, bytes]:
            data = b""
            while True:
                end = data.find(b"\r\n\r\n")
                if end >= 0:
                    return data[:end], data[end + 4 :]
                if len(data) > MAX_HEAD:
                    raise _Refused(431, "request head too large")
                chunk = sock.recv(65536)
                if not chunk:
                    raise OSError("closed before the request head ended")
                data += chunk

        return self._read_within("request head", read)

    def _read_body(self, sock, headers: dict[str, str], rest: bytes) -> bytes:
        if "transfer-encoding" in headers:
            raise _Refused(411, "chunked bodies are not accepted: send Content-Length")
        raw = headers.get("content-length", "0").strip()
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 12:
            raise _Refused(400, "bad Content-Length")
        length = int(raw)
        if length > self.max_body:
            raise _Refused(413, f"body over {self.max_body} bytes")
        if len(rest) < length and headers.get("expect", "").lower() == "100-continue":
            sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")

        def read() -> bytes:
            body = rest[:length]
            while len(body) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    raise OSError("closed before the body ended")
                body += chunk
            return body[:length]

        return self._read_within("request body", read)

    def _send(self, sock, response: Response, *, timeout: float) -> None:
        reason = _REASONS.get(response.status, "Error")
        lines = [
            f"HTTP/1.1 {response.status} {reason}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
            "Connection: close",
        ]
        lines += [f"{k}: {v}" for k, v in response.headers]
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body
        try:
            with gevent.Timeout(timeout, OSError("send timed out")):
                sock.sendall(data)
        except OSError as exc:
            log.info("%s: reply not delivered: %s", self.name, exc)

    def _refused(self, reason: str) -> None:
        if self.on_refused is not None:
            self.on_refused(reason)


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # latin-1 decodes anything; kept for clarity
        raise _Refused(400, "undecodable request head") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _Refused(400, "bad request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _Refused(400, "bad header line")
        headers[name.lower()] = value.strip()
    return parts[0], parts[1], headers
