"""FreeSWITCH's inbound Event Socket (port 8021) on the simulated switch.

What cardd needs it for: asking whether a call still exists (`api
uuid_exists`), killing one, and observing calls (`event plain` + `filter`).
Wire forms follow mod_event_socket: `auth/request` on connect, `+OK accepted`
or `-ERR invalid`, and on `exit` a disconnect notice without
Controlled-Session-UUID (README fact 27).
"""

from __future__ import annotations

import logging
import socket

import gevent
import gevent.event
from gevent.server import StreamServer

from cardd.errors import ProtocolError
from cardd.esl.protocol import DISCONNECT_BODY, FrameParser, encode_api_response, encode_event, encode_reply
from cardd.sim import wire
from cardd.sim.channel import new_uuid

log = logging.getLogger(__name__)


class InboundListener:
    """One inbound connection's subscription and socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.authed = False
        self.names: set[str] = set()
        self.all = False
        self.filters: list[tuple[str, str]] = []
        self.out = bytearray()
        self.ready = gevent.event.Event()
        self.open = True

    def send(self, data: bytes) -> None:
        if self.open:
            self.out += data
            self.ready.set()

    def offer(self, name: str, headers: list[tuple[str, str]]) -> None:
        if not (self.open and self.authed and (self.all or name in self.names)):
            return
        if self.filters:
            hd = dict(headers)
            if not any(hd.get(h) == v for h, v in self.filters):
                return
        self.send(wire.encode_event(headers))


class InboundServer:
    """switch.listen_inbound(...) starts one; `.address` is (host, port)."""

    def __init__(self, switch, host: str = "127.0.0.1", port: int = 0, password: str = "ClueCon"):
        self.switch = switch
        self.password = password
        self.server = StreamServer((host, port), self._handle)
        self.server.start()

    @property
    def address(self) -> tuple[str, int]:
        return self.server.address[:2]

    def stop(self) -> None:
        self.server.stop()

    def _handle(self, sock, addr) -> None:
        lst = InboundListener(sock)
        writer = gevent.spawn(self._writer, lst)
        self.switch.inbound.append(lst)
        lst.send(b"Content-Type: auth/request\n\n")
        parser = FrameParser(commands=True)
        try:
            while lst.open:
                data = sock.recv(65536)
                if not data:
                    break
                parser.feed(data)
                for frame in parser:
                    self._command(lst, frame.headers.raw)
                    if not lst.open:
                        break
        except (OSError, ProtocolError) as exc:
            log.debug("inbound connection ended: %s", exc)
        finally:
            lst.open = False
            lst.ready.set()
            if lst in self.switch.inbound:
                self.switch.inbound.remove(lst)
            writer.join(2)
            try:
                sock.close()
            except OSError:
                pass

    @staticmethod
    def _writer(lst: InboundListener) -> None:
        while True:
            lst.ready.wait()
            lst.ready.clear()
            if lst.out:
                data = bytes(lst.out)
                del lst.out[:]
                try:
                    lst.sock.sendall(data)
                except OSError:
                    return
            if not lst.open:
                return

    def _command(self, lst: InboundListener, raw: dict[str, str]) -> None:
        line = raw.get("Command", "")
        verb, _, rest = line.partition(" ")
        verb = verb.lower()
        if not lst.authed:
            if verb == "auth" and rest.strip() == self.password:
                lst.authed = True
                lst.send(encode_reply("+OK accepted"))
            elif verb == "auth":
                lst.send(encode_reply("-ERR invalid"))
                lst.open = False
            else:
                lst.send(encode_reply("-ERR command not found"))
            return
        if verb == "api":
            lst.send(encode_api_response(self.switch.api(rest)))
        elif verb == "bgapi":
            job = raw.get("Job-UUID") or new_uuid()
            lst.send(encode_reply(f"+OK Job-UUID: {job}", {"Job-UUID": job}))
            body = self.switch.api(rest)
            if lst.all or "BACKGROUND_JOB" in lst.names:
                cmd, _, arg = rest.partition(" ")
                lst.send(
                    encode_event(
                        [
                            ("Event-Name", "BACKGROUND_JOB"),
                            ("Job-UUID", job),
                            ("Job-Command", cmd),
                            ("Job-Command-Arg", arg),
                        ],
                        body.encode("utf-8"),
                    )
                )
        elif verb == "event":
            parts = rest.split()
            fmt = parts.pop(0).lower() if parts and parts[0].lower() in ("plain", "json", "xml") else "plain"
            for name in parts:
                if name.upper() == "ALL":
                    lst.all = True
                else:
                    lst.names.add(name.upper())
            lst.send(encode_reply(f"+OK event listener enabled {fmt}"))
        elif verb == "filter":
            header, _, value = rest.partition(" ")
            lst.filters.append((header, value))
            lst.send(encode_reply(f"+OK filter added. [{header}]=[{value}]"))
        elif verb == "exit":
            lst.send(encode_reply("+OK bye"))
            lst.send(
                b"Content-Type: text/disconnect-notice\nContent-Length: %d\n\n" % len(DISCONNECT_BODY) + DISCONNECT_BODY
            )
            lst.open = False
        else:
            lst.send(encode_reply("-ERR command not found"))
