"""Settlements per second: grant + settle of a short call through the real
Ledger, spread over many cards and on one hot card (lock contention).

    python bench/bench_settle.py [--cards 100] [--workers 50] [--seconds 15] [--pool 10]

An embedded PostgreSQL in a temporary directory with the demo tariff and
--cards bench cards (bench/common.py EmbeddedPg), a psycopg pool of --pool
connections configured as cardd's (cardd.db.Database), and --workers gevent
greenlets each looping: Ledger.grant (one snapshot of the card, its open
reservations and the longest-prefix rate; then cardd_reserve, which locks the
account row, checks the price still holds and writes the reservation) then
Ledger.settle of a 5 s answered call (cardd_settle_granted: lock the account
row, ledger debit, reservation closed, CDR). One settlement = one grant + one
settle = two write transactions, three round trips (schema 011).

`spread`: each worker takes the next card of --cards in turn, so concurrent
transactions mostly lock different account rows. `hot`: every worker uses
card 0, so every transaction queues on the same account row lock.

Before the hot run the hot card is topped up through a ledger row (one
settlement costs ~0.13 USD, so its 1000 USD would run out after ~7,600 and a
faster ledger would show refusals instead of throughput). Round trips per
settlement are counted in this process at the psycopg level
(bench.common.DbCounter), WAL bytes per settlement from pg_current_wal_lsn().

After both runs the money is checked (no open reservation left; every card's
balance = the sum of its ledger rows = its credit (initial and top-ups) - the
sum of its CDR costs). Figures are printed, never asserted; the exit code is 1 only
when that money check fails.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import itertools  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from decimal import Decimal  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import BENCH_CARD_BASE, DESTINATION, DbCounter, EmbeddedPg, machine, table  # noqa: E402

BILLMSEC = 5000
INITIAL = Decimal("1000.00000")
# Enough for the hot card at any rate this box could reach (~0.13 USD a settlement).
HOT_TOPUP = Decimal("100000000.00000")


def run(ledger, card_ids: list[int], *, workers: int, seconds: float, hot: bool) -> tuple[int, float, int]:
    """Settlements completed in `seconds` by `workers` greenlets; returns (n, wall, errors)."""
    done = 0
    errors = 0
    cycle = itertools.cycle(card_ids)
    deadline = time.perf_counter() + seconds

    def worker() -> None:
        nonlocal done, errors
        while time.perf_counter() < deadline:
            card = card_ids[0] if hot else next(cycle)
            b = uuid.uuid4()
            try:
                ledger.grant(
                    card,
                    a_uuid=uuid.uuid4(),
                    b_uuid=b,
                    destination=DESTINATION,
                    cli="15551234567",
                    max_call_duration=60,
                    min_call_duration=1,
                )
                ledger.settle(b, billmsec=BILLMSEC, hangup_cause="NORMAL_CLEARING")
            except Exception as exc:  # counted and shown, the run goes on
                errors += 1
                if errors <= 3:
                    print(f"# error: {exc!r}")
                continue
            done += 1

    t0 = time.perf_counter()
    gevent.joinall([gevent.spawn(worker) for _ in range(workers)], raise_error=True)
    return done, time.perf_counter() - t0, errors


def money_check(pool) -> list[str]:
    """What is wrong with the money after the runs (empty: nothing)."""
    problems = []
    with pool.connection() as conn:
        n_open = conn.execute("SELECT count(*) FROM reservations WHERE status = 'open'").fetchone()[0]
        if n_open:
            problems.append(f"{n_open} open reservations")
        bad = conn.execute(
            "SELECT count(*) FROM accounts a"
            " WHERE a.username::bigint >= %s AND ("
            "   a.balance <> (SELECT coalesce(sum(amount), 0) FROM ledger l WHERE l.account_id = a.id)"
            "   OR a.balance <> (SELECT coalesce(sum(amount), 0) FROM ledger l"
            "                     WHERE l.account_id = a.id AND l.kind IN ('initial', 'topup'))"
            "                  - (SELECT coalesce(sum(cost), 0) FROM cdrs c WHERE c.account_id = a.id))",
            (BENCH_CARD_BASE,),
        ).fetchone()[0]
        if bad:
            problems.append(f"{bad} cards whose balance differs from their ledger or CDRs")
    return problems


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cards", type=int, default=100, help="cards the spread run cycles over")
    p.add_argument("--workers", type=int, default=50, help="concurrent greenlets")
    p.add_argument("--seconds", type=float, default=15.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of spread traffic first")
    p.add_argument("--pool", type=int, default=10, help="pool connections (cardd's default: 10)")
    p.add_argument(
        "--no-check",
        action="store_true",
        help="no connection check per pool checkout (cardd checks; shows what it costs)",
    )
    p.add_argument(
        "--async-commit",
        action="store_true",
        help="synchronous_commit=off on the bench's connections: shows how much of the "
        "time is the WAL flush of each commit (cardd runs with it on)",
    )
    args = p.parse_args()
    print(
        f"# bench_settle: {machine()}; {args.workers} workers, pool {args.pool}, "
        f"{args.cards} cards, {args.seconds:g} s per run"
    )
    sys.stdout.flush()
    from psycopg_pool import ConnectionPool

    from cardd.billing.ledger import Ledger
    from cardd.db import check_idle_connection

    with EmbeddedPg(args.cards, balance=str(INITIAL)) as pg:
        # As cardd.db.Database opens it (autocommit, each checkout checked without a
        # round trip unless the socket says the server spoke: check_idle_connection).
        with ConnectionPool(
            pg.dsn,
            min_size=args.pool,
            max_size=args.pool,
            timeout=30,
            kwargs={"autocommit": True, **({"options": "-c synchronous_commit=off"} if args.async_commit else {})},
            check=None if args.no_check else check_idle_connection,
            open=True,
        ) as pool:
            pool.wait(timeout=30)
            with pool.connection() as conn:
                card_ids = [
                    r[0]
                    for r in conn.execute(
                        "SELECT id FROM accounts WHERE username::bigint >= %s ORDER BY id", (BENCH_CARD_BASE,)
                    ).fetchall()
                ]
                # Commits wait for the WAL flush unless these say otherwise.
                durability = ", ".join(
                    f"{k}={conn.execute('SHOW ' + k).fetchone()[0]}" for k in ("fsync", "synchronous_commit")
                )
            print(f"# PostgreSQL {durability}; pool check per checkout: {not args.no_check}")
            with pool.connection() as conn:
                conn.execute(
                    "INSERT INTO ledger (account_id, amount, kind, reference)"
                    " VALUES (%s, %s, 'topup', 'bench hot card')",
                    (card_ids[0], HOT_TOPUP),
                )
            ledger = Ledger(pool)
            counts = DbCounter.install()
            run(ledger, card_ids, workers=args.workers, seconds=args.warmup, hot=False)
            results = {}
            for name, hot in (("spread", False), ("hot", True)):
                pg0, me0, wal0, db0 = pg.backend_cpu(), time.process_time(), pg.wal_lsn(), dict(counts)
                n, wall, errors = run(ledger, card_ids, workers=args.workers, seconds=args.seconds, hot=hot)
                db = {k: counts[k] - db0[k] for k in counts}
                results[name] = (
                    n,
                    wall,
                    errors,
                    pg.backend_cpu() - pg0,
                    time.process_time() - me0,
                    pg.wal_lsn() - wal0,
                    db,
                )
                print(
                    f"# {name:6}: {n} settlements in {wall:.1f} s = {n / wall:.0f}/s, {errors} errors "
                    f"(load {os.getloadavg()[0]:.2f})"
                )
                sys.stdout.flush()
            problems = money_check(pool)
    rows = []
    for name, (n, wall, errors, pg_cpu, me_cpu, wal, db) in results.items():
        cards = "1 (hot)" if name == "hot" else str(args.cards)
        n1 = max(n, 1)
        rows.append(
            [
                name,
                cards,
                str(args.workers),
                str(n),
                str(errors),
                f"{n / wall:.0f}",
                f"{1000 * me_cpu / n1:.2f}",
                f"{1000 * pg_cpu / n1:.2f}",
                f"{db['round_trips'] / n1:.1f} ({db['statements'] / n1:.1f} / {db['checks'] / n1:.1f})",
                f"{wal / n1:,.0f}",
            ]
        )
    print()
    print(f"Machine: {machine()}")
    print(
        table(
            rows,
            [
                "run",
                "cards",
                "workers",
                "settlements",
                "errors",
                "settlements/s",
                "client CPU ms/settlement",
                "PostgreSQL CPU ms/settlement",
                "round trips (statements / pool checks)",
                "WAL bytes/settlement",
            ],
        )
    )
    spread = results["spread"][0] / results["spread"][1]
    hot = results["hot"][0] / results["hot"][1]
    print()
    print(f"spread {spread:.0f}/s, hot card {hot:.0f}/s, hot / spread = {hot / spread:.2f}")
    print(f"FIGURE settlements/s spread over {args.cards} cards: {spread:.0f} (target >= 1,000)")
    print(f"FIGURE settlements/s on one hot card: {hot:.0f} (target >= 500)")
    sp = results["spread"]
    print(
        f"FIGURE round trips per settlement (grant + settle): {sp[6]['round_trips'] / max(sp[0], 1):.1f} "
        f"(counted in psycopg; grant 2 + settle 1; target <= 8 per call flow: bench_flows)"
    )
    if problems:
        print("MONEY CHECK FAILED: " + "; ".join(problems))
        return 1
    print("money check: no open reservation; every card's balance = its ledger = its credit - its CDR costs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
