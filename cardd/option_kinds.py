"""The value types of options (cardd.options): how each option's value is
checked, converted from YAML or a CLD token, and written back to YAML; and the
values some of them hold (MinimumBalance, TranslationRule).

Money is never a float here: `MinimumBalance` holds a Decimal, and the config
loader reads YAML floats as Decimal.
"""

from __future__ import annotations

import json
import os
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from cardd.digits import is_digits
from cardd.errors import BadValue

__all__ = [
    "BoolKind",
    "ChoiceKind",
    "DialStringKind",
    "DigitsKind",
    "HostPortKind",
    "IntKind",
    "Kind",
    "LANGUAGE_CODE",
    "LanguageKind",
    "LanguagesKind",
    "MinimumBalance",
    "MoneyKind",
    "NetworksKind",
    "PathKind",
    "RegexKind",
    "SecondsKind",
    "StrKind",
    "SwitchAddressesKind",
    "TranslationKind",
    "TranslationRule",
    "translate",
]


# --- value types ---------------------------------------------------------------


class Kind:
    """How one option's value is checked, converted and written back to YAML.

    `convert` takes what YAML produced (or a built-in default) and returns the
    value cardd uses, or raises BadValue. `base_dir` is the directory of the
    YAML file, for relative paths.
    """

    expected = "a value"
    annotation: Any = object
    token_expected = ""  # what a CLD value token must look like, when it differs from `expected`

    def __init__(self, *, optional: bool = False):
        self.optional = optional

    def describe(self) -> str:
        return self.expected + (", or null" if self.optional else "")

    def convert(self, raw: Any, base_dir: str | None = None) -> Any:
        if raw is None:
            if self.optional:
                return None
            raise BadValue(self.describe(), raw)
        return self._convert(raw, base_dir)

    def _convert(self, raw: Any, base_dir: str | None) -> Any:
        return raw

    def from_token(self, text: str) -> Any:
        """The value of a CLD value-prefix token (`topupext5` -> "5")."""
        return self.convert(text)

    def to_yaml(self, value: Any) -> str:
        return "null" if value is None else self._to_yaml(value)

    def _to_yaml(self, value: Any) -> str:
        return json.dumps(value)


class BoolKind(Kind):
    expected = "true or false"
    annotation = bool

    def _convert(self, raw: Any, base_dir: str | None) -> bool:
        if not isinstance(raw, bool):
            raise BadValue(self.describe(), raw)
        return raw

    def _to_yaml(self, value: bool) -> str:
        return "true" if value else "false"


class IntKind(Kind):
    annotation: Any = int

    def __init__(self, lo: int, hi: int, unit: str = "", *, optional: bool = False):
        super().__init__(optional=optional)
        self.lo, self.hi, self.unit = lo, hi, unit
        self.expected = f"a whole number from {lo} to {hi}" + (f" ({unit})" if unit else "")
        self.token_expected = f"digits of a whole number from {lo} to {hi}"
        self.annotation = int | None if optional else int

    def _convert(self, raw: Any, base_dir: str | None) -> int:
        # bool is an int subclass in Python; `true` is never a number here.
        if isinstance(raw, bool) or not isinstance(raw, int) or not self.lo <= raw <= self.hi:
            raise BadValue(self.describe(), raw)
        return raw

    def from_token(self, text: str) -> int:
        if not is_digits(text):
            raise BadValue(self.describe(), text)
        return self.convert(int(text))

    def _to_yaml(self, value: int) -> str:
        return str(value)


class SecondsKind(Kind):
    """A time span in seconds that may have a fraction (timeouts, grace times)."""

    annotation = float

    def __init__(self, lo: float, hi: float, *, lo_open: bool = False):
        super().__init__()
        self.lo, self.hi, self.lo_open = lo, hi, lo_open
        above = "above" if lo_open else "from"
        self.expected = f"a number of seconds {above} {lo:g} to {hi:g}"

    def _convert(self, raw: Any, base_dir: str | None) -> float:
        if isinstance(raw, bool) or not isinstance(raw, (int, Decimal, float)):
            raise BadValue(self.describe(), raw)
        value = float(raw)
        too_low = value <= self.lo if self.lo_open else value < self.lo
        if value != value or too_low or value > self.hi:
            raise BadValue(self.describe(), raw)
        return value

    def _to_yaml(self, value: float) -> str:
        return f"{value:g}"


