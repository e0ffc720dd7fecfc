"""Operator prompts (ivr_prompts): `cardd prompt create|update|list`, on cardd.billing.prompt_store (whose
lookups the IVR makes for a greeting).

As operators know it from the reference product's prompt utility:

    cardd prompt create FILE NAME DESCRIPTION     -> prints the new prompt's id
    cardd prompt update ID --audio FILE --lang th -> adds or replaces the Thai recording
    cardd prompt update ID --audio FILE           -> replaces the prompt's default recording
    cardd prompt list

Any audio sox reads is converted to the telephony format (8 kHz, 16-bit, mono wav) and stored under
daemon.sounds_dir as custom/<id>/default.wav or custom/<id>/<lang>.wav; the database keeps the path relative to
sounds_dir, so a FreeSWITCH that mounts the same directory elsewhere only needs another sounds_dir. A greeting
prompt is an id in cardd.yaml (early_greeting_prompt, late_greeting_prompt) or a CLD token (greet<id>,
lgreet<id>).
"""

from __future__ import annotations

import argparse
from typing import Any

from cardd.admin.common import operator_database, refuse
from cardd.billing.prompt_store import create_prompt, list_prompts, update_prompt
from cardd.digits import is_digits
from cardd.errors import PromptError

# --- the commands -----------------------------------------------------------------------------------------------


def _prompt_id(text: str) -> int:
    if not is_digits(text) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a prompt id is a positive number, got {text!r}")
    return int(text)


def add_parsers(subparsers: Any) -> None:
    """Register `prompt create|update|list` on the cli's sub-parsers."""
    prompt = subparsers.add_parser("prompt", help="operator prompts (greetings)")
    sub = prompt.add_subparsers(dest="prompt_command", required=True)
    create = sub.add_parser("create", help="create a prompt from an audio file; prints its id")
    create.add_argument("file", help="any audio file sox reads")
    create.add_argument("name", help="a unique name")
    create.add_argument("description", nargs="?", default="", help="what it says, for operators")
    create.set_defaults(func=run_prompt_create)
    update = sub.add_parser("update", help="add or replace a recording, rename, re-describe")
    update.add_argument("id", type=_prompt_id)
    update.add_argument("--audio", metavar="FILE", help="any audio file sox reads")
    update.add_argument("--lang", help="the recording's language (two letters); without it, the default audio")
    update.add_argument("--name")
    update.add_argument("--description")
    update.set_defaults(func=run_prompt_update)
    listing = sub.add_parser("list", help="list prompts and their languages")
    listing.set_defaults(func=run_prompt_list)


def run_prompt_create(args: argparse.Namespace, settings: Any) -> int:
    with operator_database(settings) as db:
        try:
            prompt_id = create_prompt(db.pool, settings.daemon.sounds_dir, args.file, args.name, args.description)
        except PromptError as exc:
            return refuse(exc)
    print(prompt_id)
    return 0


def run_prompt_update(args: argparse.Namespace, settings: Any) -> int:
    with operator_database(settings) as db:
        try:
            update_prompt(
                db.pool,
                settings.daemon.sounds_dir,
                args.id,
                audio=args.audio,
                lang=args.lang,
                name=args.name,
                description=args.description,
            )
        except PromptError as exc:
            return refuse(exc)
    return 0


def run_prompt_list(args: argparse.Namespace, settings: Any) -> int:
    with operator_database(settings) as db:
        prompts = list_prompts(db.pool)
    print("id\tname\tlanguages\tdefault audio\tdescription")
    for p in prompts:
        langs = ",".join(p.audio) or "-"
        default = "yes" if p.default_path else "no"
        print(f"{p.id}\t{p.name}\t{langs}\t{default}\t{p.description}")
    return 0
