"""cardd.yaml -> typed settings, and the options of one call.

The file has three sections, each checked against the tables of cardd.options:
`daemon:` (DAEMON_OPTIONS), `calling_card:` (OPTIONS) and `instances:`
(`<name>: {customer: ..., <any calling_card option>}`). An unknown key, a wrong
type or a bad value is a ConfigError naming the file, the line, the key path
and what was expected; nothing is silently ignored.

The options of a call come from four layers, lowest first (DESIGN.md):
built-in defaults < calling_card < instances.<name> < CLD tokens.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from cardd import installed_dir
from cardd.cld import FLAG_TOKENS, INSTANCE_NAME, CldTokens, parse_cld
from cardd.errors import ConfigError
from cardd.options import (
    API_OPTIONS,
    API_OPTIONS_BY_NAME,
    DAEMON_OPTIONS,
    DAEMON_OPTIONS_BY_NAME,
    OPTIONS,
    OPTIONS_BY_NAME,
    ApiSettings,
    BadValue,
    CardOptions,
    DaemonSettings,
    Option,
    show_value,
)

log = logging.getLogger(__name__)

__all__ = [
    "CallOptions",
    "DaemonSettings",
    "Settings",
    "describe_cld",
    "format_settings",
    "load_settings",
    "REPO_SOUNDS_DIR",
    "INSTALLED_SOUNDS_DIR",
    "SYSTEM_CONFIG",
    "find_config",
]

TOP_LEVEL_KEYS = ("daemon", "calling_card", "instances", "api")
INSTANCE_ONLY_KEYS = ("customer",)
# The prompts installed with cardd (the checkout's sounds/, mapped into the
# package by setup.cfg): the default daemon.sounds_dir.
INSTALLED_SOUNDS_DIR = str(installed_dir("cardd.sounds"))
REPO_SOUNDS_DIR = INSTALLED_SOUNDS_DIR  # the same directory in a checkout's editable install
# Where a daemon looks when neither -c nor ./cardd.yaml names a file.
SYSTEM_CONFIG = "/etc/cardd/cardd.yaml"
_EXTENSION_OPTIONS = ("cli_registration_ext", "password_change_ext", "hot_dial_ext", "hot_dial_edit_ext", "topup_ext")
_BUILT_IN = "<built-in defaults>"


# --- YAML ----------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """Safe YAML, except that floats load as Decimal (money is never float) and duplicate keys are errors."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int)):
                continue  # unhashable or odd keys are reported later, as unknown keys
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _construct_decimal(loader: _Loader, node: yaml.ScalarNode) -> Decimal | str:
    text = str(loader.construct_scalar(node)).replace("_", "")
    special = {".inf": "Infinity", "+.inf": "Infinity", "-.inf": "-Infinity", ".nan": "NaN"}
    try:
        return Decimal(special.get(text.lower(), text))
    except InvalidOperation:
        # A YAML 1.1 base-60 float (1:30.5): no option takes one; let the option say what it expects.
        return text


_Loader.add_constructor("tag:yaml.org,2002:float", _construct_decimal)


