"""Soak: continuous simulated traffic against one cardd process, with random
hang-ups at every step, then the money checked to the last cent.

    python bench/soak.py [--minutes 30] [--callers 20] [--cards 200] [--sample 10] [--seed N]

cardd runs in its own process (bench/serve.py, default settings, pool of 10)
on an embedded PostgreSQL in a temporary directory (bench/common.py
EmbeddedPg: demo tariff + --cards cards); the simulator (cardd.sim) runs here
with --callers callers placing calls back to back until --minutes have
passed. Each call picks one scenario at random (weights in SCENARIOS):

- talk: full flow, the callee answers and hangs up after 1-60 virtual s
  (most calls: the callee hanging up is the path the simulator keeps right
  under any load);
- caller_talk: the caller hangs up 1-30 s after the answer
  (hangup_after_talk; the callee would hang up 30 s later: see the known
  simulator quirk in bench/README.md, counted as `caller hang-up lost`);
- hash: the caller types ## 2-20 s into the bridge;
- busy / no_answer / unreachable: the callee never answers;
- step: the caller hangs up during a random step (each play_and_get_digits,
  the talk-time playback, the ringing bridge, the goodbye);
- early: the caller hangs up 0.2-8 s after the call reached cardd;
- bad_pin: a wrong PIN three times, on cards of their own (the last tenth
  of --cards): wrong PINs throttle the card, which would refuse the next good
  calls on it.

cardd's RSS is sampled every --sample seconds; the slope (least squares,
KB/min) is printed over the whole run and over its second half, with the
first and last samples. At the end: open reservations (must be 0), every
bridge attempt of the transcripts has its CDR and every answered one a CDR
with billed seconds, the sum of CDR costs = minus the sum of ledger rows of
kind `call`, every card's balance = the sum of its ledger rows. Exit code 1
when a money check fails. CI does not run this.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import collections  # noqa: E402
import itertools  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    BENCH_CARD_BASE,
    BENCH_PIN,
    DESTINATION,
    EmbeddedPg,
    Handler,
    card_number,
    machine,
    raise_nofile,
)
from cardd.sim import Callee, Caller, Switch  # noqa: E402

CALL_TIMEOUT = 300.0
SCENARIOS = {
    "talk": 50,
    "caller_talk": 8,
    "hash": 8,
    "busy": 6,
    "no_answer": 4,
    "unreachable": 3,
    "step": 12,
    "early": 5,
    "bad_pin": 4,
}
# Steps of cardd's card flow on the caller's leg: (application, nth execution).
STEPS = [
    ("play_and_get_digits", 1),
    ("play_and_get_digits", 2),
    ("play_and_get_digits", 3),
    ("playback", 1),
    ("bridge", 1),
    ("playback", 2),
]


def scenario(name: str, rng: random.Random, card: str) -> tuple[Caller, Callee]:
    digits = [card + "#", BENCH_PIN + "#", DESTINATION + "#"]
    # A CLI of its own per call: wrong PINs are throttled per CLI (and per card).
    caller = dict(
        cli="1555" + "".join(rng.choice("0123456789") for _ in range(7)), destination="cc.noredial", digits=digits
    )
    callee = Callee(answer_after=rng.uniform(0.5, 3), talk=rng.uniform(1, 60))
    if name == "caller_talk":
        after = rng.uniform(1, 30)
        caller["hangup_after_talk"] = after
        callee = Callee(answer_after=1.0, talk=after + 30)
    elif name == "hash":
        caller["bridge_digits"] = [(rng.uniform(2, 20), "##")]
        callee = Callee(answer_after=1.0, talk=120)
    elif name in ("busy", "no_answer", "unreachable"):
        callee = Callee(outcome=name)
    elif name == "step":
        caller["hangup_at"] = rng.choice(STEPS)
        caller["hangup_delay"] = rng.uniform(0.1, 3)
    elif name == "early":
        caller["hangup_after"] = rng.uniform(0.2, 8)
    elif name == "bad_pin":
        caller["digits"] = [card + "#", ("9999#", "8888#", "7777#")]
    return Caller(**caller), callee


def slope_kb_per_min(samples: list[tuple[float, int]]) -> float:
    """Least-squares slope of RSS (KB) against time (minutes)."""
    if len(samples) < 2:
        return 0.0
    xs = [t / 60 for t, _ in samples]
    ys = [kb for _, kb in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--callers", type=int, default=20, help="concurrent callers")
    p.add_argument("--cards", type=int, default=200)
    p.add_argument("--sample", type=float, default=10.0, help="seconds between RSS samples")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--log-file", default="", help="keep cardd's log here (default: discarded)")
    args = p.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    raise_nofile()
    print(f"# soak: {machine()}; {args.minutes:g} min, {args.callers} callers, {args.cards} cards, seed {seed}")
    sys.stdout.flush()
    outcomes: collections.Counter[str] = collections.Counter()
    anomalies: collections.Counter[str] = collections.Counter()
    examples: list[str] = []
    bridged: set[str] = set()  # every bridge attempt's B-leg UUID
    answered: dict[str, int] = {}  # answered bridges: B-leg UUID -> billmsec
    samples: list[tuple[float, int]] = []
    calls_by_a: dict[str, str] = {}  # A-leg UUID -> what the call was, for open reservations

    def anomaly(kind: str, detail: str) -> None:
        anomalies[kind] += 1
        if len(examples) < 8:
            examples.append(f"{kind}: {detail}")

    with EmbeddedPg(args.cards) as pg:
        with Handler("cardd", dsn=pg.dsn, log_file=args.log_file) as h:
            print(f"# cardd: pid {h.pid}, port {h.port}")
            switch = Switch()
            t0 = time.perf_counter()
            deadline = t0 + args.minutes * 60
            counter = itertools.count()

            def sampler() -> None:
                while True:
                    samples.append((time.perf_counter() - t0, h.usage().rss_kb))
                    gevent.sleep(args.sample)

            def caller() -> None:
                while time.perf_counter() < deadline:
                    i = next(counter)
                    name = rng.choices(list(SCENARIOS), weights=list(SCENARIOS.values()))[0]
                    good = args.cards - max(1, args.cards // 10)
                    card = card_number(good + i % (args.cards - good) if name == "bad_pin" else i % good)
                    c, callee = scenario(name, rng, card)
                    outcomes[name] += 1
                    try:
                        call = switch.call("127.0.0.1", h.port, c, callee)
                        calls_by_a[call.a_uuid] = f"{name} #{i} {c}"
                        t = call.wait(CALL_TIMEOUT)
                    except (TimeoutError, OSError) as exc:
                        anomaly("call did not end", f"{name} #{i}: {exc}")
                        continue
                    calls_by_a[t.a_uuid] += (
                        f" -> apps {[a for a, _ in t.apps]}, bridges "
                        f"{[(b.disposition, b.billmsec) for b in t.bridges]}, "
                        f"hangup {t.hangup_cause}, closed by {t.closed_by}"
                    )
                    if t.errors:
                        anomaly("simulator error", f"{name} #{i}: {t.errors[:2]}")
                    if t.closed_by != "exit":
                        outcomes[f"closed by {t.closed_by}"] += 1
                    if name in ("talk", "caller_talk", "hash") and not any(b.answered for b in t.bridges):
                        anomaly(
                            "full flow without an answered bridge",
                            f"{name} #{i}: apps {[a for a, _ in t.apps]}, closed by {t.closed_by}",
                        )
                    for b in t.bridges:
                        bridged.add(b.b_uuid)
                        if b.answered:
                            answered[b.b_uuid] = b.billmsec
                            if (
                                name == "caller_talk"
                                and c.hangup_after_talk is not None
                                and b.billmsec > (c.hangup_after_talk + 5) * 1000
                            ):
                                anomaly(
                                    "caller hang-up lost",
                                    f"#{i}: hung up at {c.hangup_after_talk:.1f} s, "
                                    f"billed {b.billmsec} ms (the callee's timer ended it)",
                                )

            samp = gevent.spawn(sampler)
            gevent.joinall([gevent.spawn(caller) for _ in range(args.callers)], raise_error=True)
            wall = time.perf_counter() - t0
            samp.kill()
            samples.append((time.perf_counter() - t0, h.usage().rss_kb))
            # Settlement runs after the caller's side has ended: give it a moment.
            for _ in range(50):
                n_open = h.request("open_reservations")["n"]
                if n_open == 0:
                    break
                gevent.sleep(0.2)
            import psycopg

            with psycopg.connect(pg.dsn) as conn:
                still_open = conn.execute(
                    "SELECT b_uuid, a_uuid, created_at, expires_at, duration_s FROM reservations WHERE status = 'open'"
                ).fetchall()
                cdrs = {
                    str(r[0]): (r[1], r[2])
                    for r in conn.execute("SELECT b_uuid, billed_seconds, cost FROM cdrs").fetchall()
                }
                cost_sum = conn.execute("SELECT coalesce(sum(cost), 0) FROM cdrs").fetchone()[0]
                debit_sum = conn.execute("SELECT coalesce(-sum(amount), 0) FROM ledger WHERE kind = 'call'").fetchone()[
                    0
                ]
                off_balance = conn.execute(
                    "SELECT count(*) FROM accounts a WHERE a.balance <>"
                    " (SELECT coalesce(sum(amount), 0) FROM ledger l WHERE l.account_id = a.id)"
                ).fetchone()[0]
                bench_cards_used = conn.execute(
                    "SELECT count(DISTINCT account_id) FROM cdrs c JOIN accounts a ON a.id = c.account_id"
                    " WHERE a.username::bigint >= %s",
                    (BENCH_CARD_BASE,),
                ).fetchone()[0]

    calls = sum(v for k, v in outcomes.items() if k in SCENARIOS)
    no_cdr = [b for b in bridged if b not in cdrs]
    # A grant whose call ended before its bridge (the caller hung up during the
    # talk-time prompt) is settled unanswered: a CDR with no bridge, cost 0.
    unbridged = [v for b, v in cdrs.items() if b not in bridged]
    unbridged_charged = [v for v in unbridged if v[0] or v[1]]
    answered_unbilled = [b for b, ms in answered.items() if b in cdrs and ms > 0 and cdrs[b][0] == 0]
    half = [s for s in samples if s[0] >= wall / 2]
    print()
    print(f"Machine: {machine()}")
    print(f"calls total {calls} in {wall / 60:.1f} min ({calls / wall:.1f}/s), seed {seed}")
    print("scenarios: " + ", ".join(f"{k} {outcomes[k]}" for k in SCENARIOS))
    other = {k: v for k, v in outcomes.items() if k not in SCENARIOS}
    if other:
        print("connections not ended by exit: " + ", ".join(f"{k} {v}" for k, v in sorted(other.items())))
    print(
        f"RSS start {samples[0][1] / 1024:.1f} MB, end {samples[-1][1] / 1024:.1f} MB, "
        f"max {max(kb for _, kb in samples) / 1024:.1f} MB, {len(samples)} samples; slope "
        f"{slope_kb_per_min(samples):.1f} KB/min (whole run), "
        f"{slope_kb_per_min(half):.1f} KB/min (second half)"
    )
    print(
        "RSS MB by minute: "
        + " ".join(f"{kb / 1024:.1f}" for t, kb in samples if int(t // 60) != int((t - args.sample) // 60) or t == 0)
    )
    print(
        f"bridge attempts {len(bridged)}, answered {len(answered)}, CDRs {len(cdrs)}, "
        f"bridge attempts without a CDR {len(no_cdr)}, answered bridges billed 0 s {len(answered_unbilled)}, "
        f"cards used {bench_cards_used}"
    )
    print(f"CDRs of grants that never reached the bridge {len(unbridged)} (charged: {len(unbridged_charged)})")
    print(
        f"open reservations {n_open}; sum of CDR costs {cost_sum}, sum of call debits {debit_sum}, "
        f"difference {cost_sum - debit_sum}; cards whose balance != their ledger {off_balance}"
    )
    if anomalies:
        print("anomalies: " + ", ".join(f"{k} {v}" for k, v in anomalies.items()))
        for e in examples:
            print(f"  {e}")
    else:
        print("anomalies: none")
    failed = []
    if n_open:
        failed.append(f"{n_open} open reservations")
        for b, a, created, _expires, duration in still_open[:5]:
            print(
                f"  open reservation b={b} a={a} created {created:%H:%M:%S.%f} duration {duration} s, "
                f"in transcripts: {str(b) in bridged}; call: {calls_by_a.get(str(a), 'unknown')}"
            )
    if no_cdr:
        failed.append(f"{len(no_cdr)} bridge attempts without a CDR (e.g. {no_cdr[0]})")
    if answered_unbilled:
        failed.append(f"{len(answered_unbilled)} answered bridges billed 0 s")
    if unbridged_charged:
        failed.append(f"{len(unbridged_charged)} CDRs charged without a bridge")
    if cost_sum != debit_sum:
        failed.append("CDR costs != call debits")
    if off_balance:
        failed.append(f"{off_balance} balances != ledger")
    if failed:
        print("FAILED: " + "; ".join(failed))
        return 1
    print("OK: nothing reserved, every bridge has its CDR, CDR costs = call debits, balances = ledger")
    return 0


if __name__ == "__main__":
    sys.exit(main())
