"""The calling-card options: ONE table, and everything derived from it.

Every option of CALLING_CARD_OPTIONS.md is declared once in `OPTIONS` (name =
the cardd.yaml key under `calling_card:`, value type, default, one-line help,
CLD tokens). The daemon's own settings are declared the same way in
`DAEMON_OPTIONS`, the HTTP API's in `API_OPTIONS`. From these tables come:

- `CardOptions`, `DaemonSettings` and `ApiSettings`, frozen dataclasses with one
  attribute per option, written out (a test checks them against the tables);
- config loading and its error messages (cardd.config);
- CLD token parsing, `cardd.cld.parse_cld` (grammar and synonyms: DESIGN.md "Decisions");
- cardd.yaml itself, `cardd.option_docs.render_yaml()` (`python -m cardd.options > cardd.yaml`;
  a test proves the committed file is exactly that);
- the Markdown option reference, `cardd.option_docs.render_docs()` (`python -m cardd.options --docs`).

The value types (`IntKind`, `MoneyKind`, ...) live in cardd.option_kinds.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from cardd.errors import BadValue, show_value
from cardd.option_kinds import (
    BoolKind,
    ChoiceKind,
    DialStringKind,
    DigitsKind,
    HostPortKind,
    IntKind,
    Kind,
    LanguageKind,
    LanguagesKind,
    MinimumBalance,
    MoneyKind,
    NetworksKind,
    PathKind,
    RegexKind,
    SecondsKind,
    StrKind,
    SwitchAddressesKind,
    TranslationKind,
    TranslationRule,
    translate,
)

__all__ = [
    "API_OPTIONS",
    "API_OPTIONS_BY_NAME",
    "ApiSettings",
    "BadValue",
    "CardOptions",
    "DAEMON_OPTIONS",
    "DAEMON_OPTIONS_BY_NAME",
    "DaemonSettings",
    "Kind",
    "MinimumBalance",
    "OPTIONS",
    "OPTIONS_BY_NAME",
    "Option",
    "SECTIONS",
    "TranslationRule",
    "show_value",
    "translate",
    # the value types the tables are written with (cardd.option_kinds)
    "BoolKind",
    "ChoiceKind",
    "DialStringKind",
    "DigitsKind",
    "HostPortKind",
    "IntKind",
    "LanguageKind",
    "LanguagesKind",
    "MoneyKind",
    "NetworksKind",
    "PathKind",
    "RegexKind",
    "SecondsKind",
    "StrKind",
    "SwitchAddressesKind",
    "TranslationKind",
]


# --- the tables ----------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One setting: its cardd.yaml key, value type, default, help and CLD tokens.

    cld_on / cld_off are flag tokens setting a bool option to true / false
    (synonyms are simply more tokens); cld_value_prefix is a token taking a
    value (`topupext` + `5`). `section` groups options in cardd.yaml as in the spec.
    """

    name: str
    type: Kind
    default: Any
    help: str
    section: str
    cld_on: tuple[str, ...] = ()
    cld_off: tuple[str, ...] = ()
    cld_value_prefix: str | None = None

    @property
    def tokens(self) -> tuple[str, ...]:
        """Every CLD token of this option, for docs (`<prefix><value>` for value tokens)."""
        extra = (f"{self.cld_value_prefix}<value>",) if self.cld_value_prefix else ()
        return self.cld_on + self.cld_off + extra


BOOL = BoolKind()
COUNT = IntKind(1, 20)
DIGITS = IntKind(1, 32, "digits")
EXTENSION = DigitsKind()
PROMPT_ID = IntKind(1, 2**31 - 1, "ivr_prompts id", optional=True)
SCRIPT = PathKind(optional=True)

BASIC = "Basic"
TRUSTED_CLI = "Trusted CLI"
PASSWORD = "Password change"
BILLING = "Billing"
SCRIPTS = "Custom scripts"
HOT_DIAL = "Hot dial and smart dial"
TOPUP = "Top-up"
BLACKLIST = "Black list"
PROMPTS = "Prompts and languages"
TRANSLATION = "Number translation"
SECTIONS = (BASIC, TRUSTED_CLI, PASSWORD, BILLING, SCRIPTS, HOT_DIAL, TOPUP, BLACKLIST, PROMPTS, TRANSLATION)

