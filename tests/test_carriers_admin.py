"""`cardd carrier ...` and the carrier columns of `cardd cdr export`, through the
real entry point (cardd.cli.main) on real PostgreSQL."""

from __future__ import annotations

import csv
import io
import uuid
from decimal import Decimal

import psycopg
import pytest

from cardd.billing.ledger import Ledger
from cardd.db import Database
from tests.dbfixtures import create_demo_data
from tests.test_admin_ops import HEADER, big_csv, cardd, restore_logging  # noqa: F401 (fixtures)


def deck_of(dsn: str, carrier: str) -> dict[str, tuple]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT r.prefix, r.price_1, r.interval_1, r.price_n, r.interval_n, r.connect_fee, r.free_seconds,"
            "       r.grace, r.forbidden FROM carrier_rates r JOIN carriers c ON c.id = r.carrier_id"
            " WHERE c.name = %s",
            (carrier,),
        ).fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


def add_acme(cardd, *extra: str) -> int:
    return cardd(
        "carrier",
        "add",
        "acme",
        "--currency",
        "usd",
        "--gateway",
        "sofia/gateway/acme1/{number}",
        "--gateway",
        "sofia/gateway/acme2/{number}",
        *extra,
    )


def test_carrier_add_list_disable_enable(cardd, capsys):
    assert add_acme(cardd, "--priority", "5", "--channel-limit", "30") == 0
    assert "carrier acme (USD) created" in capsys.readouterr().out
    assert cardd("carrier", "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split("\t") == [
        "acme",
        "USD",
        "yes",
        "5",
        "30",
        "0",
        "0",
        "sofia/gateway/acme1/{number} | sofia/gateway/acme2/{number}",
    ]
    assert cardd("carrier", "disable", "acme") == 0
    assert capsys.readouterr().out == "carrier acme disabled\n"
    cardd("carrier", "list")
    assert capsys.readouterr().out.splitlines()[1].split("\t")[2] == "no"
    assert cardd("carrier", "enable", "acme") == 0
    capsys.readouterr()
    cardd("carrier", "list")
    assert capsys.readouterr().out.splitlines()[1].split("\t")[2] == "yes"


