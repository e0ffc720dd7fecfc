"""Full card flows per second: one cardd process vs a bare stock-greenswitch
handler doing the same ESL round trips, driven by the same simulator.

    python bench/bench_flows.py [--callers 10,100] [--calls 400] [--cards 1000]

Each flow: connect, subscription, answer, card number, PIN (scrypt), balance
announced, destination, grant (rating + reservation), talk-time prompt, the
bridge (callee answers after 1 s, the caller hangs up after --talk seconds on
the simulator's virtual clock), settlement (CDR + ledger), exit.

cardd runs in its own process on an embedded PostgreSQL (temporary
directory; demo tariff + --cards cards, so concurrent calls lock different
account rows); the bare handler (bench/serve.py StockFlow) runs in another;
the simulator (cardd.sim) runs here. CPU seconds per flow are each handler's
own process CPU (getrusage) over the measured window divided by the flows
completed: nothing of the simulator's is in them. PostgreSQL's server
processes are measured separately (psutil) and shown as their own column.
Figures are printed, never asserted.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import itertools  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (BENCH_PIN, DESTINATION, EmbeddedPg, Handler, card_number,  # noqa: E402
                          machine, raise_nofile, table)
from cardd.sim import Callee, Caller, Switch  # noqa: E402

CALL_TIMEOUT = 120.0
# The simulator's virtual-clock quiet periods (its defaults). A flow's wall
# time is mostly these, so with few callers flows/s is bounded by latency,
# not by either handler's CPU.
QUIET = 0.003
IDLE_QUIET = 0.05


@dataclass
class Run:
    kind: str
    callers: int
    flows: int
    bad: int
    wall: float
    cpu: float          # handler process CPU seconds in the window
    pg_cpu: float       # PostgreSQL server CPU seconds in the window
    sim_cpu: float      # this process (the simulator) CPU seconds in the window
    maxrss_kb: int

    @property
    def rate(self) -> float:
        return self.flows / self.wall

    @property
    def cpu_per_flow_ms(self) -> float:
        return 1000 * self.cpu / max(self.flows, 1)


def _self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def flow_problem(transcript, talk: float) -> str | None:
    """None when the flow went all the way: one answered bridge billed for
    the talk time, the caller hung up, the handler said exit."""
    b = transcript.bridges
    if transcript.errors:
        return f"simulator errors: {transcript.errors[:2]}"
    if len(b) != 1:
        return f"{len(b)} bridges; apps {[a for a, _ in transcript.apps]}"
    if not b[0].answered or b[0].billmsec != int(talk * 1000):
        return f"bridge {b[0].disposition} billmsec {b[0].billmsec}"
    if transcript.closed_by != "exit":
        return f"closed by {transcript.closed_by}"
    return None


def drive(port: int, *, callers: int, calls: int, cards: int, talk: float, first: int) -> int:
    """Place `calls` flows, `callers` at a time; returns how many went wrong."""
    switch = Switch(quiet=QUIET, idle_quiet=IDLE_QUIET)
    counter = itertools.count(first)
    last = first + calls
    bad = 0

    def caller() -> None:
        nonlocal bad
        for i in counter:
            if i >= last:
                return
            call = switch.call("127.0.0.1", port, Caller(
                cli="15551234567", destination="cc.noredial",
                digits=[card_number(i % cards) + "#", BENCH_PIN + "#", DESTINATION + "#"]),
                Callee(answer_after=1.0, talk=talk))
            try:
                problem = flow_problem(call.wait(CALL_TIMEOUT), talk)
            except TimeoutError:
                problem = "no end within the timeout"
            if problem:
                bad += 1
                if bad <= 3:
                    print(f"# bad flow {i}: {problem}")

    gevent.joinall([gevent.spawn(caller) for _ in range(callers)], raise_error=True)
    return bad


def measure(handler: Handler, pg: EmbeddedPg, *, callers: int, calls: int, cards: int,
            talk: float, first: int) -> Run:
    before, pg0, sim0 = handler.usage(), pg.backend_cpu(), _self_cpu()
    t0 = time.perf_counter()
    bad = drive(handler.port, callers=callers, calls=calls, cards=cards, talk=talk, first=first)
    wall = time.perf_counter() - t0
    after, pg1, sim1 = handler.usage(), pg.backend_cpu(), _self_cpu()
    return Run(handler.kind, callers, calls, bad, wall, after.cpu - before.cpu, pg1 - pg0,
               sim1 - sim0, after.maxrss_kb)


def pin_check_ms(samples: int = 2000) -> float:
    """What one PIN check costs (cardd.billing.pins.check_pin: HMAC-SHA256), in CPU ms."""
    from cardd.billing import pins
    from cardd.billing.pins import check_pin, hash_pin
    from cardd.config import load_settings

    pins.use_key_of(load_settings(None).daemon, create=True)

    stored = hash_pin(BENCH_PIN)
    t0 = time.process_time()
    for _ in range(samples):
        check_pin(BENCH_PIN, stored)
    return 1000 * (time.process_time() - t0) / samples


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--callers", default="10,100", help="concurrent callers, comma-separated")
    p.add_argument("--calls", type=int, default=400, help="flows per measurement")
    p.add_argument("--cards", type=int, default=1000, help="bench cards in the database")
    p.add_argument("--talk", type=float, default=5.0, help="virtual seconds of talk per flow")
    p.add_argument("--warmup", type=int, default=50, help="flows before the first measurement")
    p.add_argument("--log-level", default="info", help="both handlers' log level (cardd's default: info)")
    p.add_argument("--log-dir", default="", help="keep the handlers' logs here (default: discarded)")
    p.add_argument("--only", choices=["cardd", "stock"], help="run one handler (e.g. under py-spy)")
    args = p.parse_args()
    levels = [int(c) for c in args.callers.split(",")]
    soft, _ = raise_nofile()
    print(f"# bench_flows: {machine()}; open files {soft}; {args.calls} flows per run, "
          f"talk {args.talk:g} s (virtual), {args.cards} cards, log level {args.log_level}")
    sys.stdout.flush()
    runs: list[Run] = []
    first = 0
    with EmbeddedPg(args.cards) as pg:
        log = lambda kind: str(Path(args.log_dir) / f"{kind}.log") if args.log_dir else ""  # noqa: E731
        kinds = [args.only] if args.only else ["stock", "cardd"]
        handlers = {k: Handler(k, dsn=pg.dsn if k == "cardd" else "", log_file=log(k),
                               log_level=args.log_level) for k in kinds}
        try:
            for h in handlers.values():
                print(f"# {h.kind}: pid {h.pid}, port {h.port}")
                drive(h.port, callers=min(10, args.warmup), calls=args.warmup,
                      cards=args.cards, talk=args.talk, first=first)
                first += args.warmup
            for callers in levels:
                for h in handlers.values():
                    run = measure(h, pg, callers=callers, calls=args.calls, cards=args.cards,
                                  talk=args.talk, first=first)
                    first += args.calls
                    runs.append(run)
                    print(f"# {run.kind:5} callers {callers:4}: {run.rate:7.1f} flows/s, "
                          f"{run.cpu_per_flow_ms:.2f} ms CPU/flow, {run.bad} bad")
                    sys.stdout.flush()
        finally:
            for h in handlers.values():
                h.close()
    rows = []
    for r in runs:
        rows.append([r.kind, str(r.callers), str(r.flows), str(r.bad), f"{r.rate:.1f}",
                     f"{r.cpu_per_flow_ms:.2f}", f"{1000 / r.cpu_per_flow_ms:.0f}",
                     f"{1000 * r.pg_cpu / r.flows:.2f}", f"{1000 * r.sim_cpu / r.flows:.2f}",
                     f"{r.maxrss_kb / 1024:.1f}"])
    print()
    print(f"Machine: {machine()}")
    print(table(rows, ["handler", "callers", "flows", "bad", "flows/s", "CPU ms/flow",
                       "flows/CPU-s", "PostgreSQL CPU ms/flow", "simulator CPU ms/flow",
                       "peak RSS MB"]))
    by = {(r.kind, r.callers): r for r in runs}
    ratios = []
    for callers in levels:
        c, s = by.get(("cardd", callers)), by.get(("stock", callers))
        if c and s:
            ratios.append([str(callers), f"{c.rate / s.rate:.2f}",
                           f"{s.cpu_per_flow_ms / c.cpu_per_flow_ms:.2f}",
                           f"{s.cpu_per_flow_ms / (c.cpu_per_flow_ms + 1000 * c.pg_cpu / c.flows):.2f}"])
    if ratios:
        print()
        print("cardd / bare stock greenswitch (> 1: cardd ahead)")
        print(table(ratios, ["callers", "flows/s ratio", "per-core ratio (handler CPU)",
                             "per-core ratio (cardd + PostgreSQL CPU)"]))
    print()
    print(f"One PIN check (HMAC-SHA256, cardd.billing.pins) costs {pin_check_ms():.4f} ms CPU here; "
          "cardd does one per flow, the bare handler none.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
