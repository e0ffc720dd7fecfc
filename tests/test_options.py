"""The options table, CLD token parsing, MinimumBalance and the generated cardd.yaml."""

from __future__ import annotations

import dataclasses
import re
import typing
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from cardd import options as options_module
from cardd.cld import FLAG_TOKENS, VALUE_PREFIXES, parse_cld
from cardd.errors import ConfigError
from cardd.option_docs import render_docs, render_yaml
from cardd.options import (
    API_OPTIONS,
    DAEMON_OPTIONS,
    OPTIONS,
    OPTIONS_BY_NAME,
    SECTIONS,
    ApiSettings,
    BadValue,
    BoolKind,
    CardOptions,
    DaemonSettings,
    MinimumBalance,
    TranslationKind,
    TranslationRule,
    translate,
)

REPO = Path(__file__).resolve().parent.parent

# CALLING_CARD_OPTIONS.md, option by option, with its default (tests may not read ../shared,
# so the spec is restated here: a change to the table must be a change to this list too).
SPEC_DEFAULTS = {
    # Basic
    "announce_balance": True,
    "normal_calls_allowed": True,
    "disconnect_on_failure": False,
    "allow_empty_pin": True,
    "preserve_original_cli": False,
    "max_call_duration": 3600,
    "card_number_length": 10,
    "min_card_number_length": None,
    "card_entry_attempts": 3,
    "wrong_destinations": 3,
    "input_timeouts": 3,
    "min_call_duration": 10,
    "no_seconds_in_duration": False,
    "no_hours_in_duration": False,
    "announce_duration": True,
    "call_several_destinations": True,
    "outbound_proxy": "",
    "disconnect_warning_time": 60,
    "play_plan_minutes_only": False,
    "destination_completion_regex": None,
    "own_accounts_only": False,
    "early_media": False,
    # Basic, beyond the reference (issue 13 section 3)
    "announce_rate": False,
    "announce_balance_after_call": False,
    # Trusted CLI
    "cli_registration": True,
    "cli_registration_ext": None,
    "auto_cli_registration": False,
    "silent_auto_cli_registration": True,
    "trusted_cli_auth": False,
    "min_valid_cli_length": 6,
    "cli_auth_only": False,
    "cli_as_card_number": False,
    "voip_login_as_card_number": False,
    # Password change
    "password_change": True,
    "password_change_ext": None,
    # Billing
    "balance_threshold": None,
    "minimum_balance": None,
    "ignore_connect_fee": False,
    "route_at_a_loss": False,  # least-cost routing (issue 17), not in the reference
    "say_negative_balance_as_zero": True,
    "say_no_card_on_low_balance": True,
    # Custom scripts
    "destination_check_script": None,
    "duration_script": None,
    # Hot dial and smart dial
    "direct_hot_dial": False,
    "hot_dial": True,
    "hot_dial_ext": None,
    "hot_dial_edit_ext": None,
    "limit_hot_keys": False,
    "direct_hot_dial_any_key": False,
    "smart_dial_exclusive": False,
    # Top-up
    "topup": True,
    "topup_card_length": 10,
    "topup_ext": None,
    "topup_only": False,
    # Black list
    "blacklist": False,
    "blacklist_attempts": 3,
    # Prompts and languages
    "use_word_pin": False,
    "suppress_pound_phrase": False,
    "custom_greeting": False,
    "custom_greeting_file": None,
    "early_greeting_prompt": None,
    "late_greeting_prompt": None,
    "languages": (),
    "default_language": "en",
    "fallback_to_default_language": False,
    # Number translation: DESIGN.md "operator expectations", not in the reference option list
    "cli_translation": (),
    "cld_translation": (),
}

