"""Customers, service plans, card show / history / list filters, card import, and the guards
against negative balances and past expiry dates, through the real entry point (cardd.cli.main)."""

from __future__ import annotations

import csv
import io
import logging
import os
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest

from cardd import cli
from cardd.billing.ledger import Ledger
from cardd.billing.pins import check_pin
from cardd.config import load_settings
from cardd.db import Database
from cardd.sim import Callee, Caller


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def run(dsn, tmp_path, restore_logging):
    config = tmp_path / "cardd.yaml"
    # the default data_dir, absolute: where the test session's PIN key is
    data_dir = os.path.abspath(load_settings(None).daemon.data_dir)
    config.write_text(f'daemon:\n  dsn: "{dsn}"\n  data_dir: "{data_dir}"\n')

    def cardd(*argv: str) -> int:
        return cli.main(["-c", str(config), *argv])

    return cardd


@pytest.fixture
def shop(run, dsn):
    assert run("tariff", "add", "std", "--currency", "USD") == 0
    assert (
        run(
            "rate",
            "add",
            "--tariff",
            "std",
            "44",
            "--price-1",
            "0.06",
            "--interval-1",
            "30",
            "--price-n",
            "0.06",
            "--interval-n",
            "6",
            "--connect-fee",
            "0.10",
        )
        == 0
    )
    assert (
        run("card", "add", "5550001", "--pin", "1234", "--balance", "12.5", "--currency", "USD", "--tariff", "std") == 0
    )
    return dsn