@pytest.mark.parametrize(
    "argv, message",
    [
        (("carrier", "add", "x", "--currency", "USD", "--gateway", "sofia/gateway/x/"), "needs {number}"),
        (
            (
                "carrier",
                "add",
                "x",
                "--currency",
                "USD",
                "--gateway",
                "sofia/gateway/x/{number}|sofia/gateway/y/{number}",
            ),
            "one gateway per --gateway",
        ),
        (("carrier", "add", "x", "--currency", "USD", "--gateway", "sofia/gateway/{host}/{number}"), "nothing else"),
        (("carrier", "add", "bad name", "--currency", "USD", "--gateway", "sofia/gateway/x/{number}"), "carrier name"),
        (("carrier", "disable", "nobody"), "unknown carrier 'nobody'"),
        (("carrier", "rates", "import", __file__, "--carrier", "nobody"), "unknown carrier 'nobody'"),
    ],
)
def test_carrier_commands_refuse_bad_input_with_one_line(cardd, capsys, argv, message):
    assert cardd(*argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("cardd: ") and message in err[-1]


def test_a_second_carrier_of_the_same_name_is_refused(cardd, capsys):
    assert add_acme(cardd) == 0
    assert add_acme(cardd) == 2
    assert "carrier 'acme' already exists" in capsys.readouterr().err


def test_buy_deck_import_merges_then_replaces(cardd, dsn, tmp_path, capsys):
    add_acme(cardd)
    first = tmp_path / "deck.csv"
    first.write_text(HEADER + "44,UK,0.031,1,0.031,1,0,0,0\n4420,London,0.02,60,0.02,60,0,0,0\n")
    assert cardd("carrier", "rates", "import", str(first), "--carrier", "acme") == 0
    assert "carrier acme: 2 rates imported" in capsys.readouterr().out
    second = tmp_path / "deck2.csv"
    second.write_text(HEADER + "44,UK,0.029,1,0.029,1,0,0,0\n")
    assert cardd("carrier", "rates", "import", str(second), "--carrier", "acme", "--mode", "replace") == 0
    assert "1 updated" in capsys.readouterr().out
    assert deck_of(dsn, "acme") == {"44": (Decimal("0.02900"), 1, Decimal("0.02900"), 1, Decimal("0"), 0, 0, False)}


def test_buy_deck_import_is_all_or_nothing_with_every_bad_row_listed(cardd, dsn, tmp_path, capsys):
    add_acme(cardd)
    path = tmp_path / "deck.csv"
    path.write_text(
        HEADER + "44,UK,0.031,1,0.031,1,0,0,0\n"
        "4x,bad,0.1,60,0.1,60,0,0,0\n"
        "33,FR,-1,60,0.1,60,0,0,0\n"
        "44,again,0.1,60,0.1,60,0,0,0\n"
    )
    assert cardd("carrier", "rates", "import", str(path), "--carrier", "acme") == 2
    err = capsys.readouterr().err.splitlines()
    assert [line.split(": ")[0] for line in err[:3]] == [f"{path}:3", f"{path}:4", f"{path}:5"]
    assert "prefix '44' already on line 2" in err[2]
    assert err[-1] == f"cardd: nothing imported: 3 bad row(s) in {path} (4 rows read)"
    assert deck_of(dsn, "acme") == {}


def test_buy_deck_import_of_100k_rows_through_the_cli(cardd, dsn, tmp_path, capsys):
    add_acme(cardd)
    path = big_csv(tmp_path / "deck.csv", 100_000, price="0.00900")
    assert cardd("carrier", "rates", "import", str(path), "--carrier", "acme") == 0
    assert "carrier acme: 100000 rates imported" in capsys.readouterr().out
    assert len(deck_of(dsn, "acme")) == 100_000
    # The tariffs were not touched: the same code, another table.
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM rates").fetchone()[0] == 0


def test_cdr_export_carries_carrier_gateway_buy_cost_and_margin(cardd, dsn, tmp_path, capsys):
    add_acme(cardd)
    deck = tmp_path / "deck.csv"
    deck.write_text(HEADER + "44,UK,0.031,1,0.031,1,0,0,0\n")
    assert cardd("carrier", "rates", "import", str(deck), "--carrier", "acme") == 0
    db = Database(dsn)
    db.start()
    try:
        demo = create_demo_data(db.pool)
        ledger = Ledger(db.pool)
        grant = ledger.grant(demo.card_id, a_uuid=uuid.uuid4(), b_uuid=uuid.uuid4(), destination="447700900123")
        ledger.settle(grant.b_uuid, billmsec=31_000, hangup_cause="NORMAL_CLEARING")
    finally:
        db.close()
    capsys.readouterr()
    assert cardd("cdr", "export", "--from", "2000-01-01", "--to", "2100-01-01") == 0
    (row,) = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert (row["carrier"], row["gateway"], row["cost"], row["buy_cost"], row["margin"]) == (
        "acme",
        "sofia/gateway/acme1/{number}",
        "0.13600",
        "0.01602",
        "0.11998",
    )


def test_freeswitch_carriers_example_commands_work_and_name_its_gateways(cardd, capsys):
    import re
    import shlex
    import xml.etree.ElementTree as ET
    from pathlib import Path

    conf = Path(__file__).resolve().parent.parent / "freeswitch-conf"
    defined = {g.get("name") for g in ET.parse(conf / "carriers-example.xml").iter("gateway")}
    commands = re.findall(r"^cardd (carrier add .*)$", (conf / "carriers-example.sh").read_text(), re.M)
    assert len(commands) == 2
    for line in commands:
        assert cardd(*shlex.split(line)) == 0, capsys.readouterr().err
    cardd("carrier", "list")
    listed = capsys.readouterr().out
    named = set(re.findall(r"sofia/gateway/([\w.-]+)/\{number\}", listed))
    assert named == defined == {"acme-a", "acme-b", "globex"}


def test_carrier_route_lists_the_routes_in_the_order_a_call_takes_them(cardd, tmp_path, capsys):
    assert cardd("tariff", "add", "std", "--currency", "USD") == 0
    assert (
        cardd(
            "rate",
            "add",
            "--tariff",
            "std",
            "44",
            "--price-1",
            "0.06",
            "--interval-1",
            "1",
            "--price-n",
            "0.06",
            "--interval-n",
            "1",
        )
        == 0
    )
    add_acme(cardd)
    assert cardd("carrier", "add", "globex", "--currency", "USD", "--gateway", "sofia/gateway/globex/{number}") == 0
    assert cardd("carrier", "add", "pricey", "--currency", "USD", "--gateway", "sofia/gateway/pricey/{number}") == 0
    for name, row in (
        ("acme", "44,UK,0.031,1,0.031,1,0,0,0"),
        ("globex", "447,UK mobile,0.035,60,0.035,60,0,0,0"),
        ("pricey", "44,UK,0.07,60,0.07,60,0,0,0"),
    ):
        deck = tmp_path / f"{name}.csv"
        deck.write_text(HEADER + row + "\n")
        assert cardd("carrier", "rates", "import", str(deck), "--carrier", name) == 0
    capsys.readouterr()
    assert cardd("carrier", "route", "447700900123", "--tariff", "std") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "sell: tariff std prefix 44, first minute 0.06000 USD"
    # pricey's first minute (0.07) is dearer than the sell price: not a route
    assert [line.split("\t") for line in lines[2:]] == [
        ["1", "acme", "sofia/gateway/acme1/{number}", "44", "0.03100", "0.02900"],
        ["2", "acme", "sofia/gateway/acme2/{number}", "44", "0.03100", "0.02900"],
        ["3", "globex", "sofia/gateway/globex/{number}", "447", "0.03500", "0.02500"],
    ]
    assert cardd("carrier", "route", "447700900123", "--tariff", "std", "--allow-loss") == 0
    assert capsys.readouterr().out.splitlines()[-1].split("\t")[:2] == ["4", "pricey"]
    assert cardd("carrier", "route", "33123456", "--tariff", "std") == 1
    assert "no rate in tariff std" in capsys.readouterr().out
