"""Operator data commands through the real `cardd` entry point (cardd.cli.main) on real PostgreSQL:
rate import (merge / replace / refusals), rate lookup, cdr export, reservations."""

from __future__ import annotations

import csv
import io
import logging
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from cardd import cli
from cardd.admin import ops as admin_ops
from cardd.billing import catalog
from cardd.billing.ledger import Ledger
from cardd.billing.rating import Rate, max_duration
from cardd.db import Database
from tests.dbfixtures import create_demo_data

HEADER = "prefix,description,price_1,interval_1,price_n,interval_n,connect_fee,free_seconds,grace\n"


@pytest.fixture
def restore_logging():
    # cli.main() installs a handler on pytest's captured stderr; put the root logger back.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def cardd(dsn, tmp_path, restore_logging):
    config = tmp_path / "cardd.yaml"
    config.write_text(f'daemon:\n  dsn: "{dsn}"\n')

    def run(*argv: str) -> int:
        return cli.main(["-c", str(config), *argv])

    return run


def rates_of(dsn: str, tariff: str) -> dict[str, tuple]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT r.prefix, r.price_1, r.interval_1, r.price_n, r.interval_n, r.connect_fee, r.free_seconds,"
            "       r.grace, r.forbidden FROM rates r JOIN tariffs t ON t.id = r.tariff_id WHERE t.name = %s",
            (tariff,),
        ).fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


def big_csv(path: Path, n: int, *, price: str = "0.01234") -> Path:
    with open(path, "w", newline="") as f:
        f.write(HEADER)
        for i in range(n):
            # unique 8-digit prefixes; every 7th row has a description needing quotes
            desc = f'"Zone {i}, mobile"' if i % 7 == 0 else f"Zone {i}"
            f.write(f"{10_000_000 + i},{desc},{price},60,{price},6,0.1,0,3\n")
    return path


def test_rate_import_of_100k_rows_through_the_cli(cardd, dsn, tmp_path, capsys):
    assert cardd("tariff", "add", "big", "--currency", "USD") == 0
    path = big_csv(tmp_path / "rates.csv", 100_000)
    capsys.readouterr()
    assert cardd("rate", "import", str(path), "--tariff", "big") == 0
    out = capsys.readouterr()
    assert "tariff big: 100000 rates imported" in out.out
    assert "merge: 100000 new, 0 updated" in out.out
    # stderr is not a terminal here: no progress bar
    assert "[#" not in out.err
    rates = rates_of(dsn, "big")
    assert len(rates) == 100_000
    assert rates["10099999"] == (Decimal("0.01234"), 60, Decimal("0.01234"), 6, Decimal("0.10000"), 0, 3, False)


def test_merge_updates_and_adds_while_replace_leaves_exactly_the_file(cardd, dsn, tmp_path, capsys):
    assert cardd("tariff", "add", "std", "--currency", "EUR") == 0
    first = tmp_path / "first.csv"
    first.write_text(HEADER + "44,UK,0.06,30,0.06,6,0.10,0,0\n49,DE,0.05,60,0.05,60,0,0,0\n")
    assert cardd("rate", "import", str(first), "--tariff", "std") == 0
    merge = tmp_path / "merge.csv"
    merge.write_text(HEADER + "44,UK,0.07,30,0.07,6,0.10,0,0\n33,FR,0.04,60,0.04,60,0,10,5\n")
    capsys.readouterr()
    assert cardd("rate", "import", str(merge), "--tariff", "std", "--mode", "merge") == 0
    assert "merge: 1 new, 1 updated, 0 unchanged" in capsys.readouterr().out
    rates = rates_of(dsn, "std")
    assert sorted(rates) == ["33", "44", "49"]
    assert rates["44"][0] == Decimal("0.07000")
    assert rates["33"][5:7] == (10, 5)

    replace = tmp_path / "replace.csv"
    replace.write_text(HEADER + "44,UK,0.08,30,0.08,6,0.10,0,0\n")
    assert cardd("rate", "import", str(replace), "--tariff", "std", "--mode", "replace") == 0
    assert "replace: 0 new, 1 updated, 0 unchanged, 2 not in the file deleted" in capsys.readouterr().out
    assert list(rates_of(dsn, "std")) == ["44"]
    assert rates_of(dsn, "std")["44"][0] == Decimal("0.08000")