def audit_actions(dsn: str) -> list[tuple[str, str]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT who, action FROM operator_audit ORDER BY id").fetchall()


def test_card_generate_for_a_customer_works_once_the_customer_exists(run, shop, capsys):
    assert run("card", "generate", "2", "--tariff", "std", "--currency", "USD", "--customer", "Acme Ltd") == 2
    assert capsys.readouterr().err == "cardd: unknown customer 'Acme Ltd'\n"
    assert run("customer", "add", "Acme Ltd", "--by", "alice") == 0
    assert run("customer", "add", "Acme Ltd") == 2
    assert "customer 'Acme Ltd' already exists" in capsys.readouterr().err
    assert (
        run("card", "generate", "2", "--tariff", "std", "--currency", "USD", "--customer", "Acme Ltd", "--balance", "5")
        == 0
    )
    numbers = [r["number"] for r in csv.DictReader(io.StringIO(capsys.readouterr().out))]
    assert run("customer", "list") == 0
    assert "Acme Ltd\t2\t10.00000 USD\t" in capsys.readouterr().out
    assert run("customer", "show", "Acme Ltd") == 0
    shown = capsys.readouterr().out
    assert all(n in shown for n in numbers)
    assert run("card", "list", "--customer", "Acme Ltd") == 0
    listed = capsys.readouterr().out.splitlines()[1:]
    assert sorted(line.split("\t")[0] for line in listed) == sorted(numbers)
    assert all(line.split("\t")[7] == "Acme Ltd" for line in listed)
    assert ("alice", "customer add") in audit_actions(shop)


def test_customer_rename_delete_only_when_unused_and_assign_unassign(run, shop, capsys):
    assert run("customer", "add", "Acme") == 0
    assert run("customer", "assign", "Acme", "5550001") == 0
    assert run("customer", "delete", "Acme") == 2
    assert "customer 'Acme' still has 1 card(s); unassign them first" in capsys.readouterr().err
    assert run("customer", "rename", "Acme", "Acme Ltd") == 0
    assert run("card", "show", "5550001") == 0
    assert "customer   Acme Ltd" in capsys.readouterr().out
    assert run("customer", "assign", "Acme Ltd", "5550001", "999") == 2
    assert "no card 999" in capsys.readouterr().err
    assert run("customer", "unassign", "5550001") == 0
    assert run("customer", "delete", "Acme Ltd") == 0
    assert run("customer", "show", "Acme Ltd") == 2
    assert run("customer", "rename", "nobody", "x") == 2
    assert "unknown customer 'nobody'" in capsys.readouterr().err


def test_plan_add_assign_and_its_free_minutes_are_used_by_a_call(run, shop, capsys):
    assert run("plan", "add", "gold", "--minutes", "44=2", "--minutes", "=1", "--by", "alice") == 0
    assert run("plan", "add", "gold") == 2
    assert run("plan", "assign", "gold", "5550001") == 0
    with Database(shop) as db:
        ledger = Ledger(db.pool)
        card = ledger.find_card("5550001")
        assert card.service_plan_id is not None and not card.plan_suspended
        grant = ledger.grant(
            card.id, a_uuid=uuid.uuid4(), b_uuid=uuid.uuid4(), destination="4412345", max_call_duration=600
        )
        assert grant.plan_seconds == 120
        ledger.settle(grant.b_uuid, billmsec=150_000, hangup_cause="NORMAL_CLEARING")
    capsys.readouterr()
    assert run("card", "show", "5550001") == 0
    out = capsys.readouterr().out
    assert "plan       gold" in out and "prefix 44: 2 min 0 s used of 2 min" in out
    assert run("plan", "list") == 0
    assert "gold\t-\t1\t(any)=1, 44=2" in capsys.readouterr().out
    assert run("plan", "set", "gold", "--suspend", "--minutes", "44=10", "--remove-minutes", "") == 0
    assert run("plan", "show", "gold") == 0
    out = capsys.readouterr().out
    assert "suspended" in out and "minutes    44=10" in out and "5550001" in out
    assert run("plan", "delete", "gold") == 2
    assert "used by 1 card(s)" in capsys.readouterr().err
    assert run("plan", "unassign", "5550001") == 0
    assert run("card", "show", "5550001") == 0
    assert "plan       -" in capsys.readouterr().out
    assert run("plan", "delete", "gold") == 0
    assert run("plan", "assign", "gold", "5550001") == 2
    assert "unknown service plan 'gold'" in capsys.readouterr().err
    assert [a for w, a in audit_actions(shop) if w == "alice"] == ["plan add"]
    with pytest.raises(SystemExit):
        run("plan", "add", "bad", "--minutes", "44")


def test_card_show_names_tariff_customer_plan_and_pin_state(run, shop, capsys):
    assert run("card", "add", "5550002", "--currency", "USD", "--tariff", "std") == 0
    with psycopg.connect(shop) as conn:
        conn.execute("UPDATE accounts SET pin_hash = 'plain$4321' WHERE username = '5550002'")
    assert run("card", "add", "5550003", "--currency", "USD", "--tariff", "std") == 0
    capsys.readouterr()
    states = {}
    for number in ("5550001", "5550002", "5550003"):
        assert run("card", "show", number) == 0
        out = capsys.readouterr().out
        assert "tariff     std" in out and "customer   -" in out and "plan       -" in out
        states[number] = next(line for line in out.splitlines() if line.startswith("PIN")).split()[1]
    assert states == {"5550001": "hashed", "5550002": "plain-imported", "5550003": "unset"}


def test_card_history_lists_every_ledger_row_with_the_running_balance(run, shop, capsys):
    assert run("card", "add", "5550002", "--currency", "USD", "--tariff", "std") == 0
    assert run("card", "adjust", "5550001", "2.5", "--reference", "goodwill") == 0
    assert run("card", "transfer", "5550001", "5550002", "4") == 0
    with Database(shop) as db:
        ledger = Ledger(db.pool)
        card = ledger.find_card("5550001")
        grant = ledger.grant(card.id, a_uuid=uuid.uuid4(), b_uuid=uuid.uuid4(), destination="4412345")
        ledger.settle(grant.b_uuid, billmsec=31_000, hangup_cause="NORMAL_CLEARING")
    capsys.readouterr()
    assert run("card", "history", "5550001") == 0
    captured = capsys.readouterr()
    rows = [line.split("\t") for line in captured.out.splitlines()]
    assert rows[0] == ["time (UTC)", "kind", "amount", "balance", "reference", "call"]
    assert [(r[1], r[2], r[3]) for r in rows[1:]] == [
        ("initial", "12.50000", "12.50000"),
        ("adjustment", "2.50000", "15.00000"),
        ("transfer_out", "-4.00000", "11.00000"),
        ("call", "-0.13600", "10.86400"),
    ]
    assert rows[-1][4:] == ["4412345", str(grant.b_uuid)]
    assert "card 5550001: 4 ledger row(s), balance 10.86400 USD" in captured.err
    assert run("card", "history", "5550001", "--last", "1") == 0
    assert [line.split("\t")[1] for line in capsys.readouterr().out.splitlines()[1:]] == ["call"]
    assert run("card", "history", "999") == 2


def test_card_list_filters_by_status_customer_tariff_and_balance(run, shop, capsys):
    assert run("tariff", "add", "eur", "--currency", "EUR") == 0
    assert run("card", "add", "5550002", "--currency", "USD", "--tariff", "std", "--balance", "1") == 0
    assert run("card", "add", "5550003", "--currency", "EUR", "--tariff", "eur", "--balance", "0.5") == 0
    assert run("card", "block", "5550002") == 0
    assert run("customer", "add", "Acme") == 0
    assert run("customer", "assign", "Acme", "5550001", "5550003") == 0

    def listed(*filters: str) -> list[str]:
        capsys.readouterr()
        assert run("card", "list", *filters) == 0
        return [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()[1:]]

    assert listed() == ["5550001", "5550002", "5550003"]
    assert listed("--status", "blocked") == ["5550002"]
    assert listed("--customer", "Acme") == ["5550001", "5550003"]
    assert listed("--tariff", "eur") == ["5550003"]
    assert listed("--balance-below", "2") == ["5550002", "5550003"]
    assert listed("--balance-below", "2", "--customer", "Acme", "--status", "active") == ["5550003"]
    assert run("card", "list", "--customer", "nobody") == 2
    assert run("card", "list", "--tariff", "nope") == 2
    assert "unknown tariff 'nope'" in capsys.readouterr().err


def test_card_import_without_a_header_is_refused_and_loses_no_card(run, shop, tmp_path, capsys):
    path = tmp_path / "cards.csv"
    path.write_text("7770001,1111,5\n7770002,2222,5\n")
    capsys.readouterr()
    assert run("card", "import", str(path), "--tariff", "std", "--currency", "USD") == 2
    err = capsys.readouterr().err
    assert f"{path}:1: no header row" in err and "'7770001,1111,5'" in err
    assert err.rstrip().splitlines()[-1].startswith("cardd: nothing imported")
    with Database(shop) as db:
        assert Ledger(db.pool).find_card("7770002") is None


def test_card_import_reports_every_bad_row_with_its_line_and_imports_nothing(run, shop, tmp_path, capsys):
    path = tmp_path / "cards.csv"
    path.write_text(
        "number,pin,balance\n"
        "7770001,1111,5\n"  # 2 fine
        "77x0002,2222,5\n"  # 3 not digits
        "7770003,22a2,5\n"  # 4 bad PIN
        "7770004,,-5\n"  # 5 negative balance
        "7770005,,0.123456\n"  # 6 six decimal places
        "7770001,3333,1\n"  # 7 duplicate of line 2
        "5550001,4444,1\n"  # 8 already a card
        "7770009,4444\n"
    )  # 9 short row
    capsys.readouterr()
    assert run("card", "import", str(path), "--tariff", "std", "--currency", "USD") == 2
    err = capsys.readouterr().err.splitlines()
    located = [line.split(": ", 1)[0] for line in err[:-1]]
    assert located == [f"{path}:{n}" for n in (3, 4, 5, 6, 7, 8, 9)]
    assert f"{path}:7: card number 7770001 already on line 2" in err
    assert f"{path}:8: card number 5550001 already exists" in err
    assert any("negative" in line and "--allow-negative" in line for line in err)
    assert not any("Key (" in line or "duplicate key" in line for line in err)
    assert err[-1] == f"cardd: nothing imported: 7 bad row(s) in {path} (8 rows read)"
    with Database(shop) as db:
        assert Ledger(db.pool).find_card("7770001") is None


def test_card_import_with_a_header_in_any_order_hashes_pins_and_honours_the_flags(run, shop, tmp_path, capsys):
    past = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    path = tmp_path / "cards.csv"
    path.write_text(f"balance,number,pin,expires\n5,7770001,1111,\n-1,7770002,,{past}\n")
    assert run("card", "import", str(path), "--tariff", "std", "--currency", "USD") == 2
    err = capsys.readouterr().err
    assert f"{path}:3: balance: -1.00000 is negative" in err
    assert run("card", "import", str(path), "--tariff", "std", "--currency", "USD", "--allow-negative") == 2
    assert f"{path}:3: expires: {past} is in the past" in capsys.readouterr().err
    assert (
        run(
            "card",
            "import",
            str(path),
            "--tariff",
            "std",
            "--currency",
            "USD",
            "--allow-negative",
            "--allow-past-expiry",
        )
        == 0
    )
    assert "2 cards imported" in capsys.readouterr().out
    with Database(shop) as db:
        ledger = Ledger(db.pool)
        first, second = ledger.find_card("7770001"), ledger.find_card("7770002")
    assert check_pin("1111", first.pin_hash) and first.balance == Decimal("5.00000")
    assert second.balance == Decimal("-1.00000") and second.expires_at is not None and second.pin_hash is None


def test_negative_balances_past_expiry_and_overdrawing_adjustments_need_a_flag(run, shop, capsys):
    past = (datetime.now(UTC) - timedelta(days=2)).date().isoformat()
    capsys.readouterr()
    assert run("card", "add", "5550002", "--currency", "USD", "--tariff", "std", "--balance", "-3") == 2
    assert "--allow-negative" in capsys.readouterr().err
    assert run("card", "add", "5550002", "--currency", "USD", "--tariff", "std", "--expires", past) == 2
    assert "--allow-past-expiry" in capsys.readouterr().err
    assert run("card", "generate", "1", "--tariff", "std", "--currency", "USD", "--balance", "-1") == 2
    assert run("card", "generate", "1", "--tariff", "std", "--currency", "USD", "--expires", past) == 2
    assert run("voucher", "generate", "1", "--amount", "5", "--currency", "USD", "--expires", past) == 2
    with Database(shop) as db:
        assert Ledger(db.pool).find_card("5550002") is None
    assert (
        run(
            "card",
            "add",
            "5550002",
            "--currency",
            "USD",
            "--tariff",
            "std",
            "--balance",
            "-3",
            "--allow-negative",
            "--expires",
            past,
            "--allow-past-expiry",
        )
        == 0
    )

    capsys.readouterr()
    assert run("card", "adjust", "5550001", "-20") == 2
    assert capsys.readouterr().err == (
        "cardd: card 5550001: -20.00000 USD would take the balance from 12.50000 USD"
        " to -7.50000 USD; give --allow-negative if that is meant\n"
    )
    assert run("card", "adjust", "5550001", "-12.5") == 0
    assert run("card", "adjust", "5550001", "-1", "--allow-negative", "--by", "erin") == 0
    with Database(shop) as db:
        assert Ledger(db.pool).find_card("5550001").balance == Decimal("-1.00000")
    assert ("erin", "card adjust") in audit_actions(shop)


def test_an_adjustment_may_not_take_credit_held_by_an_open_call(run, shop, capsys):
    with Database(shop) as db:
        ledger = Ledger(db.pool)
        card = ledger.find_card("5550001")
        grant = ledger.grant(
            card.id, a_uuid=uuid.uuid4(), b_uuid=uuid.uuid4(), destination="4412345", max_call_duration=600
        )
    capsys.readouterr()
    assert run("card", "adjust", "5550001", "-12") == 2
    assert f"({grant.reserved:.5f} USD held by open calls)" in capsys.readouterr().err


def test_cdr_export_of_an_unknown_card_writes_nothing_on_stdout(run, shop, capsys):
    today = datetime.now(UTC).date().isoformat()
    capsys.readouterr()
    assert run("cdr", "export", "--from", today, "--to", today, "--card", "999") == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "cardd: no card '999'\n"


def test_a_card_on_a_plan_generated_for_a_customer_places_a_call(run, shop, cardd, capsys):
    """The operator's setup (customer, plan, generated card) is what a real call then uses."""
    assert run("customer", "add", "Acme Ltd") == 0
    assert run("plan", "add", "free44", "--minutes", "44=5") == 0
    capsys.readouterr()
    assert (
        run(
            "card",
            "generate",
            "1",
            "--tariff",
            "std",
            "--currency",
            "USD",
            "--customer",
            "Acme Ltd",
            "--plan",
            "free44",
            "--balance",
            "1",
        )
        == 0
    )
    [row] = csv.DictReader(io.StringIO(capsys.readouterr().out))
    t = cardd.call(Caller(digits=[row["number"] + "#", row["pin"] + "#", "4412345#"], type_after=6), Callee(talk=60))
    assert len(t.bridges) == 1
    capsys.readouterr()
    assert run("card", "show", row["number"]) == 0
    out = capsys.readouterr().out
    with psycopg.connect(shop) as conn:
        (billed,) = conn.execute("SELECT billed_seconds FROM cdrs").fetchone()
    assert billed >= 60
    assert "customer   Acme Ltd" in out and f"prefix 44: {billed // 60} min {billed % 60} s used of 5 min" in out
    assert run("card", "history", row["number"]) == 0
    kinds = [line.split("\t")[1] for line in capsys.readouterr().out.splitlines()[1:]]
    assert kinds == ["initial"]  # the 60 s were the plan's free minutes: no debit


def test_card_import_from_standard_input_and_a_header_without_number(run, shop, dsn, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    config = tmp_path / "stdin.yaml"
    data_dir = os.path.abspath(load_settings(None).daemon.data_dir)
    config.write_text(f'daemon:\n  dsn: "{dsn}"\n  data_dir: "{data_dir}"\n')
    repo = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(repo))
    base = [
        sys.executable,
        "-m",
        "cardd",
        "-c",
        str(config),
        "card",
        "import",
        "-",
        "--tariff",
        "std",
        "--currency",
        "USD",
    ]
    done = subprocess.run(base, env=env, capture_output=True, text=True, input="card,pin\n7770001,1111\n")
    assert done.returncode == 2
    assert "standard input:1: the header has no 'number' column" in done.stderr
    done = subprocess.run(
        base, env=env, capture_output=True, text=True, input="\ufeffnumber,pin,balance\n7770001,1111,2.5\n"
    )
    assert done.returncode == 0, done.stderr
    assert "1 cards imported from standard input" in done.stdout
    with Database(dsn) as db:
        assert Ledger(db.pool).find_card("7770001").balance == Decimal("2.50000")


def test_every_operator_change_of_money_or_card_terms_is_audited_without_the_pin(run, shop, tmp_path, capsys):
    path = tmp_path / "cards.csv"
    path.write_text("number,pin,balance\n7770001,9137,1\n7770002,,2\n")
    assert run("card", "add", "5550002", "--pin", "8642", "--currency", "USD", "--tariff", "std", "--by", "ann") == 0
    assert run("card", "generate", "2", "--tariff", "std", "--currency", "USD", "--balance", "3", "--by", "ann") == 0
    assert run("card", "import", str(path), "--tariff", "std", "--currency", "USD", "--by", "ann") == 0
    assert run("card", "transfer", "5550001", "5550002", "2", "--by", "ann") == 0
    assert run("card", "block", "5550002", "--by", "ann") == 0
    assert run("card", "unblock", "5550002", "--by", "ann") == 0
    assert run("card", "set-pin", "5550002", "--pin", "7531", "--by", "ann") == 0
    assert run("card", "set-pin", "999", "--pin", "7531", "--by", "ann") == 2
    capsys.readouterr()
    assert run("audit") == 0
    lines = [line.split("\t") for line in capsys.readouterr().out.splitlines()[1:]]
    lines = [line for line in lines if line[1] == "ann"]  # the shop fixture's own card add came first
    assert [(who, action) for _, who, action, *_ in lines] == [
        ("ann", "card add"),
        ("ann", "card generate"),
        ("ann", "card import"),
        ("ann", "card transfer"),
        ("ann", "card transfer"),
        ("ann", "card block"),
        ("ann", "card unblock"),
        ("ann", "card set-pin"),
    ]
    transfers = [(card, detail) for _, _, action, card, detail, _ in lines if action == "card transfer"]
    assert transfers == [("5550001", "2.00000 USD to card 5550002"), ("5550002", "2.00000 USD from card 5550001")]
    assert "2 cards, 3.00000 USD each" in lines[1][4]
    assert "2 cards 7770001..7770002, balances 3.00000 USD" in lines[2][4]
    text = "\n".join("\t".join(line) for line in lines)
    assert "8642" not in text and "7531" not in text and "9137" not in text
    with psycopg.connect(shop) as conn:
        assert conn.execute("SELECT count(*) FROM operator_audit WHERE args::text LIKE '%7531%'").fetchone()[0] == 0
