"""Only ASCII 0-9 are digits, wherever cardd reads a number: the caller's CLI (keepcli), CLD values, CDR
fields, ESL framing, operator commands and CSV cells. Python's `\\d`, str.isdigit() and int() take
'١٢٣٤٥٦٧' (Arabic-Indic), '１５５５' (full-width) and, for isdigit(), '²'."""

from __future__ import annotations

import io
import re
from decimal import Decimal as D
from pathlib import Path

import psycopg
import pytest

from cardd.cdr_http import BadCdr, parse_body
from cardd.config import load_settings
from cardd.digits import is_digits, whole_number
from cardd.errors import ProtocolError
from cardd.esl.protocol import FrameParser
from cardd.money import money
from cardd.sim import Callee
from tests.test_bad_input import UK_MOBILE, bridge_args, card_caller, dial_vars

REPO = Path(__file__).resolve().parent.parent
OTHER_DIGITS = ["١٢٣٤٥٦٧", "１５５５", "۱۲۳۴۵۶۷", "²000", "１２３４５６７８９０"]


@pytest.mark.parametrize("text", OTHER_DIGITS + ["", " 12", "1_000", "+1", "12a"])
def test_only_ascii_zero_to_nine_are_digits(text):
    assert not is_digits(text)
    assert is_digits("0123456789")


@pytest.mark.parametrize("text", OTHER_DIGITS + [" 12", "1_000", "1e3", ""])
def test_whole_number_refuses_what_int_would_take(text):
    with pytest.raises(ValueError):
        whole_number(text)
    assert whole_number("-42") == -42


@pytest.mark.parametrize("cli", ["١٢٣٤٥٦٧", "１５５５", "۱۲۳۴۵۶۷", "+１５５５１２３４５６７"])
def test_keepcli_with_a_cli_in_other_digits_calls_out_with_the_card_number(cardd, demo_data, ledger, cli):
    t = cardd.call(card_caller(demo_data, UK_MOBILE + "#", cli=cli, destination="cc.keepcli.noredial"), Callee(talk=7))
    (dial,) = bridge_args(t)
    assert dial_vars(dial)["origination_caller_id_number"] == demo_data.card_number
    (cdr,) = ledger.cdrs_for(demo_data.card_id)
    assert cdr.billed_seconds > 0
    # money: what the card lost is what its CDR cost, and nothing is left reserved
    assert ledger.get_card(demo_data.card_id).balance == demo_data.balance - cdr.cost
    assert ledger.open_reservations(demo_data.card_id) == []


def test_keepcli_with_an_ascii_cli_still_uses_it(cardd, demo_data):
    t = cardd.call(
        card_caller(demo_data, UK_MOBILE + "#", cli="+15551234567", destination="cc.keepcli.noredial"), Callee(talk=5)
    )
    (dial,) = bridge_args(t)
    assert dial_vars(dial)["origination_caller_id_number"] == "+15551234567"


@pytest.mark.parametrize("field, value", [("billmsec", "²000"), ("billmsec", "١٠٠٠"), ("billmsec", "１０００")])
def test_a_cdr_with_non_ascii_digits_is_refused_as_a_bad_cdr(field, value):
    body = f'{{"variables":{{"uuid":"0b9a8e26-2d4e-4d53-9a32-2e5c4f1e2a10","{field}":"{value}"}}}}'.encode()
    with pytest.raises(BadCdr):
        parse_body(body)


def test_cdr_timestamps_in_other_digits_are_ignored_not_taken():
    body = (
        '{"variables":{"uuid":"0b9a8e26-2d4e-4d53-9a32-2e5c4f1e2a10","billmsec":"31000",'
        '"answer_uepoch":"١٧٩٦٦٥٢٥٩٩٠٠٠٠٠٠","end_uepoch":"１７９６６５２５９９０００００"}}'
    ).encode()
    record = parse_body(body)
    assert record.billmsec == 31000
    assert record.answered_at is None and record.ended_at is None


