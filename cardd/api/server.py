"""`cardd api`: the API's WSGI application on gevent's WSGIServer, with the limits of the
`api:` section of cardd.yaml (body size, request time, connections)."""

from __future__ import annotations

import json
import logging
import signal
import socket
from typing import Any, Callable, Iterable

import gevent
import gevent.event
from gevent.pool import Pool
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
            log.warning("%s %s took more than %s s: answered 503", environ.get("REQUEST_METHOD"),
                        environ.get("PATH_INFO"), self.seconds)
            body = json.dumps({"type": "about:blank", "title": "Service Unavailable", "status": 503,
                               "detail": f"the request took longer than {self.seconds:g} s"}).encode()
            start_response("503 Service Unavailable", [("Content-Type", PROBLEM),
                                                        ("Content-Length", str(len(body)))], None)
            return [body]


class _Server(WSGIServer):
    def handle(self, sock: socket.socket, address: Any) -> None:
        # A response's head and body are separate writes: without TCP_NODELAY the body waits
        # for the client's delayed ACK (40 ms on Linux) on every keep-alive request.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().handle(sock, address)


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def build_server(settings: Any, pool: Any) -> WSGIServer:
    api = settings.api
    config = ApiConfig(limits=identity.pin_limits(settings.daemon), topup_limits=identity.topup_limits(settings.daemon),
                       session_lifetime_s=api.session_lifetime, max_body_bytes=api.max_body_bytes)
    app = RequestDeadline(create_app(pool, config), api.request_timeout)
    # A full pool stops accepting: further connections wait in the kernel's backlog.
    return _Server(_address(api.listen), app, spawn=Pool(api.max_connections), log=None,
                      error_log=logging.getLogger("cardd.api.wsgi"))


def cmd_api(args: Any, settings: Any) -> int:
    from cardd.billing import pins
    from cardd.db import Database

    pins.use_key_of(settings.daemon)   # sign-ins check PINs with the shared key (never created here)
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
