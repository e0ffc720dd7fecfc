"""Accepts FreeSWITCH's outbound socket connections, one greenlet per call.

gevent's StreamServer accepts (greenswitch's own loop sleeps 100 ms whenever
no connection is pending). Each connection becomes an EslSession; the call
flow runs in that connection's greenlet and ends with `exit`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import gevent
from gevent.server import StreamServer

from cardd.channel import Channel
from cardd.errors import CallGone, ESLTimeout
from cardd.esl.session import EslSession
from cardd.metrics import Metrics

log = logging.getLogger(__name__)

Flow = Callable[[Channel], None]


class CallServer:
    """The ESL listener. `flow(channel)` is the IVR for one call."""

    def __init__(self, listen: tuple[str, int], flow: Flow, *, metrics: Metrics,
                 reply_timeout: float = 10.0, backlog: int = 1024):
        self.flow = flow
        self.metrics = metrics
        self.reply_timeout = reply_timeout
        self.active: set[gevent.Greenlet] = set()
        self._server = StreamServer(listen, self._handle, backlog=backlog)

    @property
    def address(self) -> tuple[str, int]:
        return self._server.address

    def start(self) -> None:
        self._server.start()

    def _handle(self, sock, address) -> None:
        me = gevent.getcurrent()
        self.active.add(me)
        self.metrics.calls_active.inc()
        session = EslSession(sock, address, reply_timeout=self.reply_timeout,
                             on_protocol_error=self.metrics.esl_errors.inc)
        try:
            session.connect()
            session.subscribe()
            self.flow(Channel(session))
        except (CallGone, ESLTimeout) as exc:
            log.info("[%s] call ended: %s", session.uuid, exc)
        except gevent.GreenletExit:
            log.info("[%s] call closed by shutdown", session.uuid)
        except Exception:
            # One broken call must never take the daemon down.
            log.exception("[%s] call flow failed", session.uuid)
        finally:
            session.stop()
            self.metrics.calls_active.dec()
            self.active.discard(me)

    def stop(self, grace: float) -> None:
        """Stop accepting, let calls finish for up to `grace` seconds, then
        close the rest. Bridged calls go on inside FreeSWITCH, bounded by
        their own sched_hangup, and are settled by the orphan rule."""
        self._server.close()
        deadline = time.monotonic() + grace
        while self.active and time.monotonic() < deadline:
            gevent.sleep(0.05)
        if self.active:
            log.warning("closing %d calls still up after %.0f s", len(self.active), grace)
            gevent.killall(list(self.active), block=True, timeout=5)
