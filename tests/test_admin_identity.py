"""Operator sub-commands of cardd/admin/identity.py against a real database: card
generate/block/unblock/set-pin/transfer/import/hash-pins, cli, voucher, hotdial,
smartdial, blacklist; and the imported plain PIN hashed on first use in a call."""

from __future__ import annotations

import argparse
import csv
import io
from decimal import Decimal

import pytest

from cardd import admin
from cardd.billing import identity
from cardd.billing.ledger import Ledger
from cardd.billing.pins import check_pin
from cardd.config import load_settings
from cardd.db import Database
from cardd.sim import Caller


def run(dsn, *argv):
    parser = argparse.ArgumentParser(prog="cardd")
    sub = parser.add_subparsers(dest="command")
    admin.add_parsers(sub)
    args = parser.parse_args(list(argv))
    return args.func(args, load_settings(None).with_daemon(dsn=dsn))


@pytest.fixture
def shop(dsn):
    assert run(dsn, "tariff", "add", "std", "--currency", "USD") == 0
    assert (
        run(dsn, "card", "add", "5550001", "--pin", "1234", "--balance", "12.5", "--currency", "USD", "--tariff", "std")
        == 0
    )
    return dsn


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_card_generate_prints_numbers_and_pins_once_and_stores_only_hashes(shop, capsys):
    capsys.readouterr()
    assert (
        run(
            shop,
            "card",
            "generate",
            "5",
            "--tariff",
            "std",
            "--balance",
            "3",
            "--currency",
            "USD",
            "--valid-days",
            "30",
            "--max-calls",
            "2",
        )
        == 0
    )
    rows = csv_rows(capsys.readouterr().out)
    assert len(rows) == 5 and len({r["number"] for r in rows}) == 5
    assert all(len(r["number"]) == 10 and len(r["pin"]) == 4 for r in rows)
    with Database(shop) as db:
        ledger = Ledger(db.pool)
        for r in rows:
            card = ledger.find_card(r["number"])
            assert card.status == "new" and card.balance == Decimal("3.00000") and card.max_concurrent_calls == 2
            assert card.pin_hash.startswith("hmac-sha256$") and check_pin(r["pin"], card.pin_hash)


def test_card_generate_refuses_unknown_tariff_other_currency_and_guessable_numbers(shop, capsys):
    assert run(shop, "card", "generate", "2", "--tariff", "nope", "--currency", "USD") == 2
    assert run(shop, "card", "generate", "2", "--tariff", "std", "--currency", "EUR") == 2
    assert run(shop, "card", "generate", "2", "--tariff", "std", "--currency", "USD", "--length", "4") == 2
    err = capsys.readouterr().err
    assert "unknown tariff" in err and "EUR" in err and "guess" in err
    with pytest.raises(SystemExit):
        run(shop, "card", "generate", "2", "--tariff", "std", "--currency", "USD", "--balance", "abc")


def test_card_block_unblock_and_set_pin(shop, capsys):
    assert run(shop, "card", "block", "5550001") == 0
    with Database(shop) as db:
        assert Ledger(db.pool).find_card("5550001").status == "blocked"
    assert run(shop, "card", "unblock", "5550001") == 0
    assert run(shop, "card", "set-pin", "5550001", "--pin", "9876") == 0
    with Database(shop) as db:
        card = Ledger(db.pool).find_card("5550001")
    assert card.status == "active" and check_pin("9876", card.pin_hash)
    assert run(shop, "card", "block", "999") == 2
    assert run(shop, "card", "set-pin", "5550001", "--pin", "12ab") == 2
    assert "no card '999'" in capsys.readouterr().err


def test_card_transfer_moves_balance_and_refuses_overdrafts(shop, capsys):
    assert run(shop, "card", "add", "5550002", "--currency", "USD", "--tariff", "std") == 0
    assert run(shop, "card", "transfer", "5550001", "5550002", "2.5") == 0
    assert "card 5550002 now 2.50000 USD" in capsys.readouterr().out
    assert run(shop, "card", "transfer", "5550001", "5550002", "100") == 2
    assert run(shop, "card", "transfer", "5550001", "5550003", "1") == 2


def test_voucher_generate_prints_csv_of_random_numbers_of_topup_card_length(shop, capsys):
    capsys.readouterr()
    assert run(shop, "voucher", "generate", "3", "--amount", "5", "--currency", "USD", "--batch", "may") == 0
    rows = csv_rows(capsys.readouterr().out)
    assert len(rows) == 3 and all(len(r["number"]) == 10 and r["amount"] == "5.00000" for r in rows)
    assert run(shop, "voucher", "list", "--batch", "may") == 0
    assert capsys.readouterr().out.count("unused") == 3
    assert run(shop, "voucher", "void", rows[0]["number"]) == 0
    assert run(shop, "voucher", "void", rows[0]["number"]) == 2
    for bad in ("0", "-1", "ten"):
        with pytest.raises(SystemExit):
            run(shop, "voucher", "generate", "3", "--amount", bad, "--currency", "USD")


