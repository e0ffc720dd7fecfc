"""Every benchmark, one after the other, with its default (short) settings,
then one summary table of the headline figures.

    python bench/run_all.py [--only bench_settle,bench_rating] [--skip bench_bridged]

Each benchmark runs as a subprocess (its own embedded PostgreSQL in a
temporary directory), its output shown as it comes; the summary lists each
one's exit code, wall time and its figures: every benchmark prints each
headline figure as one `FIGURE ...` line with its target beside it (when a
benchmark prints none, its last lines are shown instead). The soak (bench/soak.py, 30 minutes by default) is
not part of it. Figures are printed, never asserted; the exit code is 1 when
a benchmark failed.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent

# (script, headline patterns), in the order they run: each one's FIGURE
# lines, and the lines that say whether its money check passed.
FIGURES = r"^FIGURE "
BENCHES: list[tuple[str, list[str]]] = [
    ("bench_rating", [FIGURES]),
    ("bench_flows", [FIGURES]),
    ("bench_bridged", [FIGURES]),
    ("bench_settle", [FIGURES, r"^money check", r"^MONEY CHECK"]),
    ("bench_overspend", [FIGURES, r"^(OK|FAILED)"]),
    ("bench_rate_import", [FIGURES]),
    ("bench_routing", [FIGURES]),
]
LAST_LINES = 3


def headline(output: str, patterns: list[str]) -> list[str]:
    lines = [ln.rstrip() for ln in output.splitlines() if ln.strip()]
    picked = [ln.removeprefix("FIGURE ") for ln in lines if any(re.search(p, ln) for p in patterns)]
    return picked or lines[-LAST_LINES:]


def run(script: Path) -> tuple[int, float, str]:
    """Run one benchmark, echoing its output; returns (exit code, seconds, output)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=str(REPO),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out = []
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        out.append(line)
    return proc.wait(), time.monotonic() - t0, "".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="", help="comma-separated benchmark names to run")
    p.add_argument("--skip", default="", help="comma-separated benchmark names to leave out")
    args = p.parse_args()
    only = {n for n in args.only.split(",") if n}
    skip = {n for n in args.skip.split(",") if n}
    results = []
    for name, patterns in BENCHES:
        script = BENCH / f"{name}.py"
        if not script.exists() or (only and name not in only) or name in skip:
            continue
        print(f"\n===== {name} =====", flush=True)
        code, seconds, output = run(script)
        results.append((name, code, seconds, headline(output, patterns)))
    print("\n===== summary =====")
    print(
        f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}, {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC"
    )
    print(
        "Every figure with its target beside it (shared 2-core box: wall-clock figures move with the load;"
        " ratios are same-run)"
    )
    print(f"{'benchmark':<18} {'exit':>4} {'seconds':>8}  figures")
    for name, code, seconds, lines in results:
        print(f"{name:<18} {code:>4} {seconds:>8.0f}  {lines[0] if lines else ''}")
        for ln in lines[1:]:
            print(f"{'':<33}{ln}")
    return 1 if any(code for _, code, _, _ in results) else 0


if __name__ == "__main__":
    sys.exit(main())
