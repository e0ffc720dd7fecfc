"""cardd.yaml loading: every option, errors naming file/line/key, precedence, and the check-config texts."""

from __future__ import annotations

import json
import os
import re
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from cardd.config import REPO_SOUNDS_DIR, describe_cld, format_settings, load_settings
from cardd.errors import ConfigError
from cardd.options import OPTIONS, MinimumBalance, TranslationRule

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str, name: str = "cardd.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(path)


def load(tmp_path: Path, text: str):
    return load_settings(write(tmp_path, text))


def load_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return str(info.value)


# A valid, non-default YAML value for every option, and what cardd makes of it.
SAMPLES = {
    "announce_balance": ("false", False),
    "normal_calls_allowed": ("false", False),
    "disconnect_on_failure": ("true", True),
    "allow_empty_pin": ("false", False),
    "preserve_original_cli": ("true", True),
    "max_call_duration": ("1800", 1800),
    "card_number_length": ("12", 12),
    "min_card_number_length": ("4", 4),
    "card_entry_attempts": ("5", 5),
    "wrong_destinations": ("1", 1),
    "input_timeouts": ("2", 2),
    "min_call_duration": ("0", 0),
    "no_seconds_in_duration": ("true", True),
    "no_hours_in_duration": ("true", True),
    "announce_duration": ("false", False),
    "call_several_destinations": ("false", False),
    "outbound_proxy": ('"proxy.example.net:5060"', "proxy.example.net:5060"),
    "disconnect_warning_time": ("30", 30),
    "play_plan_minutes_only": ("true", True),
    "destination_completion_regex": ("'^00[0-9]{10}$'", re.compile("^00[0-9]{10}$")),
    "own_accounts_only": ("false", False),
    "early_media": ("true", True),
    "cli_registration": ("false", False),
    "cli_registration_ext": ('"6"', "6"),
    "auto_cli_registration": ("true", True),
    "silent_auto_cli_registration": ("false", False),
    "trusted_cli_auth": ("true", True),
    "min_valid_cli_length": ("8", 8),
    "cli_auth_only": ("true", True),
    "cli_as_card_number": ("true", True),
    "voip_login_as_card_number": ("true", True),
    "password_change": ("false", False),
    "password_change_ext": ('"5"', "5"),
    "balance_threshold": ('"3 USD"', MinimumBalance(Decimal(3), "USD")),
    "minimum_balance": ("0.10", MinimumBalance(Decimal("0.10"))),
    "ignore_connect_fee": ("true", True),
    "say_negative_balance_as_zero": ("false", False),
    "say_no_card_on_low_balance": ("false", False),
    "destination_check_script": ("scripts/check.py", "<dir>/scripts/check.py"),
    "duration_script": ("/usr/local/bin/say-duration", "/usr/local/bin/say-duration"),
    "direct_hot_dial": ("true", True),
    "hot_dial": ("false", False),
    "hot_dial_ext": ('"7"', "7"),
    "hot_dial_edit_ext": ('"8"', "8"),
    "limit_hot_keys": ("true", True),
    "smart_dial_exclusive": ("true", True),
    "direct_hot_dial_any_key": ("true", True),
    "announce_rate": ("true", True),
    "announce_balance_after_call": ("true", True),
    "route_at_a_loss": ("true", True),
    "topup": ("false", False),
    "topup_card_length": ("16", 16),
    "topup_ext": ('"9"', "9"),
    "topup_only": ("false", False),
    "blacklist": ("true", True),
    "blacklist_attempts": ("5", 5),
    "use_word_pin": ("true", True),
    "suppress_pound_phrase": ("true", True),
    "custom_greeting": ("false", False),
    "custom_greeting_file": ("/srv/greeting.wav", "/srv/greeting.wav"),
    "early_greeting_prompt": ("29", 29),
    "late_greeting_prompt": ("30", 30),
    "languages": ("[es, en]", ("es", "en")),
    "default_language": ("es", "es"),
    "fallback_to_default_language": ("true", True),
    "cli_translation": ('[{match: "^0", replace: "44"}]', (TranslationRule(re.compile("^0"), "44"),)),
    "cld_translation": (
        "[{match: '^00', replace: ''}, {match: '^011', replace: ''}]",
        (TranslationRule(re.compile("^00"), ""), TranslationRule(re.compile("^011"), "")),
    ),
}