O = Option  # noqa: E741 (a one-letter alias keeps each option one row of the table)
OPTIONS: tuple[Option, ...] = (
    # Basic
    O(
        "announce_balance",
        BOOL,
        True,
        "say the balance after a successful identification",
        BASIC,
        cld_on=("playbalance",),
        cld_off=("noplaybalance", "nobalance"),
    ),
    O(
        "normal_calls_allowed",
        BOOL,
        True,
        "if false only service codes (menu extensions) work",
        BASIC,
        cld_off=("nodial",),
    ),
    O(
        "disconnect_on_failure",
        BOOL,
        False,
        "end the session after a failed call attempt; else say it failed and ask again",
        BASIC,
    ),
    O("allow_empty_pin", BOOL, True, "accounts with an empty PIN may be used", BASIC),
    O(
        "preserve_original_cli",
        BOOL,
        False,
        "call out with the caller's CLI instead of the card's username",
        BASIC,
        cld_on=("keepcli",),
        cld_off=("nokeepcli",),
    ),
    O("max_call_duration", IntKind(1, 86400, "seconds"), 3600, "cap of any call, seconds", BASIC),
    O("card_number_length", DIGITS, 10, "most digits in a card number", BASIC),
    O(
        "min_card_number_length",
        IntKind(1, 32, "digits", optional=True),
        None,
        "fewest digits in a card number (null: no minimum)",
        BASIC,
    ),
    O("card_entry_attempts", COUNT, 3, "tries to enter card number or PIN", BASIC),
    O("wrong_destinations", COUNT, 3, "failed call attempts in a row before the session ends", BASIC),
    O("input_timeouts", COUNT, 3, "input time-outs before the session ends", BASIC),
    O(
        "min_call_duration",
        IntKind(0, 86400, "seconds"),
        10,
        'if the computed max duration is below this (seconds), say "insufficient funds"',
        BASIC,
    ),
    O(
        "no_seconds_in_duration",
        BOOL,
        False,
        "do not say seconds when announcing a duration (ignored under a minute)",
        BASIC,
    ),
    O("no_hours_in_duration", BOOL, False, "say minutes only, never hours", BASIC),
    O(
        "announce_duration",
        BOOL,
        True,
        "say the max duration before dialling",
        BASIC,
        cld_off=("noplayduration", "noduration"),
    ),
    O("call_several_destinations", BOOL, True, "more than one call attempt per session", BASIC, cld_off=("noredial",)),
    O(
        "outbound_proxy",
        HostPortKind(allow_empty=True, port_optional=True),
        "",
        'where this instance\'s outbound calls go, host:port ("": daemon.outbound_proxy)',
        BASIC,
    ),
    O(
        "disconnect_warning_time",
        IntKind(0, 3600, "seconds"),
        60,
        "seconds before the forced hangup at which the disconnect warning plays (0: none)",
        BASIC,
    ),
    O(
        "play_plan_minutes_only",
        BOOL,
        False,
        "announce service-plan minutes only (the real limit stays plan minutes + tariff duration)",
        BASIC,
        cld_on=("planminutes",),
    ),
    O(
        "destination_completion_regex",
        RegexKind(optional=True),
        None,
        "treat the destination as complete as soon as the digits match it (null: wait for # or time-out)",
        BASIC,
    ),
    O("own_accounts_only", BOOL, False, "only accounts of the customer who owns this instance may use it", BASIC),
    O("early_media", BOOL, False, "keep early media until the destination answers", BASIC, cld_on=("earlymedia",)),
    # Beyond the reference product (issue 13): what callers of other platforms expect to hear
    O(
        "announce_rate",
        BOOL,
        False,
        "before dialling say the destination's price per minute (first interval), in the card's currency",
        BASIC,
        cld_on=("playrate",),
        cld_off=("noplayrate",),
    ),
    O(
        "announce_balance_after_call",
        BOOL,
        False,
        "after an answered call, back at the destination prompt, say the new balance",
        BASIC,
        cld_on=("playbalanceaftercall",),
        cld_off=("noplaybalanceaftercall",),
    ),
    # Trusted CLI
    O("cli_registration", BOOL, True, "CLI registration sub-application enabled", TRUSTED_CLI, cld_off=("noclireg",)),
    O(
        "cli_registration_ext",
        EXTENSION,
        None,
        "menu extension of CLI registration (null: none)",
        TRUSTED_CLI,
        cld_value_prefix="cliregext",
    ),
    O(
        "auto_cli_registration",
        BOOL,
        False,
        "after a card is entered, add the caller's CLI to its trusted CLIs",
        TRUSTED_CLI,
    ),
    O("silent_auto_cli_registration", BOOL, True, "if false, ask the caller before registering", TRUSTED_CLI),
    O("trusted_cli_auth", BOOL, False, "a CLI mapping is trusted: no PIN asked", TRUSTED_CLI, cld_on=("trustcli",)),
    O("min_valid_cli_length", DIGITS, 6, "shortest CLI that auto-registration accepts", TRUSTED_CLI),
    O(
        "cli_auth_only",
        BOOL,
        False,
        "only callers with a CLI mapping get in (exit at once if no mapping)",
        TRUSTED_CLI,
        cld_on=("nocardenter", "climaponly"),
    ),
    O(
        "cli_as_card_number",
        BOOL,
        False,
        "try the CLI as the card number first",
        TRUSTED_CLI,
        cld_on=("trycliauth", "cliauth"),
        cld_off=("nocliauth",),
    ),
    O("voip_login_as_card_number", BOOL, False, "look the card up by authname instead of username", TRUSTED_CLI),
    # Password change
    O("password_change", BOOL, True, "password change sub-application enabled", PASSWORD, cld_off=("nochpass",)),
    O(
        "password_change_ext",
        EXTENSION,
        None,
        "menu extension of password change (null: none)",
        PASSWORD,
        cld_value_prefix="chpassext",
    ),
    # Billing
    O(
        "balance_threshold",
        MoneyKind(optional=True),
        None,
        "below it the card number is asked even after a CLI authentication (null: = minimum_balance)",
        BILLING,
    ),
    O(
        "minimum_balance",
        MoneyKind(optional=True),
        None,
        'below it the card is unusable; "2 USD" applies to USD cards only, a bare 2 to any (null: none)',
        BILLING,
    ),
    O("ignore_connect_fee", BOOL, False, "leave the connect fee out of the duration computation", BILLING),
    O(
        "route_at_a_loss",
        BOOL,
        False,
        "carriers whose first minute costs more than the tariff's may carry calls (else they are skipped)",
        BILLING,
    ),
    O("say_negative_balance_as_zero", BOOL, True, 'say "zero" for a negative balance, else "minus N"', BILLING),
    O("say_no_card_on_low_balance", BOOL, True, 'say "wrong card number" instead of "no balance left"', BILLING),
    # Custom scripts
    O(
        "destination_check_script",
        SCRIPT,
        None,
        "Python file: check_destination or checkDestination(cli, translated_cli, cld, translated_cld, username,"
        " original_cli)",
        SCRIPTS,
    ),
    O(
        "duration_script",
        SCRIPT,
        None,
        "program printing the duration to announce (only the announcement changes; null: none)",
        SCRIPTS,
    ),
    # Hot dial and smart dial
    O(
        "direct_hot_dial",
        BOOL,
        False,
        "single-digit destinations from the main menu are hot-dial keys",
        HOT_DIAL,
        cld_on=("directhotdial",),
    ),
    O("hot_dial", BOOL, True, "hot dial sub-application (dial and edit) enabled", HOT_DIAL, cld_off=("nohotdial",)),
    O(
        "hot_dial_ext",
        EXTENSION,
        None,
        "menu extension of hot dial (null: none)",
        HOT_DIAL,
        cld_value_prefix="hotdialext",
    ),
    O(
        "hot_dial_edit_ext",
        EXTENSION,
        None,
        "menu extension of hot dial edit (null: none)",
        HOT_DIAL,
        cld_value_prefix="hotdialeditext",
    ),
    O("limit_hot_keys", BOOL, False, "only keys 1, 2, 3 may be hot-dial keys", HOT_DIAL),
    O(
        "direct_hot_dial_any_key",
        BOOL,
        False,
        "under direct_hot_dial every single digit is a hot key (else only 1, 2, 3, as in the reference)",
        HOT_DIAL,
    ),
    O(
        "smart_dial_exclusive",
        BOOL,
        False,
        "a smart-dial DID belongs to one account (else shared, resolved by CLI)",
        HOT_DIAL,
    ),
    # Top-up
    O("topup", BOOL, True, "top-up sub-application enabled", TOPUP, cld_off=("notopup",)),
    O("topup_card_length", DIGITS, 10, "most digits of a top-up (voucher) number", TOPUP),
    O("topup_ext", EXTENSION, None, "menu extension of top-up (null: none)", TOPUP, cld_value_prefix="topupext"),
    O("topup_only", BOOL, False, "the instance runs the top-up sub-application only", TOPUP, cld_on=("topup",)),
    # Black list
    O("blacklist", BOOL, False, "black list enabled", BLACKLIST),
    O(
        "blacklist_attempts",
        IntKind(1, 100),
        3,
        "wrong card numbers in a row that blacklist the caller's CLI (entries under 4 digits never count)",
        BLACKLIST,
    ),
    # Prompts and languages
    O(
        "use_word_pin",
        BOOL,
        False,
        'say "PIN" instead of "card number" everywhere; the separate password check is off',
        PROMPTS,
    ),
    O("suppress_pound_phrase", BOOL, False, 'leave out "followed by the pound key"', PROMPTS),
    O("custom_greeting", BOOL, False, "play custom_greeting_file before the language menu", PROMPTS),
    O(
        "custom_greeting_file",
        PathKind(optional=True),
        None,
        "language-independent greeting file (path as FreeSWITCH sees it; null: none)",
        PROMPTS,
    ),
    O(
        "early_greeting_prompt",
        PROMPT_ID,
        None,
        "ivr_prompts id played before the language menu (not localised)",
        PROMPTS,
        cld_value_prefix="greet",
    ),
    O(
        "late_greeting_prompt",
        PROMPT_ID,
        None,
        "ivr_prompts id played after the language menu (localised)",
        PROMPTS,
        cld_value_prefix="lgreet",
    ),
    O(
        "languages",
        LanguagesKind(),
        (),
        "language menu, in order ([]: default_language only); two-letter CLD tokens replace it",
        PROMPTS,
    ),
    O("default_language", LanguageKind(), "en", "fallback language", PROMPTS),
    O(
        "fallback_to_default_language",
        BOOL,
        False,
        "after the wrong-attempt limit in the language menu, continue in the default language",
        PROMPTS,
    ),
    # Number translation (DESIGN.md operator expectations; not in the reference option list)
    O(
        "cli_translation",
        TranslationKind(),
        (),
        'CLI rewrite rules applied before rating and dialling, e.g. [{match: "^0", replace: "44"}]',
        TRANSLATION,
    ),
    O(
        "cld_translation",
        TranslationKind(),
        (),
        'destination rewrite rules applied before rating and dialling, e.g. [{match: "^00", replace: ""}]',
        TRANSLATION,
    ),
)