# Every flag token of the spec: token -> (option, value it sets).
SPEC_FLAGS = {
    "playbalance": ("announce_balance", True),
    "noplaybalance": ("announce_balance", False),
    "nobalance": ("announce_balance", False),
    "nodial": ("normal_calls_allowed", False),
    "keepcli": ("preserve_original_cli", True),
    "nokeepcli": ("preserve_original_cli", False),
    "noplayduration": ("announce_duration", False),
    "noduration": ("announce_duration", False),
    "noredial": ("call_several_destinations", False),
    "planminutes": ("play_plan_minutes_only", True),
    "earlymedia": ("early_media", True),
    "playrate": ("announce_rate", True),
    "noplayrate": ("announce_rate", False),
    "playbalanceaftercall": ("announce_balance_after_call", True),
    "noplaybalanceaftercall": ("announce_balance_after_call", False),
    "noclireg": ("cli_registration", False),
    "trustcli": ("trusted_cli_auth", True),
    "nocardenter": ("cli_auth_only", True),
    "climaponly": ("cli_auth_only", True),
    "trycliauth": ("cli_as_card_number", True),
    "cliauth": ("cli_as_card_number", True),
    "nocliauth": ("cli_as_card_number", False),
    "nochpass": ("password_change", False),
    "directhotdial": ("direct_hot_dial", True),
    "nohotdial": ("hot_dial", False),
    "notopup": ("topup", False),
    "topup": ("topup_only", True),
}

# Every value token of the spec (issue 5's examples): token -> (option, value).
SPEC_VALUE_TOKENS = {
    "chpassext5": ("password_change_ext", "5"),
    "cliregext6": ("cli_registration_ext", "6"),
    "greet29": ("early_greeting_prompt", 29),
    "lgreet30": ("late_greeting_prompt", 30),
    "hotdialext7": ("hot_dial_ext", "7"),
    "hotdialeditext8": ("hot_dial_edit_ext", "8"),
    "topupext9": ("topup_ext", "9"),
}


# --- the table -------------------------------------------------------------------


def test_table_has_every_spec_option_and_nothing_else():
    assert [o.name for o in OPTIONS] == list(SPEC_DEFAULTS)


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.name)
def test_default_is_the_spec_default(option):
    assert option.default == SPEC_DEFAULTS[option.name]


@pytest.mark.parametrize("option", OPTIONS + DAEMON_OPTIONS, ids=lambda o: o.name)
def test_default_passes_its_own_validation(option):
    if option.name == "data_dir":
        assert option.type.convert(option.default) == "var"  # resolved against the file's directory later
    else:
        assert option.type.convert(option.default) == option.default


@pytest.mark.parametrize("option", OPTIONS + DAEMON_OPTIONS, ids=lambda o: o.name)
def test_help_is_one_plain_line(option):
    assert option.help and "\n" not in option.help and len(option.help) < 120


def test_every_option_sits_in_a_spec_section():
    assert {o.section for o in OPTIONS} == set(SECTIONS)


def test_flag_tokens_are_exactly_the_spec_tokens():
    assert {t: (o.name, v) for t, (o, v) in FLAG_TOKENS.items()} == SPEC_FLAGS


def test_value_prefixes_are_exactly_the_spec_prefixes():
    assert {p for p, _ in VALUE_PREFIXES} == {
        "chpassext",
        "cliregext",
        "greet",
        "lgreet",
        "hotdialext",
        "hotdialeditext",
        "topupext",
    }


def test_flag_tokens_only_on_bool_options_and_value_prefixes_never_on_bools():
    for option in OPTIONS:
        if option.cld_on or option.cld_off:
            assert isinstance(option.type, BoolKind), option.name
        if option.cld_value_prefix:
            assert not isinstance(option.type, BoolKind), option.name


def test_no_token_can_be_mistaken_for_a_language_or_another_token():
    for token in FLAG_TOKENS:
        assert not re.fullmatch(r"[a-z]{2}", token)
        assert not any(token.startswith(p) for p, _ in VALUE_PREFIXES), token
    for prefix, _ in VALUE_PREFIXES:
        assert len(prefix) > 2


def test_card_options_has_an_attribute_per_option_with_the_defaults():
    fields = {f.name: f.default for f in dataclasses.fields(CardOptions)}
    assert fields == SPEC_DEFAULTS