class StrKind(Kind):
    annotation: Any = str

    def __init__(self, pattern: str | None = None, what: str = "a string", *, optional: bool = False):
        super().__init__(optional=optional)
        self.pattern = re.compile(pattern) if pattern else None
        self.expected = what
        self.annotation = str | None if optional else str

    def _convert(self, raw: Any, base_dir: str | None) -> str:
        if not isinstance(raw, str) or (self.pattern and not self.pattern.fullmatch(raw)):
            raise BadValue(self.describe(), raw)
        return raw


class ChoiceKind(StrKind):
    def __init__(self, *choices: str):
        super().__init__("|".join(re.escape(c) for c in choices), "one of " + ", ".join(choices))


class HostPortKind(StrKind):
    """`host:port` (IPv6 as `[::1]:port`); with port_optional, also `host`."""

    def __init__(self, *, allow_empty: bool = False, port_optional: bool = False):
        port = r"(:(?P<port>[0-9]{1,5}))" + ("?" if port_optional else "")
        pattern = r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)" + port
        what = "host or host:port" if port_optional else 'host:port such as "127.0.0.1:8084"'
        super().__init__(pattern + ("|" if allow_empty else ""), what + (', or ""' if allow_empty else ""))

    def _convert(self, raw: Any, base_dir: str | None) -> str:
        value = super()._convert(raw, base_dir)
        match = self.pattern.fullmatch(value) if self.pattern else None
        if match and match.group("port") and int(match.group("port")) > 65535:
            raise BadValue(self.describe(), raw)
        return value


class DialStringKind(StrKind):
    expected = "a dial string with {number} (and optionally {proxy}), alternatives separated by |"

    def __init__(self) -> None:
        super().__init__(None, self.expected)

    def _convert(self, raw: Any, base_dir: str | None) -> str:
        value = super()._convert(raw, base_dir)
        for alternative in value.split("|"):
            try:
                names = {name for _, name, _, _ in string.Formatter().parse(alternative) if name is not None}
            except ValueError:
                raise BadValue(self.describe(), raw) from None
            if "number" not in names or not names <= {"number", "proxy"}:
                raise BadValue(self.describe(), raw)
        return value


class DigitsKind(StrKind):
    """A menu extension: digits, quoted in YAML (an unquoted 010 would be octal 8)."""

    def __init__(self) -> None:
        super().__init__(r"[0-9]{1,10}", 'a quoted string of 1 to 10 digits such as "5"', optional=True)
        self.token_expected = "1 to 10 digits"


class RegexKind(Kind):
    expected = "a regular expression (a string that compiles)"
    annotation = re.Pattern[str] | None

    def _convert(self, raw: Any, base_dir: str | None) -> re.Pattern[str]:
        if isinstance(raw, re.Pattern):
            return raw
        if not isinstance(raw, str) or raw == "":
            raise BadValue(self.describe(), raw)
        try:
            return re.compile(raw)
        except re.error as exc:
            raise BadValue(f"{self.describe()} ({exc})", raw) from None

    def _to_yaml(self, value: re.Pattern[str]) -> str:
        return json.dumps(value.pattern)


class PathKind(Kind):
    """A file or directory; relative paths are relative to the YAML file."""

    def __init__(self, *, optional: bool = False, allow_empty: bool = False):
        super().__init__(optional=optional)
        self.allow_empty = allow_empty
        self.expected = "a path" + (' or ""' if allow_empty else "")
        self.annotation = str | None if optional else str

    def _convert(self, raw: Any, base_dir: str | None) -> str:
        if not isinstance(raw, str) or (raw == "" and not self.allow_empty) or "\0" in raw:
            raise BadValue(self.describe(), raw)
        if raw == "":
            return raw
        path = os.path.expanduser(raw)
        if base_dir is not None and not os.path.isabs(path):
            path = os.path.normpath(os.path.join(base_dir, path))
        return path