DAEMON = "daemon"
DAEMON_OPTIONS: tuple[Option, ...] = (
    O("listen", HostPortKind(), "127.0.0.1:8084", "ESL address FreeSWITCH's socket app connects to", DAEMON),
    O("dsn", StrKind(), "", 'PostgreSQL DSN ("": embedded PostgreSQL under data_dir)', DAEMON),
    O("data_dir", PathKind(), "var", "data directory (relative to this file)", DAEMON),
    O("metrics_listen", HostPortKind(), "127.0.0.1:9108", "Prometheus exporter address", DAEMON),
    O("log_level", ChoiceKind("debug", "info", "warning", "error", "critical"), "info", "log level", DAEMON),
    O("log_format", ChoiceKind("text", "json"), "text", "log line format", DAEMON),
    O(
        "sounds_dir",
        PathKind(allow_empty=True),
        "",
        'prompt audio, as FreeSWITCH sees it too ("": the prompts installed with cardd)',
        DAEMON,
    ),
    O(
        "outbound_proxy",
        HostPortKind(allow_empty=True, port_optional=True),
        "",
        "where outbound calls go, host:port (required for calls; also a command-line flag)",
        DAEMON,
    ),
    O(
        "dial_string",
        DialStringKind(),
        "sofia/external/{number}@{proxy}",
        "outbound dial string: {number} and {proxy} placeholders, | for failover",
        DAEMON,
    ),
    O("shutdown_grace", SecondsKind(0, 86400), 30.0, "seconds calls may finish after SIGTERM", DAEMON),
    O("esl_reply_timeout", SecondsKind(0, 600, lo_open=True), 10.0, "seconds to wait for a FreeSWITCH reply", DAEMON),
    O(
        "reservation_margin",
        IntKind(0, 86400, "seconds"),
        120,
        "seconds a reservation outlives its granted duration before the orphan check",
        DAEMON,
    ),
    O("pool_size", IntKind(1, 1000), 10, "database connections in the pool", DAEMON),
    O("inbound_esl", HostPortKind(), "127.0.0.1:8021", "FreeSWITCH's inbound ESL address (orphan checks)", DAEMON),
    O("inbound_esl_password", StrKind(), "ClueCon", "FreeSWITCH's inbound ESL password", DAEMON),
    O(
        "cdr_listen",
        HostPortKind(allow_empty=True),
        "127.0.0.1:8085",
        'HTTP address mod_json_cdr POSTs FreeSWITCH\'s CDRs to (orphan settlements; "": off)',
        DAEMON,
    ),
    O(
        "orphan_check_interval",
        SecondsKind(0, 86400, lo_open=True),
        60.0,
        "seconds between checks of reservations past their expiry",
        DAEMON,
    ),
    # Issue 12: who may post CDRs, which processes are alive, bounded HTTP listeners
    O(
        "cdr_credentials",
        StrKind(r"([^:\s]+:\S+)?", 'user:password, or ""'),
        "",
        'user:password mod_json_cdr must send (json_cdr.conf.xml\'s cred; "": every CDR refused)',
        DAEMON,
    ),
    O(
        "cdr_allowed_sources",
        NetworksKind(),
        (),
        "addresses or networks CDRs may come from ([]: any; credentials are checked either way)",
        DAEMON,
    ),
    O(
        "inbound_esl_boxes",
        SwitchAddressesKind(),
        (),
        "more FreeSWITCH boxes the orphan rule may ask, by switchname (same password; {}: inbound_esl only)",
        DAEMON,
    ),
    O(
        "node_heartbeat_interval",
        SecondsKind(0, 3600, lo_open=True),
        10.0,
        "seconds between this process's heartbeats; 3 missed and its calls are orphans to the others",
        DAEMON,
    ),
    O(
        "http_read_timeout",
        SecondsKind(0, 600, lo_open=True),
        10.0,
        "seconds the CDR and metrics listeners wait for a request's head, then again for its body",
        DAEMON,
    ),
    O(
        "http_max_connections",
        IntKind(1, 100000),
        64,
        "open connections per HTTP listener (CDR, metrics); one more is answered 503 and closed",
        DAEMON,
    ),
    # Security (issue 12; README "Security")
    O(
        "pin_key_file",
        PathKind(allow_empty=True),
        "",
        'secret key of the PIN hashes, mode 0600, the same file on every cardd host ("": pin.key under data_dir)',
        DAEMON,
    ),
    O("pin_throttle_window", IntKind(1, 86400, "seconds"), 900, "sliding window of the PIN limits below", DAEMON),
    O(
        "pin_failures_per_cli",
        IntKind(1, 100000),
        10,
        "wrong PINs and card numbers one CLI may try per window (each checked and counted under one lock)",
        DAEMON,
    ),
    O(
        "pin_failures_per_card",
        IntKind(1, 1000),
        5,
        "wrong PINs one card may take per window, from every CLI together",
        DAEMON,
    ),
    O("topup_throttle_window", IntKind(1, 86400, "seconds"), 3600, "sliding window of the top-up limits below", DAEMON),
    O(
        "topup_failures_per_cli",
        IntKind(1, 100000),
        5,
        "failed top-ups (unknown, used, expired, other currency) one CLI may try per window",
        DAEMON,
    ),
    O("topup_failures_per_card", IntKind(1, 100000), 5, "failed top-ups one card may try per window", DAEMON),
    O(
        "topup_failures_service",
        IntKind(1, 10000000),
        100,
        "failed top-ups all callers together may try per window (bounds voucher guessing)",
        DAEMON,
    ),
)

