"""Operator sub-commands (cardd db/tariff/rate/card) against a real database."""

import argparse
import logging
import uuid
from decimal import Decimal
from types import SimpleNamespace

import pytest

from cardd import admin, cli
from cardd.billing import pins
from cardd.billing.ledger import Ledger
from cardd.db import Database


def run(dsn, *argv, capsys=None):
    parser = argparse.ArgumentParser(prog="cardd")
    admin.add_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    settings = SimpleNamespace(
        daemon=SimpleNamespace(dsn=dsn, data_dir="unused", pin_key_file=pins.installed_key().path)
    )
    return args.func(args, settings)


def setup_demo(dsn):
    assert run(dsn, "tariff", "add", "std", "--currency", "USD") == 0
    assert (
        run(
            dsn,
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
        run(
            dsn,
            "rate",
            "add",
            "--tariff",
            "std",
            "4490",
            "--price-1",
            "1",
            "--interval-1",
            "60",
            "--price-n",
            "1",
            "--interval-n",
            "60",
            "--forbidden",
        )
        == 0
    )
    assert (
        run(dsn, "card", "add", "5550001", "--pin", "1234", "--balance", "12.5", "--currency", "USD", "--tariff", "std")
        == 0
    )


def test_operator_creates_tariff_rates_and_card_then_sees_it(dsn, capsys):
    assert run(dsn, "db", "migrate") == 0
    setup_demo(dsn)
    capsys.readouterr()
    assert run(dsn, "card", "show", "5550001") == 0
    out = capsys.readouterr().out
    assert "balance    12.50000 USD" in out
    assert "available  12.50000 USD" in out
    assert "open reservations: 0" in out
    assert run(dsn, "card", "list") == 0
    assert "5550001\tactive\t12.50000\t12.50000\tUSD\tstd\t0" in capsys.readouterr().out
    assert run(dsn, "card", "adjust", "5550001", "-2.5") == 0
    assert "10.00000 USD" in capsys.readouterr().out
    assert run(dsn, "rate", "list", "--tariff", "std") == 0
    assert "4490" in capsys.readouterr().out


def test_card_show_lists_open_reservations_and_cdrs(dsn, capsys):
    setup_demo(dsn)
    with Database(dsn) as db:
        ledger = Ledger(db.pool)
        card = ledger.find_card("5550001")
        done = ledger.grant(card.id, a_uuid=uuid.uuid4(), b_uuid=uuid.uuid4(), destination="4412345")
        ledger.settle(done.b_uuid, billmsec=31_000, hangup_cause="NORMAL_CLEARING")
        up = ledger.grant(card.id, a_uuid=uuid.uuid4(), b_uuid=uuid.uuid4(), destination="4499999")
    capsys.readouterr()
    assert run(dsn, "card", "show", "5550001") == 0
    out = capsys.readouterr().out
    # 12.5 - 0.136 (the spec's 31 s call); a second call holds its reservation
    assert "balance    12.36400 USD" in out
    assert f"available  {Decimal('12.36400') - up.reserved} USD" in out
    assert "open reservations: 1" in out and str(up.b_uuid) in out
    assert "last CDRs: 1" in out and "0.13600  NORMAL_CLEARING" in out


@pytest.mark.parametrize(
    "argv,message",
    [
        (("card", "add", "5550001", "--currency", "USD", "--tariff", "std"), "card number already exists"),
        (("card", "add", "5550002", "--currency", "USD", "--tariff", "nope"), "unknown tariff 'nope'"),
        (("card", "add", "5550002", "--currency", "EUR", "--tariff", "std"), "is in USD"),
        (
            (
                "rate",
                "add",
                "--tariff",
                "nope",
                "1",
                "--price-1",
                "1",
                "--interval-1",
                "1",
                "--price-n",
                "1",
                "--interval-n",
                "1",
            ),
            "unknown tariff",
        ),
        (
            (
                "rate",
                "add",
                "--tariff",
                "std",
                "44",
                "--price-1",
                "1",
                "--interval-1",
                "1",
                "--price-n",
                "1",
                "--interval-n",
                "1",
            ),
            "already has a rate",
        ),
        (("tariff", "add", "std", "--currency", "USD"), "already exists"),
        (("card", "show", "999"), "no card '999'"),
    ],
)
def test_refused_operator_writes_exit_2_with_a_message(dsn, capsys, argv, message):
    setup_demo(dsn)
    capsys.readouterr()
    assert run(dsn, *argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ("card", "add", "1", "--balance", "12,50", "--currency", "USD", "--tariff", "std"),
        ("card", "add", "1", "--balance", "0.000001", "--currency", "USD", "--tariff", "std"),
        ("card", "add", "1", "--currency", "dollars", "--tariff", "std"),
        ("card", "add", "12ab", "--currency", "USD", "--tariff", "std"),
        (
            "rate",
            "add",
            "--tariff",
            "std",
            "44",
            "--price-1",
            "-1",
            "--interval-1",
            "1",
            "--price-n",
            "1",
            "--interval-n",
            "1",
        ),
        (
            "rate",
            "add",
            "--tariff",
            "std",
            "44",
            "--price-1",
            "1",
            "--interval-1",
            "0",
            "--price-n",
            "1",
            "--interval-n",
            "1",
        ),
    ],
)
def test_bad_amounts_and_values_are_refused_by_the_parser_with_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        run("unused", *argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


@pytest.fixture
def restore_logging():
    # cli.main() configures the root logger (basicConfig force=True) on pytest's captured
    # stderr, which is closed after this test; put the root logger back as it was.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_cli_main_mounts_the_admin_commands(dsn, tmp_path, capsys, restore_logging):
    config = tmp_path / "cardd.yaml"
    config.write_text(f'daemon:\n  dsn: "{dsn}"\n')
    assert cli.main(["-c", str(config), "tariff", "add", "x", "--currency", "EUR"]) == 0
    assert cli.main(["-c", str(config), "card", "add", "77", "--currency", "EUR", "--tariff", "zz"]) == 2
    assert "unknown tariff 'zz'" in capsys.readouterr().err
