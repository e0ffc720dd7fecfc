"""Digits are ASCII 0-9, wherever cardd reads a number (CLI, DID, CLD values, typed digits, CDR fields,
operator input).

Python's own tests are wider: `\\d` in a str regex, str.isdigit() and int() accept every Unicode digit
('١٢٣٤٥٦٧', '１５５５', and for isdigit() even '²'), so a caller ID in Arabic-Indic or full-width digits
would pass as a number, and "²000".isdigit() is True while int("²000") raises. Regexes in cardd say
[0-9] (or re.ASCII); everything else goes through these two.
"""

from __future__ import annotations

import re

_WHOLE = re.compile(r"[+-]?[0-9]+")


def is_digits(text: object) -> bool:
    """True for a non-empty string of ASCII 0-9 only."""
    return isinstance(text, str) and text.isascii() and text.isdigit()


def whole_number(text: str) -> int:
    """int() for ASCII digits with an optional sign; ValueError for anything else (Unicode digits,
    spaces, underscores, '1e3')."""
    if not isinstance(text, str) or not _WHOLE.fullmatch(text):
        raise ValueError(f"not a whole number: {text!r}")
    return int(text)
