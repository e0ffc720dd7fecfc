"""Sub-applications reached by menu extensions at the destination prompt, driven
through cardd (in-process) and the FreeSWITCH simulator: top-up, password change,
CLI registration, hot dial; and the top-up-only instance (CLD `topup`).

Demo card (tests/dbfixtures.py): 1234567890, PIN 4321, 10.00 USD."""

from __future__ import annotations

from datetime import UTC
from decimal import Decimal

from cardd import speech
from cardd.billing import catalog, identity
from cardd.billing.pins import check_pin
from cardd.sim import Callee, Caller
from tests.test_vouchers import add_voucher

CLI = "15555550100"
UK_MOBILE = "447700900123"


def caller(demo, *entries, cld="cc", cli=CLI, **kw) -> Caller:
    """Card number and PIN, then the given entries (typed after each prompt)."""
    return Caller(
        cli=cli, destination=cld, digits=[demo.card_number + "#", demo.pin + "#", *entries], type_after=6, **kw
    )


def after(heard: list[str], prompt: str) -> list[str]:
    """What was heard after the first `prompt`."""
    return heard[heard.index(prompt) + 1 :]


def balance_words(amount: str) -> list[str]:
    return speech.balance_ids(Decimal(amount), "USD", "en")


# -- top-up -------------------------------------------------------------------------------


def test_topup_extension_redeems_a_voucher_and_announces_the_new_balance(cardd, database, demo_data, ledger):
    add_voucher(database.pool, "9000000001", "5")
    t = cardd.call(caller(demo_data, "5#", "9000000001#", cld="cc.topupext5"))
    heard = cardd.heard(t)
    assert after(heard, "enter_voucher_number")[:5] == ["topup_successful", *balance_words("15")]
    # back at the destination prompt afterwards
    assert after(heard, "remaining")[0] == "enter_destination"
    assert ledger.get_card(demo_data.card_id).balance == Decimal("15.00000")
    assert [e.kind for e in ledger.ledger_entries(demo_data.card_id)] == ["initial", "topup"]


def test_used_expired_unknown_and_foreign_vouchers_all_sound_the_same(cardd, database, demo_data, ledger):
    """One prompt for every refusal: a guesser must not learn which numbers exist (issue 12)."""
    from datetime import datetime, timedelta

    pool = database.pool
    add_voucher(pool, "9000000002")
    with pool.connection() as conn:
        other = catalog.create_card(pool, "5550009999", tariff=demo_data.tariff, currency="USD")
        conn.execute("UPDATE vouchers SET status = 'used', used_by = %s, used_at = now()", (other,))
    add_voucher(pool, "9000000003", expires_at=datetime.now(UTC) - timedelta(days=1))
    add_voucher(pool, "9000000004", currency="EUR")
    t = cardd.call(caller(demo_data, "5#", "9000000002#", "9000000003#", "9000000004#", cld="cc.topupext5"))
    heard = cardd.heard(t)
    assert [p for p in heard if p.startswith("voucher_")] == ["voucher_unknown"] * 3
    t = cardd.call(caller(demo_data, "5#", "9999999999#", cld="cc.topupext5"))
    assert "voucher_unknown" in cardd.heard(t)
    assert ledger.get_card(demo_data.card_id).balance == Decimal("10.00000")


def test_topup_works_under_nodial_and_not_under_notopup(cardd, database, demo_data, ledger):
    add_voucher(database.pool, "9000000005", "1")
    t = cardd.call(caller(demo_data, "5#", "9000000005#", cld="cc.nodial.topupext5"))
    assert "topup_successful" in cardd.heard(t)
    add_voucher(database.pool, "9000000006", "1")
    t = cardd.call(caller(demo_data, "5#", "9000000006#", cld="cc.nodial.notopup.topupext5"))
    heard = cardd.heard(t)
    assert "enter_voucher_number" not in heard and "invalid_destination" in heard
    assert ledger.get_card(demo_data.card_id).balance == Decimal("11.00000")


def test_topup_only_instance_runs_only_the_topup(cardd, database, demo_data, ledger):
    add_voucher(database.pool, "9000000007", "2.5")
    t = cardd.call(caller(demo_data, "9000000007#", cld="cc.topup"), Callee(talk=5))
    heard = cardd.heard(t)
    assert "enter_destination" not in heard and "you_have" in heard
    assert heard[-7:] == ["topup_successful", *balance_words("12.5"), "goodbye"][-7:]
    assert heard[heard.index("enter_voucher_number") - 1] == "enter_pin"
    assert t.bridges == []
    assert ledger.get_card(demo_data.card_id).balance == Decimal("12.50000")