@pytest.mark.parametrize("token", ["topupext٥", "topupext５", "topupext²"])
def test_cld_value_tokens_take_only_ascii_digits(token):
    from cardd.errors import BadValue, ConfigError
    from cardd.options import OPTIONS

    settings = load_settings(None)
    # A whole CLD in other digits is a malformed CLD (the call goes on with the calling_card settings) ...
    with pytest.raises(ConfigError):
        settings.call_options(f"cc.{token}")
    assert settings.call_options("cc.topupext5").unknown_tokens == []
    # ... and the value parser itself takes ASCII digits only.
    topup = next(o for o in OPTIONS if getattr(o, "cld_value_prefix", None) == "topupext")
    with pytest.raises(BadValue):
        topup.type.from_token(token[len("topupext") :])


def test_esl_content_length_in_other_digits_is_a_protocol_error():
    parser = FrameParser()
    with pytest.raises(ProtocolError):
        parser.feed("Content-Type: api/response\nContent-Length: ١٢\n\n".encode())
        parser.next_frame()


@pytest.mark.parametrize("text", ["１０", "١٠.٥", "²"])
def test_money_amounts_take_only_ascii_digits(text):
    with pytest.raises(ValueError):
        money(text)
    assert money("10.5") == D("10.50000")


def test_rate_import_refuses_cells_in_other_digits(database, capsys):
    from cardd.billing import catalog
    from cardd.billing.rate_import import ImportRefused, import_rates

    catalog.create_tariff(database.pool, "std", "USD")
    rows = (
        "prefix,description,price_1,interval_1,price_n,interval_n,connect_fee,free_seconds,grace\n"
        "44,UK,０.０６,30,0.06,6,0,0,0\n"
        "33,FR,0.05,３０,0.05,6,0,0,0\n"
    )
    with pytest.raises(ImportRefused) as refused:
        import_rates(database.pool, "std", io.StringIO(rows))
    assert [line for line, _ in refused.value.errors] == [2, 3]


def run_admin(dsn, *argv) -> int:
    import argparse

    from cardd import admin

    parser = argparse.ArgumentParser(prog="cardd")
    sub = parser.add_subparsers(dest="command")
    admin.add_parsers(sub)
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exc:
        return int(exc.code)
    return args.func(args, load_settings(None).with_daemon(dsn=dsn))


@pytest.mark.parametrize(
    "argv",
    [
        ("card", "add", "١٢٣٤٥٦٧", "--currency", "USD", "--tariff", "std"),
        ("card", "add", "5550009", "--pin", "１２３４", "--currency", "USD", "--tariff", "std"),
        ("smartdial", "add", "１８００５５５００００", "5550001", "447700900123"),
        ("smartdial", "add", "18005550000", "5550001", "４４７７００９００１２３"),
    ],
)
def test_operator_commands_refuse_numbers_in_other_digits(dsn, argv, capsys):
    assert run_admin(dsn, "tariff", "add", "std", "--currency", "USD") == 0
    assert (
        run_admin(
            dsn, "card", "add", "5550001", "--pin", "1234", "--balance", "1", "--currency", "USD", "--tariff", "std"
        )
        == 0
    )
    capsys.readouterr()
    assert run_admin(dsn, *argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("cardd: ") or "usage:" in err
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM accounts").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM smart_dial").fetchone()[0] == 0


def test_no_regex_or_isdigit_in_cardd_accepts_unicode_digits():
    """`\\d` in a str pattern and bare str.isdigit() take Unicode digits: cardd says [0-9] and is_digits()."""
    for path in sorted((REPO / "cardd").rglob("*.py")):
        if path.name == "digits.py" or "sim" in path.parts:
            continue
        text = path.read_text()
        for n, line in enumerate(text.splitlines(), 1):
            assert "\\d" not in line, f"{path.relative_to(REPO)}:{n}: {line.strip()}"
            assert not re.search(r"\.isdigit\(\)", line) or "isascii()" in line, (
                f"{path.relative_to(REPO)}:{n}: {line.strip()}"
            )
