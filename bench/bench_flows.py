"""Full card flows per second: one cardd process vs a bare stock-greenswitch
handler doing the same ESL round trips, driven by the same simulator.

    python bench/bench_flows.py [--callers 10,100] [--calls 200] [--rounds 4] [--cards 1000]

Each flow: connect, subscription, answer, card number, PIN (HMAC), balance
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

The two handlers run interleaved (ABAB): each round measures the stock
handler then cardd, --calls flows each, and prints that round's per-core
ratio; the headline is the median of the rounds, so a change of machine load
between rounds cancels out of each ratio. Database round trips per flow are
counted inside cardd's process at the psycopg level (bench.common.DbCounter),
WAL bytes per flow from pg_current_wal_lsn() before and after each cardd
window. Figures are printed, never asserted.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import itertools  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import BENCH_PIN, DESTINATION, EmbeddedPg, Handler, card_number, machine, raise_nofile, table  # noqa: E402
from cardd.sim import Callee, Caller, Switch  # noqa: E402
from cardd.sim.bridge import CALLEE_BYE_LAG  # noqa: E402

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
    cpu: float  # handler process CPU seconds in the window
    pg_cpu: float  # PostgreSQL server CPU seconds in the window
    sim_cpu: float  # this process (the simulator) CPU seconds in the window
    maxrss_kb: int
    db: dict  # the handler's database exchanges in the window (DbCounter)
    wal_bytes: int  # WAL the server wrote in the window

    @property
    def rate(self) -> float:
        return self.flows / self.wall

    @property
    def cpu_per_flow_ms(self) -> float:
        return 1000 * self.cpu / max(self.flows, 1)

    def per_flow(self, key: str) -> float:
        return self.db.get(key, 0) / max(self.flows, 1)


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
    # The simulator bills as FreeSWITCH does: talk + one 20 ms tick (cardd.sim.bridge),
    # a millisecond less when its clock rounds so under load (5019).
    extra = b[0].billmsec - int(talk * 1000) if b[0].answered else -1
    if not 0 < extra <= int(CALLEE_BYE_LAG * 1000):
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
            call = switch.call(
                "127.0.0.1",
                port,
                Caller(
                    cli="15551234567",
                    destination="cc.noredial",
                    digits=[card_number(i % cards) + "#", BENCH_PIN + "#", DESTINATION + "#"],
                ),
                Callee(answer_after=1.0, talk=talk),
            )
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


def measure(handler: Handler, pg: EmbeddedPg, *, callers: int, calls: int, cards: int, talk: float, first: int) -> Run:
    before, pg0, sim0, wal0 = handler.usage(), pg.backend_cpu(), _self_cpu(), pg.wal_lsn()
    t0 = time.perf_counter()
    bad = drive(handler.port, callers=callers, calls=calls, cards=cards, talk=talk, first=first)
    wall = time.perf_counter() - t0
    after, pg1, sim1, wal1 = handler.usage(), pg.backend_cpu(), _self_cpu(), pg.wal_lsn()
    db = {k: after.extra.get(k, 0) - before.extra.get(k, 0) for k in after.extra}
    return Run(
        handler.kind,
        callers,
        calls,
        bad,
        wall,
        after.cpu - before.cpu,
        pg1 - pg0,
        sim1 - sim0,
        after.maxrss_kb,
        db,
        wal1 - wal0,
    )


def merged(runs: list[Run]) -> Run:
    """The rounds of one handler at one level, as one run (sums)."""
    db: dict = {}
    for r in runs:
        for k, v in r.db.items():
            db[k] = db.get(k, 0) + v
    return Run(
        runs[0].kind,
        runs[0].callers,
        sum(r.flows for r in runs),
        sum(r.bad for r in runs),
        sum(r.wall for r in runs),
        sum(r.cpu for r in runs),
        sum(r.pg_cpu for r in runs),
        sum(r.sim_cpu for r in runs),
        max(r.maxrss_kb for r in runs),
        db,
        sum(r.wal_bytes for r in runs),
    )


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
    p.add_argument("--calls", type=int, default=200, help="flows per handler per round")
    p.add_argument("--rounds", type=int, default=4, help="interleaved stock/cardd rounds per level")
    p.add_argument("--cards", type=int, default=1000, help="bench cards in the database")
    p.add_argument("--talk", type=float, default=5.0, help="virtual seconds of talk per flow")
    p.add_argument("--warmup", type=int, default=50, help="flows before the first measurement")
    p.add_argument("--log-level", default="info", help="both handlers' log level (cardd's default: info)")
    p.add_argument("--log-dir", default="", help="keep the handlers' logs here (default: discarded)")
    p.add_argument("--only", choices=["cardd", "stock"], help="run one handler (e.g. under py-spy)")
    p.add_argument(
        "--db-trace",
        action="store_true",
        help="cardd counts each statement it sends; the counts go to stderr at the end",
    )
    args = p.parse_args()
    levels = [int(c) for c in args.callers.split(",")]
    soft, _ = raise_nofile()
    print(
        f"# bench_flows: {machine()}; open files {soft}; {args.rounds} rounds of {args.calls} flows "
        f"per handler and level, interleaved stock/cardd; talk {args.talk:g} s (virtual), "
        f"{args.cards} cards, log level {args.log_level}"
    )
    sys.stdout.flush()
    rounds: dict[tuple[str, int], list[Run]] = {}
    first = 0
    with EmbeddedPg(args.cards) as pg:
        log = lambda kind: str(Path(args.log_dir) / f"{kind}.log") if args.log_dir else ""  # noqa: E731
        kinds = [args.only] if args.only else ["stock", "cardd"]
        handlers = {
            k: Handler(
                k,
                dsn=pg.dsn if k == "cardd" else "",
                log_file=log(k),
                log_level=args.log_level,
                extra_args=["--db-trace"] if args.db_trace and k == "cardd" else [],
            )
            for k in kinds
        }
        try:
            for h in handlers.values():
                print(f"# {h.kind}: pid {h.pid}, port {h.port}")
                drive(
                    h.port,
                    callers=min(10, args.warmup),
                    calls=args.warmup,
                    cards=args.cards,
                    talk=args.talk,
                    first=first,
                )
                first += args.warmup
            for callers in levels:
                # ABAB: each round measures both handlers back to back, so a change
                # of the machine's load hits both sides of that round's ratio.
                for k in range(args.rounds):
                    for h in handlers.values():
                        run = measure(
                            h, pg, callers=callers, calls=args.calls, cards=args.cards, talk=args.talk, first=first
                        )
                        first += args.calls
                        rounds.setdefault((h.kind, callers), []).append(run)
                    line = "  ".join(
                        f"{r.kind} {r.cpu_per_flow_ms:.2f} ms CPU/flow {r.rate:.1f} flows/s {r.bad} bad"
                        for r in (rounds[(kd, callers)][-1] for kd in kinds)
                    )
                    if len(kinds) == 2:
                        c, st = rounds[("cardd", callers)][-1], rounds[("stock", callers)][-1]
                        line += f"  -> per-core ratio {st.cpu_per_flow_ms / c.cpu_per_flow_ms:.2f}"
                    print(f"# callers {callers:4} round {k + 1}: {line}  (load {os.getloadavg()[0]:.2f})")
                    sys.stdout.flush()
        finally:
            for h in handlers.values():
                h.close()
    report(rounds, levels, kinds)
    return 0


def report(rounds: dict[tuple[str, int], list[Run]], levels: list[int], kinds: list[str]) -> None:
    runs = [merged(rounds[(k, c)]) for c in levels for k in kinds]
    rows = []
    for r in runs:
        rows.append(
            [
                r.kind,
                str(r.callers),
                str(r.flows),
                str(r.bad),
                f"{r.rate:.1f}",
                f"{r.cpu_per_flow_ms:.2f}",
                f"{1000 / r.cpu_per_flow_ms:.0f}",
                f"{1000 * r.pg_cpu / r.flows:.2f}",
                f"{1000 * r.sim_cpu / r.flows:.2f}",
                f"{r.maxrss_kb / 1024:.1f}",
            ]
        )
    print()
    print(f"Machine: {machine()}")
    print(
        table(
            rows,
            [
                "handler",
                "callers",
                "flows",
                "bad",
                "flows/s",
                "CPU ms/flow",
                "flows/CPU-s",
                "PostgreSQL CPU ms/flow",
                "simulator CPU ms/flow",
                "peak RSS MB",
            ],
        )
    )
    if len(kinds) == 2:
        ratios = []
        for callers in levels:
            pairs = list(zip(rounds[("cardd", callers)], rounds[("stock", callers)]))
            per_core = [s.cpu_per_flow_ms / c.cpu_per_flow_ms for c, s in pairs]
            with_pg = [s.cpu_per_flow_ms / (c.cpu_per_flow_ms + 1000 * c.pg_cpu / c.flows) for c, s in pairs]
            speed = [c.rate / s.rate for c, s in pairs]
            ratios.append(
                [
                    str(callers),
                    " ".join(f"{x:.2f}" for x in per_core),
                    f"{statistics.median(per_core):.2f}",
                    f"{statistics.median(with_pg):.2f}",
                    f"{statistics.median(speed):.2f}",
                ]
            )
        print()
        print("cardd / bare stock greenswitch, round by round (> 1: cardd ahead)")
        print(
            table(
                ratios,
                [
                    "callers",
                    "per-core ratio of each round",
                    "median per-core ratio",
                    "median, PostgreSQL CPU on cardd's side",
                    "median flows/s ratio",
                ],
            )
        )
    print()
    for callers in levels:
        if len(kinds) == 2:
            per_core = [
                s.cpu_per_flow_ms / c.cpu_per_flow_ms
                for c, s in zip(rounds[("cardd", callers)], rounds[("stock", callers)])
            ]
            print(
                f"FIGURE per-core ratio (stock CPU / cardd CPU per flow), {callers} callers: "
                f"{statistics.median(per_core):.2f} median of {len(per_core)} rounds "
                f"(target >= 1.0)"
            )
        if "cardd" in kinds:
            c = merged(rounds[("cardd", callers)])
            rt, st, ck = c.per_flow("round_trips"), c.per_flow("statements"), c.per_flow("checks")
            print(
                f"FIGURE database round trips per flow, {callers} callers: {rt:.1f} "
                f"(statements {st:.1f}, pool checks {ck:.1f}, BEGIN/COMMIT {rt - st - ck:.1f}; "
                f"counted in cardd's psycopg) (target <= 8)"
            )
            print(
                f"FIGURE WAL bytes per flow, {callers} callers: {c.wal_bytes / c.flows:,.0f} "
                f"(pg_current_wal_lsn over cardd's windows) (no target; bench/SCALING.md)"
            )
    print()
    print(
        f"One PIN check (HMAC-SHA256, cardd.billing.pins) costs {pin_check_ms():.4f} ms CPU here; "
        "cardd does one per flow, the bare handler none."
    )


if __name__ == "__main__":
    sys.exit(main())