def _key_lines(node: yaml.Node | None, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], int]:
    """Key path -> 1-based line number, so errors can point into the file."""
    lines: dict[tuple[str, ...], int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                path = prefix + (str(key_node.value),)
                lines.setdefault(path, key_node.start_mark.line + 1)
                lines.update(_key_lines(value_node, path))
    return lines


class _Where:
    """Builds ConfigErrors that name the file, the line and the key path."""

    def __init__(self, path: str | None, lines: Mapping[tuple[str, ...], int] | None = None):
        self.file = path if path is not None else _BUILT_IN
        self.lines = lines or {}

    def error(self, keypath: tuple[str, ...], problem: str) -> ConfigError:
        line = None
        for n in range(len(keypath), 0, -1):
            line = self.lines.get(keypath[:n])
            if line is not None:
                break
        location = f"{self.file}:{line}" if line else self.file
        return ConfigError(f"{location}: {'.'.join(keypath)}: {problem}")


def _unknown_key(key: str, known: list[str], section: str) -> str:
    problem = f"unknown key {key!r}"
    if section != "daemon" and key in FLAG_TOKENS:
        option, value = FLAG_TOKENS[key]
        hint = f"{option.name}: {'true' if value else 'false'}"
        return f"{problem}; {key!r} is a CLD token, the cardd.yaml setting is `{hint}`"
    if section in ("calling_card", "daemon") and key in INSTANCE_ONLY_KEYS:
        return f"{problem}; {key!r} belongs under instances.<name>:"
    if section != "daemon" and key in DAEMON_OPTIONS_BY_NAME and key not in OPTIONS_BY_NAME:
        return f"{problem}; {key!r} belongs under daemon:"
    if section == "daemon" and key in OPTIONS_BY_NAME and key not in DAEMON_OPTIONS_BY_NAME:
        return f"{problem}; {key!r} belongs under calling_card: (or an instance)"
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"{problem}; did you mean {close[0]!r}?"
    if len(known) <= 8:
        return f"{problem}; expected one of: {', '.join(known)}"
    return f"{problem}; see cardd.yaml for every key"


def _section(raw: Any, keypath: tuple[str, ...], where: _Where, what: str) -> dict[Any, Any]:
    """A section must be a mapping; an empty one (`calling_card:` alone) is null in YAML."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise where.error(keypath, f"expected {what}, got {show_value(raw)}")
    return raw


def _convert(option: Option, raw: Any, keypath: tuple[str, ...], where: _Where, base_dir: str | None) -> Any:
    try:
        return option.type.convert(raw, base_dir)
    except BadValue as exc:
        raise where.error(keypath, str(exc)) from None


def _options_section(
    raw: dict[Any, Any], prefix: tuple[str, ...], where: _Where, base_dir: str | None, extra_keys: tuple[str, ...] = ()
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    known = [o.name for o in OPTIONS] + list(extra_keys)
    for key, raw_value in raw.items():
        key = str(key)
        if key in extra_keys:
            continue
        option = OPTIONS_BY_NAME.get(key)
        if option is None:
            raise where.error(prefix + (key,), _unknown_key(key, known, prefix[0]))
        values[key] = _convert(option, raw_value, prefix + (key,), where, base_dir)
    return values


# --- settings ------------------------------------------------------------------


@dataclass(frozen=True)
class CallOptions:
    """The options of one call: `Settings.call_options(cld)`.

    options: every calling-card option, resolved (balance_threshold defaults to
      minimum_balance, an empty outbound_proxy to daemon.outbound_proxy, empty
      languages to [default_language]).
    languages: the language menu in order (the CLD's, else the instance's, else
      [default_language]); the caller skips those without prompts, with a warning.
    unknown_tokens: CLD tokens nobody knows; the caller logs and counts them.
    known_instance: False when the CLD names an instance cardd.yaml does not list
      (defaults + calling_card apply; `warnings` says so).
    sources: option name -> where its value came from ("default", "calling_card",
      "instances.cc", "CLD noplaybalance", or a derivation).
    warnings: human-readable problems to log with the call UUID.
    """

    instance: str
    options: Any  # CardOptions
    languages: list[str]
    unknown_tokens: list[str]
    known_instance: bool = True
    customer: str | None = None
    sources: dict[str, str] = field(default_factory=dict)
    tokens: CldTokens | None = None
    warnings: list[str] = field(default_factory=list)

    def pick_languages(self, has_prompts: Callable[[str], bool]) -> tuple[list[str], list[str]]:
        """(menu languages that have prompts, languages skipped); the caller warns about the skipped ones.

        When none of them has prompts the menu is default_language alone, so a call always has a language.
        """
        kept = [lang for lang in self.languages if has_prompts(lang)]
        skipped = [lang for lang in self.languages if lang not in kept]
        return (kept or [self.options.default_language]), skipped


@dataclass(frozen=True)
class Settings:
    """Validated cardd.yaml.

    calling_card: option name -> value, only the keys the file sets.
    instances: name -> {option name -> value, and "customer" when set}.
    """

    path: str | None
    daemon: Any  # DaemonSettings
    calling_card: dict[str, Any] = field(default_factory=dict)
    instances: dict[str, dict[str, Any]] = field(default_factory=dict)
    api: Any = field(default_factory=ApiSettings)  # ApiSettings: `cardd api`
    # How the file was found (find_config): "-c", "cwd", "system" or "none" (built-in
    # defaults). Commands say which config and database they use unless it was -c or ./cardd.yaml.
    found_by: str = "-c"

    @property
    def obvious(self) -> bool:
        """True when the operator named the file or it is ./cardd.yaml."""
        return self.found_by in ("-c", "cwd")

    def where(self) -> str:
        """Which config and which database, for a one-line note or an error."""
        config = self.path or f"none found (no -c, ./cardd.yaml or {SYSTEM_CONFIG}): built-in defaults"
        if self.daemon.dsn:
            database = _masked(DAEMON_OPTIONS_BY_NAME["dsn"], self.daemon.dsn)
        else:
            database = f"embedded PostgreSQL in {os.path.join(self.daemon.data_dir, 'pg')}"
        return f"config {config}, database {database}"

    def layers(self, instance: str | None) -> tuple[dict[str, Any], dict[str, str]]:
        """Option values and their sources for `instance` (None: calling_card only), before any CLD."""
        values = {o.name: o.default for o in OPTIONS}
        sources = dict.fromkeys(values, "default")
        for name, value in self.calling_card.items():
            # cardd.yaml lists every option; one left at its default reads better as "default".
            values[name] = value
            if value != OPTIONS_BY_NAME[name].default:
                sources[name] = "calling_card"
        for name, value in self.instances.get(instance or "", {}).items():
            if name in OPTIONS_BY_NAME:
                values[name], sources[name] = value, f"instances.{instance}"
        return values, sources

    def options_for(self, instance: str | None = None) -> Any:
        """The resolved CardOptions of an instance without CLD tokens (None: calling_card level)."""
        values, sources = self.layers(instance)
        return _resolve(values, sources, self.daemon)

    def call_options(self, cld: str) -> CallOptions:
        """The options of a call whose CLD is `cld`. A malformed CLD raises ConfigError (see parse_cld)."""
        tokens = parse_cld(cld)
        known = tokens.instance in self.instances
        values, sources = self.layers(tokens.instance if known else None)
        for name, value in tokens.overrides.items():
            values[name], sources[name] = value, f"CLD {tokens.sources[name]}"
        if tokens.languages:
            values["languages"], sources["languages"] = tokens.languages, "CLD " + ".".join(tokens.languages)
        warnings = (
            []
            if known
            else [f"instance {tokens.instance!r} is not in {self.path or _BUILT_IN}: defaults + calling_card apply"]
        )
        warnings += [f"{a} and {b} are both {ext!r}" for a, b, ext in _extension_clashes(values)]
        options = _resolve(values, sources, self.daemon)
        instance_settings = self.instances.get(tokens.instance, {})
        return CallOptions(
            instance=tokens.instance,
            options=options,
            languages=list(options.languages),
            unknown_tokens=list(tokens.unknown_tokens),
            known_instance=known,
            customer=instance_settings.get("customer"),
            sources=sources,
            tokens=tokens,
            warnings=warnings,
        )

    def with_daemon(self, **changes: Any) -> Settings:
        """A copy with daemon settings replaced (command-line flags such as --outbound-proxy), validated."""
        where = _Where("command line")
        checked = {}
        for key, raw in changes.items():
            option = DAEMON_OPTIONS_BY_NAME.get(key)
            if option is None:
                raise where.error(("daemon", key), _unknown_key(key, list(DAEMON_OPTIONS_BY_NAME), "daemon"))
            checked[key] = _convert(option, raw, ("daemon", key), where, os.getcwd())
        daemon = dataclasses.replace(self.daemon, **checked)
        return dataclasses.replace(self, daemon=_finish_daemon(daemon))


def _resolve(values: dict[str, Any], sources: dict[str, str], daemon: Any) -> Any:
    """Fill the options whose default is another setting (sources says so), then build CardOptions."""
    if values["balance_threshold"] is None and values["minimum_balance"] is not None:
        values["balance_threshold"], sources["balance_threshold"] = values["minimum_balance"], "= minimum_balance"
    if values["outbound_proxy"] == "" and daemon.outbound_proxy:
        values["outbound_proxy"], sources["outbound_proxy"] = daemon.outbound_proxy, "daemon.outbound_proxy"
    if not values["languages"]:
        values["languages"] = (values["default_language"],)
        sources["languages"] = "= [default_language]"
    return CardOptions(**values)


def _extension_clashes(values: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    clashes = []
    seen: dict[str, str] = {}
    for name in _EXTENSION_OPTIONS:
        ext = values[name]
        if ext is None:
            continue
        if ext in seen:
            clashes.append((seen[ext], name, ext))
        else:
            seen[ext] = name
    return clashes


def _check_combination(
    values: Mapping[str, Any],
    own: Mapping[str, Any],
    prefix: tuple[str, ...],
    where: _Where,
    customer: str | None,
    is_instance: bool,
) -> None:
    """Options that contradict each other. `own` is what this layer sets, so the error points at it."""

    def pick(*names: str) -> tuple[str, ...]:
        return prefix + (next((n for n in names if n in own), names[0]),)

    shortest, longest = values["min_card_number_length"], values["card_number_length"]
    if shortest is not None and shortest > longest:
        raise where.error(
            pick("min_card_number_length", "card_number_length"),
            f"min_card_number_length {shortest} is more than card_number_length {longest}",
        )
    if values["custom_greeting"] and not values["custom_greeting_file"]:
        raise where.error(
            pick("custom_greeting", "custom_greeting_file"),
            "custom_greeting is true but custom_greeting_file is not set",
        )
    if values["topup_only"] and not values["topup"]:
        raise where.error(pick("topup_only", "topup"), "topup_only needs topup: true")
    for first, second, ext in _extension_clashes(values):
        raise where.error(pick(second, first), f"{first} and {second} are both {ext!r}")
    if is_instance and values["own_accounts_only"] and not customer:
        raise where.error(prefix + ("customer",), "own_accounts_only is true, so the instance needs a customer")


def _finish_daemon(daemon: Any) -> Any:
    if daemon.sounds_dir == "":
        daemon = dataclasses.replace(daemon, sounds_dir=INSTALLED_SOUNDS_DIR)
    return daemon


def _daemon_section(raw: dict[Any, Any], where: _Where, base_dir: str) -> Any:
    values = {}
    for key in raw:
        if str(key) not in DAEMON_OPTIONS_BY_NAME:
            raise where.error(("daemon", str(key)), _unknown_key(str(key), list(DAEMON_OPTIONS_BY_NAME), "daemon"))
    for option in DAEMON_OPTIONS:
        # Defaults go through the same conversion, so a default relative data_dir is resolved too.
        raw_value = raw.get(option.name, option.default)
        values[option.name] = _convert(option, raw_value, ("daemon", option.name), where, base_dir)
    return _finish_daemon(DaemonSettings(**values))


def _api_section(raw: dict[Any, Any], where: _Where, base_dir: str) -> Any:
    for key in raw:
        if str(key) not in API_OPTIONS_BY_NAME:
            raise where.error(("api", str(key)), _unknown_key(str(key), list(API_OPTIONS_BY_NAME), "api"))
    return ApiSettings(
        **{o.name: _convert(o, raw.get(o.name, o.default), ("api", o.name), where, base_dir) for o in API_OPTIONS}
    )


_INSTANCE_NAME = "a name matching [a-z][a-z0-9_-]* (the first part of the CLD)"


def _instances_section(
    raw: dict[Any, Any], where: _Where, base_dir: str | None, calling_card: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    instances: dict[str, dict[str, Any]] = {}
    for name, body in raw.items():
        name = str(name)
        if not INSTANCE_NAME.fullmatch(name):
            raise where.error(("instances", name), f"expected {_INSTANCE_NAME}, got {show_value(name)}")
        prefix = ("instances", name)
        body = _section(body, prefix, where, "a mapping of customer and calling_card options")
        values = _options_section(body, prefix, where, base_dir, INSTANCE_ONLY_KEYS)
        if "customer" in body:
            customer = body["customer"]
            if customer is not None and (
                not isinstance(customer, (str, int)) or isinstance(customer, bool) or str(customer) == ""
            ):
                raise where.error(
                    prefix + ("customer",), f"expected a customer name or id, or null, got {show_value(customer)}"
                )
            if customer is not None:
                values["customer"] = str(customer)
        merged = (
            {o.name: o.default for o in OPTIONS}
            | dict(calling_card)
            | {k: v for k, v in values.items() if k in OPTIONS_BY_NAME}
        )
        _check_combination(merged, values, prefix, where, values.get("customer"), True)
        instances[name] = values
    return instances


def find_config(given: str | None) -> tuple[str | None, str]:
    """(file, how it was found), the way daemons look: the file named with -c,
    else ./cardd.yaml, else /etc/cardd/cardd.yaml, else none (built-in defaults)."""
    if given:
        return given, "-c"
    if os.path.exists("cardd.yaml"):
        return "cardd.yaml", "cwd"
    if os.path.exists(SYSTEM_CONFIG):
        return SYSTEM_CONFIG, "system"
    return None, "none"


def load_settings(path: str | None) -> Settings:
    """Read and validate cardd.yaml; None means built-in defaults (paths relative to the working directory)."""
    if path is None:
        return Settings(None, _daemon_section({}, _Where(None), os.getcwd()))
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason})") from None
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        location = f"{path}:{mark.line + 1}" if mark is not None else path
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{location}: not valid YAML: {problem}") from None
    finally:
        loader.dispose()
    where = _Where(path, _key_lines(node))
    base_dir = os.path.dirname(os.path.abspath(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a mapping with {', '.join(TOP_LEVEL_KEYS)} at the top, got {show_value(data)}"
        )
    for key in data:
        if str(key) not in TOP_LEVEL_KEYS:
            raise where.error((str(key),), _unknown_key(str(key), list(TOP_LEVEL_KEYS), "top"))
    daemon = _daemon_section(
        _section(data.get("daemon"), ("daemon",), where, "a mapping of daemon settings"), where, base_dir
    )
    raw_cc = _section(data.get("calling_card"), ("calling_card",), where, "a mapping of calling-card options")
    calling_card = _options_section(raw_cc, ("calling_card",), where, base_dir)
    defaults = {o.name: o.default for o in OPTIONS}
    _check_combination(defaults | calling_card, calling_card, ("calling_card",), where, None, False)
    raw_instances = _section(data.get("instances"), ("instances",), where, "a mapping of instance names")
    instances = _instances_section(raw_instances, where, base_dir, calling_card)
    api = _api_section(_section(data.get("api"), ("api",), where, "a mapping of API settings"), where, base_dir)
    log.debug("loaded %s: %d calling_card settings, %d instances", path, len(calling_card), len(instances))
    return Settings(path, daemon, calling_card, instances, api)


# --- text for `cardd check-config` and `cardd check-cld` --------------------------------

_DSN_URL_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*(@)")
_DSN_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)")


def _masked(option: Option, value: Any) -> Any:
    """check-config output gets pasted into tickets: never print a password."""
    if option.name == "dsn" and value:
        return _DSN_KEYWORD_PASSWORD.sub(r"\1***", _DSN_URL_PASSWORD.sub(r"\1***\2", value))
    if option.name == "inbound_esl_password" and value != option.default:
        return "***"
    if option.name == "cdr_credentials" and value:
        return value.split(":", 1)[0] + ":***"
    return value


def _option_lines(table: tuple[Option, ...], values: Any, sources: Mapping[str, str], indent: str) -> list[str]:
    rows = [
        (f"{indent}{o.name}: {o.type.to_yaml(_masked(o, getattr(values, o.name)))}", sources.get(o.name, ""))
        for o in table
    ]
    width = max(len(left) for left, _ in rows) + 2
    return [f"{left:<{width}}# {source}" if source else left for left, source in rows]


def format_settings(settings: Settings) -> str:
    """The effective settings as YAML text (`cardd check-config`), each value commented with its source.

    It loads back to the same settings, except that passwords (in the DSN, inbound_esl_password,
    cdr_credentials) show as ***.
    """
    origin = settings.path or _BUILT_IN
    lines = [f"# effective cardd settings from {origin}"]
    daemon_sources: dict[str, str] = {}
    if settings.path is not None:
        default_daemon = _daemon_section({}, _Where(None), os.path.dirname(os.path.abspath(settings.path)))
        for option in DAEMON_OPTIONS:
            same = getattr(settings.daemon, option.name) == getattr(default_daemon, option.name)
            daemon_sources[option.name] = "default" if same else "cardd.yaml"
    lines.append("daemon:")
    lines += _option_lines(DAEMON_OPTIONS, settings.daemon, daemon_sources, "  ")
    values, sources = settings.layers(None)
    options = _resolve(values, sources, settings.daemon)
    lines.append("calling_card:")
    lines += _option_lines(OPTIONS, options, sources, "  ")
    lines.append("instances:" + ("" if settings.instances else " {}"))
    for name, own in settings.instances.items():
        if not own:
            lines.append(f"  {name}: {{}}  # calling_card settings as they are")
            continue
        lines.append(f"  {name}:")
        if "customer" in own:
            lines.append(f"    customer: {show_value(own['customer'])}")
        chosen = tuple(o for o in OPTIONS if o.name in own)
        instance_options = settings.options_for(name)
        lines += _option_lines(chosen, instance_options, {}, "    ")
    lines.append("# a CLD naming any other instance gets the calling_card settings, with a warning")
    api_sources = {
        o.name: "default" if getattr(settings.api, o.name) == o.default else "cardd.yaml" for o in API_OPTIONS
    }
    lines.append("api:")
    lines += _option_lines(API_OPTIONS, settings.api, api_sources, "  ")
    return "\n".join(lines) + "\n"


def describe_cld(settings: Settings, cld: str) -> str:
    """What a CLD does: its instance, each token's effect, and the effective options of such a call."""
    call = settings.call_options(cld)
    lines = [f"CLD: {cld}"]
    if call.known_instance:
        customer = f", customer {call.customer}" if call.customer else ""
        lines.append(f"instance: {call.instance} (instances.{call.instance} in {settings.path}{customer})")
    else:
        lines.append(f"instance: {call.instance} (not configured: defaults + calling_card, with a warning)")
    assert call.tokens is not None
    if call.tokens.describe:
        lines.append("tokens:")
        width = max(len(token) for token, _ in call.tokens.describe) + 2
        lines += [f"  {token:<{width}}{effect}" for token, effect in call.tokens.describe]
    else:
        lines.append("tokens: none")
    lines.append(f"languages: {', '.join(call.languages)}")
    if call.unknown_tokens:
        lines.append(f"unknown tokens (logged and counted on every call): {', '.join(call.unknown_tokens)}")
    lines += [f"warning: {w}" for w in call.warnings]
    lines.append("effective options:")
    lines += _option_lines(OPTIONS, call.options, call.sources, "  ")
    return "\n".join(lines) + "\n"