@pytest.mark.parametrize(
    "cls, table",
    [(CardOptions, OPTIONS), (DaemonSettings, DAEMON_OPTIONS), (ApiSettings, API_OPTIONS)],
    ids=["calling_card", "daemon", "api"],
)
def test_the_written_out_settings_classes_are_exactly_their_tables(cls, table):
    # Written out for mypy and readers; the table stays the one source of names,
    # types and defaults, so the two must agree field by field, in order.
    hints = typing.get_type_hints(cls, vars(options_module))
    fields = dataclasses.fields(cls)
    assert [f.name for f in fields] == [o.name for o in table]
    for f, option in zip(fields, table):
        annotation = option.type.annotation
        if isinstance(annotation, str):
            annotation = eval(annotation, vars(options_module))
        assert hints[f.name] == annotation, f.name
        assert f.default == option.default, f.name
    assert cls.__dataclass_params__.frozen


def test_card_options_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        CardOptions().max_call_duration = 5  # type: ignore[misc]


def test_daemon_settings_fields_and_defaults_are_the_contract():
    assert dataclasses.asdict(DaemonSettings()) == {
        "listen": "127.0.0.1:8084",
        "dsn": "",
        "data_dir": "var",
        "metrics_listen": "127.0.0.1:9108",
        "log_level": "info",
        "log_format": "text",
        "sounds_dir": "",
        "outbound_proxy": "",
        "dial_string": "sofia/external/{number}@{proxy}",
        "shutdown_grace": 30.0,
        "esl_reply_timeout": 10.0,
        "reservation_margin": 120,
        "pool_size": 10,
        "inbound_esl": "127.0.0.1:8021",
        "inbound_esl_password": "ClueCon",
        "cdr_listen": "127.0.0.1:8085",
        "orphan_check_interval": 60.0,
        # CDR authentication, process liveness, HTTP listener limits (issue 12 sections 1, 6)
        "cdr_credentials": "",
        "cdr_allowed_sources": (),
        "inbound_esl_boxes": (),
        "node_heartbeat_interval": 10.0,
        "http_read_timeout": 10.0,
        "http_max_connections": 64,
        # security (issue 12 sections 3, 4, 7)
        "pin_key_file": "",
        "pin_throttle_window": 900,
        "pin_failures_per_cli": 10,
        "pin_failures_per_card": 5,
        "topup_throttle_window": 3600,
        "topup_failures_per_cli": 5,
        "topup_failures_per_card": 5,
        "topup_failures_service": 100,
    }


# --- CLD tokens ------------------------------------------------------------------


def test_bare_instance_has_no_overrides():
    tokens = parse_cld("cc")
    assert (tokens.instance, tokens.languages, dict(tokens.overrides), tokens.unknown_tokens) == ("cc", (), {}, ())


@pytest.mark.parametrize("token", sorted(SPEC_FLAGS))
def test_every_flag_token_sets_its_option(token):
    name, value = SPEC_FLAGS[token]
    tokens = parse_cld(f"cc.{token}")
    assert dict(tokens.overrides) == {name: value}
    assert tokens.sources[name] == token
    assert tokens.describe == ((token, f"{name} = {'true' if value else 'false'}"),)


@pytest.mark.parametrize("token", sorted(SPEC_VALUE_TOKENS))
def test_every_value_token_sets_its_option(token):
    name, value = SPEC_VALUE_TOKENS[token]
    assert dict(parse_cld(f"cc.{token}").overrides) == {name: value}


@pytest.mark.parametrize(
    "synonym, canonical",
    [
        ("nobalance", "noplaybalance"),
        ("noduration", "noplayduration"),
        ("climaponly", "nocardenter"),
        ("cliauth", "trycliauth"),
    ],
)
def test_synonyms_do_what_their_canonical_token_does(synonym, canonical):
    assert dict(parse_cld(f"cc.{synonym}").overrides) == dict(parse_cld(f"cc.{canonical}").overrides)


def test_topup_token_makes_a_topup_only_instance_and_topupext_is_not_mistaken_for_it():
    assert dict(parse_cld("cc.topup").overrides) == {"topup_only": True}
    assert dict(parse_cld("cc.topupext12").overrides) == {"topup_ext": "12"}


