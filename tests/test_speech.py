"""cardd's own number, amount and duration speech: exact prompt-id lists per language.

Each table row is (input, expected words); the words are the catalogue texts of the ids, joined by spaces, so a
row reads like what the caller hears. test_ids_are_the_expected_ones pins a few rows as raw id lists too.
"""

import os
from decimal import Decimal

import pytest
import yaml

from cardd import speech
from cardd.speech import amount_ids, digit_ids, disconnect_warning_ids, duration_ids, number_ids

SOUNDS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sounds")
with open(os.path.join(SOUNDS, "catalogue.yaml"), encoding="utf-8") as _f:
    CATALOGUE: dict[str, dict[str, str]] = yaml.safe_load(_f)


def words(ids: list[str], lang: str) -> str:
    return " ".join(CATALOGUE[i][lang] for i in ids)


NUMBERS = {
    "en": [
        (0, "zero"),
        (1, "one"),
        (2, "two"),
        (11, "eleven"),
        (15, "fifteen"),
        (16, "sixteen"),
        (20, "twenty"),
        (21, "twenty-one"),
        (30, "thirty"),
        (71, "seventy-one"),
        (80, "eighty"),
        (99, "ninety-nine"),
        (100, "one hundred"),
        (101, "one hundred one"),
        (115, "one hundred fifteen"),
        (200, "two hundred"),
        (999, "nine hundred ninety-nine"),
        (1000, "one thousand"),
        (1001, "one thousand one"),
        (2025, "two thousand twenty-five"),
        (21000, "twenty-one thousand"),
        (100_000, "one hundred thousand"),
        (1_000_000, "one million"),
        (2_000_000, "two million"),
        (1_000_001, "one million one"),
        (123_456_789, "one hundred twenty-three million four hundred fifty-six thousand seven hundred eighty-nine"),
        (-5, "minus five"),
    ],
    "es": [
        (0, "cero"),
        (1, "uno"),
        (2, "dos"),
        (11, "once"),
        (15, "quince"),
        (16, "dieciséis"),
        (20, "veinte"),
        (21, "veintiuno"),
        (30, "treinta"),
        (71, "setenta y uno"),
        (80, "ochenta"),
        (99, "noventa y nueve"),
        (100, "cien"),
        (101, "ciento uno"),
        (115, "ciento quince"),
        (200, "doscientos"),
        (500, "quinientos"),
        (700, "setecientos"),
        (900, "novecientos"),
        (999, "novecientos noventa y nueve"),
        (1000, "mil"),
        (1001, "mil uno"),
        (2025, "dos mil veinticinco"),
        (21000, "veintiún mil"),
        (100_000, "cien mil"),
        (101_000, "ciento un mil"),
        (1_000_000, "un millón"),
        (2_000_000, "dos millones"),
        (21_000_000, "veintiún millones"),
        (100_000_000, "cien millones"),
        (123_456_789, "ciento veintitrés millones cuatrocientos cincuenta y seis mil setecientos ochenta y nueve"),
        (-5, "menos cinco"),
    ],
    "fr": [
        (0, "zéro"),
        (1, "un"),
        (2, "deux"),
        (11, "onze"),
        (15, "quinze"),
        (16, "seize"),
        (17, "dix-sept"),
        (20, "vingt"),
        (21, "vingt et un"),
        (30, "trente"),
        (70, "soixante-dix"),
        (71, "soixante et onze"),
        (80, "quatre-vingts"),
        (81, "quatre-vingt-un"),
        (91, "quatre-vingt-onze"),
        (99, "quatre-vingt-dix-neuf"),
        (100, "cent"),
        (101, "cent un"),
        (115, "cent quinze"),
        (180, "cent quatre-vingts"),
        (200, "deux cents"),
        (201, "deux cent un"),
        (280, "deux cent quatre-vingts"),
        (999, "neuf cent quatre-vingt-dix-neuf"),
        (1000, "mille"),
        (1001, "mille un"),
        (2025, "deux mille vingt-cinq"),
        (21000, "vingt et un mille"),
        (80_000, "quatre-vingt mille"),
        (200_000, "deux cent mille"),
        (1_000_000, "un million"),
        (2_000_000, "deux millions"),
        (80_000_000, "quatre-vingts millions"),
        (200_000_000, "deux cents millions"),
        (-5, "moins cinq"),
    ],
}


