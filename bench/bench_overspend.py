"""1,000 simultaneous calls on one card through two cardd instances sharing
one PostgreSQL (the issue's fraud target): zero overspend.

    python bench/bench_overspend.py [--calls 1000] [--daemons 2] [--credit-calls 250]

Runs an embedded PostgreSQL in a temporary directory, cardd in-process (two
Daemons, each with its own pool, as two processes on two FreeSWITCH boxes
would have), and the simulator. Prints the figures and exits 1 when any
money invariant fails. tests/test_faults_concurrency.py runs the same code
with 60 and 200 calls.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cardd.billing import pins  # noqa: E402
from cardd.db import EmbeddedServer  # noqa: E402
from tests.dbfixtures import PgServer, _make_template  # noqa: E402
from tests.test_faults_concurrency import check, overspend_run  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--daemons", type=int, default=2)
    ap.add_argument(
        "--credit-calls", type=int, default=250, help="how many full 120 s grants the card's credit pays for"
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="cardd-overspend-") as tmp:
        # The cardd instances hash and check PINs under a key file (as the suite's conftest loads one).
        pins.load_key(Path(tmp) / "pin.key", create=True)
        server = EmbeddedServer(Path(tmp) / "pg").start()
        try:
            admin = server.uri("postgres")
            pg = PgServer(admin, _make_template(admin))
            dsn = pg.dsn_for(pg.create_database())
            f = overspend_run(
                dsn, calls=args.calls, daemons=args.daemons, work_dir=Path(tmp), credit_calls=args.credit_calls
            )
        finally:
            server.stop()
    print(f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")
    print(
        f"calls {f.calls} through {f.daemons} cardd instances in {f.seconds:.1f} s: "
        f"{f.dialled} dialled, {f.refused} refused (insufficient funds), {f.other} other"
    )
    print(
        f"money in {f.money_in}, charged {f.charged}, balance {f.balance}, ledger sum {f.ledger_sum}, "
        f"open reservations {f.open_reservations}"
    )
    print(
        f"overspend {max(f.charged - f.money_in, 0)}, difference balance - (in - charged) "
        f"{f.balance - (f.money_in - f.charged)}"
    )
    try:
        check(f, args.credit_calls)
    except AssertionError as exc:
        print(f"FAILED: {exc}")
        return 1
    print("OK: zero overspend, balance = its ledger, nothing reserved")
    print(
        f"FIGURE overspend with {f.calls} calls on one card through {f.daemons} cardd instances: "
        f"{max(f.charged - f.money_in, 0)} (target 0)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