def test_bad_rows_are_reported_with_their_line_numbers_and_nothing_is_imported(cardd, dsn, tmp_path, capsys):
    assert cardd("tariff", "add", "std", "--currency", "USD") == 0
    ok = tmp_path / "ok.csv"
    ok.write_text(HEADER + "44,UK,0.06,30,0.06,6,0.10,0,0\n")
    assert cardd("rate", "import", str(ok), "--tariff", "std") == 0
    lines = [f"{20_000 + i},z,0.01,60,0.01,60,0,0,0" for i in range(5000)]
    lines[1234] = "20001234,z,-0.01,60,0.01,60,0,0,0"  # negative price   -> file line 1236
    lines[2000] = "20002000,z,0.01,0,0.01,60,0,0,0"  # interval_1 0     -> line 2002
    lines[3000] = "2000x,z,0.01,60,0.01,60,0,0,0"  # not digits       -> line 3002
    lines[3500] = "20003500,z,0.012345,60,0.01,60,0,0,0"  # 6 decimal places -> line 3502
    lines[4000] = "20000,z,0.01,60,0.01,60,0,0,0"  # duplicate of line 2
    lines[4500] = "20004500,z,0.01,60"  # short row        -> line 4502
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "\n".join(lines) + "\n")
    capsys.readouterr()
    assert cardd("rate", "import", str(bad), "--tariff", "std", "--mode", "replace") == 2
    err = capsys.readouterr().err
    reported = [line for line in err.splitlines() if line.startswith(f"{bad}:")]
    assert [int(line.split(":")[1]) for line in reported] == [1236, 2002, 3002, 3502, 4002, 4502]
    assert "price_1: must not be negative" in reported[0]
    assert "interval_1: must be >= 1" in reported[1]
    assert "prefix: digits only" in reported[2]
    assert "more than 5 decimal places" in reported[3]
    assert "already on line 2" in reported[4]
    assert "4 columns, expected 9" in reported[5]
    assert "nothing imported: 6 bad row(s)" in err
    # the replace never happened: the old rate is still the only one
    assert list(rates_of(dsn, "std")) == ["44"]


def test_headerless_file_quoted_fields_and_forbidden_column(cardd, dsn, tmp_path):
    assert cardd("tariff", "add", "std", "--currency", "USD") == 0
    path = tmp_path / "r.csv"
    path.write_text(
        '4490,"Premium, ""special""\nline two",1.00,60,1.00,60,0,0,0,yes\n1,North America,0.60,60,0.60,1,,,,\n'
    )
    assert cardd("rate", "import", str(path), "--tariff", "std") == 0
    rates = rates_of(dsn, "std")
    assert rates["4490"][-1] is True
    assert rates["1"] == (Decimal("0.60000"), 60, Decimal("0.60000"), 1, Decimal("0.00000"), 0, 0, False)


def test_import_into_an_unknown_tariff_is_refused(cardd, tmp_path, capsys):
    path = tmp_path / "r.csv"
    path.write_text(HEADER + "44,UK,0.06,30,0.06,6,0.10,0,0\n")
    assert cardd("rate", "import", str(path), "--tariff", "nope") == 2
    assert "unknown tariff 'nope'" in capsys.readouterr().err


def test_progress_bar_only_on_a_terminal():
    tty = io.StringIO()
    bar = admin_ops.Progress(tty, 1000, enabled=True, interval=0)
    bar.update(500, 10)
    assert "50.0%" in tty.getvalue() and "[###############" in tty.getvalue()
    quiet = io.StringIO()
    admin_ops.Progress(quiet, 1000).update(500, 10, force=True)  # StringIO is not a tty
    assert quiet.getvalue() == ""


