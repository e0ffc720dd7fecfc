"""Accepts FreeSWITCH's outbound socket connections, one greenlet per call.

gevent's StreamServer accepts (greenswitch's own loop sleeps 100 ms whenever
no connection is pending). Each connection becomes an EslSession; the call
flow runs in that connection's greenlet and ends with `exit`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import gevent
from gevent.server import StreamServer

from cardd import logs
from cardd.channel import Channel
from cardd.errors import CallGone, ESLTimeout, ListenError
from cardd.esl.session import EslSession
from cardd.metrics import Metrics

log = logging.getLogger(__name__)

Flow = Callable[[Channel], None]


def listening_socket(address: tuple[str, int], what: str, backlog: int = 1024) -> Any:
    """A bound, listening socket on `address`. A taken or impossible address is
    one ListenError naming it (a second `cardd serve` must say so and exit 2,
    not end in a traceback that systemd answers by restarting it forever)."""
    try:
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        return StreamServer.get_listener(address, backlog=backlog, family=family)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno is not None and exc.errno > 0 else str(exc)
        raise ListenError(f"cannot listen on {address[0]}:{address[1]} ({what}): {reason}") from None


class CallServer:
    """The ESL listener. `flow(channel)` is the IVR for one call. `listen` is an
    address, or a socket from listening_socket() (the daemon binds first, before
    it starts the database)."""

    def __init__(
        self,
        listen: tuple[str, int] | Any,
        flow: Flow,
        *,
        metrics: Metrics,
        reply_timeout: float = 10.0,
        backlog: int = 1024,
    ):
        self.flow = flow
        self.metrics = metrics
        self.reply_timeout = reply_timeout
        self.active: set[gevent.Greenlet] = set()
        # a bound socket comes with its backlog (gevent refuses a second one)
        bound = not isinstance(listen, tuple)
        self._server = StreamServer(listen, self._handle, backlog=None if bound else backlog)

    @property
    def address(self) -> tuple[str, int]:
        return self._server.address

    def start(self) -> None:
        self._server.start()

    def _handle(self, sock, address) -> None:
        me = gevent.getcurrent()
        self.active.add(me)
        self.metrics.calls_active.inc()
        session = EslSession(
            sock, address, reply_timeout=self.reply_timeout, on_protocol_error=self.metrics.esl_errors.inc
        )
        # This greenlet is the call's: from the connect reply on, every line it
        # logs (flow, ledger, hooks, the lines below) carries the call's UUID.
        with contextlib.ExitStack() as call_logs:
            try:
                session.connect()
                call_logs.enter_context(logs.call_context(session.uuid))
                session.subscribe()
                self.flow(Channel(session))
            except (CallGone, ESLTimeout) as exc:
                log.info("call ended: %s", exc)
            except gevent.GreenletExit:
                log.info("call closed by shutdown")
            except Exception:
                # One broken call must never take the daemon down.
                log.exception("call flow failed")
            finally:
                session.stop()
                self.metrics.calls_active.dec()
                self.active.discard(me)

    def stop(self, grace: float) -> None:
        """Stop accepting, let calls finish for up to `grace` seconds, then
        close the rest. Bridged calls go on inside FreeSWITCH, bounded by
        their own sched_hangup, and are settled by the orphan rule."""
        self._server.close()
        log.info("no longer taking calls; draining %d", len(self.active))
        deadline = time.monotonic() + grace
        while self.active and time.monotonic() < deadline:
            gevent.sleep(0.05)
        if self.active:
            log.warning("closing %d calls still up after %.0f s", len(self.active), grace)
            gevent.killall(list(self.active), block=True, timeout=5)