def test_every_option_has_a_sample():
    assert set(SAMPLES) == {o.name for o in OPTIONS}


# --- loading -------------------------------------------------------------------


def test_no_file_means_built_in_defaults():
    settings = load_settings(None)
    assert settings.path is None and settings.calling_card == {} and settings.instances == {}
    assert settings.daemon.listen == "127.0.0.1:8084"
    assert settings.daemon.data_dir == os.path.join(os.getcwd(), "var")
    assert settings.options_for().max_call_duration == 3600


def test_the_shipped_cardd_yaml_loads():
    settings = load_settings(str(REPO / "cardd.yaml"))
    assert set(settings.instances) == {"cc", "ccsp"}
    assert settings.call_options("cc").languages == ["en"]
    assert settings.call_options("ccsp").languages == ["es", "en"]


def test_empty_file_and_empty_sections_are_defaults(tmp_path):
    assert load(tmp_path, "").calling_card == {}
    settings = load(tmp_path, "daemon:\ncalling_card:\ninstances:\n")
    assert settings.calling_card == {} and settings.instances == {}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_option_loads_from_calling_card_and_from_an_instance(tmp_path, name):
    text, expected = SAMPLES[name]
    if isinstance(expected, str) and expected.startswith("<dir>"):
        expected = expected.replace("<dir>", str(tmp_path))
    settings = load(
        tmp_path, f"calling_card:\n  {name}: {text}\ninstances:\n  cc:\n    customer: acme\n    {name}: {text}\n"
    )
    assert settings.calling_card[name] == expected
    assert settings.instances["cc"][name] == expected
    assert getattr(settings.call_options("cc").options, name) == expected


def test_daemon_settings_load_and_paths_resolve_against_the_file(tmp_path):
    settings = load(
        tmp_path,
        """\
        daemon:
          listen: "0.0.0.0:0"
          dsn: "postgresql://cardd@db/cardd"
          data_dir: state
          metrics_listen: "[::1]:9200"
          log_level: debug
          log_format: json
          sounds_dir: ../prompts
          outbound_proxy: "10.0.0.5:5060"
          dial_string: "sofia/gateway/a/{number}|sofia/gateway/b/{number}"
          shutdown_grace: 2.5
          esl_reply_timeout: 3
          reservation_margin: 60
          pool_size: 4
          inbound_esl: "10.0.0.5:8021"
          inbound_esl_password: secret
        """,
    )
    d = settings.daemon
    assert d.data_dir == str(tmp_path / "state")
    assert d.sounds_dir == os.path.normpath(str(tmp_path / ".." / "prompts"))
    assert (d.listen, d.metrics_listen, d.log_level, d.log_format) == ("0.0.0.0:0", "[::1]:9200", "debug", "json")
    assert (d.shutdown_grace, d.esl_reply_timeout, d.reservation_margin, d.pool_size) == (2.5, 3.0, 60, 4)
    assert d.dial_string == "sofia/gateway/a/{number}|sofia/gateway/b/{number}"


def test_empty_sounds_dir_is_the_repo_sounds_directory(tmp_path):
    settings = load(tmp_path, "daemon:\n  sounds_dir: ''\n")
    assert settings.daemon.sounds_dir == REPO_SOUNDS_DIR == str(REPO / "sounds")
    assert settings.daemon.data_dir == str(tmp_path / "var")


def test_yaml_floats_are_read_as_exact_decimals(tmp_path):
    settings = load(tmp_path, "calling_card:\n  minimum_balance: 0.1\n  balance_threshold: 1_000.25\n")
    assert settings.calling_card["minimum_balance"] == MinimumBalance(Decimal("0.1"))
    assert settings.calling_card["balance_threshold"].amount == Decimal("1000.25")


def test_with_daemon_overrides_and_validates(tmp_path):
    settings = load(tmp_path, "daemon:\n  outbound_proxy: a:5060\n").with_daemon(outbound_proxy="b:5080")
    assert settings.daemon.outbound_proxy == "b:5080"
    assert settings.call_options("cc").options.outbound_proxy == "b:5080"
    with pytest.raises(ConfigError, match=r"command line: daemon.outbound_proxy: expected host or host:port"):
        settings.with_daemon(outbound_proxy="a b")
    with pytest.raises(ConfigError, match="did you mean 'outbound_proxy'"):
        settings.with_daemon(outbound_prxy="b")