def test_rate_lookup_shows_the_longest_prefix_and_the_max_duration(cardd, dsn, capsys):
    with Database(dsn) as db:
        demo = create_demo_data(db.pool)
    capsys.readouterr()
    assert cardd("rate", "lookup", "442071234567", "--tariff", demo.tariff, "--balance", "1.00") == 0
    out = capsys.readouterr().out
    assert "prefix        4420" in out
    expected = max_duration(Rate("4420", Decimal("0.03"), 60, Decimal("0.03"), 60), Decimal("1.00"))
    assert expected == 1980
    assert "max duration  1980 s (0:33:00)" in out

    # the card's available credit (10.00000) and its own tariff
    assert cardd("rate", "lookup", "4412345", "--card", demo.card_number) == 0
    out = capsys.readouterr().out
    rate44 = Rate("44", Decimal("0.06"), 30, Decimal("0.06"), 6, connect_fee=Decimal("0.10"))
    assert "prefix        44\n" in out
    assert "credit        10.00000 USD (card 1234567890, available)" in out
    assert f"max duration  {max_duration(rate44, Decimal('10'))} s" in out

    assert cardd("tariff", "add", "euro", "--currency", "EUR") == 0
    assert cardd("rate", "lookup", "4412345", "--tariff", "euro", "--card", demo.card_number) == 2
    assert "card 1234567890 is in USD, tariff euro in EUR" in capsys.readouterr().err
    assert cardd("rate", "lookup", "449012", "--tariff", demo.tariff, "--balance", "5") == 0
    assert "FORBIDDEN" in capsys.readouterr().out
    assert cardd("rate", "lookup", "3312345", "--tariff", demo.tariff) == 1
    assert "no rate" in capsys.readouterr().out


def test_cdr_export_is_csv_with_exact_money_filtered_by_dates_and_card(cardd, dsn, capsys):
    with Database(dsn) as db:
        demo = create_demo_data(db.pool)
        catalog.create_card(db.pool, "555", tariff=demo.tariff, currency="USD", balance="3")
        ledger = Ledger(db.pool)
        done = ledger.grant(
            demo.card_id, a_uuid=uuid.uuid4(), b_uuid=uuid.uuid4(), destination="4412345", cli="15551234567"
        )
        ledger.settle(done.b_uuid, billmsec=31_000, hangup_cause="NORMAL_CLEARING")
        other = ledger.find_card("555")
        missed = ledger.grant(other.id, a_uuid=uuid.uuid4(), b_uuid=uuid.uuid4(), destination="4412345")
        ledger.settle(missed.b_uuid, billmsec=None, hangup_cause="NO_ANSWER")
    today = datetime.now(UTC).date()
    capsys.readouterr()
    assert cardd("cdr", "export", "--from", str(today - timedelta(days=1)), "--to", str(today)) == 0
    captured = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(captured.out)))
    assert len(rows) == 2
    assert "2 CDRs exported" in captured.err
    mine = next(r for r in rows if r["card"] == demo.card_number)
    # the spec's worked example: 31 s to 44 costs 0.13600, printed to 5 places
    assert mine["cost"] == "0.13600"
    assert mine["billed_seconds"] == "31" and mine["hangup_cause"] == "NORMAL_CLEARING"
    assert mine["b_uuid"] == str(done.b_uuid) and mine["cli"] == "15551234567"
    assert next(r for r in rows if r["card"] == "555")["cost"] == "0.00000"

    assert cardd("cdr", "export", "--from", str(today), "--to", str(today), "--card", "555") == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["b_uuid"] for r in rows] == [str(missed.b_uuid)]

    # a window that ended yesterday holds nothing
    assert cardd("cdr", "export", "--from", str(today - timedelta(days=3)), "--to", str(today - timedelta(days=1))) == 0
    assert capsys.readouterr().out.splitlines() == [",".join(admin_ops.CDR_FIELDS)]
    assert cardd("cdr", "export", "--from", str(today), "--to", str(today), "--card", "999") == 2


