"""The prompt catalogue: prompt ids -> audio paths FreeSWITCH plays, texts for transcripts, variant picking.

sounds/catalogue.yaml maps `prompt_id: {lang: text}`; the audio of a prompt is `<sounds_dir>/<lang>/<id>.wav`.
cardd hands FreeSWITCH absolute paths, so FreeSWITCH must see the same files (same host, or the same directory
mounted at the same path). A sentence of several prompts is one `file_string://a.wav!b.wav` playback.
Variants (word-PIN wording, no "followed by the pound key") are separate prompt ids, chosen by the functions
at the end of this module.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from typing import Any

import yaml

from cardd.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = [
    "Prompts",
    "FILE_STRING",
    "LANGUAGE_MENU_IDS",
    "card_number_prompt",
    "pin_prompt",
    "destination_prompt",
    "voucher_prompt",
    "new_pin_prompt",
    "invalid_card_prompt",
    "low_balance_prompt",
]

CATALOGUE_FILE = "catalogue.yaml"
FILE_STRING = "file_string://"

#: The "For <language>," prompt of each language code, for the language menu.
LANGUAGE_MENU_IDS: dict[str, str] = {"en": "for_english", "es": "for_spanish", "fr": "for_french"}


class Prompts:
    """The catalogue of one sounds directory.

    `default_language` is where a prompt falls back to when a language lacks it (its text or its audio file).
    Which audio files exist is read once, at construction: the catalogue is static while cardd runs.
    """

    def __init__(self, sounds_dir: str | os.PathLike[str], *, default_language: str = "en") -> None:
        self.sounds_dir = os.path.abspath(os.fspath(sounds_dir))
        catalogue_path = os.path.join(self.sounds_dir, CATALOGUE_FILE)
        self._texts = _load_catalogue(catalogue_path)
        languages: list[str] = []
        for texts in self._texts.values():
            for lang in texts:
                if lang not in languages:
                    languages.append(lang)
        self._languages = tuple(languages)
        if default_language not in self._languages:
            raise ConfigError(
                f"{catalogue_path}: default language {default_language!r} has no prompts "
                f"(languages: {', '.join(self._languages) or 'none'})"
            )
        self.default_language = default_language
        self._audio: set[tuple[str, str]] = set()
        for lang in self._languages:
            lang_dir = os.path.join(self.sounds_dir, lang)
            try:
                names = os.listdir(lang_dir)
            except FileNotFoundError:
                continue
            for name in names:
                stem, ext = os.path.splitext(name)
                if ext == ".wav" and lang in self._texts.get(stem, {}):
                    self._audio.add((lang, stem))
        # fallbacks are logged once per (language, id), not on every call that plays them
        self._fallbacks_logged: set[tuple[str, str]] = set()
        log.debug(
            "prompt catalogue %s: %d ids, languages %s, %d audio files",
            catalogue_path,
            len(self._texts),
            self._languages,
            len(self._audio),
        )

    @property
    def languages(self) -> tuple[str, ...]:
        """The catalogue's languages, in the order they first appear in it."""
        return self._languages

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self._texts)

    def has(self, prompt_id: str, lang: str) -> bool:
        """Whether `lang` has its own text and audio for `prompt_id` (no fallback)."""
        return (lang, prompt_id) in self._audio

    def has_language(self, lang: str) -> bool:
        """Whether any prompt has audio in `lang` (a CLD language token without prompts is skipped)."""
        return any(audio_lang == lang for audio_lang, _ in self._audio)

    def _resolve_lang(self, prompt_id: str, lang: str) -> str:
        if (lang, prompt_id) in self._audio:
            return lang
        if prompt_id not in self._texts:
            raise KeyError(f"unknown prompt id {prompt_id!r}")
        if lang != self.default_language and (self.default_language, prompt_id) in self._audio:
            if (lang, prompt_id) not in self._fallbacks_logged:
                self._fallbacks_logged.add((lang, prompt_id))
                log.warning(
                    "prompt %s has no audio in %s; playing the %s audio instead", prompt_id, lang, self.default_language
                )
            return self.default_language
        # no audio anywhere (not rendered yet): still name the file the catalogue promises, so FreeSWITCH
        # logs the missing file and the call goes on
        if (lang, prompt_id) not in self._fallbacks_logged:
            self._fallbacks_logged.add((lang, prompt_id))
            log.error("prompt %s has no audio file in %s nor in %s", prompt_id, lang, self.default_language)
        return lang if lang in self._texts[prompt_id] else self.default_language

    def path(self, prompt_id: str, lang: str) -> str:
        """Absolute path of the prompt's audio in `lang`, or in the default language when `lang` lacks it."""
        use = self._resolve_lang(prompt_id, lang)
        return os.path.join(self.sounds_dir, use, prompt_id + ".wav")

    def sentence(self, lang: str, ids: Sequence[str]) -> str:
        """One playback argument for a sentence: a path for one id, `file_string://p1!p2!…` for several."""
        if isinstance(ids, str):
            raise TypeError("sentence() takes a list of prompt ids, not a string")
        if not ids:
            raise ValueError("an empty sentence cannot be played")
        paths = [self.path(prompt_id, lang) for prompt_id in ids]
        if len(paths) == 1:
            return paths[0]
        return FILE_STRING + "!".join(paths)

    def language_menu(self, languages: Iterable[str]) -> str:
        """The language menu: "For English, press one. Para español, marque dos. …", each entry in its language.

        Digit N selects the N-th language of `languages` (the instance's languages, in menu order).
        """
        paths: list[str] = []
        for digit, lang in enumerate(languages, start=1):
            if digit > 9:
                raise ValueError("a language menu offers at most nine languages")
            entry = LANGUAGE_MENU_IDS.get(lang)
            if entry is None:
                raise KeyError(f"no language-menu prompt for language {lang!r}")
            paths += [self.path(prompt_id, lang) for prompt_id in (entry, "press", f"num_{digit}")]
        if not paths:
            raise ValueError("a language menu needs at least one language")
        return FILE_STRING + "!".join(paths)

    def text(self, prompt_id: str, lang: str) -> str:
        """The catalogue text of a prompt in `lang`, or in the default language when `lang` lacks it."""
        texts = self._texts.get(prompt_id)
        if texts is None:
            raise KeyError(f"unknown prompt id {prompt_id!r}")
        if lang in texts:
            return texts[lang]
        return texts[self.default_language]

    def ids_for_path(self, playback: str) -> list[tuple[str, str] | None]:
        """(lang, id) for each file of a playback argument (a path or a file_string:// list); None for a file
        that is not a catalogue prompt of this sounds directory."""
        if playback.startswith(FILE_STRING):
            files = playback[len(FILE_STRING) :].split("!")
        else:
            files = [playback]
        return [self._id_for_file(f) for f in files]

    def id_for_path(self, playback: str) -> tuple[str, str] | None:
        """(lang, id) of a single catalogue prompt path (also given as a one-file file_string://); None for
        anything else. Use ids_for_path() or describe() for sentences of several files."""
        found = self.ids_for_path(playback)
        return found[0] if len(found) == 1 else None

    def describe(self, playback: str) -> str:
        """A readable transcript line for a playback argument: the prompts' texts joined, other files as-is."""
        if playback.startswith(FILE_STRING):
            files = playback[len(FILE_STRING) :].split("!")
        else:
            files = [playback]
        words: list[str] = []
        for f in files:
            found = self._id_for_file(f)
            words.append(self.text(found[1], found[0]) if found else f)
        return " ".join(words)

    def _id_for_file(self, path: str) -> tuple[str, str] | None:
        prefix = self.sounds_dir + os.sep
        if not path.startswith(prefix):
            return None
        rel = path[len(prefix) :]
        parts = rel.split(os.sep)
        if len(parts) != 2 or not parts[1].endswith(".wav"):
            return None
        lang, prompt_id = parts[0], parts[1][: -len(".wav")]
        if lang not in self._texts.get(prompt_id, {}):
            return None
        return lang, prompt_id

    # option-driven variants, for callers holding a CardOptions
    def card_number_prompt(self, options: Any) -> str:
        return card_number_prompt(
            use_word_pin=options.use_word_pin, suppress_pound_phrase=options.suppress_pound_phrase
        )

    def pin_prompt(self, options: Any) -> str:
        return pin_prompt(suppress_pound_phrase=options.suppress_pound_phrase)

    def destination_prompt(self, options: Any) -> str:
        return destination_prompt(suppress_pound_phrase=options.suppress_pound_phrase)


