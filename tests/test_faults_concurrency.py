"""Money under concurrency: many calls on one card, through two cardd
instances sharing one database (how operators scale out: one cardd per
FreeSWITCH box, one PostgreSQL). Each instance has its own connection pool,
as two processes would.

The card's credit pays for a fraction of the calls; every call talks until
its B leg's sched_hangup (the whole grant). Whatever the interleaving: no
overspend, the balance is the sum of its ledger, nothing stays reserved.
bench/bench_overspend.py runs the same with 1,000 calls.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal as D
from pathlib import Path

import gevent

from cardd.billing.ledger import Ledger
from cardd.daemon import Daemon
from cardd.db import Database
from cardd.metrics import Metrics
from cardd.sim import Callee, Caller, Switch
from tests.callfixtures import make_settings
from tests.dbfixtures import create_demo_data

UK_MOBILE = "447700900123"
YAML = "calling_card:\n  max_call_duration: 120\n"
PER_CALL = D("0.22000")  # 120 s at the 44 rate: 0.10 + 0.03 + 0.06 * 90 / 60


@dataclass
class Figures:
    calls: int
    daemons: int
    dialled: int
    refused: int
    other: int
    money_in: D
    charged: D
    balance: D
    ledger_sum: D
    open_reservations: int
    seconds: float


def overspend_run(dsn: str, *, calls: int, daemons: int, work_dir: Path, credit_calls: int) -> Figures:
    """`calls` simultaneous calls on one card whose credit pays for
    `credit_calls` full grants, spread over `daemons` cardd instances."""
    setup = Database(dsn, pool_size=4)
    setup.migrate()
    balance = PER_CALL * credit_calls
    demo = create_demo_data(setup.pool, balance=str(balance), pin="")
    ledger = Ledger(setup.pool)
    running = []
    for i in range(daemons):
        db = Database(dsn, pool_size=10, pool_timeout=60.0)
        settings = make_settings(YAML, tmp_path=work_dir, data_dir=str(work_dir / f"var{i}"))
        d = Daemon(settings, database=db, metrics=Metrics(), serve_metrics=False)
        d.start()
        running.append((d, db, Switch()))
    started = time.monotonic()
    try:
        sims = []
        for n in range(calls):
            d, _, switch = running[n % daemons]
            host, port = d.server.address[:2]
            caller = Caller(
                cli=f"1555{n:07d}",
                destination="cc.noredial.noplaybalance",
                digits=[demo.card_number + "#", UK_MOBILE + "#"],
                type_after=6,
            )
            sims.append(switch.call(host, port, caller, Callee(talk=None)))
        transcripts = [s.wait(300) for s in sims]
        seconds = time.monotonic() - started
        dialled = sum(1 for t in transcripts if any(app == "bridge" for app, _ in t.apps))
        refused = sum(
            1
            for t in transcripts
            if any("insufficient_funds" in p for p in t.prompts) and not any(app == "bridge" for app, _ in t.apps)
        )
        cdrs = ledger.cdrs_for(demo.card_id, limit=calls + 10)
        entries = ledger.ledger_entries(demo.card_id)
        return Figures(
            calls=calls,
            daemons=daemons,
            dialled=dialled,
            refused=refused,
            other=calls - dialled - refused,
            money_in=balance,
            charged=sum((c.cost for c in cdrs), D(0)),
            balance=ledger.get_card(demo.card_id).balance,
            ledger_sum=sum((e.amount for e in entries), D(0)),
            open_reservations=len(ledger.open_reservations(demo.card_id)),
            seconds=seconds,
        )
    finally:
        for d, db, _ in running:
            d.stop()
            db.close()
        setup.close()


def check(f: Figures, credit_calls: int) -> None:
    assert f.open_reservations == 0  # nothing left reserved
    assert f.charged <= f.money_in  # zero overspend
    assert f.balance >= 0
    assert f.balance == f.money_in - f.charged == f.ledger_sum  # balance = its ledger
    assert f.dialled == credit_calls  # the credit bought exactly that many grants
    assert f.charged == PER_CALL * credit_calls
    assert f.dialled + f.refused == f.calls, f


def test_two_cardd_instances_on_one_database_never_overspend_one_card(dsn, tmp_path):
    f = overspend_run(dsn, calls=60, daemons=2, work_dir=tmp_path, credit_calls=15)
    check(f, 15)


def test_two_hundred_concurrent_calls_on_one_card_never_overspend(dsn, tmp_path):
    f = overspend_run(dsn, calls=200, daemons=2, work_dir=tmp_path, credit_calls=40)
    check(f, 40)


# -- real processes: two `cardd serve` on one database, a third joining mid-run --------------------


def _serve(tmp_path: Path, dsn: str, i: int):
    """`cardd serve` number i on the test's database (its own config, data_dir
    and ports), once it says it is ready; returns (process, its call port)."""
    import os
    import socket
    import subprocess
    import sys

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    repo = Path(__file__).resolve().parent.parent
    port = free_port()
    config = tmp_path / f"cardd{i}.yaml"
    config.write_text(
        "daemon:\n"
        f"  listen: 127.0.0.1:{port}\n"
        f"  metrics_listen: 127.0.0.1:{free_port()}\n"
        f'  dsn: "{dsn}"\n'
        f"  data_dir: {tmp_path / f'var{i}'}\n"
        "  outbound_proxy: 198.51.100.7:5060\n"
        f"{YAML}"
        "instances:\n  cc: {}\n"
    )
    log = tmp_path / f"serve{i}.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cardd", "-c", str(config), "serve"],
            cwd=repo,
            env=dict(os.environ, PYTHONPATH=str(repo)),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    deadline = time.monotonic() + 90
    while "ready:" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"cardd serve {i} did not come up:\n{log.read_text()}")
        time.sleep(0.1)
    return proc, port


def test_two_cardd_processes_and_a_third_joining_mid_run_share_one_card_without_overspend(dsn, tmp_path):
    """How operators scale out (bench/SCALING.md): one `cardd serve` per FreeSWITCH
    box, one PostgreSQL. Two processes hold bridged calls on one card while a
    third starts (migration check, node registration, its orphan check) and then
    takes calls too: nothing the newcomer does touches the others' live
    reservations, every call is settled once by its own process, the card's
    credit buys exactly the grants it pays for, and the money adds up."""
    from tests.test_orphans import Gate

    credit_calls = 10
    setup = Database(dsn, pool_size=2)
    setup.start()
    demo = create_demo_data(setup.pool, balance=str(PER_CALL * credit_calls), pin="")
    ledger = Ledger(setup.pool)
    switch = Switch()
    gate = Gate(switch)  # bridged calls stay up until released
    procs = []

    def call(port: int, n: int):
        caller = Caller(
            cli=f"1555{n:07d}",
            destination="cc.noredial.noplaybalance",
            digits=[demo.card_number + "#", UK_MOBILE + "#"],
            type_after=6,
        )
        return switch.call("127.0.0.1", port, caller, Callee(talk=None))

    try:
        for i in range(2):
            procs.append(_serve(tmp_path, dsn, i))
        first = [call(procs[n % 2][1], n) for n in range(6)]
        deadline = time.monotonic() + 120
        while len([e for e in gate.bridged.values() if e.is_set()]) < len(first):
            assert time.monotonic() < deadline, [c.transcript.text() for c in first]
            gevent.sleep(0.05)
        assert len(ledger.open_reservations(demo.card_id)) == 6

        procs.append(_serve(tmp_path, dsn, 2))  # joins while 6 calls are bridged on the others
        assert len(ledger.open_reservations(demo.card_id)) == 6
        second = [call(procs[n % 3][1], 100 + n) for n in range(9)]
        # The credit left pays for 4 more grants: 4 bridge, 5 hear it is not enough.
        deadline = time.monotonic() + 120
        while (
            len([e for e in gate.bridged.values() if e.is_set()]) < credit_calls
            or sum(1 for c in second if c.done.is_set()) < 5
        ):
            assert time.monotonic() < deadline, [c.transcript.text() for c in second]
            gevent.sleep(0.05)
        gate.release(list(gate.bridged))
        transcripts = [c.wait(120) for c in first + second]
    finally:
        for proc, _ in procs:
            proc.terminate()
        for proc, _ in procs:
            proc.wait(60)
        setup.close()

    dialled = [t for t in transcripts if any(app == "bridge" for app, _ in t.apps)]
    assert len(dialled) == credit_calls
    refused = [t for t in transcripts if any("insufficient_funds" in p for p in t.prompts)]
    assert len(dialled) + len(refused) == len(transcripts)
    newcomer = transcripts[6 + 2 :: 3]  # the second wave's calls to the third process
    assert len(newcomer) == 3 and all(t in dialled or t in refused for t in newcomer)
    db = Database(dsn, pool_size=2)
    db.start()
    try:
        ledger = Ledger(db.pool)
        cdrs = ledger.cdrs_for(demo.card_id, limit=50)
        charged = sum((c.cost for c in cdrs), D(0))
        entries = ledger.ledger_entries(demo.card_id)
        assert ledger.open_reservations(demo.card_id) == []
        assert len([c for c in cdrs if c.cost > 0]) == credit_calls  # each dialled call charged once
        assert charged == PER_CALL * credit_calls  # the whole credit, not a cent more
        assert (
            ledger.get_card(demo.card_id).balance
            == PER_CALL * credit_calls - charged
            == sum((e.amount for e in entries), D(0))
        )
    finally:
        db.close()