class NetworksKind(Kind):
    """A list of IP networks or addresses ("10.0.0.0/24", "192.0.2.7", "::1")."""

    expected = 'a list of IP addresses or networks such as ["127.0.0.1", "10.0.0.0/24"] ([]: any)'
    annotation = tuple[str, ...]

    def _convert(self, raw: Any, base_dir: str | None) -> tuple[str, ...]:
        import ipaddress

        if not isinstance(raw, (list, tuple)):
            raise BadValue(self.describe(), raw)
        out = []
        for item in raw:
            try:
                out.append(str(ipaddress.ip_network(str(item), strict=False)))
            except ValueError:
                raise BadValue(self.describe(), raw) from None
        return tuple(out)

    def _to_yaml(self, value: tuple[str, ...]) -> str:
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"


class SwitchAddressesKind(Kind):
    """FreeSWITCH boxes by switchname: {fs2: "10.0.0.2:8021"} (kept as sorted pairs)."""

    expected = 'a mapping of switchname to host:port such as {fs2: "10.0.0.2:8021"} ({}: none)'
    annotation = tuple[tuple[str, str], ...]

    def _convert(self, raw: Any, base_dir: str | None) -> tuple[tuple[str, str], ...]:
        pairs = raw.items() if isinstance(raw, Mapping) else raw
        address = HostPortKind()
        try:
            out = tuple(sorted((str(name), address.convert(value)) for name, value in pairs))
        except (BadValue, TypeError, ValueError):
            raise BadValue(self.describe(), raw) from None
        if any(not name or not isinstance(name, str) for name, _ in out):
            raise BadValue(self.describe(), raw)
        return out

    def _to_yaml(self, value: tuple[tuple[str, str], ...]) -> str:
        return "{" + ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in value) + "}"


class MoneyKind(Kind):
    expected = 'an amount with an optional currency, such as "2 USD" or 2'
    annotation = "MinimumBalance | None"

    def _convert(self, raw: Any, base_dir: str | None) -> MinimumBalance:
        try:
            return MinimumBalance.parse(raw)
        except ValueError:
            raise BadValue(self.describe(), raw) from None

    def _to_yaml(self, value: MinimumBalance) -> str:
        return json.dumps(str(value))


LANGUAGE_CODE = re.compile(r"[a-z]{2}")  # a CLD language token, a languages entry


_NORWEGIAN = ' (YAML reads an unquoted no as false: write "no")'


class LanguageKind(StrKind):
    def __init__(self) -> None:
        super().__init__(r"[a-z]{2}", "a two-letter language code such as en")

    def _convert(self, raw: Any, base_dir: str | None) -> str:
        if raw is False:
            raise BadValue(self.describe() + _NORWEGIAN, raw)
        return super()._convert(raw, base_dir)


class LanguagesKind(Kind):
    expected = "a list of distinct two-letter language codes such as [en, es] (menu order)"
    annotation = tuple[str, ...]

    def _convert(self, raw: Any, base_dir: str | None) -> tuple[str, ...]:
        if not isinstance(raw, (list, tuple)) or not all(
            isinstance(x, str) and LANGUAGE_CODE.fullmatch(x) for x in raw
        ):
            hint = _NORWEGIAN if isinstance(raw, (list, tuple)) and False in raw else ""
            raise BadValue(self.describe() + hint, raw)
        if len(set(raw)) != len(raw):
            raise BadValue(self.describe(), raw)
        return tuple(raw)

    def _to_yaml(self, value: tuple[str, ...]) -> str:
        return "[" + ", ".join(value) + "]"


