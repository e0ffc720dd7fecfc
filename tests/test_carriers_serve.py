"""Least-cost routing through the real entry points: `cardd serve` as a process,
`cardd carrier ...` against its database, `cardd call`, `cardd cdr export`."""

from __future__ import annotations

import csv
import io
from decimal import ROUND_CEILING, Decimal

from tests.test_serve import served  # noqa: F401 (the fixture)

DIAL = (
    "call",
    "--digits",
    "1000000001#",
    "--digits",
    "1234#",
    "--digits",
    "442071234567#",
    "--talk",
    "42",
    "--cld",
    "cc.noredial",
)


def ok(done) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_serve_routes_the_call_to_the_cheapest_carrier_and_exports_its_margin(served, tmp_path):
    deck = tmp_path / "deck.csv"
    deck.write_text("prefix,price_1,interval_1,price_n,interval_n\n44,0.031,1,0.031,1\n")
    dear = tmp_path / "dear.csv"
    dear.write_text("prefix,price_1,interval_1,price_n,interval_n\n44,0.045,60,0.045,60\n")
    ok(served.cardd("carrier", "add", "dear", "--currency", "USD", "--gateway", "sofia/gateway/dear/{number}"))
    ok(served.cardd("carrier", "add", "cheap", "--currency", "USD", "--gateway", "sofia/gateway/cheap/{number}"))
    ok(served.cardd("carrier", "rates", "import", str(deck), "--carrier", "cheap"))
    ok(served.cardd("carrier", "rates", "import", str(dear), "--carrier", "dear"))

    out = ok(served.cardd(*DIAL))
    assert "sofia/gateway/cheap/442071234567" in out
    assert "sofia/gateway/dear/" not in out
    assert "sched_hangup +3600 ALLOTTED_TIMEOUT" in out  # the card's limit, not the carrier's

    export = ok(served.cardd("cdr", "export", "--from", "2000-01-01", "--to", "2100-01-01"))
    (row,) = list(csv.DictReader(io.StringIO(export)))
    billed = int(row["billed_seconds"])
    assert billed >= 42
    # by hand: 0.031/min per second, rounded up to 5 places; margin = what the card paid - that
    buy = (Decimal(billed) * Decimal("0.031") / 60).quantize(Decimal("0.00001"), rounding=ROUND_CEILING)
    assert (row["carrier"], row["gateway"], row["buy_cost"]) == ("cheap", "sofia/gateway/cheap/{number}", str(buy))
    assert Decimal(row["margin"]) == Decimal(row["cost"]) - buy


def test_cardd_call_with_every_gateway_unreachable_tries_each_carrier_once(served, tmp_path):
    for name, price in (("a", "0.031"), ("b", "0.035")):
        deck = tmp_path / f"{name}.csv"
        deck.write_text(f"prefix,price_1,interval_1,price_n,interval_n\n44,{price},60,{price},60\n")
        ok(served.cardd("carrier", "add", name, "--currency", "USD", "--gateway", f"sofia/gateway/{name}/{{number}}"))
        ok(served.cardd("carrier", "rates", "import", str(deck), "--carrier", name))
    out = ok(served.cardd(*DIAL[:-4], "--answer", "unreachable", "--cld", "cc.noredial"))
    assert out.index("sofia/gateway/a/442071234567") < out.index("sofia/gateway/b/442071234567")
    listed = ok(served.cardd("carrier", "list"))
    assert all(line.split("\t")[5] == "0" for line in listed.splitlines()[1:])  # no call left up


def test_serve_with_no_carriers_dials_the_template_as_before(served):
    out = ok(served.cardd(*DIAL))
    assert "sofia/external/442071234567@198.51.100.7:5060" in out
    export = ok(served.cardd("cdr", "export", "--from", "2000-01-01", "--to", "2100-01-01"))
    (row,) = list(csv.DictReader(io.StringIO(export)))
    assert (row["carrier"], row["buy_cost"], row["margin"]) == ("", "", "")