def test_twenty_callers_typing_one_voucher_at_once_credit_it_once(cardd, database, demo_data, ledger):
    pool = database.pool
    add_voucher(pool, "9000000020", "3")
    numbers = [f"66600000{i:02d}" for i in range(20)]
    ids = [catalog.create_card(pool, n, tariff=demo_data.tariff, currency="USD", pin="1111") for n in numbers]
    calls = [
        cardd.dial(
            Caller(
                cli=f"1555000{i:04d}", destination="cc.topup", digits=[n + "#", "1111#", "9000000020#"], type_after=6
            )
        )
        for i, n in enumerate(numbers)
    ]
    heard = [cardd.heard(c.wait(60)) for c in calls]
    assert sum("topup_successful" in h for h in heard) == 1
    assert sum("voucher_unknown" in h for h in heard) == 19
    assert sorted(ledger.get_card(i).balance for i in ids) == [Decimal(0)] * 19 + [Decimal("3.00000")]


# -- password change ------------------------------------------------------------------------


def test_password_change_asks_old_pin_then_new_twice_and_stores_a_hash(cardd, database, demo_data, ledger):
    t = cardd.call(caller(demo_data, "7#", "4321#", "908172#", "908172#", cld="cc.chpassext7"))
    heard = cardd.heard(t)
    assert after(heard, "enter_destination")[:4] == ["enter_old_pin", "enter_new_pin", "reenter_new_pin", "pin_changed"]
    stored = ledger.get_card(demo_data.card_id).pin_hash
    assert stored.startswith("hmac-sha256$") and "908172" not in stored
    assert check_pin("908172", stored) and not check_pin("4321", stored)
    # the new PIN opens the card on the next call
    t = cardd.call(Caller(cli=CLI, digits=[demo_data.card_number + "#", "908172#"], type_after=6))
    assert "you_have" in cardd.heard(t)


def test_password_change_refuses_a_wrong_old_pin_a_mismatch_and_a_short_pin(cardd, demo_data, ledger):
    before = ledger.get_card(demo_data.card_id).pin_hash
    t = cardd.call(
        caller(demo_data, "7#", "1111#", "7#", "4321#", "5555#", "6666#", "7#", "4321#", "12#", cld="cc.chpassext7")
    )
    heard = cardd.heard(t)
    assert "wrong_pin" in heard and "pins_do_not_match" in heard and "invalid_new_pin" in heard
    assert "pin_changed" not in heard
    assert ledger.get_card(demo_data.card_id).pin_hash == before


def test_nochpass_turns_the_password_change_off(cardd, demo_data):
    t = cardd.call(caller(demo_data, "7#", cld="cc.nochpass.chpassext7"))
    assert "enter_old_pin" not in cardd.heard(t)


# -- CLI registration --------------------------------------------------------------------------


def test_cli_registration_extension_trusts_the_callers_number(cardd, database, demo_data):
    t = cardd.call(caller(demo_data, "8#", cld="cc.cliregext8"))
    assert "cli_registered" in cardd.heard(t)
    assert identity.card_id_for_cli(database.pool, CLI) == demo_data.card_id


def test_anonymous_short_or_foreign_clis_are_never_registered(cardd, database, demo_data):
    for cli in ("anonymous", "12345", ""):
        t = cardd.call(caller(demo_data, "8#", cld="cc.cliregext8", cli=cli))
        assert "cli_cannot_be_registered" in cardd.heard(t)
    other = catalog.create_card(database.pool, "5550008888", tariff=demo_data.tariff, currency="USD")
    identity.map_cli(database.pool, "15550007777", other)
    t = cardd.call(caller(demo_data, "8#", cld="cc.cliregext8", cli="15550007777"))
    assert "cli_cannot_be_registered" in cardd.heard(t)
    assert identity.card_id_for_cli(database.pool, "15550007777") == other
    assert identity.cli_map(database.pool, demo_data.card_id) == []


def test_noclireg_turns_the_registration_off(cardd, database, demo_data):
    cardd.call(caller(demo_data, "8#", cld="cc.noclireg.cliregext8"))
    assert identity.card_id_for_cli(database.pool, CLI) is None