# --- errors name file, line, key and what was expected -----------------------------


def test_misspelt_key_names_file_line_key_and_suggests_the_right_one(tmp_path):
    message = load_error(tmp_path, "calling_card:\n  announce_balance: true\n  max_call_duraton: 60\n")
    assert message == (
        f"{tmp_path / 'cardd.yaml'}:3: calling_card.max_call_duraton: unknown key "
        "'max_call_duraton'; did you mean 'max_call_duration'?"
    )


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("calling_cards: {}\n", ":1: calling_cards: unknown key 'calling_cards'; did you mean 'calling_card'?"),
        ("extra: 1\n", ":1: extra: unknown key 'extra'; expected one of: daemon, calling_card, instances"),
        ("daemon:\n  listne: x\n", ":2: daemon.listne: unknown key 'listne'; did you mean 'listen'?"),
        (
            "daemon:\n  announce_balance: true\n",
            "daemon.announce_balance: unknown key 'announce_balance'; 'announce_balance' belongs under calling_card:",
        ),
        ("calling_card:\n  dsn: x\n", "calling_card.dsn: unknown key 'dsn'; 'dsn' belongs under daemon:"),
        (
            "calling_card:\n  noplaybalance: true\n",
            "calling_card.noplaybalance: unknown key 'noplaybalance'; 'noplaybalance' is a CLD token, "
            "the cardd.yaml setting is `announce_balance: false`",
        ),
        (
            "instances:\n  cc:\n    max_call_duraton: 5\n",
            ":3: instances.cc.max_call_duraton: unknown key 'max_call_duraton'; did you mean 'max_call_duration'?",
        ),
        (
            "calling_card:\n  customer: acme\n",
            "calling_card.customer: unknown key 'customer'; 'customer' belongs under instances.<name>:",
        ),
        ("calling_card:\n  zzzzzz: 1\n", "calling_card.zzzzzz: unknown key 'zzzzzz'; see cardd.yaml for every key"),
    ],
)
def test_unknown_keys_are_errors_with_a_hint(tmp_path, text, fragment):
    assert fragment in load_error(tmp_path, text)


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("announce_balance", '"yes"', 'expected true or false, got "yes"'),
        ("announce_balance", "1", "expected true or false, got 1"),
        ("max_call_duration", "0", "expected a whole number from 1 to 86400 (seconds), got 0"),
        ("max_call_duration", "86401", "got 86401"),
        ("max_call_duration", "true", "got true"),
        ("max_call_duration", '"3600"', 'got "3600"'),
        ("max_call_duration", "60.5", "got 60.5"),
        ("card_entry_attempts", "null", "expected a whole number from 1 to 20, got null"),
        ("min_card_number_length", "0", "from 1 to 32 (digits), or null, got 0"),
        ("topup_ext", "5", 'expected a quoted string of 1 to 10 digits such as "5", or null, got 5'),
        ("topup_ext", '"5a"', 'got "5a"'),
        (
            "destination_completion_regex",
            '"([0-9]"',
            "expected a regular expression (a string that compiles), "
            "or null (missing ), unterminated subpattern at position 0)",
        ),
        (
            "minimum_balance",
            '"2 dollars"',
            'expected an amount with an optional currency, such as "2 USD" or 2, or null, got "2 dollars"',
        ),
        ("minimum_balance", "0.123456", "got 0.123456"),
        ("minimum_balance", ".nan", "got NaN"),
        ("languages", "[en, english]", 'got ["en", "english"]'),
        ("languages", "[en, en]", "distinct"),
        ("languages", "en", "a list of distinct two-letter language codes"),
        ("default_language", "EN", 'expected a two-letter language code such as en, got "EN"'),
        ("default_language", "no", 'YAML reads an unquoted no as false: write "no"'),
        ("languages", "[en, no]", "YAML reads an unquoted no as false"),
        ("cld_translation", "[{match: '^0', replace: '\\1'}]", "invalid group reference 1"),
        ("cld_translation", "[{match: '^0'}]", "the first match applies, got [a mapping]"),
        ("early_greeting_prompt", "0", "ivr_prompts id"),
        ("outbound_proxy", '"a b"', "expected host or host:port"),
        ("outbound_proxy", '"host:70000"', 'got "host:70000"'),
        ("custom_greeting_file", '""', 'expected a path, or null, got ""'),
    ],
)
def test_bad_values_name_key_and_expectation(tmp_path, key, value, expected):
    message = load_error(tmp_path, f"calling_card:\n  {key}: {value}\n")
    assert message.startswith(f"{tmp_path / 'cardd.yaml'}:2: calling_card.{key}: ")
    assert expected in message


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("listen", "8084", 'expected host:port such as "127.0.0.1:8084"'),
        ("listen", '"host:99999"', 'got "host:99999"'),
        ("log_level", "verbose", "expected one of debug, info, warning, error, critical"),
        ("log_format", "xml", "expected one of text, json"),
        ("dial_string", '"sofia/external/{num}"', "expected a dial string with {number}"),
        ("dial_string", '"sofia/a/{number}|sofia/b"', "expected a dial string with {number}"),
        ("dial_string", '"sofia/{number"', "expected a dial string"),
        ("esl_reply_timeout", "0", "expected a number of seconds above 0 to 600"),
        ("shutdown_grace", "-1", "got -1"),
        ("pool_size", "0", "from 1 to 1000"),
        ("data_dir", '""', "expected a path"),
    ],
)
def test_bad_daemon_values_name_key_and_expectation(tmp_path, key, value, expected):
    message = load_error(tmp_path, f"daemon:\n  {key}: {value}\n")
    assert message.startswith(f"{tmp_path / 'cardd.yaml'}:2: daemon.{key}: ")
    assert expected in message


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("- a\n- b\n", "expected a mapping with daemon, calling_card, instances, api at the top"),
        ("calling_card: 5\n", ":1: calling_card: expected a mapping of calling-card options, got 5"),
        ("instances: [cc]\n", ":1: instances: expected a mapping of instance names"),
        ("instances:\n  Cc: {}\n", "instances.Cc: expected a name matching [a-z][a-z0-9_-]*"),
        ("instances:\n  cc: 1\n", "instances.cc: expected a mapping of customer and calling_card options"),
        ("instances:\n  cc:\n    customer: ''\n", "instances.cc.customer: expected a customer name or id"),
        ("calling_card:\n  topup: true\n  topup: false\n", ":3: not valid YAML: duplicate key 'topup'"),
        ("calling_card: [\n", "not valid YAML"),
    ],
)
def test_structural_errors(tmp_path, text, fragment):
    assert fragment in load_error(tmp_path, text)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.yaml: cannot read: No such file or directory"):
        load_settings(str(tmp_path / "nope.yaml"))


