"""`cardd rate import` at scale: a generated rates CSV imported as an operator would.

    python bench/bench_rate_import.py [--dsn DSN] [--rows 1000000]

Without --dsn it runs an embedded PostgreSQL in a temporary directory. Each
import is a real `python -m cardd ... rate import` process (so the time
includes interpreter start, connecting and the migration check), timed on the
wall clock: a merge into an empty tariff, the same file again (nothing
changed), a file with every price changed (merge), and a replace by a file
half of whose prefixes are new. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402

from bench.common import machine  # noqa: E402
from cardd.db import EmbeddedServer, migrate_conn  # noqa: E402


def write_csv(path: Path, rows: int, seed: int = 7, first: int = 10_000_000) -> None:
    """`rows` distinct 8-digit prefixes from `first` on; prices drawn from `seed`."""
    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        f.write("prefix,description,price_1,interval_1,price_n,interval_n,connect_fee,free_seconds,grace\n")
        for i in range(rows):
            price = f"0.{rng.randint(1, 99999):05d}"
            f.write(f"{first + i},Zone {i % 997},{price},60,{price},6,0.01000,0,3\n")


def run_import(config: Path, csv_path: Path, mode: str) -> tuple[float, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cardd",
            "-c",
            str(config),
            "rate",
            "import",
            str(csv_path),
            "--tariff",
            "bench",
            "--mode",
            mode,
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"import failed ({done.returncode}): {done.stderr}")
    return seconds, done.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default="", help="PostgreSQL to use (default: embedded, temporary)")
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cardd-bench-import-") as tmp:
        tmpdir = Path(tmp)
        server = None
        dsn = args.dsn
        if not dsn:
            server = EmbeddedServer(tmpdir / "pg").start()
            dsn = server.uri("postgres")
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                migrate_conn(conn)
                conn.execute("DELETE FROM rates WHERE tariff_id IN (SELECT id FROM tariffs WHERE name = 'bench')")
                conn.execute("INSERT INTO tariffs (name, currency) VALUES ('bench', 'USD') ON CONFLICT DO NOTHING")
            config = tmpdir / "cardd.yaml"
            config.write_text(f'daemon:\n  dsn: "{dsn}"\n  log_level: warning\n')
            csv_path = tmpdir / "rates.csv"
            repriced = tmpdir / "repriced.csv"
            shifted = tmpdir / "shifted.csv"
            t0 = time.monotonic()
            write_csv(csv_path, args.rows)
            write_csv(repriced, args.rows, seed=8)
            write_csv(shifted, args.rows, seed=9, first=10_000_000 + args.rows // 2)
            size_mb = csv_path.stat().st_size / 1e6
            print(f"machine: {machine()}")
            print(f"CSV: {args.rows:,} rows per file, {size_mb:.1f} MB (generated in {time.monotonic() - t0:.1f} s)")
            figures: list[str] = []
            print(f"{'import':<34} {'seconds':>8} {'rows/s':>10}")
            for label, path, mode in (
                ("merge into an empty tariff", csv_path, "merge"),
                ("same file again (unchanged)", csv_path, "merge"),
                ("merge, every price changed", repriced, "merge"),
                ("replace, half the prefixes new", shifted, "replace"),
            ):
                seconds, line = run_import(config, path, mode)
                print(f"{label:<34} {seconds:>8.1f} {args.rows / seconds:>10,.0f}   [{line}]")
                figures.append(
                    f"FIGURE rate import, {label}, {args.rows:,} rows: {seconds:.1f} s"
                    + (" (target <= 12 s for 1,000,000 new rows)" if label.startswith("merge into") else " (no target)")
                )
            print("\n".join(figures))
        finally:
            if server is not None:
                server.stop()


if __name__ == "__main__":
    main()