# -- hot dial ------------------------------------------------------------------------------------


def test_hot_dial_edit_stores_a_key_and_hot_dial_dials_it(cardd, database, demo_data):
    cld = "cc.hotdialext3.hotdialeditext4"
    t = cardd.call(caller(demo_data, "4#", "2#", UK_MOBILE + "#", cld=cld))
    heard = cardd.heard(t)
    assert after(heard, "enter_hot_dial_key")[:3] == ["hot_dial_key_not_set", "enter_hot_dial_number", "hot_dial_saved"]
    assert identity.hot_dial_get(database.pool, demo_data.card_id, "2") == UK_MOBILE
    # editing again says the key's number first
    t = cardd.call(caller(demo_data, "4#", "2#", cld=cld))
    heard = cardd.heard(t)
    spoken = after(heard, "hot_dial_key_is")
    assert spoken[: len(UK_MOBILE)] == [f"num_{d}" for d in UK_MOBILE]
    t = cardd.call(caller(demo_data, "3#", "2#", cld=cld + ".noredial"), Callee(talk=5))
    assert len(t.bridges) == 1 and UK_MOBILE in [a for app, a in t.apps if app == "bridge"][0]


def test_unset_and_out_of_range_hot_keys_are_refused(cardd_with, database, demo_data, tmp_path):
    running = cardd_with(database, 'calling_card:\n  limit_hot_keys: true\n  hot_dial_ext: "3"\n', tmp_path=tmp_path)
    t = running.call(caller(demo_data, "3#", "1#", "3#", "7#"))
    heard = running.heard(t)
    assert "hot_dial_key_not_set" in heard and "invalid_hot_dial_key" in heard
    assert t.bridges == []


def test_direct_hot_dial_treats_one_digit_as_a_key(cardd, database, demo_data):
    identity.hot_dial_set(database.pool, demo_data.card_id, "1", UK_MOBILE)
    t = cardd.call(caller(demo_data, "1#", cld="cc.directhotdial.noredial"), Callee(talk=5))
    assert len(t.bridges) == 1
    assert t.bridges[0].number == UK_MOBILE
    # without hot dial, "1" is an ordinary destination
    t = cardd.call(caller(demo_data, "1#", cld="cc.directhotdial.nohotdial.noredial"), Callee(talk=5))
    assert t.bridges[0].number == "1"


def test_topup_ext_from_the_yaml_and_topup_card_length_bound_the_voucher_number(
    cardd_with, database, demo_data, ledger, tmp_path
):
    add_voucher(database.pool, "900001", "4")
    add_voucher(database.pool, "9000000008", "4")
    running = cardd_with(database, 'calling_card:\n  topup_ext: "55"\n  topup_card_length: 6\n', tmp_path=tmp_path)
    t = running.call(caller(demo_data, "55#", "9000000008#", "900001#"))
    heard = running.heard(t)
    # ten digits where six are the most: refused by the entry's own bounds; the caller tries again
    assert after(heard, "enter_destination")[:6] == [
        "enter_voucher_number",
        "invalid_input",
        "voucher_unknown",
        "enter_voucher_number",
        "topup_successful",
        "you_have",
    ]
    assert ledger.get_card(demo_data.card_id).balance == Decimal("14.00000")


def test_password_change_is_not_offered_under_use_word_pin(cardd_with, database, demo_data, tmp_path):
    running = cardd_with(
        database, 'calling_card:\n  use_word_pin: true\n  password_change_ext: "7"\n', tmp_path=tmp_path
    )
    t = running.call(Caller(cli=CLI, digits=[demo_data.card_number + "#", "7#"], type_after=6))
    heard = running.heard(t)
    assert "you_have" in heard and "enter_old_pin" not in heard


def test_cli_registration_ext_from_the_yaml_honours_min_valid_cli_length(cardd_with, database, demo_data, tmp_path):
    running = cardd_with(
        database, 'calling_card:\n  cli_registration_ext: "8"\n  min_valid_cli_length: 12\n', tmp_path=tmp_path
    )
    t = running.call(caller(demo_data, "8#"))
    assert "cli_cannot_be_registered" in running.heard(t)
    t = running.call(caller(demo_data, "8#", cli="441234567890"))
    assert "cli_registered" in running.heard(t)
    assert identity.cli_map(database.pool) == [("441234567890", demo_data.card_number)]