@pytest.mark.parametrize(
    "text, fragment",
    [
        (
            "calling_card:\n  min_card_number_length: 12\n",
            ":2: calling_card.min_card_number_length: min_card_number_length 12 is more than card_number_length 10",
        ),
        (
            "calling_card:\n  min_card_number_length: 8\ninstances:\n  cc:\n    card_number_length: 6\n",
            ":5: instances.cc.card_number_length: min_card_number_length 8 is more than card_number_length 6",
        ),
        ("calling_card:\n  custom_greeting: true\n", "custom_greeting is true but custom_greeting_file is not set"),
        ("calling_card:\n  topup_only: true\n  topup: false\n", "topup_only needs topup: true"),
        (
            "calling_card:\n  topup_ext: '5'\n  hot_dial_ext: '5'\n",
            ":2: calling_card.topup_ext: hot_dial_ext and topup_ext are both '5'",
        ),
        (
            "instances:\n  cc:\n    own_accounts_only: true\n",
            "instances.cc.customer: own_accounts_only is true, so the instance needs a customer",
        ),
    ],
)
def test_contradicting_options_are_errors(tmp_path, text, fragment):
    assert fragment in load_error(tmp_path, text)


def test_instance_customer_is_kept_as_text(tmp_path):
    settings = load(tmp_path, "instances:\n  cc:\n    customer: 42\n    own_accounts_only: true\n")
    assert settings.instances["cc"]["customer"] == "42"
    assert settings.call_options("cc").customer == "42"


