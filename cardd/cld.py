"""CLD tokens: what the access number the dialplan rewrote to
`<instance>[.<token>...]` says (grammar and synonyms: DESIGN.md "Decisions").
The tokens themselves are declared with their options in cardd.options.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from cardd.errors import BadValue, ConfigError
from cardd.option_kinds import LANGUAGE_CODE
from cardd.options import OPTIONS, Option

__all__ = ["FLAG_TOKENS", "INSTANCE_NAME", "MAX_CLD_LENGTH", "VALUE_PREFIXES", "CldTokens", "parse_cld"]


# --- CLD tokens ------------------------------------------------------------------

MAX_CLD_LENGTH = 256
INSTANCE_NAME = re.compile(r"[a-z][a-z0-9_-]*")
_PRINTABLE_ASCII = re.compile(r"[!-~]+")  # no spaces, no control characters


def _token_index() -> tuple[dict[str, tuple[Option, Any]], tuple[tuple[str, Option], ...]]:
    flags: dict[str, tuple[Option, Any]] = {}
    prefixes: dict[str, Option] = {}
    for option in OPTIONS:
        for token, value in [(t, True) for t in option.cld_on] + [(t, False) for t in option.cld_off]:
            if token in flags:
                raise RuntimeError(f"CLD token {token!r} declared twice")
            flags[token] = (option, value)
        if option.cld_value_prefix:
            prefixes[option.cld_value_prefix] = option
    # Longest prefix first, so a prefix that begins another can never steal its tokens.
    ordered = tuple(sorted(prefixes.items(), key=lambda item: -len(item[0])))
    return flags, ordered


FLAG_TOKENS, VALUE_PREFIXES = _token_index()


@dataclass(frozen=True)
class CldTokens:
    """What a CLD (`<instance>[.<token>...]`) says.

    overrides: option name -> value (the later of two conflicting tokens won);
    sources: option name -> the token that set it;
    describe: (token, what it did), in CLD order, for `cardd check-cld`.
    """

    cld: str
    instance: str
    languages: tuple[str, ...]
    overrides: Mapping[str, Any]
    sources: Mapping[str, str]
    unknown_tokens: tuple[str, ...]
    describe: tuple[tuple[str, str], ...]


def parse_cld(cld: str) -> CldTokens:
    """Parse a CLD-rewrite string such as `cc.en.es.noplaybalance.topupext5`.

    Malformed CLDs raise ConfigError (the dialplan is configuration): empty,
    longer than MAX_CLD_LENGTH, anything but printable ASCII without spaces,
    an instance name not matching [a-z][a-z0-9_-]*, an empty token (`cc..en`,
    `cc.`). A well-formed token that is not known, or a value token with a bad
    value (`topupextx`), is returned in unknown_tokens for the caller to log
    and count; the call goes on with the rest. Tokens are case-sensitive:
    `EN` is unknown, not a language.
    """
    if not isinstance(cld, str):
        raise ConfigError(f"CLD must be text, got {type(cld).__name__}")
    if cld == "":
        raise ConfigError('CLD is empty: expected <instance>[.<token>...] such as "cc.en.noplaybalance"')
    if len(cld) > MAX_CLD_LENGTH:
        raise ConfigError(f"CLD is {len(cld)} characters long: at most {MAX_CLD_LENGTH} are accepted")
    if not cld.isascii() or not _PRINTABLE_ASCII.fullmatch(cld):
        raise ConfigError(f"CLD {cld!r}: only printable ASCII without spaces is allowed")
    instance, *tokens = cld.split(".")
    if not INSTANCE_NAME.fullmatch(instance):
        raise ConfigError(f"CLD {cld!r}: instance name {instance!r} must match [a-z][a-z0-9_-]*")
    for position, token in enumerate(tokens, 1):
        if token == "":
            raise ConfigError(f"CLD {cld!r}: token {position} is empty (two dots in a row, or a dot at an end)")

    languages: list[str] = []
    overrides: dict[str, Any] = {}
    sources: dict[str, str] = {}
    unknown: list[str] = []
    describe: list[tuple[str, str]] = []

    def set_option(token: str, option: Option, value: Any) -> None:
        effect = f"{option.name} = {option.type.to_yaml(value)}"
        if option.name in sources:
            before = sources[option.name]
            effect += f" (repeats {before!r})" if overrides[option.name] == value else f" (overrides {before!r})"
        overrides[option.name] = value
        sources[option.name] = token
        describe.append((token, effect))

    for token in tokens:
        if token in FLAG_TOKENS:
            option, value = FLAG_TOKENS[token]
            set_option(token, option, value)
            continue
        prefix_option = next(((p, o) for p, o in VALUE_PREFIXES if token.startswith(p)), None)
        if prefix_option is not None:
            prefix, option = prefix_option
            try:
                value = option.type.from_token(token[len(prefix) :])
            except BadValue:
                unknown.append(token)
                expected = option.type.token_expected or option.type.expected
                describe.append((token, f"unknown: bad value for {prefix}<value>, expected {expected}"))
            else:
                set_option(token, option, value)
            continue
        if LANGUAGE_CODE.fullmatch(token):
            if token in languages:
                describe.append((token, "language already listed, ignored"))
            else:
                languages.append(token)
                describe.append((token, f"language {token}, menu position {len(languages)}"))
            continue
        unknown.append(token)
        describe.append((token, "unknown token, ignored"))

    return CldTokens(
        cld=cld,
        instance=instance,
        languages=tuple(languages),
        overrides=MappingProxyType(overrides),
        sources=MappingProxyType(sources),
        unknown_tokens=tuple(unknown),
        describe=tuple(describe),
    )
