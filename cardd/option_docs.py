"""What is written from the option tables (cardd.options): cardd.yaml itself,
`render_yaml()`, and the Markdown option reference, `render_docs()`.

`python -m cardd.options > cardd.yaml` (or `--docs`) runs `main()`; a test
proves the committed cardd.yaml is exactly `render_yaml()`.
"""

from __future__ import annotations

import sys
from typing import Any

from cardd.options import API_OPTIONS, DAEMON_OPTIONS, OPTIONS, SECTIONS, Option

__all__ = ["main", "render_docs", "render_yaml"]


# --- cardd.yaml ----------------------------------------------------------------

_YAML_HEADER = """\
# cardd configuration: every option with its built-in default and a one-line comment.
# Generated from the tables in cardd/options.py: python -m cardd.options > cardd.yaml
# (a test checks this file against them). Relative paths are relative to this file.
#
# Calling-card option precedence, lowest first: built-in default < calling_card <
# instances.<name> < CLD tokens of the DID (the dialplan rewrites the access number to
# <instance>[.<token>...], e.g. cc.en.es.noplaybalance.topupext5; see README).
"""

_YAML_INSTANCES = """\
# Instances: the first part of the rewritten CLD. Each takes `customer` (who owns it, for
# own_accounts_only), `languages` and any calling_card option, overriding calling_card.
# A CLD naming an instance not listed here gets the calling_card settings, with a warning.
instances:
  cc:
    languages: [en]
  ccsp:
    languages: [es, en]
    default_language: es
"""


def _yaml_entry(option: Option, value: Any) -> list[str]:
    comment = option.help
    if option.tokens:
        comment += "; CLD: " + ", ".join(option.tokens)
    return [f"  # {comment}", f"  {option.name}: {option.type.to_yaml(value)}"]


def render_yaml() -> str:
    """The text of cardd.yaml: both tables with their defaults and help, plus example instances."""
    lines = [_YAML_HEADER, "daemon:"]
    for option in DAEMON_OPTIONS:
        lines += _yaml_entry(option, option.default)
    lines += ["", "calling_card:"]
    for section in SECTIONS:
        lines.append(f"  # ---- {section} ----")
        for option in OPTIONS:
            if option.section == section:
                lines += _yaml_entry(option, option.default)
    lines += ["", _YAML_INSTANCES]
    lines += ['# The HTTP JSON API, `cardd api` (README "HTTP API").', "api:"]
    for option in API_OPTIONS:
        lines += _yaml_entry(option, option.default)
    return "\n".join(lines).rstrip("\n") + "\n"


def render_docs() -> str:
    """A Markdown reference of every calling-card option, per section, for the README or docs."""
    lines = ["| option | value | default | CLD tokens | meaning |", "|---|---|---|---|---|"]
    for section in SECTIONS:
        lines.append(f"| **{section}** | | | | |")
        for o in OPTIONS:
            if o.section == section:
                tokens = ", ".join(f"`{t}`" for t in o.tokens)
                cells = [f"`{o.name}`", o.type.describe(), f"`{o.type.to_yaml(o.default)}`", tokens, o.help]
                lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    sys.stdout.write(render_docs() if argv == ["--docs"] else render_yaml())
