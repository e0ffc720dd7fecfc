"""A handler under test, in a process of its own (started by bench/common.py).

    python bench/serve.py cardd --dsn DSN [--log-file F] [--log-level info]
    python bench/serve.py stock [--log-file F] [--log-level info]

`cardd`: the real daemon (cardd.daemon.Daemon, default settings, pool of 10)
on the benchmark's database. `stock`: a bare stock-greenswitch handler doing
the ESL round trips of cardd's card flow (see StockFlow) with no database and
no IVR logic: greenswitch.OutboundSession, connect/stop as
OutboundESLServer does them, behind gevent's StreamServer instead of
OutboundESLServer.listen (whose 100 ms accept poll would cap it, ESL.md).

It prints {"port", "pid"} once listening, then answers one JSON line per
request line on stdin: usage (CPU, RSS, calls held, database round trips
counted by bench.common.DbCounter), lag_start, lag_stop, open_reservations, gc,
quit.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
from gevent.fileobject import FileObjectPosix  # noqa: E402
from gevent.server import StreamServer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import PROXY, DbCounter  # noqa: E402

# cardd's own subscription, so the bare handler receives exactly what cardd does.
from cardd.esl.session import EVENTS  # noqa: E402

log = logging.getLogger(__name__)

SOUNDS = Path(__file__).resolve().parent.parent / "sounds" / "en"


def _sentence(*ids: str) -> str:
    paths = [str(SOUNDS / f"{i}.wav") for i in ids]
    return paths[0] if len(paths) == 1 else "file_string://" + "!".join(paths)


def _pagd(max_digits: int, timeout_ms: int, regex: str, *ids: str) -> str:
    return (
        f"1 {max_digits} 1 {timeout_ms} # {_sentence(*ids)} {_sentence('invalid_input')} cardd_digits {regex} 3000 ''"
    )


# The application arguments cardd sends for the benchmark's flow (a card with
# a PIN, 1000 USD, a UK number, caller hangs up during the talk).
CARD_ARGS = _pagd(11, 7000, r"^\d{1,10}$", "welcome", "enter_card_number")
PIN_ARGS = _pagd(21, 7000, r"^\d{1,20}$", "enter_pin")
DEST_ARGS = _pagd(
    25, 10000, r"^\d+$", "you_have", "num_1", "thousand", "cur_usd_majors", "remaining", "enter_destination"
)
TALK_TIME = _sentence("you_can_talk_for", "num_1", "hour")
WARNING = _sentence("call_will_be_disconnected_in", "num_60", "seconds")


class Stats:
    """Event-loop lag: how late a 10 ms sleep wakes up."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._g: gevent.Greenlet | None = None

    def start(self) -> None:
        self.samples = []
        self._g = gevent.spawn(self._run)

    def _run(self) -> None:
        while True:
            t0 = time.perf_counter()
            gevent.sleep(0.01)
            self.samples.append(time.perf_counter() - t0 - 0.01)

    def stop(self) -> dict:
        if self._g is not None:
            self._g.kill()
        s = sorted(self.samples) or [0.0]
        pick = lambda q: s[min(len(s) - 1, int(q * len(s)))] * 1000  # noqa: E731
        return {"n": len(self.samples), "p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": s[-1] * 1000}


def _rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


# -- the bare stock-greenswitch handler ----------------------------------------


class StockFlow:
    """cardd's ESL round trips for one card flow, with stock greenswitch.

    Same commands in the same order as cardd (subscription, answer, three
    play_and_get_digits, the talk-time playback, three sets, the B filter,
    the ## binding, the bridge, clear_digit_action, goodbye, hangup, exit),
    each blocking helper waiting for its CHANNEL_EXECUTE_COMPLETE the
    greenswitch way (by application name)."""

    def __init__(self, session) -> None:
        self.session = session

    def run(self) -> None:
        import uuid

        s = self.session
        s.linger()
        s.send(f"filter Unique-ID {s.uuid}")
        s.send(f"event plain {EVENTS}")
        run = lambda app, arg=None, timeout=600: s.call_command(  # noqa: E731
            app, arg, block=True, response_timeout=timeout
        )
        run("answer")
        run("play_and_get_digits", CARD_ARGS)
        run("play_and_get_digits", PIN_ARGS)
        run("play_and_get_digits", DEST_ARGS)
        run("playback", TALK_TIME)
        run("set", "continue_on_fail=true")
        run("set", "hangup_after_bridge=false")
        run("set", "ringback=%(2000,4000,440,480)")
        b_uuid = str(uuid.uuid4())
        s.send(f"filter Unique-ID {b_uuid}")
        run("bind_digit_action", "ccbreak,##,exec[H]:hangup,NORMAL_CLEARING,self,peer")
        run("digit_action_set_realm", "ccbreak")
        dial = (
            f"{{origination_uuid={b_uuid},originate_timeout=60,"
            f"origination_caller_id_number=2000000000,"
            f"execute_on_answer_1='sched_hangup +3600 ALLOTTED_TIMEOUT',"
            f"execute_on_answer_2='sched_broadcast +3540 playback::{WARNING} bleg',"
            f"ignore_early_media=true}}sofia/external/442071234567@{PROXY}"
        )
        run("bridge", dial, timeout=None)
        run("clear_digit_action", "ccbreak")
        run("playback", _sentence("goodbye"))
        run("hangup", "NORMAL_CLEARING")