API = "api"
# `cardd api` (issue 15): the HTTP JSON API, a process of its own on the daemon's database.
API_OPTIONS: tuple[Option, ...] = (
    O(
        "listen",
        HostPortKind(),
        "127.0.0.1:8086",
        "HTTP address of the API (plain HTTP: put a TLS-terminating proxy in front of anything but localhost)",
        API,
    ),
    O(
        "max_body_bytes",
        IntKind(1024, 100 * 2**20, "bytes"),
        1048576,
        "largest request body (a rates CSV: max_upload_bytes); a larger one is answered 413",
        API,
    ),
    O(
        "max_upload_bytes",
        IntKind(1024, 2**30, "bytes"),
        134217728,
        "largest rates CSV uploaded (API import or web console; about a million rows), streamed to a temp file",
        API,
    ),
    O(
        "request_timeout",
        SecondsKind(0, 600, lo_open=True),
        30.0,
        "seconds a request may take; a slower one is answered 503",
        API,
    ),
    O(
        "max_connections",
        IntKind(1, 100000),
        256,
        "connections served at once; one more is answered 503 and closed",
        API,
    ),
    O(
        "session_lifetime",
        IntKind(60, 2592000, "seconds"),
        3600,
        "how long a card holder's sign-in (card number + PIN) lasts",
        API,
    ),
)
del O