@dataclass(frozen=True)
class TranslationRule:
    """Number translation: where `pattern` matches, the first match is replaced (re.sub template)."""

    pattern: re.Pattern[str]
    replace: str


def translate(number: str, rules: tuple[TranslationRule, ...]) -> str:
    """Apply the first rule whose pattern matches anywhere in `number`; no match leaves it as it is."""
    for rule in rules:
        if rule.pattern.search(number):
            return rule.pattern.sub(rule.replace, number, count=1)
    return number


class TranslationKind(Kind):
    expected = "a list of {match: <regex>, replace: <re.sub template>} rules, the first match applies"
    annotation = tuple[TranslationRule, ...]

    def _convert(self, raw: Any, base_dir: str | None) -> tuple[TranslationRule, ...]:
        if not isinstance(raw, (list, tuple)):
            raise BadValue(self.describe(), raw)
        rules = []
        for item in raw:
            if isinstance(item, TranslationRule):
                rules.append(item)
                continue
            if (
                not isinstance(item, dict)
                or set(item) != {"match", "replace"}
                or not all(isinstance(v, str) for v in item.values())
                or item["match"] == ""
            ):
                raise BadValue(self.describe(), raw)
            try:
                pattern = re.compile(item["match"])
                pattern.sub(item["replace"], "")  # checks the template's group references now, not mid-call
            except (re.error, IndexError) as exc:
                raise BadValue(f"{self.describe()} ({exc})", item["match"]) from None
            rules.append(TranslationRule(pattern, item["replace"]))
        return tuple(rules)

    def _to_yaml(self, value: tuple[TranslationRule, ...]) -> str:
        return (
            "["
            + ", ".join(f"{{match: {json.dumps(r.pattern.pattern)}, replace: {json.dumps(r.replace)}}}" for r in value)
            + "]"
        )


# --- MinimumBalance ------------------------------------------------------------

_AMOUNT = re.compile(r"[+-]?[0-9]+(\.[0-9]{1,5})?")
_CURRENCY = re.compile(r"[A-Za-z]{3}")


@dataclass(frozen=True)
class MinimumBalance:
    """A balance limit: "2 USD" applies to cards in USD only, a bare 2 to every currency."""

    amount: Decimal
    currency: str | None = None

    @classmethod
    def parse(cls, value: str | int | Decimal | MinimumBalance) -> MinimumBalance:
        """Parse "2 USD", "2.50", 2 or Decimal("2.5"); floats are refused (money is never float).

        At most 5 decimal places, as balances hold. The currency is an ISO 4217 code, upper-cased.
        """
        if isinstance(value, MinimumBalance):
            return value
        if isinstance(value, (bool, float)):
            raise ValueError(f"not an amount: {value!r}")
        if isinstance(value, int):
            return cls(Decimal(value))
        if isinstance(value, Decimal):
            exponent = value.as_tuple().exponent  # a str ('n', 'N', 'F') for NaN and infinity
            if not isinstance(exponent, int) or exponent < -5:
                raise ValueError(f"not an amount with at most 5 decimals: {value}")
            return cls(value)
        if not isinstance(value, str):
            raise ValueError(f"not an amount: {value!r}")
        parts = value.split()
        if not 1 <= len(parts) <= 2 or not _AMOUNT.fullmatch(parts[0]):
            raise ValueError(f"not an amount: {value!r}")
        currency = None
        if len(parts) == 2:
            if not _CURRENCY.fullmatch(parts[1]):
                raise ValueError(f"not a currency code: {parts[1]!r}")
            currency = parts[1].upper()
        try:
            return cls(Decimal(parts[0]), currency)
        except InvalidOperation:  # pragma: no cover - the regex admits only valid decimals
            raise ValueError(f"not an amount: {value!r}") from None

    def applies_to(self, currency: str) -> bool:
        """Whether this limit applies to a card in `currency`."""
        return self.currency is None or self.currency == currency.upper()

    def __str__(self) -> str:
        return f"{self.amount} {self.currency}" if self.currency else str(self.amount)
