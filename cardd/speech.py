"""Numbers, amounts and durations as lists of catalogue prompt ids.

cardd speaks these itself instead of using FreeSWITCH's mod_say: mod_say says "dollars" for every currency and
needs a sound pack per language. Each function here returns prompt ids of sounds/catalogue.yaml; cardd/prompts.py
turns them into one `file_string://` sentence. Pure functions, no I/O.

The catalogue holds every number 0..99 as one word (natural audio; the tens/units rules of each language live in
those texts), plus the forms the rules below choose between:
  num_<n>_a  1, 21 ... 91 before a masculine noun (es apocope: "un dólar", "veintiún dólares")
  num_<n>_f  1, 21 ... 91 before a feminine noun ("una libra", "vingt et une heures")
  num_<h>00  a hundred said last ("cien", "deux cents"); num_<h>00_x followed by more ("ciento uno", "deux cent un")
  num_<h>00_f es feminine hundreds ("doscientas libras"); num_80_x fr "quatre-vingt" before "mille"
English follows US usage: no "and" inside a number ("one hundred one"); "and" joins units ("... and five cents").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_UP, Decimal

log = logging.getLogger(__name__)

__all__ = [
    "LANGUAGES",
    "CURRENCIES",
    "Currency",
    "currency",
    "number_ids",
    "amount_ids",
    "duration_ids",
    "digit_ids",
    "balance_ids",
    "rate_ids",
    "talk_time_ids",
    "disconnect_warning_ids",
    "all_ids",
]

#: Languages whose number rules this module knows.
LANGUAGES: tuple[str, ...] = ("en", "es", "fr")

#: Largest number the rules speak (below a billion: "mil millones" / "milliard" are not in the catalogue).
MAX_NUMBER = 999_999_999

MASCULINE = "m"
FEMININE = "f"


@dataclass(frozen=True)
class Currency:
    """How one currency is spoken: its catalogue key, minor digits and the grammatical gender of its unit names.

    `gender` maps a language to (major gender, minor gender); languages not listed use masculine.
    """

    key: str
    minor_digits: int
    gender: dict[str, tuple[str, str]]

    def genders(self, lang: str) -> tuple[str, str]:
        return self.gender.get(lang, (MASCULINE, MASCULINE))


# Unit names are cur_<key>_major / _majors / _minor / _minors in the catalogue.
CURRENCIES: dict[str, Currency] = {
    "USD": Currency("usd", 2, {}),
    "CAD": Currency("cad", 2, {}),
    "AUD": Currency("aud", 2, {}),
    "EUR": Currency("eur", 2, {}),
    # una libra, une livre; the penny stays masculine (un penique, un penny)
    "GBP": Currency("gbp", 2, {"es": (FEMININE, MASCULINE), "fr": (FEMININE, MASCULINE)}),
    "MXN": Currency("mxn", 2, {}),
    "CHF": Currency("chf", 2, {}),
    "JPY": Currency("jpy", 0, {}),
    # una rupia, une roupie; una paisa
    "INR": Currency("inr", 2, {"es": (FEMININE, FEMININE), "fr": (FEMININE, MASCULINE)}),
}

# ISO 4217 minor digits of currencies spoken with the generic names ("units" and "cents"): the amount is still
# truncated at the right place, so nobody hears more money than the card holds.
_GENERIC_MINOR_DIGITS: dict[str, int] = {
    "BHD": 3,
    "IQD": 3,
    "JOD": 3,
    "KWD": 3,
    "LYD": 3,
    "OMR": 3,
    "TND": 3,
    "BIF": 0,
    "CLP": 0,
    "DJF": 0,
    "GNF": 0,
    "ISK": 0,
    "KMF": 0,
    "KRW": 0,
    "PYG": 0,
    "RWF": 0,
    "UGX": 0,
    "VND": 0,
    "VUV": 0,
    "XAF": 0,
    "XOF": 0,
    "XPF": 0,
}

# es: una unidad; fr: une unité; the generic minor unit (centavo, centime) is masculine
_GENERIC_GENDER = {"es": (FEMININE, MASCULINE), "fr": (FEMININE, MASCULINE)}


def currency(code: str) -> Currency:
    """The spoken form of an ISO 4217 code; unknown codes get the generic unit names."""
    code = code.upper()
    known = CURRENCIES.get(code)
    if known is not None:
        return known
    return Currency("generic", _GENERIC_MINOR_DIGITS.get(code, 2), _GENERIC_GENDER)


# Time units: es hora is feminine; fr heure, minute and seconde all are.
_TIME_GENDER: dict[str, dict[str, str]] = {
    "es": {"hour": FEMININE, "minute": MASCULINE, "second": MASCULINE},
    "fr": {"hour": FEMININE, "minute": FEMININE, "second": FEMININE},
}


def _check_lang(lang: str) -> None:
    if lang not in LANGUAGES:
        raise ValueError(f"no number rules for language {lang!r} (known: {', '.join(LANGUAGES)})")


def _plural(n: int, lang: str) -> bool:
    """Whether a count takes the plural noun: fr keeps 0 and 1 singular ("zéro euro"), en and es only 1."""
    if lang == "fr":
        return n >= 2
    return n != 1


# --- numbers ---------------------------------------------------------------------------------------------------


def _below_100(n: int, lang: str, *, gender: str, before_noun: bool, final: bool) -> list[str]:
    """0..99 as one id, choosing the gendered / apocopated / linking form where the language has one."""
    if n % 10 == 1 and n != 11:
        if lang in ("es", "fr") and gender == FEMININE:
            return [f"num_{n}_f"]
        if lang == "es" and before_noun:
            return [f"num_{n}_a"]
    if lang == "fr" and n == 80 and not final:
        # "quatre-vingt mille": the plural s of quatre-vingts goes when another number word follows
        return ["num_80_x"]
    return [f"num_{n}"]


def _below_1000(n: int, lang: str, *, gender: str, before_noun: bool, final: bool) -> list[str]:
    """1..999. `final`: no number word follows (fr "deux cents" vs "deux cent mille"; es "cien" vs "ciento")."""
    hundreds, rest = divmod(n, 100)
    ids: list[str] = []
    if hundreds:
        followed = rest != 0 or not final
        if lang == "es":
            if hundreds == 1:
                # "cien" alone and before mil/millones ("cien mil"), "ciento" before tens and units
                ids.append("num_100_x" if rest else "num_100")
            elif gender == FEMININE:
                ids.append(f"num_{hundreds}00_f")
            else:
                ids.append(f"num_{hundreds}00")
        elif lang == "fr":
            ids.append(f"num_{hundreds}00_x" if followed else f"num_{hundreds}00")
        else:
            ids.append(f"num_{hundreds}00")
    if rest:
        ids += _below_100(rest, lang, gender=gender, before_noun=before_noun, final=final)
    return ids


def number_ids(n: int, lang: str, *, feminine: bool = False, before_noun: bool = False) -> list[str]:
    """The prompt ids that say the integer `n` in `lang`.

    `feminine` / `before_noun` select the forms a following noun needs (es "una libra", "veintiún dólares";
    fr "une heure"); alone a number is said in its counting form ("uno", "un"). Negative numbers start with
    "minus". Raises ValueError beyond ±MAX_NUMBER.
    """
    _check_lang(lang)
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"number_ids needs an int, got {type(n).__name__}")
    if n < 0:
        return ["minus"] + number_ids(-n, lang, feminine=feminine, before_noun=before_noun)
    if n > MAX_NUMBER:
        raise ValueError(f"{n} is beyond the largest number cardd speaks ({MAX_NUMBER})")
    if n == 0:
        return ["num_0"]
    gender = FEMININE if feminine else MASCULINE
    millions, rest = divmod(n, 1_000_000)
    thousands, units = divmod(rest, 1000)
    ids: list[str] = []
    if millions:
        if millions == 1:
            # "un millón", "un million" (the noun million is masculine in es and fr); en "one million"
            ids += ["num_1_a" if lang == "es" else "num_1", "million"]
        else:
            # million is a noun: es masculine with apocope ("veintiún millones"), fr keeps plural s
            # ("deux cents millions", "quatre-vingts millions")
            ids += _below_1000(millions, lang, gender=MASCULINE, before_noun=True, final=True)
            ids.append("millions")
    if thousands:
        if thousands == 1 and lang in ("es", "fr"):
            ids.append("thousand")  # "mil", "mille" — never "un mil"
        else:
            # es: the thousands agree with the noun ("doscientas mil libras") and apocopate ("veintiún mil");
            # fr: mille is invariable and keeps cent/quatre-vingt without their s ("deux cent mille")
            if lang == "es":
                ids += _below_1000(thousands, lang, gender=gender, before_noun=True, final=True)
            elif lang == "fr":
                ids += _below_1000(thousands, lang, gender=MASCULINE, before_noun=False, final=False)
            else:
                ids += _below_1000(thousands, lang, gender=gender, before_noun=before_noun, final=False)
            ids.append("thousand")
    if units:
        ids += _below_1000(units, lang, gender=gender, before_noun=before_noun, final=True)
    return ids


def digit_ids(text: str, lang: str) -> list[str]:
    """Say a digit string one key at a time ("0123*#"); spaces, dashes, dots and a leading + are skipped.

    Raises ValueError for any other character.
    """
    _check_lang(lang)
    ids: list[str] = []
    for ch in text:
        if ch in "0123456789":
            ids.append(f"num_{ch}")
        elif ch == "*":
            ids.append("star")
        elif ch == "#":
            ids.append("pound_key")
        elif ch in " -.+":
            continue
        else:
            raise ValueError(f"cannot say {ch!r} as a key in {text!r}")
    return ids


def _counted(n: int, lang: str, *, gender: str, singular: str, plural: str) -> list[str]:
    """A number followed by its noun, in the form and number the noun needs."""
    ids = number_ids(n, lang, feminine=gender == FEMININE, before_noun=True)
    if lang in ("es", "fr") and n >= 1_000_000 and n % 1_000_000 == 0:
        # "un millón de dólares", "deux millions de secondes"
        ids.append("of")
    ids.append(plural if _plural(n, lang) else singular)
    return ids


# --- amounts ---------------------------------------------------------------------------------------------------


def amount_ids(amount: Decimal, currency_code: str, lang: str, *, negative_as_zero: bool = True) -> list[str]:
    """Say a money amount in its currency: "twelve dollars and thirty-five cents".

    The minor part is truncated (never rounded up) to the currency's minor digits, so a caller never hears more
    than the card holds. Negative amounts start with "minus", or are said as zero when `negative_as_zero`
    (the say_negative_balance_as_zero option). Zero is "zero <major plural>"; an amount under one major unit
    says only the minor part ("thirty-five cents").
    """
    _check_lang(lang)
    if not isinstance(amount, Decimal):
        # floats would bring binary rounding into money; int is accepted as an exact amount
        if isinstance(amount, int) and not isinstance(amount, bool):
            amount = Decimal(amount)
        else:
            raise TypeError(f"amount_ids needs a Decimal, got {type(amount).__name__}")
    if not amount.is_finite():
        raise ValueError(f"cannot say the amount {amount}")
    cur = currency(currency_code)
    quantum = Decimal(1).scaleb(-cur.minor_digits)
    magnitude = abs(amount).quantize(quantum, rounding=ROUND_DOWN)
    negative = amount < 0 and magnitude > 0
    if negative and negative_as_zero:
        magnitude = Decimal(0)
        negative = False
    major = int(magnitude)
    minor = int((magnitude - major).scaleb(cur.minor_digits))
    major_gender, minor_gender = cur.genders(lang)
    key = cur.key
    ids: list[str] = ["minus"] if negative else []
    if major or not minor:
        ids += _counted(major, lang, gender=major_gender, singular=f"cur_{key}_major", plural=f"cur_{key}_majors")
    if minor:
        if major:
            ids.append("and")
        ids += _counted(minor, lang, gender=minor_gender, singular=f"cur_{key}_minor", plural=f"cur_{key}_minors")
    return ids


def balance_ids(amount: Decimal, currency_code: str, lang: str, *, negative_as_zero: bool = True) -> list[str]:
    """The balance sentence: "You have" + amount + "remaining"."""
    return ["you_have"] + amount_ids(amount, currency_code, lang, negative_as_zero=negative_as_zero) + ["remaining"]


def rate_ids(price_per_minute: Decimal, currency_code: str, lang: str) -> list[str]:
    """The rate announcement: "This call costs" + price + "per minute".

    A price is rounded UP to the currency's minor unit (0.035 USD is "four cents"): unlike a balance, a price
    said too low would promise the caller a cheaper call than the one billed."""
    if not isinstance(price_per_minute, Decimal):
        raise TypeError(f"rate_ids needs a Decimal, got {type(price_per_minute).__name__}")
    if not price_per_minute.is_finite() or price_per_minute < 0:
        raise ValueError(f"cannot say the price {price_per_minute}")
    quantum = Decimal(1).scaleb(-currency(currency_code).minor_digits)
    said = price_per_minute.quantize(quantum, rounding=ROUND_UP)
    return ["this_call_costs"] + amount_ids(said, currency_code, lang) + ["per_minute"]


# --- durations -------------------------------------------------------------------------------------------------


def duration_ids(seconds: int, lang: str, *, no_seconds: bool = False, no_hours: bool = False) -> list[str]:
    """Say a duration: "one hour, two minutes and five seconds" (as ids, parts of zero left out).

    `no_seconds` drops the seconds (rounding down: a caller is never promised more time than granted), but is
    ignored under a minute. `no_hours` says minutes only ("sixty-two minutes"). Zero is "zero seconds".
    """
    _check_lang(lang)
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise TypeError(f"duration_ids needs an int number of seconds, got {type(seconds).__name__}")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative: {seconds}")
    genders = _TIME_GENDER.get(lang, {})
    if no_hours:
        hours, rest = 0, seconds
    else:
        hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if no_seconds and seconds >= 60:
        secs = 0
    parts: list[list[str]] = []
    for count, unit in ((hours, "hour"), (minutes, "minute"), (secs, "second")):
        if count:
            parts.append(_counted(count, lang, gender=genders.get(unit, MASCULINE), singular=unit, plural=unit + "s"))
    if not parts:
        return _counted(0, lang, gender=genders.get("second", MASCULINE), singular="second", plural="seconds")
    ids: list[str] = []
    for i, part in enumerate(parts):
        if i and i == len(parts) - 1:
            ids.append("and")
        ids += part
    return ids


def talk_time_ids(seconds: int, lang: str, *, no_seconds: bool = False, no_hours: bool = False) -> list[str]:
    """The duration announcement: "You can talk for" + duration."""
    return ["you_can_talk_for"] + duration_ids(seconds, lang, no_seconds=no_seconds, no_hours=no_hours)


def disconnect_warning_ids(seconds: int, lang: str) -> list[str]:
    """The warning before the forced hangup: "Your call will be disconnected in" + N + "seconds".

    Always in seconds (60 is "sixty seconds"), as callers know it from the reference product.
    """
    _check_lang(lang)
    if seconds < 0:
        raise ValueError(f"a warning time cannot be negative: {seconds}")
    gender = _TIME_GENDER.get(lang, {}).get("second", MASCULINE)
    return ["call_will_be_disconnected_in"] + _counted(
        seconds, lang, gender=gender, singular="second", plural="seconds"
    )


def all_ids() -> set[str]:
    """Every prompt id the functions of this module can produce (for the catalogue completeness test)."""
    ids = {
        "minus",
        "and",
        "of",
        "star",
        "pound_key",
        "thousand",
        "million",
        "millions",
        "you_have",
        "remaining",
        "you_can_talk_for",
        "call_will_be_disconnected_in",
        "this_call_costs",
        "per_minute",
    }
    ids |= {f"num_{n}" for n in range(100)}
    ids |= {f"num_{n}_{form}" for n in (1, 21, 31, 41, 51, 61, 71, 81, 91) for form in ("a", "f")}
    ids.add("num_80_x")
    ids |= {f"num_{h}00" for h in range(1, 10)} | {f"num_{h}00_x" for h in range(1, 10)}
    ids |= {f"num_{h}00_f" for h in range(2, 10)}
    for unit in ("hour", "minute", "second"):
        ids |= {unit, unit + "s"}
    # any code cardd does not know stands for the generic fallback units
    for cur in list(CURRENCIES.values()) + [currency("QQQ")]:
        ids |= {f"cur_{cur.key}_major", f"cur_{cur.key}_majors"}
        if cur.minor_digits:
            ids |= {f"cur_{cur.key}_minor", f"cur_{cur.key}_minors"}
    return ids