def test_hotdialeditext_is_not_read_as_hotdialext():
    assert dict(parse_cld("cc.hotdialeditext8.hotdialext7").overrides) == {
        "hot_dial_edit_ext": "8",
        "hot_dial_ext": "7",
    }


def test_two_letter_tokens_are_languages_in_order_without_duplicates():
    tokens = parse_cld("cc.fr.en.es.en")
    assert tokens.languages == ("fr", "en", "es")
    assert tokens.describe[-1] == ("en", "language already listed, ignored")
    assert tokens.unknown_tokens == ()


def test_later_conflicting_token_wins_either_way():
    assert parse_cld("cc.noplaybalance.playbalance").overrides["announce_balance"] is True
    tokens = parse_cld("cc.playbalance.nobalance")
    assert tokens.overrides["announce_balance"] is False
    assert tokens.sources["announce_balance"] == "nobalance"
    assert tokens.describe[-1] == ("nobalance", "announce_balance = false (overrides 'playbalance')")
    assert parse_cld("cc.topupext1.topupext2").overrides["topup_ext"] == "2"


def test_unknown_tokens_are_collected_in_order_and_the_rest_still_applies():
    tokens = parse_cld("cc.bogus.nobalance.EN.e1.x.topupextx.chpassext.greet0.eng")
    assert tokens.unknown_tokens == ("bogus", "EN", "e1", "x", "topupextx", "chpassext", "greet0", "eng")
    assert dict(tokens.overrides) == {"announce_balance": False}
    assert dict(tokens.describe)["topupextx"] == "unknown: bad value for topupext<value>, expected 1 to 10 digits"


def test_value_token_with_too_many_digits_is_unknown():
    assert parse_cld("cc.topupext12345678901").unknown_tokens == ("topupext12345678901",)


def test_describe_lists_every_token_in_cld_order():
    tokens = parse_cld("cc.en.es.noplaybalance.topupext5")
    assert tokens.describe == (
        ("en", "language en, menu position 1"),
        ("es", "language es, menu position 2"),
        ("noplaybalance", "announce_balance = false"),
        ("topupext5", 'topup_ext = "5"'),
    )


@pytest.mark.parametrize(
    "cld, fragment",
    [
        ("", "CLD is empty"),
        ("cc..en", "token 1 is empty"),
        ("cc.", "token 1 is empty"),
        (".cc", "instance name ''"),
        ("Cc.en", "instance name 'Cc'"),
        ("1cc", "instance name '1cc'"),
        ("c+c", "instance name 'c+c'"),
        ("cc.en es", "printable ASCII"),
        ("cc.é", "printable ASCII"),
        ("cc.\x00", "printable ASCII"),
        (None, "CLD must be text, got NoneType"),
        ("cc." + "a" * 300, "at most 256"),
    ],
)
def test_malformed_cld_raises_config_error_saying_what_is_wrong(cld, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        parse_cld(cld)


def test_instance_names_may_hold_digits_dashes_and_underscores():
    assert parse_cld("cc-2_b.en").instance == "cc-2_b"


# --- MinimumBalance --------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, amount, currency",
    [
        ("2 USD", Decimal("2"), "USD"),
        ("2", Decimal("2"), None),
        ("2.50 eur", Decimal("2.50"), "EUR"),
        ("  -1.5   GBP ", Decimal("-1.5"), "GBP"),
        ("0.00001", Decimal("0.00001"), None),
        (2, Decimal(2), None),
        (Decimal("2.5"), Decimal("2.5"), None),
    ],
)
def test_minimum_balance_parses_amount_and_optional_currency_exactly(raw, amount, currency):
    value = MinimumBalance.parse(raw)
    assert (value.amount, value.currency) == (amount, currency)
    assert isinstance(value.amount, Decimal)


@pytest.mark.parametrize(
    "raw",
    [
        2.5,
        True,
        None,
        "",
        "USD 2",
        "2 US",
        "2 USDX",
        "2 USD EUR",
        "1e3",
        "NaN",
        "Infinity",
        "2.123456",
        ".5",
        "2,50",
        Decimal("NaN"),
        Decimal("1.123456"),
        [2],
    ],
)
def test_minimum_balance_refuses_floats_and_malformed_amounts(raw):
    with pytest.raises(ValueError):
        MinimumBalance.parse(raw)