class StockServer:
    def __init__(self) -> None:
        from greenswitch.esl import OutboundSession

        self._session_cls = OutboundSession
        self.active: set = set()
        self.server = StreamServer(("127.0.0.1", 0), self._handle, backlog=1024)
        self.server.start()

    @property
    def port(self) -> int:
        return self.server.address[1]

    def _handle(self, sock, address) -> None:
        # What OutboundESLServer._accept_call/_handle_call/_handle_call_finish do.
        me = gevent.getcurrent()
        self.active.add(me)
        session = self._session_cls(address, sock)
        try:
            session.connect()
            StockFlow(session).run()
        except Exception as exc:  # one call's failure is reported, never fatal
            log.info("stock call ended: %r", exc)
        finally:
            self.active.discard(me)
            session.stop()


# -- cardd -------------------------------------------------------------------------


class CarddServer:
    def __init__(self, dsn: str, log_level: str) -> None:
        from cardd.config import load_settings
        from cardd.daemon import Daemon
        from cardd.metrics import Metrics

        # The bench's calls dial instance `cc`, configured as an operator would (the shipped
        # cardd.yaml has it): an unknown instance logs a warning on every call.
        config = Path(tempfile.mkdtemp(prefix="cardd-bench-config-")) / "cardd.yaml"
        config.write_text("instances:\n  cc:\n    languages: [en]\n")
        # data_dir as without a config (the working directory's): the bench cards' PIN key is there.
        settings = load_settings(str(config)).with_daemon(
            data_dir=load_settings(None).daemon.data_dir,
            listen="127.0.0.1:0",
            outbound_proxy=PROXY,
            dsn=dsn,
            log_level=log_level,
            shutdown_grace=5,
        )
        self.daemon = Daemon(settings, metrics=Metrics(), serve_metrics=False)
        self.daemon.start()
        self.dsn = dsn

    @property
    def port(self) -> int:
        return self.daemon.server.address[1]

    @property
    def active(self) -> set:
        return self.daemon.server.active

    def open_reservations(self) -> int:
        with self.daemon.database.pool.connection() as conn:
            row = conn.execute("SELECT count(*) FROM reservations WHERE status = 'open'").fetchone()
        return int(row[0])


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=["cardd", "stock"])
    p.add_argument("--dsn", default="")
    p.add_argument("--log-file", default=os.devnull)
    p.add_argument("--log-level", default="info")
    p.add_argument("--tracemalloc", action="store_true", help="trace Python allocations (ops malloc_mark / malloc_top)")
    p.add_argument(
        "--db-trace",
        action="store_true",
        help="count each statement and transaction command; printed to stderr at quit",
    )
    args = p.parse_args()
    if args.tracemalloc:
        import tracemalloc

        tracemalloc.start(8)
    mark = None
    logging.basicConfig(
        filename=args.log_file,
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.kind == "cardd":
        DbCounter.install(trace=args.db_trace)  # before the daemon opens its pool
    server = CarddServer(args.dsn, args.log_level) if args.kind == "cardd" else StockServer()
    out = sys.stdout
    out.write(json.dumps({"port": server.port, "pid": os.getpid()}) + "\n")
    out.flush()
    lag = Stats()
    stdin = FileObjectPosix(sys.stdin.fileno(), "rb")
    while True:
        line = stdin.readline()
        if not line:
            break
        req = json.loads(line)
        op = req["op"]
        if op == "usage":
            ru = resource.getrusage(resource.RUSAGE_SELF)
            reply = {
                "cpu": ru.ru_utime + ru.ru_stime,
                "maxrss_kb": ru.ru_maxrss,
                "rss_kb": _rss_kb(),
                "active": len(server.active),
                "extra": DbCounter.snapshot(),
            }
        elif op == "lag_start":
            lag.start()
            reply = {}
        elif op == "lag_stop":
            reply = lag.stop()
        elif op == "open_reservations":
            reply = {"n": server.open_reservations() if args.kind == "cardd" else -1}
        elif op == "gc":
            gc.collect()
            reply = {"rss_kb": _rss_kb()}
        elif op == "malloc_mark":
            import tracemalloc

            gc.collect()
            mark = tracemalloc.take_snapshot()
            reply = {}
        elif op == "malloc_top":
            import tracemalloc

            gc.collect()
            diff = tracemalloc.take_snapshot().compare_to(mark, req.get("by", "lineno"))
            reply = {
                "top": [str(d) for d in diff[: req.get("n", 20)]],
                "total_kb": sum(d.size_diff for d in diff) / 1024,
            }
        elif op == "quit":
            if DbCounter.trace is not None:
                for key, n in sorted(DbCounter.trace.items(), key=lambda kv: -kv[1]):
                    print(f"# db trace {n:8d}  {key}", file=sys.stderr)
            out.write("{}\n")
            out.flush()
            break
        else:
            reply = {"error": f"unknown op {op}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    # Calls may still be held (bench_bridged): leave without draining them.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