# --- precedence: defaults < calling_card < instances.<name> < CLD ------------------

PRECEDENCE_YAML = """\
calling_card:
  announce_balance: false
  max_call_duration: 1800
  languages: [fr]
instances:
  cc:
    announce_balance: true
    languages: [es, en]
  other: {}
"""


def test_default_applies_when_nobody_sets_it(tmp_path):
    call = load(tmp_path, PRECEDENCE_YAML).call_options("cc")
    assert call.options.card_number_length == 10 and call.sources["card_number_length"] == "default"


def test_calling_card_beats_default(tmp_path):
    call = load(tmp_path, PRECEDENCE_YAML).call_options("other")
    assert call.options.announce_balance is False and call.sources["announce_balance"] == "calling_card"
    assert call.options.max_call_duration == 1800
    assert call.languages == ["fr"]


def test_instance_beats_calling_card(tmp_path):
    call = load(tmp_path, PRECEDENCE_YAML).call_options("cc")
    assert call.options.announce_balance is True and call.sources["announce_balance"] == "instances.cc"
    assert call.options.max_call_duration == 1800 and call.sources["max_call_duration"] == "calling_card"
    assert call.languages == ["es", "en"]


def test_cld_beats_instance(tmp_path):
    call = load(tmp_path, PRECEDENCE_YAML).call_options("cc.nobalance.de.topupext5")
    assert call.options.announce_balance is False and call.sources["announce_balance"] == "CLD nobalance"
    assert call.languages == ["de"] and call.options.languages == ("de",)
    assert call.options.topup_ext == "5"
    assert call.known_instance and call.warnings == [] and call.unknown_tokens == []


def test_unknown_instance_gets_defaults_and_calling_card_with_a_warning(tmp_path):
    call = load(tmp_path, PRECEDENCE_YAML).call_options("nosuch.playbalance")
    assert call.known_instance is False and call.instance == "nosuch"
    assert call.options.max_call_duration == 1800 and call.options.announce_balance is True
    assert call.warnings == [f"instance 'nosuch' is not in {tmp_path / 'cardd.yaml'}: defaults + calling_card apply"]


def test_unknown_tokens_reach_the_caller(tmp_path):
    call = load(tmp_path, PRECEDENCE_YAML).call_options("cc.bogus.en.zzz")
    assert call.unknown_tokens == ["bogus", "zzz"] and call.languages == ["en"]


def test_malformed_cld_raises_config_error(tmp_path):
    with pytest.raises(ConfigError, match="token 1 is empty"):
        load(tmp_path, PRECEDENCE_YAML).call_options("cc..en")


def test_languages_fall_back_to_default_language():
    call = load_settings(None).call_options("cc")
    assert call.languages == ["en"] and call.sources["languages"] == "= [default_language]"


def test_balance_threshold_defaults_to_minimum_balance(tmp_path):
    settings = load(
        tmp_path, "calling_card:\n  minimum_balance: 2 USD\ninstances:\n  cc: {balance_threshold: '5'}\n  dd: {}\n"
    )
    assert settings.call_options("dd").options.balance_threshold == MinimumBalance(Decimal(2), "USD")
    assert settings.call_options("dd").sources["balance_threshold"] == "= minimum_balance"
    assert settings.call_options("cc").options.balance_threshold == MinimumBalance(Decimal(5))
    assert load_settings(None).call_options("cc").options.balance_threshold is None


def test_outbound_proxy_of_an_instance_beats_the_daemon_one(tmp_path):
    settings = load(
        tmp_path, "daemon:\n  outbound_proxy: main:5060\ninstances:\n  cc: {outbound_proxy: 'other:5080'}\n  dd: {}\n"
    )
    assert settings.call_options("cc").options.outbound_proxy == "other:5080"
    assert settings.call_options("dd").options.outbound_proxy == "main:5060"
    assert settings.call_options("dd").sources["outbound_proxy"] == "daemon.outbound_proxy"


def test_cld_extension_clash_is_a_warning_not_an_error(tmp_path):
    call = load(tmp_path, "instances:\n  cc: {topup_ext: '5'}\n").call_options("cc.chpassext5")
    assert call.warnings == ["password_change_ext and topup_ext are both '5'"]