def test_minimum_balance_with_currency_applies_only_to_that_currency():
    assert MinimumBalance.parse("2 USD").applies_to("USD")
    assert MinimumBalance.parse("2 USD").applies_to("usd")
    assert not MinimumBalance.parse("2 USD").applies_to("EUR")
    assert MinimumBalance.parse("2").applies_to("EUR")


def test_minimum_balance_prints_as_written():
    assert str(MinimumBalance.parse("2.50 usd")) == "2.50 USD"
    assert str(MinimumBalance.parse(3)) == "3"


# --- cardd.yaml ----------------------------------------------------------------


def test_cardd_yaml_is_exactly_the_generated_text():
    text = (REPO / "cardd.yaml").read_text(encoding="utf-8")
    assert text == render_yaml(), "cardd.yaml is stale: python -m cardd.options > cardd.yaml"


def test_cardd_yaml_has_every_option_with_the_table_default_and_nothing_extra():
    data = yaml.safe_load((REPO / "cardd.yaml").read_text(encoding="utf-8"))
    assert set(data) == {"daemon", "calling_card", "instances", "api"}
    assert list(data["calling_card"]) == [o.name for s in SECTIONS for o in OPTIONS if o.section == s]
    assert set(data["calling_card"]) == set(OPTIONS_BY_NAME)
    for option in OPTIONS:
        assert option.type.convert(data["calling_card"][option.name]) == option.default, option.name
    assert set(data["daemon"]) == {o.name for o in DAEMON_OPTIONS}
    for option in DAEMON_OPTIONS:
        assert option.type.convert(data["daemon"][option.name]) == option.default, option.name
    assert data["instances"]["cc"] == {"languages": ["en"]}
    assert data["instances"]["ccsp"]["languages"] == ["es", "en"]


def test_cardd_yaml_comments_every_option_with_its_help_and_tokens():
    text = render_yaml()
    for option in OPTIONS:
        line = f"  # {option.help}"
        assert line in text, option.name
        for token in option.cld_on + option.cld_off:
            assert token in text


# --- number translation ------------------------------------------------------------


def rules(*pairs: tuple[str, str]) -> tuple[TranslationRule, ...]:
    return TranslationKind().convert([{"match": m, "replace": r} for m, r in pairs])


def test_translate_applies_the_first_matching_rule_only():
    table = rules(("^00", ""), ("^0", "44"), ("^", "1"))
    assert translate("0049301234", table) == "49301234"
    assert translate("07700900123", table) == "447700900123"
    assert translate("5551234", table) == "15551234"
    assert translate("0049", ()) == "0049"


def test_translate_supports_group_references():
    assert translate("011441234", rules((r"^011(\d+)", r"\1"))) == "441234"


@pytest.mark.parametrize(
    "raw",
    [
        "^0",
        [{"match": "^0"}],
        [{"match": "^0", "replace": "1", "extra": 1}],
        [{"match": "", "replace": "1"}],
        [{"match": "(", "replace": ""}],
        [{"match": "^0", "replace": r"\1"}],
        [{"match": 0, "replace": ""}],
    ],
)
def test_bad_translation_rules_are_refused(raw):
    with pytest.raises(BadValue):
        TranslationKind().convert(raw)


def test_translation_rules_render_as_yaml_that_reads_back():
    table = rules(("^00", ""), (r"^(\d)", r"44\1"))
    text = TranslationKind().to_yaml(table)
    assert TranslationKind().convert(yaml.safe_load(text)) == table


def test_docs_list_every_option_with_its_tokens():
    docs = render_docs()
    for option in OPTIONS:
        row = next(line for line in docs.splitlines() if line.startswith(f"| `{option.name}` |"))
        assert all(f"`{t}`" in row for t in option.tokens)
        assert row.count(" | ") == 4  # no stray | inside a cell