def test_reservations_lists_open_ones_with_their_expired_flag(cardd, dsn, capsys):
    with Database(dsn) as db:
        demo = create_demo_data(db.pool)
        ledger = Ledger(db.pool)
        up = ledger.grant(demo.card_id, a_uuid=uuid.uuid4(), b_uuid=uuid.uuid4(), destination="4412345")
        stale = ledger.grant(demo.card_id, a_uuid=uuid.uuid4(), b_uuid=uuid.uuid4(), destination="4412345", margin_s=0)
        done = ledger.grant(demo.card_id, a_uuid=uuid.uuid4(), b_uuid=uuid.uuid4(), destination="4412345")
        ledger.settle(done.b_uuid, billmsec=1000, hangup_cause="NORMAL_CLEARING")
        with db.pool.connection() as conn:
            conn.execute(
                "UPDATE reservations SET expires_at = now() - interval '1 minute' WHERE b_uuid = %s", (stale.b_uuid,)
            )
    capsys.readouterr()
    assert cardd("reservations") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split("\t") == [
        "card",
        "b_uuid",
        "amount",
        "currency",
        "seconds",
        "destination",
        "created",
        "expires",
        "switch",
        "dialled",
        "answered",
        "expired",
    ]
    body = {line.split("\t")[1]: line.split("\t") for line in lines[1:]}
    assert set(body) == {str(up.b_uuid), str(stale.b_uuid)}
    assert body[str(up.b_uuid)][0] == demo.card_number
    assert body[str(up.b_uuid)][2] == str(up.reserved)
    assert body[str(up.b_uuid)][-1] == "no" and body[str(stale.b_uuid)][-1] == "yes"
    assert cardd("reservations", "--expired") == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[1] for line in lines[1:]] == [str(stale.b_uuid)]


def test_reimporting_an_unchanged_file_rewrites_nothing(cardd, dsn, tmp_path, capsys):
    assert cardd("tariff", "add", "std", "--currency", "USD") == 0
    path = tmp_path / "r.csv"
    path.write_text(HEADER + "44,UK,0.06,30,0.06,6,0.10,0,0\n49,DE,0.05,60,0.05,60,0,0,0\n")
    assert cardd("rate", "import", str(path), "--tariff", "std") == 0

    def ids() -> dict[str, int]:
        with psycopg.connect(dsn) as conn:
            return dict(conn.execute("SELECT prefix, id FROM rates").fetchall())

    before = ids()
    capsys.readouterr()
    assert cardd("rate", "import", str(path), "--tariff", "std", "--mode", "replace") == 0
    assert "replace: 0 new, 0 updated, 2 unchanged, 0 not in the file deleted" in capsys.readouterr().out
    assert ids() == before


def test_rate_import_from_standard_input(dsn, tmp_path):
    import os
    import subprocess
    import sys

    config = tmp_path / "cardd.yaml"
    config.write_text(f'daemon:\n  dsn: "{dsn}"\n')
    repo = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(repo))
    base = [sys.executable, "-m", "cardd", "-c", str(config)]
    assert (
        subprocess.run(base + ["tariff", "add", "std", "--currency", "USD"], env=env, capture_output=True).returncode
        == 0
    )
    done = subprocess.run(
        base + ["rate", "import", "-", "--tariff", "std"],
        env=env,
        capture_output=True,
        text=True,
        input="\ufeff" + HEADER + "44,UK,0.06,30,0.06,6,0.10,0,0\n",
    )
    assert done.returncode == 0, done.stderr
    assert "1 rates imported from standard input" in done.stdout
    assert list(rates_of(dsn, "std")) == ["44"]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_is_drawn_when_stderr_is_a_terminal(cardd, tmp_path, monkeypatch, capsys):
    assert cardd("tariff", "add", "big", "--currency", "USD") == 0
    path = big_csv(tmp_path / "rates.csv", 30_000)  # > 1 MB: the bar moves during the copy too
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    assert cardd("rate", "import", str(path), "--tariff", "big") == 0
    assert "30000 rates imported" in capsys.readouterr().out  # the count line: stdout, always
    drawn = terminal.getvalue()
    assert "100.0%" in drawn and "[##############################]" in drawn
    assert "\r" + " " * 54 + "\r" in drawn  # the bar is wiped before the count line