@pytest.mark.parametrize("lang,n,expected", [(lang, n, e) for lang, rows in NUMBERS.items() for n, e in rows])
def test_number_is_said_by_the_language_rules(lang, n, expected):
    assert words(number_ids(n, lang), lang) == expected


def test_ids_are_the_expected_ones():
    assert number_ids(0, "en") == ["num_0"]
    assert number_ids(115, "en") == ["num_100", "num_15"]
    assert number_ids(2025, "en") == ["num_2", "thousand", "num_25"]
    assert number_ids(1_000_000, "en") == ["num_1", "million"]
    assert number_ids(2_000_000, "en") == ["num_2", "millions"]
    assert number_ids(101, "es") == ["num_100_x", "num_1"]
    assert number_ids(100, "es") == ["num_100"]
    assert number_ids(1001, "es") == ["thousand", "num_1"]
    assert number_ids(21000, "es") == ["num_21_a", "thousand"]
    assert number_ids(1_000_000, "es") == ["num_1_a", "million"]
    assert number_ids(200, "fr") == ["num_200"]
    assert number_ids(201, "fr") == ["num_200_x", "num_1"]
    assert number_ids(80_000, "fr") == ["num_80_x", "thousand"]
    assert number_ids(-1, "fr") == ["minus", "num_1"]


GENDERED = [
    # (lang, n, feminine, before_noun, expected)
    ("es", 1, False, True, "un"),
    ("es", 1, True, True, "una"),
    ("es", 21, False, True, "veintiún"),
    ("es", 21, True, True, "veintiuna"),
    ("es", 31, False, True, "treinta y un"),
    ("es", 201, True, True, "doscientas una"),
    ("es", 500, True, True, "quinientas"),
    ("es", 200_000, True, True, "doscientas mil"),
    ("es", 2_000_000, True, True, "dos millones"),
    ("es", 11, True, True, "once"),
    ("fr", 1, True, True, "une"),
    ("fr", 21, True, True, "vingt et une"),
    ("fr", 71, True, True, "soixante et onze"),
    ("fr", 81, True, True, "quatre-vingt-une"),
    ("fr", 1, False, True, "un"),
    ("en", 21, True, True, "twenty-one"),
]


@pytest.mark.parametrize("lang,n,feminine,before_noun,expected", GENDERED)
def test_number_before_a_noun_takes_its_gender_and_apocope(lang, n, feminine, before_noun, expected):
    assert words(number_ids(n, lang, feminine=feminine, before_noun=before_noun), lang) == expected


def test_number_out_of_range_or_not_int_is_refused():
    with pytest.raises(ValueError):
        number_ids(1_000_000_000, "en")
    with pytest.raises(TypeError):
        number_ids(1.5, "en")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        number_ids(True, "en")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        number_ids(1, "de")


