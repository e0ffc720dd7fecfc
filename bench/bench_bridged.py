"""Concurrent bridged calls held by one cardd process: RSS per call and
event-loop lag.

    python bench/bench_bridged.py [--calls 1000,2000] [--setups 200] [--hold 5]

For each level N, a fresh cardd process (bench/serve.py, default settings)
on an embedded PostgreSQL with N cards takes N simulated calls through the
whole card flow (card, PIN, balance, destination, grant) into a bridge whose
callee never hangs up, and holds them all at once. The count is checked on
both sides: the simulator sees N answered bridges, cardd holds N call
greenlets (server.active) and the database N open reservations (granted,
not yet settled: the calls are inside `bridge`).

RSS per call = (cardd's RSS with N calls held - its RSS after a warm-up with
none) / N, after a gc.collect() in cardd. Event-loop lag = how late a 10 ms
sleep wakes up inside cardd, measured by a greenlet there while the calls
are being set up (ramp) and while they are held.

The simulator runs its virtual clock for the set-up (prompts and digits take
no real time) but keeps every timer further than an hour's quarter ahead on
the wall clock (HoldClock), so B's sched_hangup/sched_broadcast never fire
and the bridges stay up. The open-file soft limit is raised to the hard limit
(each held call is one socket in cardd and one here).
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import gc  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402
from gevent.lock import BoundedSemaphore  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import BENCH_PIN, DESTINATION, EmbeddedPg, Handler, card_number, machine, raise_nofile, table  # noqa: E402
from cardd.sim import Callee, Caller, Switch  # noqa: E402
from cardd.sim.clock import Clock, VirtualClock  # noqa: E402

# Timers this far ahead run on the wall clock: the bridge's sched_hangup
# (+3600) and warning (+3540) never come during the benchmark.
HORIZON = 900.0
SETUP_TIMEOUT = 300.0
# Complete flows before the baseline, each on a card of its own: the database
# holds at least this many cards whatever N is (with fewer, the warm-up dialled
# card numbers that do not exist, the CLI was throttled and nothing bridged).
WARMUP_FLOWS = 20


class HoldClock(VirtualClock):
    def call_later(self, delay, fn):
        if delay > HORIZON:
            return Clock.call_later(self, delay, fn)
        return super().call_later(delay, fn)


class HoldSwitch(Switch):
    def new_clock(self, start=None):
        start = self.start_epoch if start is None else start
        return HoldClock(start, quiet=self.quiet, idle_quiet=self.idle_quiet)


def _mb(kb: float) -> str:
    return f"{kb / 1024:.1f}"


def hold(
    n: int, *, setups: int, hold_s: float, log_level: str, log_file: str, malloc: bool = False, kind: str = "cardd"
) -> list[str]:
    with (
        EmbeddedPg(max(n, WARMUP_FLOWS)) as pg,
        Handler(
            kind,
            dsn=pg.dsn if kind == "cardd" else "",
            log_file=log_file,
            log_level=log_level,
            extra_args=["--tracemalloc"] if malloc else [],
        ) as handler,
    ):
        switch = HoldSwitch()
        # Warm-up: a few complete flows, so the pool's connections, the
        # prepared statements and the imports are in the baseline.
        warm = [
            switch.call(
                "127.0.0.1",
                handler.port,
                Caller(destination="cc.noredial", digits=[card_number(i) + "#", BENCH_PIN + "#", DESTINATION + "#"]),
                Callee(talk=5.0),
            )
            for i in range(WARMUP_FLOWS)
        ]
        for call in warm:
            call.wait(120)
        handler.request("gc")
        gc.collect()
        base = handler.usage()
        if malloc:
            handler.request("malloc_mark")
        handler.request("lag_start")
        gate = BoundedSemaphore(setups)
        bridged = 0
        failed = 0
        calls = []

        def place(i: int) -> None:
            nonlocal bridged, failed
            with gate:
                up = gevent.event.Event()
                call = switch.call(
                    "127.0.0.1",
                    handler.port,
                    Caller(destination="cc", digits=[card_number(i) + "#", BENCH_PIN + "#", DESTINATION + "#"]),
                    Callee(answer_after=1.0, talk=None),
                )
                calls.append(call)

                def on_event(headers) -> None:
                    if headers[0][1] == "CHANNEL_BRIDGE":
                        up.set()

                call.on_event = on_event
                ended = gevent.spawn(call.done.wait)
                gevent.wait([up, ended], count=1, timeout=SETUP_TIMEOUT)
                ended.kill()
                if up.is_set() and not call.done.is_set():
                    bridged += 1
                else:
                    failed += 1

        t0 = time.perf_counter()
        placers = [gevent.spawn(place, i) for i in range(n)]
        gevent.joinall(placers)
        ramp = time.perf_counter() - t0
        ramp_lag = handler.request("lag_stop")
        handler.request("lag_start")
        gevent.sleep(hold_s)
        hold_lag = handler.request("lag_stop")
        held = handler.usage()
        reservations = handler.request("open_reservations")["n"]
        after_gc = handler.request("gc")["rss_kb"]
        still = sum(1 for c in calls if not c.done.is_set())
        if malloc:
            for by in ("filename", "lineno"):
                top = handler.request("malloc_top", by=by, n=25)
                print(f"# tracemalloc by {by}: {top['total_kb'] / max(n, 1):.1f} KB/call traced")
                for line in top["top"]:
                    print("#   " + line)
        per_call = (after_gc - base.rss_kb) / max(held.active, 1)
        print(
            f"# {kind} {n} calls: {bridged} bridged ({failed} failed) in {ramp:.1f} s; handler holds "
            f"{held.active} calls, {reservations} open reservations; simulator: {still} up; "
            f"RSS {_mb(base.rss_kb)} -> {_mb(after_gc)} MB; lag ramp p99 {ramp_lag['p99_ms']:.1f} ms "
            f"max {ramp_lag['max_ms']:.1f}, hold p99 {hold_lag['p99_ms']:.2f} ms"
        )
        sys.stdout.flush()
        return [
            kind,
            str(n),
            str(bridged),
            str(held.active),
            str(reservations) if reservations >= 0 else "n/a",
            f"{ramp:.1f}",
            f"{n / ramp:.0f}",
            _mb(base.rss_kb),
            _mb(after_gc),
            f"{per_call:.1f}",
            f"{ramp_lag['p50_ms']:.1f} / {ramp_lag['p99_ms']:.1f} / {ramp_lag['max_ms']:.1f}",
            f"{hold_lag['p50_ms']:.2f} / {hold_lag['p99_ms']:.2f} / {hold_lag['max_ms']:.2f}",
        ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", default="1000,2000", help="calls to hold, comma-separated levels")
    p.add_argument("--setups", type=int, default=100, help="calls being set up at once (ramp)")
    p.add_argument("--hold", type=float, default=5.0, help="seconds to hold them (lag sampling)")
    p.add_argument("--log-level", default="info", help="cardd's log level (its default: info)")
    p.add_argument("--log-file", default="", help="keep cardd's log here (default: discarded)")
    p.add_argument(
        "--malloc", action="store_true", help="run cardd under tracemalloc and print where the held calls' memory is"
    )
    p.add_argument(
        "--handler",
        choices=["cardd", "stock"],
        default="cardd",
        help="stock: the bare greenswitch handler of bench_flows, for contrast",
    )
    args = p.parse_args()
    soft, hard = raise_nofile()
    print(f"# bench_bridged: {machine()}; open-file limit raised to {soft} (hard {hard})")
    sys.stdout.flush()
    rows = []
    for n in (int(x) for x in args.calls.split(",")):
        if n + 200 > soft:
            print(f"# {n} calls: skipped, needs ~{n + 200} open files here (limit {soft})")
            continue
        rows.append(
            hold(
                n,
                setups=args.setups,
                hold_s=args.hold,
                log_level=args.log_level,
                log_file=args.log_file,
                malloc=args.malloc,
                kind=args.handler,
            )
        )
    print()
    print(f"Machine: {machine()}; open-file limit {soft}")
    print(
        table(
            rows,
            [
                "handler",
                "calls",
                "bridged (sim)",
                "held (handler)",
                "open reservations",
                "ramp s",
                "set-ups/s",
                "RSS base MB",
                "RSS held MB",
                "RSS KB/call",
                "lag ramp p50/p99/max ms",
                "lag hold p50/p99/max ms",
            ],
        )
    )
    print()
    for row in rows:
        print(
            f"FIGURE {row[0]} calls held in bridge by one process: {row[3]} of {row[1]} "
            f"(target >= 2,000 at the largest level)"
        )
        print(f"FIGURE {row[0]} RSS per held call at {row[1]} calls: {row[9]} KB (target <= 100 KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