# --- check-config and check-cld texts --------------------------------------------


def test_format_settings_shows_every_value_with_its_source(tmp_path):
    text = format_settings(load(tmp_path, PRECEDENCE_YAML))
    assert f"# effective cardd settings from {tmp_path / 'cardd.yaml'}" in text
    assert re.search(r"\n  announce_balance: false +# calling_card\n", text)
    assert re.search(r"\n  card_number_length: 10 +# default\n", text)
    assert "\n  cc:\n    announce_balance: true\n    languages: [es, en]\n" in text
    assert "\n  other: {}" in text
    for option in OPTIONS:
        assert f"\n  {option.name}: " in text


def test_format_settings_is_yaml_that_loads_back_to_the_same_settings(tmp_path):
    first = load(
        tmp_path,
        PRECEDENCE_YAML.replace("  other: {}", "    customer: acme\n  other: {}") + "daemon:\n  pool_size: 3\n",
    )
    again = load_settings(write(tmp_path, format_settings(first), "effective.yaml"))
    assert again.daemon == first.daemon
    for cld in ("cc", "other", "nosuch.en"):
        assert again.call_options(cld).options == first.call_options(cld).options
    assert again.instances["cc"]["customer"] == "acme"


def test_describe_cld_explains_every_token_and_the_result(tmp_path):
    text = describe_cld(load(tmp_path, PRECEDENCE_YAML), "cc.en.es.noplaybalance.topupext5.bogus")
    assert text.startswith(
        f"CLD: cc.en.es.noplaybalance.topupext5.bogus\ninstance: cc (instances.cc in {tmp_path / 'cardd.yaml'})\n"
    )
    assert "\n  noplaybalance  announce_balance = false\n" in text
    assert "\n  bogus          unknown token, ignored\n" in text
    assert "\nlanguages: en, es\n" in text
    assert "\nunknown tokens (logged and counted on every call): bogus\n" in text
    assert re.search(r"\n  topup_ext: \"5\" +# CLD topupext5\n", text)
    assert re.search(r"\n  max_call_duration: 1800 +# calling_card\n", text)


def test_describe_cld_says_when_the_instance_is_not_configured():
    text = describe_cld(load_settings(None), "zz")
    assert "instance: zz (not configured: defaults + calling_card, with a warning)" in text
    assert "tokens: none" in text


def test_format_settings_round_trips_every_option(tmp_path):
    body = "".join(f"  {name}: {text}\n" for name, (text, _) in SAMPLES.items())
    nested = body.replace("\n  ", "\n    ").replace("  ", "    ", 1)
    first = load(tmp_path, "calling_card:\n" + body + "instances:\n  cc:\n    customer: acme\n" + nested)
    again = load_settings(write(tmp_path, format_settings(first), "effective.yaml"))
    assert again.call_options("cc").options == first.call_options("cc").options
    assert again.call_options("zz").options == first.call_options("zz").options


def test_pick_languages_skips_those_without_prompts_and_never_leaves_none():
    settings = load_settings(None)
    call = settings.call_options("cc.fr.es.de")
    assert call.pick_languages(lambda lang: lang != "es") == (["fr", "de"], ["es"])
    assert call.pick_languages(lambda lang: False) == (["en"], ["fr", "es", "de"])


@pytest.mark.parametrize(
    "dsn, shown",
    [
        ("postgresql://cardd:s3cret@db:5432/cardd", "postgresql://cardd:***@db:5432/cardd"),
        ("host=db user=cardd password=s3cret dbname=cardd", "host=db user=cardd password=*** dbname=cardd"),
        ("host=db password = 'a b\\'c' dbname=x", "host=db password = *** dbname=x"),
        ("postgresql://cardd@db/cardd", "postgresql://cardd@db/cardd"),
    ],
)
def test_format_settings_never_prints_passwords(tmp_path, dsn, shown):
    settings = load_settings(None).with_daemon(
        dsn=dsn, inbound_esl_password="hunter2", cdr_credentials="freeswitch:s3cr3t-cdr"
    )
    text = format_settings(settings)
    assert f"  dsn: {json.dumps(shown)}" in text
    assert "hunter2" not in text and 'inbound_esl_password: "***"' in text
    assert "s3cr3t-cdr" not in text and "freeswitch:***" in text