AMOUNTS = [
    # (lang, amount, currency, negative_as_zero, expected)
    ("en", "12.35", "USD", True, "twelve dollars and thirty-five cents"),
    ("en", "1", "EUR", True, "one euro"),
    ("en", "1.01", "EUR", True, "one euro and one cent"),
    ("en", "2.5", "GBP", True, "two pounds and fifty pence"),
    ("en", "1.01", "GBP", True, "one pound and one penny"),
    ("en", "0.05", "USD", True, "five cents"),
    ("en", "0", "USD", True, "zero dollars"),
    ("en", "12.359", "USD", True, "twelve dollars and thirty-five cents"),  # truncated, never rounded up
    ("en", "0.00999", "USD", True, "zero dollars"),
    ("en", "-3.20", "USD", False, "minus three dollars and twenty cents"),
    ("en", "-3.20", "USD", True, "zero dollars"),
    ("en", "-0.001", "USD", False, "zero dollars"),  # nothing left to say but zero: no "minus zero"
    ("en", "1234.99", "JPY", True, "one thousand two hundred thirty-four yen"),  # no minor unit
    ("en", "1", "JPY", True, "one yen"),
    ("en", "7.25", "CAD", True, "seven dollars and twenty-five cents"),
    ("en", "7.25", "AUD", True, "seven dollars and twenty-five cents"),
    ("en", "100", "MXN", True, "one hundred pesos"),
    ("en", "1.05", "CHF", True, "one franc and five centimes"),
    ("en", "1.5", "INR", True, "one rupee and fifty paise"),
    ("en", "3.5", "XYZ", True, "three units and fifty cents"),
    ("en", "3.4567", "KWD", True, "three units and four hundred fifty-six cents"),  # 3 minor digits
    ("en", "1000000", "USD", True, "one million dollars"),
    ("es", "12.35", "USD", True, "doce dólares y treinta y cinco centavos"),
    ("es", "1", "USD", True, "un dólar"),
    ("es", "21", "USD", True, "veintiún dólares"),
    ("es", "1.01", "EUR", True, "un euro y un céntimo"),
    ("es", "1", "GBP", True, "una libra"),
    ("es", "21", "GBP", True, "veintiuna libras"),
    ("es", "200", "GBP", True, "doscientas libras"),
    ("es", "0", "EUR", True, "cero euros"),
    ("es", "2", "JPY", True, "dos yenes"),
    ("es", "1", "INR", True, "una rupia"),
    ("es", "1000000", "USD", True, "un millón de dólares"),
    ("es", "-1", "MXN", False, "menos un peso"),
    ("fr", "1.01", "EUR", True, "un euro et un centime"),
    ("fr", "12.35", "EUR", True, "douze euros et trente-cinq centimes"),
    ("fr", "0", "EUR", True, "zéro euro"),  # French: zero takes the singular
    ("fr", "1", "GBP", True, "une livre"),
    ("fr", "21", "GBP", True, "vingt et une livres"),
    ("fr", "80", "CHF", True, "quatre-vingts francs"),
    ("fr", "2", "JPY", True, "deux yens"),
    ("fr", "-2", "USD", False, "moins deux dollars"),
]


@pytest.mark.parametrize("lang,amount,cur,neg_zero,expected", AMOUNTS)
def test_amount_is_said_in_its_currency(lang, amount, cur, neg_zero, expected):
    assert words(amount_ids(Decimal(amount), cur, lang, negative_as_zero=neg_zero), lang) == expected


def test_amount_ids_exact_list():
    assert amount_ids(Decimal("12.35"), "USD", "en") == ["num_12", "cur_usd_majors", "and", "num_35", "cur_usd_minors"]
    assert amount_ids(Decimal("1"), "usd", "es") == ["num_1_a", "cur_usd_major"]


def test_amount_refuses_float():
    with pytest.raises(TypeError):
        amount_ids(12.35, "USD", "en")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        amount_ids(Decimal("NaN"), "USD", "en")


def test_balance_sentence_wraps_the_amount():
    assert speech.balance_ids(Decimal("5"), "EUR", "fr") == ["you_have", "num_5", "cur_eur_majors", "remaining"]


DURATIONS = [
    # (lang, seconds, no_seconds, no_hours, expected)
    ("en", 0, False, False, "zero seconds"),
    ("en", 1, False, False, "one second"),
    ("en", 45, True, False, "forty-five seconds"),  # no_seconds ignored under a minute
    ("en", 60, False, False, "one minute"),
    ("en", 61, False, False, "one minute and one second"),
    ("en", 119, True, False, "one minute"),  # rounded down: never promise more than granted
    ("en", 3600, False, False, "one hour"),
    ("en", 3605, False, False, "one hour and five seconds"),
    ("en", 3725, False, False, "one hour two minutes and five seconds"),
    ("en", 3725, True, False, "one hour and two minutes"),
    ("en", 3725, False, True, "sixty-two minutes and five seconds"),
    ("en", 3725, True, True, "sixty-two minutes"),
    ("en", 7200, False, True, "one hundred twenty minutes"),
    ("es", 1, False, False, "un segundo"),
    ("es", 3661, False, False, "una hora un minuto y un segundo"),
    ("es", 21 * 3600, False, False, "veintiuna horas"),
    ("es", 21 * 60 + 21, False, False, "veintiún minutos y veintiún segundos"),
    ("es", 0, False, False, "cero segundos"),
    ("fr", 1, False, False, "une seconde"),
    ("fr", 0, False, False, "zéro seconde"),
    ("fr", 3661, False, False, "une heure une minute et une seconde"),
    ("fr", 21 * 60, False, False, "vingt et une minutes"),
    ("fr", 3725, True, True, "soixante-deux minutes"),
]