def _load_catalogue(path: str) -> dict[str, dict[str, str]]:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: prompt catalogue not found (check daemon.sounds_dir)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of prompt_id -> {{lang: text}}")
    texts: dict[str, dict[str, str]] = {}
    for prompt_id, entry in data.items():
        if not isinstance(prompt_id, str) or not isinstance(entry, dict):
            raise ConfigError(f"{path}: {prompt_id!r}: expected a mapping of language -> text")
        clean: dict[str, str] = {}
        for lang, text in entry.items():
            if not isinstance(lang, str) or not isinstance(text, str) or not text.strip():
                raise ConfigError(f"{path}: {prompt_id}.{lang}: expected a non-empty text")
            clean[lang] = text
        texts[prompt_id] = clean
    return texts


# --- variant picking (prompt ids only; no sentence is built from fragments) ------------------------------------


def card_number_prompt(*, use_word_pin: bool, suppress_pound_phrase: bool) -> str:
    """ "Enter your card number" — or "your PIN" under use_word_pin — with or without "followed by pound"."""
    base = "enter_pin_word" if use_word_pin else "enter_card_number"
    return base + "_no_pound" if suppress_pound_phrase else base


def pin_prompt(*, suppress_pound_phrase: bool) -> str:
    """The card's PIN (password) asked after the card number."""
    return "enter_pin_no_pound" if suppress_pound_phrase else "enter_pin"


def destination_prompt(*, suppress_pound_phrase: bool) -> str:
    return "enter_destination_no_pound" if suppress_pound_phrase else "enter_destination"


def voucher_prompt(*, suppress_pound_phrase: bool) -> str:
    return "enter_voucher_number_no_pound" if suppress_pound_phrase else "enter_voucher_number"


def new_pin_prompt(*, suppress_pound_phrase: bool) -> str:
    return "enter_new_pin_no_pound" if suppress_pound_phrase else "enter_new_pin"


def invalid_card_prompt(*, use_word_pin: bool) -> str:
    """An unknown card number — "invalid PIN" under use_word_pin, where the number is the PIN."""
    return "invalid_pin_word" if use_word_pin else "invalid_card_number"


def low_balance_prompt(*, use_word_pin: bool, say_no_card_on_low_balance: bool) -> str:
    """A card below minimum_balance: "no balance left", or the wrong-card prompt (say_no_card_on_low_balance)."""
    if say_no_card_on_low_balance:
        return invalid_card_prompt(use_word_pin=use_word_pin)
    return "no_balance_left"
