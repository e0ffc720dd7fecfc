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

from cardd.billing.ledger import Ledger
from cardd.daemon import Daemon
from cardd.db import Database
from cardd.metrics import Metrics
from cardd.sim import Callee, Caller, Switch
from tests.callfixtures import make_settings
from tests.dbfixtures import create_demo_data

UK_MOBILE = "447700900123"
YAML = "calling_card:\n  max_call_duration: 120\n"
PER_CALL = D("0.22000")      # 120 s at the 44 rate: 0.10 + 0.03 + 0.06 * 90 / 60


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
            caller = Caller(cli=f"1555{n:07d}", destination="cc.noredial.noplaybalance",
                            digits=[demo.card_number + "#", UK_MOBILE + "#"], type_after=6)
            sims.append(switch.call(host, port, caller, Callee(talk=None)))
        transcripts = [s.wait(300) for s in sims]
        seconds = time.monotonic() - started
        dialled = sum(1 for t in transcripts if any(app == "bridge" for app, _ in t.apps))
        refused = sum(1 for t in transcripts
                      if any("insufficient_funds" in p for p in t.prompts) and
                      not any(app == "bridge" for app, _ in t.apps))
        cdrs = ledger.cdrs_for(demo.card_id, limit=calls + 10)
        entries = ledger.ledger_entries(demo.card_id)
        return Figures(
            calls=calls, daemons=daemons, dialled=dialled, refused=refused,
            other=calls - dialled - refused, money_in=balance,
            charged=sum((c.cost for c in cdrs), D(0)),
            balance=ledger.get_card(demo.card_id).balance,
            ledger_sum=sum((e.amount for e in entries), D(0)),
            open_reservations=len(ledger.open_reservations(demo.card_id)), seconds=seconds)
    finally:
        for d, db, _ in running:
            d.stop()
            db.close()
        setup.close()


def check(f: Figures, credit_calls: int) -> None:
    assert f.open_reservations == 0                       # nothing left reserved
    assert f.charged <= f.money_in                        # zero overspend
    assert f.balance >= 0
    assert f.balance == f.money_in - f.charged == f.ledger_sum   # balance = its ledger
    assert f.dialled == credit_calls                      # the credit bought exactly that many grants
    assert f.charged == PER_CALL * credit_calls
    assert f.dialled + f.refused == f.calls, f


def test_two_cardd_instances_on_one_database_never_overspend_one_card(dsn, tmp_path):
    f = overspend_run(dsn, calls=60, daemons=2, work_dir=tmp_path, credit_calls=15)
    check(f, 15)


def test_two_hundred_concurrent_calls_on_one_card_never_overspend(dsn, tmp_path):
    f = overspend_run(dsn, calls=200, daemons=2, work_dir=tmp_path, credit_calls=40)
    check(f, 40)
