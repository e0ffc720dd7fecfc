"""`cardd api`: the API's WSGI application on gevent's WSGIServer, with the limits of the
`api:` section of cardd.yaml (body size, request time, connections)."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
from collections.abc import Callable, Iterable
from typing import Any

import gevent
import gevent.event
from gevent.pywsgi import WSGIServer

from cardd.api.app import PROBLEM, ApiConfig, create_app
from cardd.billing import identity
from cardd.errors import ListenError

log = logging.getLogger("cardd.api")


class RequestDeadline:
    """WSGI middleware: a request still running after `seconds` is answered 503 (problem+json)
    and its greenlet interrupted, so a slow client or query cannot hold a connection forever."""

    def __init__(self, app: Callable[..., Iterable[bytes]], seconds: float):
        self.app = app
        self.seconds = seconds

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        try:
            with gevent.Timeout(self.seconds):
                return list(self.app(environ, start_response))
        except gevent.Timeout:
            log.warning(
                "%s %s took more than %s s: answered 503",
                environ.get("REQUEST_METHOD"),
                environ.get("PATH_INFO"),
                self.seconds,
            )
            body = json.dumps(
                {
                    "type": "about:blank",
                    "title": "Service Unavailable",
                    "status": 503,
                    "detail": f"the request took longer than {self.seconds:g} s",
                }
            ).encode()
            start_response(
                "503 Service Unavailable", [("Content-Type", PROBLEM), ("Content-Length", str(len(body)))], None
            )
            return [body]


_TOO_MANY = json.dumps(
    {"type": "about:blank", "title": "Service Unavailable", "status": 503, "detail": "too many connections; try again"}
).encode()
TOO_MANY_CONNECTIONS = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: "
    + PROBLEM.encode()
    + b"\r\nContent-Length: "
    + str(len(_TOO_MANY)).encode()
    + b"\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
    + _TOO_MANY
)


class _Server(WSGIServer):
    """At most `max_connections` connections are served at once; one more is answered 503
    (problem+json) and closed at once, as the CDR listener does (cardd/httpd.py), rather than
    left in the kernel's backlog where a client cannot tell a full server from a dead one."""

    def __init__(self, *args: Any, max_connections: int, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.max_connections = max_connections
        self.active = 0

    def handle(self, sock: socket.socket, address: Any) -> None:
        if self.active >= self.max_connections:
            log.warning(
                "connection from %s refused: %s connections open (api.max_connections)",
                address[0] if address else "-",
                self.active,
            )
            try:
                with gevent.Timeout(0.5, OSError("send timed out")):
                    sock.sendall(TOO_MANY_CONNECTIONS)
                    # Read what the client sent before closing: closing on unread bytes sends a
                    # reset, which can reach the client before the answer does.
                    sock.shutdown(socket.SHUT_WR)
                    while sock.recv(65536):
                        pass
            except OSError:
                pass
            sock.close()
            return
        self.active += 1
        try:
            # A response's head and body are separate writes: without TCP_NODELAY the body waits
            # for the client's delayed ACK (40 ms on Linux) on every keep-alive request.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().handle(sock, address)
        finally:
            self.active -= 1


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def build_server(settings: Any, pool: Any) -> WSGIServer:
    api = settings.api
    config = ApiConfig(
        limits=identity.pin_limits(settings.daemon),
        topup_limits=identity.topup_limits(settings.daemon),
        session_lifetime_s=api.session_lifetime,
        max_body_bytes=api.max_body_bytes,
        max_upload_bytes=api.max_upload_bytes,
        sounds_dir=settings.daemon.sounds_dir,
    )
    app = RequestDeadline(create_app(pool, config), api.request_timeout)
    # Greenlets are not pooled: a bounded pool would stop accepting when full and leave further
    # connections in the kernel's backlog; _Server counts them and answers the one too many 503.
    return _Server(
        _address(api.listen),
        app,
        max_connections=api.max_connections,
        log=None,
        error_log=logging.getLogger("cardd.api.wsgi"),
    )


def _statement_timeout(seconds: float) -> None:
    """Every statement of this process ends within api.request_timeout, on the server's side.

    RequestDeadline answers 503 and interrupts the request's greenlet, but a query it was
    waiting on (behind a lock, say) goes on in PostgreSQL: the pool closes the connection,
    and a backend waiting on a lock does not notice its client left. libpq passes PGOPTIONS
    to every connection this process opens (the embedded server's included)."""
    ms = max(1, int(seconds * 1000))
    os.environ["PGOPTIONS"] = f"{os.environ.get('PGOPTIONS', '')} -c statement_timeout={ms}".strip()


def cmd_api(args: Any, settings: Any) -> int:
    from cardd.billing import pins
    from cardd.db import Database

    pins.use_key_of(settings.daemon)  # sign-ins check PINs with the shared key (never created here)
    _statement_timeout(settings.api.request_timeout)
    stop = gevent.event.Event()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        gevent.signal_handler(signum, stop.set)
    # A pool of daemon.pool_size connections (operator commands get 2), on the same database as `cardd serve`.
    db = Database(settings.daemon.dsn, settings.daemon.data_dir, pool_size=settings.daemon.pool_size, create=False)
    try:
        db.start()
        db.require_schema()
        server = build_server(settings, db.pool)
        try:
            server.start()
        except OSError as exc:
            raise ListenError(f"api.listen {settings.api.listen}: {exc.strerror or exc}") from None
        host, port = server.address[:2]
        log.info("API listening on http://%s:%s/api/v1 (OpenAPI: /api/v1/openapi.json)", host, port)
        stop.wait()
        server.stop(timeout=5)
    finally:
        db.close()
    log.info("API stopped")
    return 0