OPTIONS_BY_NAME: Mapping[str, Option] = MappingProxyType({o.name: o for o in OPTIONS})
DAEMON_OPTIONS_BY_NAME: Mapping[str, Option] = MappingProxyType({o.name: o for o in DAEMON_OPTIONS})
API_OPTIONS_BY_NAME: Mapping[str, Option] = MappingProxyType({o.name: o for o in API_OPTIONS})


# CardOptions, DaemonSettings and ApiSettings are written out, not made from the tables, so that
# mypy and a reader see every attribute (a misspelt option is a type error, not an
# AttributeError inside a live call). tests/test_options.py checks that their fields
# (names, types, defaults, order) are exactly OPTIONS, DAEMON_OPTIONS and API_OPTIONS:
# adding an option means adding its line here too.


@dataclass(frozen=True)
class CardOptions:
    """The calling-card options of one call, one attribute per entry of OPTIONS.

    Built by cardd.config.Settings.call_options, where balance_threshold (when unset),
    outbound_proxy (when empty) and languages (when empty) are already resolved.
    """

    # Basic
    announce_balance: bool = True
    normal_calls_allowed: bool = True
    disconnect_on_failure: bool = False
    allow_empty_pin: bool = True
    preserve_original_cli: bool = False
    max_call_duration: int = 3600
    card_number_length: int = 10
    min_card_number_length: int | None = None
    card_entry_attempts: int = 3
    wrong_destinations: int = 3
    input_timeouts: int = 3
    min_call_duration: int = 10
    no_seconds_in_duration: bool = False
    no_hours_in_duration: bool = False
    announce_duration: bool = True
    call_several_destinations: bool = True
    outbound_proxy: str = ""
    disconnect_warning_time: int = 60
    play_plan_minutes_only: bool = False
    destination_completion_regex: re.Pattern[str] | None = None
    own_accounts_only: bool = False
    early_media: bool = False
    announce_rate: bool = False
    announce_balance_after_call: bool = False
    # Trusted CLI
    cli_registration: bool = True
    cli_registration_ext: str | None = None
    auto_cli_registration: bool = False
    silent_auto_cli_registration: bool = True
    trusted_cli_auth: bool = False
    min_valid_cli_length: int = 6
    cli_auth_only: bool = False
    cli_as_card_number: bool = False
    voip_login_as_card_number: bool = False
    # Password change
    password_change: bool = True
    password_change_ext: str | None = None
    # Billing
    balance_threshold: MinimumBalance | None = None
    minimum_balance: MinimumBalance | None = None
    ignore_connect_fee: bool = False
    route_at_a_loss: bool = False
    say_negative_balance_as_zero: bool = True
    say_no_card_on_low_balance: bool = True
    # Custom scripts
    destination_check_script: str | None = None
    duration_script: str | None = None
    # Hot dial and smart dial
    direct_hot_dial: bool = False
    hot_dial: bool = True
    hot_dial_ext: str | None = None
    hot_dial_edit_ext: str | None = None
    limit_hot_keys: bool = False
    direct_hot_dial_any_key: bool = False
    smart_dial_exclusive: bool = False
    # Top-up
    topup: bool = True
    topup_card_length: int = 10
    topup_ext: str | None = None
    topup_only: bool = False
    # Black list
    blacklist: bool = False
    blacklist_attempts: int = 3
    # Prompts and languages
    use_word_pin: bool = False
    suppress_pound_phrase: bool = False
    custom_greeting: bool = False
    custom_greeting_file: str | None = None
    early_greeting_prompt: int | None = None
    late_greeting_prompt: int | None = None
    languages: tuple[str, ...] = ()
    default_language: str = "en"
    fallback_to_default_language: bool = False
    # Number translation
    cli_translation: tuple[TranslationRule, ...] = ()
    cld_translation: tuple[TranslationRule, ...] = ()


