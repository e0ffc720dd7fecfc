"""Caller identity through cardd (in-process) and the FreeSWITCH simulator: CLI
authentication, automatic CLI registration, the black list, throttling of wrong
entries across calls, smart dial, own_accounts_only and the card life cycle.

Demo card (tests/dbfixtures.py): 1234567890, PIN 4321, 10.00 USD."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from cardd.billing import catalog, identity
from cardd.sim import Callee, Caller

CLI = "15555550100"
UK_MOBILE = "447700900123"


def yaml(**options) -> str:
    lines = ["calling_card:"]
    for key, value in options.items():
        lines.append(f"  {key}: {value}")
    return "\n".join(lines) + "\n"


def mapped(database, demo, cli=CLI):
    identity.map_cli(database.pool, cli, demo.card_id)


def identified(heard) -> bool:
    return "you_have" in heard


# -- CLI authentication ----------------------------------------------------------------------


def test_trycliauth_skips_the_card_number_but_asks_the_pin(cardd, database, demo_data):
    mapped(database, demo_data)
    t = cardd.call(Caller(cli=CLI, destination="cc.trycliauth", digits=["4321#"], type_after=6))
    heard = cardd.heard(t)
    assert heard[:2] == ["welcome", "enter_pin"] and identified(heard)
    assert "enter_card_number" not in heard


def test_cliauth_synonym_and_a_wrong_pin_on_the_cli_path(cardd, database, demo_data):
    mapped(database, demo_data)
    t = cardd.call(Caller(cli=CLI, destination="cc.cliauth", digits=["1#", "2#", "3#"], type_after=6))
    heard = cardd.heard(t)
    assert heard.count("wrong_pin") == 3 and heard[-2:] == ["too_many_attempts", "goodbye"]


def test_trustcli_needs_neither_card_number_nor_pin(cardd, database, demo_data):
    mapped(database, demo_data)
    t = cardd.call(Caller(cli=CLI, destination="cc.trustcli", digits=[UK_MOBILE + "#"], type_after=6), Callee(talk=3))
    heard = cardd.heard(t)
    assert "enter_card_number" not in heard and "enter_pin" not in heard and identified(heard)
    assert len(t.bridges) == 1


def test_cli_as_card_number_uses_the_cli_itself_when_it_is_a_card(cardd, demo_data):
    t = cardd.call(Caller(cli=demo_data.card_number, destination="cc.trycliauth", digits=["4321#"], type_after=6))
    heard = cardd.heard(t)
    assert heard[:2] == ["welcome", "enter_pin"] and identified(heard)


def test_an_unmapped_cli_falls_back_to_the_card_number(cardd, demo_data):
    t = cardd.call(
        Caller(
            cli="15559990000", destination="cc.trycliauth", digits=[demo_data.card_number + "#", "4321#"], type_after=6
        )
    )
    heard = cardd.heard(t)
    assert heard[:3] == ["welcome", "enter_card_number", "enter_pin"] and identified(heard)


def test_nocliauth_overrides_cli_as_card_number_from_the_yaml(cardd_with, database, demo_data, tmp_path):
    mapped(database, demo_data)
    running = cardd_with(database, yaml(cli_as_card_number="true"), tmp_path=tmp_path)
    t = running.call(Caller(cli=CLI, destination="cc.nocliauth", digits=[], type_after=6))
    assert running.heard(t)[1] == "enter_card_number"


@pytest.mark.parametrize("token", ["climaponly", "nocardenter"])
def test_cli_auth_only_leaves_at_once_without_a_mapping(cardd, demo_data, token):
    t = cardd.call(Caller(cli="15559990000", destination=f"cc.{token}", digits=["1234567890#"], type_after=6))
    assert cardd.heard(t) == ["welcome", "cli_not_registered", "goodbye"]
    assert cardd.metric("cardd_auth_failures_total", reason="cli_not_mapped") == 1


def test_cli_auth_only_with_a_trusted_mapping_gets_in(cardd, database, demo_data):
    mapped(database, demo_data)
    t = cardd.call(Caller(cli=CLI, destination="cc.climaponly.trustcli", digits=[], type_after=6))
    assert identified(cardd.heard(t))


def test_voip_login_is_the_card_number(cardd_with, database, demo_data, tmp_path):
    catalog.create_card(
        database.pool, "5550003333", tariff=demo_data.tariff, currency="USD", pin="2468", balance="3", authname="8001"
    )
    running = cardd_with(database, yaml(voip_login_as_card_number="true"), tmp_path=tmp_path)
    t = running.call(Caller(digits=["8001#", "2468#"], type_after=6))
    heard = running.heard(t)
    assert identified(heard) and heard[heard.index("you_have") + 1] == "num_3"
    # the username no longer works as the card number
    t = running.call(Caller(digits=["5550003333#", "2468#"], type_after=6))
    assert "invalid_card_or_pin" in running.heard(t)


def test_below_balance_threshold_the_card_number_is_asked_despite_the_cli(cardd_with, database, demo_data, tmp_path):
    mapped(database, demo_data)
    running = cardd_with(database, yaml(trusted_cli_auth="true", balance_threshold='"20 USD"'), tmp_path=tmp_path)
    t = running.call(Caller(cli=CLI, digits=[demo_data.card_number + "#", "4321#"], type_after=6))
    heard = running.heard(t)
    assert heard[:3] == ["welcome", "enter_card_number", "enter_pin"] and identified(heard)
    (tmp_path / "low").mkdir()
    running_low = cardd_with(
        database, yaml(trusted_cli_auth="true", balance_threshold='"5 USD"'), tmp_path=tmp_path / "low"
    )
    t = running_low.call(Caller(cli=CLI, digits=[], type_after=6))
    assert "enter_card_number" not in running_low.heard(t) and identified(running_low.heard(t))


# -- automatic CLI registration -----------------------------------------------------------------


def test_silent_auto_registration_trusts_the_cli_after_the_card_number(cardd_with, database, demo_data, tmp_path):
    running = cardd_with(database, yaml(auto_cli_registration="true"), tmp_path=tmp_path)
    t = running.call(Caller(cli=CLI, digits=[demo_data.card_number + "#", "4321#"], type_after=6))
    heard = running.heard(t)
    assert "register_cli_offer" not in heard and "cli_registered" not in heard
    assert identity.card_id_for_cli(database.pool, CLI) == demo_data.card_id


def test_asked_auto_registration_registers_only_on_one(cardd_with, database, demo_data, tmp_path):
    running = cardd_with(
        database, yaml(auto_cli_registration="true", silent_auto_cli_registration="false"), tmp_path=tmp_path
    )
    t = running.call(Caller(cli="15550001000", digits=[demo_data.card_number + "#", "4321#", "2#"], type_after=6))
    assert "register_cli_offer" in running.heard(t)
    assert identity.card_id_for_cli(database.pool, "15550001000") is None
    t = running.call(Caller(cli=CLI, digits=[demo_data.card_number + "#", "4321#", "1#"], type_after=6))
    heard = running.heard(t)
    assert heard[heard.index("register_cli_offer") + 1] == "cli_registered"
    assert identity.card_id_for_cli(database.pool, CLI) == demo_data.card_id


@pytest.mark.parametrize("cli", ["anonymous", "", "1555", "+1 555 000", "Restricted"])
def test_auto_registration_never_stores_anonymous_short_or_non_numeric_clis(
    cardd_with, database, demo_data, tmp_path, cli
):
    running = cardd_with(database, yaml(auto_cli_registration="true", min_valid_cli_length=6), tmp_path=tmp_path)
    running.call(Caller(cli=cli, digits=[demo_data.card_number + "#", "4321#"], type_after=6))
    assert identity.cli_map(database.pool) == []


# -- black list ---------------------------------------------------------------------------------


def test_wrong_card_numbers_in_a_row_blacklist_the_cli(cardd_with, database, demo_data, tmp_path):
    running = cardd_with(
        database, yaml(blacklist="true", blacklist_attempts=3, card_entry_attempts=5), tmp_path=tmp_path
    )
    t = running.call(
        Caller(
            cli=CLI, digits=["11111#", "1#", "22222#", "1#", "33333#", "1#", demo_data.card_number + "#"], type_after=6
        )
    )
    heard = running.heard(t)
    assert heard.count("invalid_card_or_pin") == 2 and heard[-2:] == ["cli_blacklisted", "goodbye"]
    (entry,) = identity.blacklist_entries(database.pool)
    assert (entry.cli, entry.blocked, entry.failed_attempts) == (CLI, True, 3)
    # the next call is refused before anything else, even with the right card
    t = running.call(Caller(cli=CLI, digits=[demo_data.card_number + "#", "4321#"], type_after=6))
    assert running.heard(t) == ["cli_blacklisted", "goodbye"]
    # another CLI is not affected
    t = running.call(Caller(cli="15550002000", digits=[demo_data.card_number + "#", "4321#"], type_after=6))
    assert identified(running.heard(t))


def test_short_entries_do_not_count_and_a_right_card_breaks_the_run(cardd_with, database, demo_data, tmp_path):
    running = cardd_with(
        database, yaml(blacklist="true", blacklist_attempts=3, card_entry_attempts=5), tmp_path=tmp_path
    )
    t = running.call(Caller(cli=CLI, digits=["1#", "12#", "123#", "11111#", "22222#"], type_after=6))
    assert "cli_blacklisted" not in running.heard(t)
    assert not identity.is_blacklisted(database.pool, CLI)
    t = running.call(Caller(cli=CLI, digits=[demo_data.card_number + "#", "4321#"], type_after=6))
    assert identified(running.heard(t))
    assert identity.blacklist_entries(database.pool, blocked_only=False) == []


def test_blacklist_off_never_refuses(cardd, database, demo_data):
    identity.blacklist_add(database.pool, CLI)
    t = cardd.call(Caller(cli=CLI, digits=[demo_data.card_number + "#", "4321#"], type_after=6))
    assert identified(cardd.heard(t))


# -- throttling across calls ------------------------------------------------------------------


def test_wrong_entries_from_one_cli_are_throttled_across_calls(cardd_with, database, demo_data):
    cardd = cardd_with(database, pin_failures_per_cli=4)
    t = cardd.call(Caller(cli=CLI, digits=["11111#", "1#", "22222#", "1#", "33333#", "1#"], type_after=6))
    assert cardd.heard(t).count("invalid_card_or_pin") == 3
    t = cardd.call(Caller(cli=CLI, digits=["44444#", "1#", demo_data.card_number + "#", "4321#"], type_after=6))
    heard = cardd.heard(t)
    assert heard.count("enter_card_number") == 1 and heard[-2:] == ["too_many_attempts", "goodbye"]
    t = cardd.call(Caller(cli=CLI, digits=[demo_data.card_number + "#", "4321#"], type_after=6))
    assert cardd.heard(t) == ["welcome", "too_many_attempts", "goodbye"]
    assert cardd.metric("cardd_auth_failures_total", reason="throttled") == 2
    # other callers are not held back
    t = cardd.call(Caller(cli="15550003000", digits=[demo_data.card_number + "#", "4321#"], type_after=6))
    assert identified(cardd.heard(t))
    # the window slides: once the failures are old enough the CLI may try again
    with database.pool.connection() as conn:
        conn.execute("UPDATE auth_failures SET at = now() - interval '1 hour'")
    t = cardd.call(Caller(cli=CLI, digits=[demo_data.card_number + "#", "4321#"], type_after=6))
    assert identified(cardd.heard(t))


def test_wrong_pins_for_one_card_lock_it_for_every_cli(cardd_with, database, demo_data):
    cardd = cardd_with(database, pin_failures_per_card=2)
    for i in range(2):
        cardd.call(Caller(cli=f"1555000100{i}", digits=[demo_data.card_number + "#", "9999#"], type_after=6))
    # the right PIN from a fresh CLI does not get through while the card is locked
    t = cardd.call(Caller(cli="15550001009", digits=[demo_data.card_number + "#", "4321#"], type_after=6))
    heard = cardd.heard(t)
    assert "enter_pin" not in heard and heard[-2:] == ["too_many_attempts", "goodbye"]
    with database.pool.connection() as conn:
        assert conn.execute("SELECT count(*) FROM auth_failures WHERE scope = 'card'").fetchone()[0] == 2


# -- smart dial -----------------------------------------------------------------------------------


def test_smart_dial_connects_a_known_cli_to_the_dids_destination_at_once(cardd, database, demo_data, ledger):
    mapped(database, demo_data)
    identity.smart_dial_add(database.pool, "18005550001", demo_data.card_id, UK_MOBILE, exclusive=False)
    t = cardd.call(
        Caller(cli=CLI, destination="cc.noredial", rdnis="18005550001", digits=[], type_after=6), Callee(talk=31)
    )
    heard = cardd.heard(t)
    assert "enter_card_number" not in heard and "enter_destination" not in heard
    assert t.bridges[0].number == UK_MOBILE
    (cdr,) = ledger.cdrs_for(demo_data.card_id)
    assert cdr.cld == UK_MOBILE and cdr.cost == Decimal("0.13600")


def test_shared_did_picks_the_account_by_cli_and_unknown_clis_identify_as_usual(cardd, database, demo_data):
    other = catalog.create_card(database.pool, "5550004444", tariff=demo_data.tariff, currency="USD", balance="5")
    identity.map_cli(database.pool, "15550004444", other)
    mapped(database, demo_data)
    identity.smart_dial_add(database.pool, "18005550002", demo_data.card_id, UK_MOBILE, exclusive=False)
    identity.smart_dial_add(database.pool, "18005550002", other, "442071234567", exclusive=False)
    t = cardd.call(Caller(cli="15550004444", destination="cc.noredial", rdnis="18005550002"), Callee(talk=3))
    assert t.bridges[0].number == "442071234567"
    t = cardd.call(Caller(cli="15559999999", destination="cc.noredial", rdnis="18005550002", digits=[], type_after=6))
    assert cardd.heard(t)[1] == "enter_card_number" and t.bridges == []


def test_exclusive_dids_are_used_only_under_smart_dial_exclusive(cardd_with, database, demo_data, tmp_path):
    mapped(database, demo_data)
    identity.smart_dial_add(database.pool, "18005550003", demo_data.card_id, UK_MOBILE, exclusive=True)
    with pytest.raises(identity.IdentityError):
        other = catalog.create_card(database.pool, "5550005555", tariff=demo_data.tariff, currency="USD")
        identity.smart_dial_add(database.pool, "18005550003", other, UK_MOBILE, exclusive=False)
    shared = cardd_with(database, yaml(call_several_destinations="false"), tmp_path=tmp_path)
    t = shared.call(Caller(cli=CLI, rdnis="18005550003", digits=[], type_after=6))
    assert t.bridges == []
    (tmp_path / "x").mkdir()
    exclusive = cardd_with(
        database, yaml(smart_dial_exclusive="true", call_several_destinations="false"), tmp_path=tmp_path / "x"
    )
    t = exclusive.call(Caller(cli=CLI, rdnis="18005550003"), Callee(talk=3))
    assert t.bridges[0].number == UK_MOBILE


# -- own accounts only ----------------------------------------------------------------------------


def test_own_accounts_only_admits_only_the_instance_customers_cards(cardd_with, database, demo_data, tmp_path):
    with database.pool.connection() as conn:
        acme = conn.execute("INSERT INTO customers (name) VALUES ('acme') RETURNING id").fetchone()[0]
    catalog.create_card(
        database.pool, "5550006666", tariff=demo_data.tariff, currency="USD", pin="1357", balance="2", customer_id=acme
    )
    running = cardd_with(
        database, "instances:\n  cc:\n    customer: acme\n    own_accounts_only: true\n", tmp_path=tmp_path
    )
    # another customer's card, even with its right PIN, sounds like a wrong number
    t = running.call(Caller(digits=[demo_data.card_number + "#", demo_data.pin + "#"], type_after=6))
    assert running.heard(t)[:4] == ["welcome", "enter_card_number", "enter_pin", "invalid_card_or_pin"]
    t = running.call(Caller(digits=["5550006666#", "1357#"], type_after=6))
    assert identified(running.heard(t))


def test_own_accounts_only_takes_the_instance_name_as_customer(cardd_with, database, demo_data, tmp_path):
    with database.pool.connection() as conn:
        shop = conn.execute("INSERT INTO customers (name) VALUES ('shop') RETURNING id").fetchone()[0]
    catalog.create_card(
        database.pool, "5550007777", tariff=demo_data.tariff, currency="USD", balance="2", customer_id=shop
    )
    running = cardd_with(database, yaml(own_accounts_only="true"), tmp_path=tmp_path)
    t = running.call(Caller(destination="shop", digits=["5550007777#"], type_after=6))
    assert identified(running.heard(t))
    t = running.call(Caller(destination="other", digits=["5550007777#"], type_after=6))
    assert "invalid_card_or_pin" in running.heard(t)


# -- card life cycle --------------------------------------------------------------------------------


def test_an_expired_card_hears_its_own_prompt(cardd, database, demo_data):
    catalog.create_card(
        database.pool,
        "5550008881",
        tariff=demo_data.tariff,
        currency="USD",
        pin="1111",
        balance="5",
        expires_at=datetime.now(UTC) - timedelta(minutes=1),
    )
    t = cardd.call(Caller(digits=["5550008881#", "1111#"], type_after=6))
    assert cardd.heard(t)[-2:] == ["card_expired", "goodbye"]


def test_a_new_card_is_activated_by_its_first_call_and_expires_n_days_later(cardd, database, demo_data, ledger):
    cid = catalog.create_card(
        database.pool, "5550008882", tariff=demo_data.tariff, currency="USD", pin="2222", balance="5", status="new"
    )
    with database.pool.connection() as conn:
        conn.execute("UPDATE accounts SET valid_days = 30 WHERE id = %s", (cid,))
    t = cardd.call(
        Caller(digits=["5550008882#", "2222#", UK_MOBILE + "#"], destination="cc.noredial", type_after=6),
        Callee(talk=3),
    )
    assert len(t.bridges) == 1
    card = ledger.get_card(cid)
    assert card.status == "active"
    assert timedelta(days=29) < card.expires_at - datetime.now(UTC) <= timedelta(days=30)


def test_a_card_limited_to_one_call_refuses_a_second_simultaneous_call(cardd, database, demo_data, ledger):
    catalog.create_card(
        database.pool,
        "5550008883",
        tariff=demo_data.tariff,
        currency="USD",
        pin="3333",
        balance="5",
        max_concurrent_calls=1,
    )
    first = cardd.dial(
        Caller(
            cli="15550000001", destination="cc.noredial", digits=["5550008883#", "3333#", UK_MOBILE + "#"], type_after=6
        ),
        Callee(talk=60),
    )
    second = cardd.dial(
        Caller(
            cli="15550000002",
            destination="cc.noredial",
            digits=["5550008883#", "3333#", UK_MOBILE + "#"],
            type_after=20,
        ),
        Callee(talk=60),
    )
    transcripts = [first.wait(120), second.wait(120)]
    assert sum("card_in_use" in cardd.heard(t) for t in transcripts) == 1
    assert sum(len(t.bridges) for t in transcripts) == 1


def test_below_balance_threshold_cli_auth_only_refuses_with_the_low_balance_prompt(
    cardd_with, database, demo_data, tmp_path
):
    mapped(database, demo_data)
    running = cardd_with(
        database,
        yaml(
            cli_auth_only="true",
            trusted_cli_auth="true",
            balance_threshold='"20 USD"',
            say_no_card_on_low_balance="false",
        ),
        tmp_path=tmp_path,
    )
    t = running.call(Caller(cli=CLI, digits=[demo_data.card_number + "#"], type_after=6))
    assert running.heard(t) == ["welcome", "no_balance_left", "goodbye"]


def test_wrong_voucher_numbers_are_throttled_like_card_numbers(cardd_with, database, demo_data):
    cardd = cardd_with(database, topup_failures_per_cli=2)
    t = cardd.call(
        Caller(
            cli=CLI,
            destination="cc.topup",
            digits=[demo_data.card_number + "#", "4321#", "11111111#", "22222222#", "33333333#"],
            type_after=6,
        )
    )
    heard = cardd.heard(t)
    assert heard.count("voucher_unknown") == 2 and heard[-2:] == ["too_many_attempts", "goodbye"]


def test_the_throttle_window_is_shared_by_every_process_on_the_database(database, dsn):
    from cardd.db import Database

    limits = identity.Limits(window_s=900, per_cli=3, per_card=5)
    with Database(dsn) as other_process:
        for _ in range(3):
            identity.record_failure(other_process.pool, cli=CLI)
    assert identity.throttled(database.pool, limits, cli=CLI)
    assert not identity.throttled(database.pool, limits, cli="15550009999")
    # callers without a CLI share one bucket: hiding the number does not lift the limit
    for _ in range(3):
        identity.record_failure(database.pool, cli="anonymous")
    assert identity.throttled(database.pool, limits, cli="") and identity.throttled(
        database.pool, limits, cli="Restricted"
    )
