"""Clocks for the simulator: real time, or a virtual clock that jumps.

The virtual clock lets a test bridge a 3000-second call in a few
milliseconds: when nothing has happened on a call for a short real-time quiet
period (no command read, nothing runnable), time jumps straight to the next
timer. Each simulated call owns its own clock, so thousands of calls advance
independently instead of waiting for one global quiet moment.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from collections.abc import Callable

import gevent
import gevent.event

log = logging.getLogger(__name__)


class Timer:
    """A scheduled callback; cancel() makes it a no-op."""

    __slots__ = ("due", "fn", "cancelled")

    def __init__(self, due: float, fn: Callable[[], None]):
        self.due = due
        self.fn = fn
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Clock:
    """Real time. now() is epoch seconds (float)."""

    virtual = False
    # The simulator sets it while no app runs on the call; only the virtual clock acts on it.
    idle = False

    def __init__(self, start: float | None = None):
        # Offset lets a replay pin the epoch even in real time.
        self._offset = 0.0 if start is None else start - time.time()

    def now(self) -> float:
        return time.time() + self._offset

    def call_later(self, delay: float, fn: Callable[[], None]) -> Timer:
        timer = Timer(self.now() + delay, fn)
        g = gevent.spawn_later(max(delay, 0.0), self._fire, timer)
        g.name = "sim-timer"
        return timer

    @staticmethod
    def _fire(timer: Timer) -> None:
        if not timer.cancelled:
            timer.fn()

    def sleep(self, delay: float) -> None:
        gevent.sleep(max(delay, 0.0))

    def wait(self, event: gevent.event.Event, timeout: float | None) -> bool:
        """Wait for `event` at most `timeout` seconds; True when it was set."""
        return bool(event.wait(timeout))

    def touch(self) -> None:
        """Mark activity (meaningful for the virtual clock only)."""

    def stop(self) -> None:
        """Release resources (meaningful for the virtual clock only)."""


def _whole_us(epoch: float) -> float:
    """An instant on a whole microsecond. FreeSWITCH's stamps are integer
    microseconds; a float epoch near 1.8e9 s carries ~0.24 us of error, so a
    sum like answer + 8.02 s taken unrounded can stamp 8019.999 ms (billmsec
    8019 where the switch says 8020)."""
    return round(epoch, 6)


class VirtualClock(Clock):
    """Virtual time that jumps to the next timer when the call is quiet.

    While an app runs (the daemon waits for its completion) and nothing has
    happened for `quiet` seconds of real time, time jumps to the next timer.
    While no app runs (`idle`: the daemon's turn) time runs at real speed,
    checked every `idle_quiet` seconds, so a daemon busy with its database
    never finds the caller's timers fired ahead of it.
    """

    virtual = True

    def __init__(
        self, start: float | None = None, *, quiet: float = 0.003, idle_quiet: float = 0.05, idle_jumps: bool = False
    ):
        self._now = _whole_us(time.time() if start is None else start)
        # Started from the wall clock: its stamps (answer_uepoch, ...) must
        # never fall behind it, or a CDR would be answered before cardd
        # reserved the call. A pinned start (a replay) keeps its own epoch.
        self._keeps_up = start is None
        # True while timers fire: what a timer schedules (the BYE after the
        # answer) is timed from its own instant, never from a wall clock that
        # a busy machine let run ahead, or talk time would depend on load.
        self._firing = False
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._activity = False
        self._driver: gevent.Greenlet | None = None
        self._stopped = False
        self.quiet = quiet
        self.idle_quiet = idle_quiet
        # A replay's daemon side waits on this very clock: it may jump then too.
        self.idle_jumps = idle_jumps
        # Set by the simulator when no app runs on the call: the daemon is
        # thinking (database, rating) and time should not race ahead of it.
        self.idle = False

    def now(self) -> float:
        # Time stands still while nothing is scheduled (the daemon thinking,
        # no timer): catch up with the wall clock then. With timers pending
        # the driver moves time, in order.
        if self._keeps_up and not self._heap and not self._firing:
            self._now = max(self._now, _whole_us(time.time()))
        return self._now

    def call_later(self, delay: float, fn: Callable[[], None]) -> Timer:
        timer = Timer(self.now() + max(delay, 0.0), fn)
        heapq.heappush(self._heap, (timer.due, next(self._seq), timer))
        if self._driver is None and not self._stopped:
            self._driver = gevent.spawn(self._drive)
            self._driver.name = "sim-clock"
        return timer

    def sleep(self, delay: float) -> None:
        if delay <= 0:
            gevent.sleep(0)
            return
        ev = gevent.event.Event()
        self.call_later(delay, ev.set)
        ev.wait()

    def wait(self, event: gevent.event.Event, timeout: float | None) -> bool:
        if event.is_set():
            return True
        if timeout is None:
            event.wait()
            return True
        timer = self.call_later(timeout, event.set)
        event.wait()
        fired_by_timer = not timer.cancelled and self._now >= timer.due
        timer.cancel()
        # The timer is what set it when virtual time reached the deadline and
        # nobody else did; callers re-check their own condition anyway.
        return not fired_by_timer

    def touch(self) -> None:
        self._activity = True

    def stop(self) -> None:
        self._stopped = True
        self._heap.clear()
        if self._driver is not None and self._driver is not gevent.getcurrent():
            self._driver.kill(block=False)
        self._driver = None

    def _drive(self) -> None:
        try:
            while self._heap and not self._stopped:
                # Let everything runnable run, then require a quiet period.
                self._activity = False
                idle = self.idle
                began = time.monotonic()
                gevent.sleep(self.idle_quiet if idle else self.quiet)
                if self._stopped:
                    break
                if idle and self.idle and not self.idle_jumps:
                    # The daemon's turn (no app runs): it may be thinking
                    # (database, rating), so time passes as in reality
                    # instead of jumping ahead of it.
                    self._advance_to(_whole_us(self._now + (time.monotonic() - began)))
                    continue
                if self._activity:
                    continue
                while self._heap and self._heap[0][2].cancelled:
                    heapq.heappop(self._heap)
                if not self._heap:
                    break
                # The switch alone is waiting on time: jump to the next timer.
                self._advance_to(self._heap[0][0])
        finally:
            self._driver = None
            if self._heap and not self._stopped:
                self._driver = gevent.spawn(self._drive)

    def _advance_to(self, target: float) -> None:
        """Fire, in order, every timer due up to `target`; now = target."""
        self._firing = True
        try:
            while self._heap and self._heap[0][0] <= target:
                due, _, timer = heapq.heappop(self._heap)
                if due > self._now:
                    self._now = due
                if not timer.cancelled:
                    timer.fn()
        finally:
            self._firing = False
        if target > self._now:
            self._now = target