@dataclass(frozen=True)
class DaemonSettings:
    """The `daemon:` section of cardd.yaml, one attribute per entry of DAEMON_OPTIONS;
    data_dir and sounds_dir are absolute after cardd.config.load_settings."""

    listen: str = "127.0.0.1:8084"
    dsn: str = ""
    data_dir: str = "var"
    metrics_listen: str = "127.0.0.1:9108"
    log_level: str = "info"
    log_format: str = "text"
    sounds_dir: str = ""
    outbound_proxy: str = ""
    dial_string: str = "sofia/external/{number}@{proxy}"
    shutdown_grace: float = 30.0
    esl_reply_timeout: float = 10.0
    reservation_margin: int = 120
    pool_size: int = 10
    inbound_esl: str = "127.0.0.1:8021"
    inbound_esl_password: str = "ClueCon"
    cdr_listen: str = "127.0.0.1:8085"
    orphan_check_interval: float = 60.0
    cdr_credentials: str = ""
    cdr_allowed_sources: tuple[str, ...] = ()
    inbound_esl_boxes: tuple[tuple[str, str], ...] = ()
    node_heartbeat_interval: float = 10.0
    http_read_timeout: float = 10.0
    http_max_connections: int = 64
    pin_key_file: str = ""
    pin_throttle_window: int = 900
    pin_failures_per_cli: int = 10
    pin_failures_per_card: int = 5
    topup_throttle_window: int = 3600
    topup_failures_per_cli: int = 5
    topup_failures_per_card: int = 5
    topup_failures_service: int = 100


@dataclass(frozen=True)
class ApiSettings:
    """The `api:` section of cardd.yaml (`cardd api`), one attribute per entry of API_OPTIONS."""

    listen: str = "127.0.0.1:8086"
    max_body_bytes: int = 1048576
    max_upload_bytes: int = 134217728
    request_timeout: float = 30.0
    max_connections: int = 256
    session_lifetime: int = 3600


if __name__ == "__main__":
    from cardd.option_docs import main  # `python -m cardd.options > cardd.yaml`

    main(sys.argv[1:])