@pytest.mark.parametrize("lang,seconds,no_seconds,no_hours,expected", DURATIONS)
def test_duration_is_said_with_the_options(lang, seconds, no_seconds, no_hours, expected):
    assert words(duration_ids(seconds, lang, no_seconds=no_seconds, no_hours=no_hours), lang) == expected


def test_duration_refuses_negative_and_float():
    with pytest.raises(ValueError):
        duration_ids(-1, "en")
    with pytest.raises(TypeError):
        duration_ids(1.5, "en")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "lang,seconds,expected",
    [
        ("en", 60, "Your call will be disconnected in sixty seconds"),
        ("en", 1, "Your call will be disconnected in one second"),
        ("es", 21, "Su llamada se cortará en veintiún segundos"),
        ("fr", 21, "Votre appel sera coupé dans vingt et une secondes"),
    ],
)
def test_disconnect_warning_counts_seconds(lang, seconds, expected):
    assert words(disconnect_warning_ids(seconds, lang), lang) == expected


def test_talk_time_sentence_wraps_the_duration():
    assert speech.talk_time_ids(120, "en") == ["you_can_talk_for", "num_2", "minutes"]


def test_digits_are_said_one_key_at_a_time():
    assert digit_ids("+1 80-0*#", "en") == ["num_1", "num_8", "num_0", "num_0", "star", "pound_key"]
    assert words(digit_ids("0#", "fr"), "fr") == "zéro dièse"
    with pytest.raises(ValueError):
        digit_ids("12a", "en")


def _every_producible_id() -> set[str]:
    """Run every function over a wide range of inputs and collect the ids they produce."""
    seen: set[str] = set()
    numbers = list(range(0, 1100)) + [n * 1000 + r for n in (1, 2, 21, 80, 100, 101, 200, 999) for r in (0, 1)]
    numbers += [n * 1_000_000 for n in (1, 2, 21, 80, 100, 200, 999)] + [123_456_789, -7]
    for lang in speech.LANGUAGES:
        for n in numbers:
            for feminine in (False, True):
                for before_noun in (False, True):
                    seen.update(number_ids(n, lang, feminine=feminine, before_noun=before_noun))
        for code in list(speech.CURRENCIES) + ["XYZ", "KWD", "KRW"]:
            for amount in ("0", "1", "1.01", "2.02", "21.21", "-3.5", "1000000"):
                for neg_zero in (False, True):
                    seen.update(amount_ids(Decimal(amount), code, lang, negative_as_zero=neg_zero))
            seen.update(speech.balance_ids(Decimal("1"), code, lang))
            seen.update(speech.rate_ids(Decimal("0.035"), code, lang))
        for seconds in (0, 1, 2, 21, 60, 61, 120, 3600, 3661, 7322, 2_000_000 * 60):
            for no_seconds in (False, True):
                for no_hours in (False, True):
                    seen.update(speech.talk_time_ids(seconds, lang, no_seconds=no_seconds, no_hours=no_hours))
            seen.update(disconnect_warning_ids(seconds, lang))
        seen.update(digit_ids("0123456789*#", lang))
    return seen


def test_every_id_speech_can_produce_is_declared_by_all_ids():
    assert _every_producible_id() <= speech.all_ids()


def test_every_id_speech_can_produce_has_text_in_every_language():
    languages = {lang for texts in CATALOGUE.values() for lang in texts}
    assert set(speech.LANGUAGES) <= languages
    for prompt_id in sorted(speech.all_ids()):
        assert prompt_id in CATALOGUE, prompt_id
        assert set(CATALOGUE[prompt_id]) == languages, prompt_id
