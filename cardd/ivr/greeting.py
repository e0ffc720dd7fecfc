"""Step 1 of the call flow: greetings and the language menu.

    custom greeting file / early greeting prompt   (language-independent)
    language menu "For English press 1, para español marque 2 ..."  (when more than one language)
    late greeting prompt                            (in the chosen language, else the prompt's default audio)

The greetings before the menu are the start of the menu's play_and_get_digits prompt, so a caller who knows the
menu can press a key over them (capture 18); without a menu they are one playback. The late greeting is a
playback of its own: the card-number question that follows starts with the catalogue's "welcome".
"""

from __future__ import annotations

from cardd.billing.prompt_store import resolve
from cardd.ivr.call import Call
from cardd.prompts import FILE_STRING, LANGUAGE_MENU_IDS

# How long the caller has to pick a language after the menu ends.
MENU_TIMEOUT_MS = 5000


def greet(call: Call, languages: list[str], card_language: str | None = None) -> str | None:
    """Play the greetings and run the language menu. Returns the caller's language, or None when the
    call has ended (no valid choice within the attempts and no fallback to the default language).

    `card_language`: the language of the caller's card when it is known before the menu (a CLI
    mapping); when the menu offers it, the menu is skipped and the call speaks it."""
    opts = call.options
    before = _early_greetings(call)
    menu = _menu_languages(call, languages)
    if len(menu) > 1 and card_language not in menu:
        lang = _language_menu(call, menu, before)
        if lang is None:
            return None
    else:
        lang = card_language if card_language in menu else menu[0]
        if len(menu) > 1:
            call.log.info("language menu skipped: the card's language %s", lang)
        if before:
            _play(call, before)
    call.lang = lang
    if opts.late_greeting_prompt is not None and not call.channel.hung_up:
        late = _prompt_audio(call, opts.late_greeting_prompt, lang)
        if late:
            _play(call, [late])
    return lang


def _early_greetings(call: Call) -> list[str]:
    opts = call.options
    files: list[str] = []
    if opts.custom_greeting and opts.custom_greeting_file:
        files.append(str(opts.custom_greeting_file))
    if opts.early_greeting_prompt is not None:
        # Not localised: the language is not known yet.
        early = _prompt_audio(call, opts.early_greeting_prompt, None)
        if early:
            files.append(early)
    return files


def _menu_languages(call: Call, languages: list[str]) -> list[str]:
    """The languages the menu can offer: those with a "For <language>" prompt, at most nine (one key each)."""
    menu: list[str] = []
    for lang in languages:
        if lang not in LANGUAGE_MENU_IDS:
            call.log.warning("language %r has no language-menu prompt: left out of the menu", lang)
        elif len(menu) == 9:
            call.log.warning("language %r left out of the menu: nine languages at most", lang)
        else:
            menu.append(lang)
    return menu or [languages[0]]


def _language_menu(call: Call, menu: list[str], before: list[str]) -> str | None:
    opts = call.options
    prompts = call.services.prompts
    default = opts.default_language
    # The language heard before a choice is made: the default one, when the menu offers it.
    talk_in = default if default in menu else menu[0]
    menu_sound = prompts.language_menu(menu)
    menu_files = menu_sound[len(FILE_STRING) :].split("!")
    attempts = max(1, opts.card_entry_attempts)
    for attempt in range(attempts):
        files = (before if attempt == 0 else []) + menu_files
        entry = call.channel.collect(
            FILE_STRING + "!".join(files),
            prompts.path("invalid_input", talk_in),
            min_digits=1,
            max_digits=1,
            tries=1,
            timeout_ms=MENU_TIMEOUT_MS,
            regex=f"^[1-{len(menu)}]$",
            digit_timeout_ms=MENU_TIMEOUT_MS,
        )
        if call.channel.hung_up:
            return None
        if entry.digits is not None:
            lang = menu[int(entry.digits) - 1]
            call.log.info("language %s chosen", lang)
            call.lang_chosen = True
            return lang
        call.log.info(
            "language menu: %s (attempt %d of %d)",
            "no key" if entry.timed_out else f"wrong key {entry.invalid!r}",
            attempt + 1,
            attempts,
        )
    if opts.fallback_to_default_language:
        lang = default if call.services.prompts.has_language(default) else talk_in
        call.log.info("no language chosen: continuing in %s", lang)
        return lang
    call.log.info("no language chosen: ending the call")
    call.lang = talk_in
    call.goodbye()
    return None


def _prompt_audio(call: Call, prompt_id: int, lang: str | None) -> str | None:
    """The absolute path of an operator prompt's recording in `lang` (None: its default audio), falling back
    to the default audio; None (logged) when the prompt or any recording is missing."""
    found = call.services.prompt_store.get_prompt(prompt_id)
    if found is None:
        call.log.warning("greeting prompt %s does not exist (cardd prompt list): not played", prompt_id)
        return None
    path = found.audio.get(lang) if lang else None
    if path is None:
        path = found.default_path
        if path is None and found.audio:
            # A prompt recorded only per language: the default language's, else any, beats silence.
            path = found.audio.get(call.options.default_language) or next(iter(found.audio.values()))
    if path is None:
        call.log.warning("greeting prompt %s has no recording: not played", prompt_id)
        return None
    return resolve(call.services.prompts.sounds_dir, path)


def _play(call: Call, files: list[str]) -> None:
    if call.channel.hung_up:
        return
    call.channel.play(files[0] if len(files) == 1 else FILE_STRING + "!".join(files))