def test_cli_map_unmap_and_list(shop, capsys):
    assert run(shop, "cli", "map", "15551230000", "5550001") == 0
    assert run(shop, "card", "add", "5550002", "--currency", "USD", "--tariff", "std") == 0
    assert run(shop, "cli", "map", "15551230000", "5550002") == 2
    assert run(shop, "cli", "map", "anonymous", "5550002") == 2
    capsys.readouterr()
    assert run(shop, "cli", "list") == 0
    assert "15551230000\t5550001" in capsys.readouterr().out
    assert run(shop, "cli", "map", "15551230000", "5550002", "--replace") == 0
    assert run(shop, "cli", "unmap", "15551230000") == 0
    assert run(shop, "cli", "unmap", "15551230000") == 2


def test_hotdial_and_smartdial_commands(shop, capsys):
    assert run(shop, "hotdial", "set", "5550001", "1", "447700900123") == 0
    capsys.readouterr()
    assert run(shop, "hotdial", "list", "5550001") == 0
    assert "1\t447700900123" in capsys.readouterr().out
    assert run(shop, "hotdial", "remove", "5550001", "1") == 0
    assert run(shop, "hotdial", "remove", "5550001", "1") == 2
    assert run(shop, "smartdial", "add", "18005550000", "5550001", "447700900123", "--exclusive") == 0
    assert run(shop, "card", "add", "5550002", "--currency", "USD", "--tariff", "std") == 0
    assert run(shop, "smartdial", "add", "18005550000", "5550002", "441") == 2
    capsys.readouterr()
    assert run(shop, "smartdial", "list") == 0
    assert "18005550000\t5550001\t447700900123\texclusive" in capsys.readouterr().out
    assert run(shop, "smartdial", "remove", "18005550000", "5550001") == 0


def test_blacklist_list_add_and_remove(shop, capsys):
    with Database(shop) as db:
        identity.record_wrong_card(db.pool, "15550000001", 1)
        identity.record_wrong_card(db.pool, "15550000002", 3)
    capsys.readouterr()
    assert run(shop, "blacklist", "list") == 0
    out = capsys.readouterr().out
    assert "15550000001\tyes" in out and "15550000002" not in out
    assert run(shop, "blacklist", "list", "--all") == 0
    assert "15550000002\tno\t1" in capsys.readouterr().out
    assert run(shop, "blacklist", "remove", "15550000001") == 0
    assert run(shop, "blacklist", "remove", "15550000001") == 2
    assert run(shop, "blacklist", "add", "15550000003") == 0
    with Database(shop) as db:
        assert identity.is_blacklisted(db.pool, "15550000003")
        assert not identity.is_blacklisted(db.pool, "15550000001")


def test_card_import_hashes_plain_pins_and_imports_all_or_nothing(shop, tmp_path, capsys):
    good = tmp_path / "cards.csv"
    good.write_text("number,pin,balance\n7770001,1111,5\n7770002,,0\n")
    assert run(shop, "card", "import", str(good), "--tariff", "std", "--currency", "USD") == 0
    bad = tmp_path / "bad.csv"
    bad.write_text("number,pin,balance\n7770003,2222,1\n5550001,3333,1\n")
    assert run(shop, "card", "import", str(bad), "--tariff", "std", "--currency", "USD") == 2
    assert "nothing imported" in capsys.readouterr().err
    with Database(shop) as db:
        ledger = Ledger(db.pool)
        card = ledger.find_card("7770001")
        assert check_pin("1111", card.pin_hash) and card.balance == Decimal("5.00000")
        assert ledger.find_card("7770002").pin_hash is None
        assert ledger.find_card("7770003") is None


def test_hash_pins_converts_plain_pins_in_place(shop, capsys):
    with Database(shop) as db, db.pool.connection() as conn:
        conn.execute("UPDATE accounts SET pin_hash = 'plain$1234' WHERE username = '5550001'")
    assert run(shop, "card", "hash-pins") == 0
    assert "1 plain PINs hashed" in capsys.readouterr().out
    with Database(shop) as db:
        stored = Ledger(db.pool).find_card("5550001").pin_hash
    assert stored.startswith("hmac-sha256$") and check_pin("1234", stored)


def test_a_plain_pin_opens_the_card_once_and_is_hashed_right_away(cardd, database, demo_data, ledger):
    with database.pool.connection() as conn:
        conn.execute("UPDATE accounts SET pin_hash = 'plain$4321' WHERE id = %s", (demo_data.card_id,))
    t = cardd.call(Caller(digits=[demo_data.card_number + "#", "4321#"], type_after=6))
    assert "you_have" in cardd.heard(t)
    stored = ledger.get_card(demo_data.card_id).pin_hash
    assert stored.startswith("hmac-sha256$") and check_pin("4321", stored)
    # a wrong PIN against a plain one is still wrong
    with database.pool.connection() as conn:
        conn.execute("UPDATE accounts SET pin_hash = 'plain$4321' WHERE id = %s", (demo_data.card_id,))
    t = cardd.call(Caller(digits=[demo_data.card_number + "#", "4322#"], type_after=6))
    assert "invalid_card_or_pin" in cardd.heard(t)
