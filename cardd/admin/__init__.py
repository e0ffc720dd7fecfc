"""The operator commands (`cardd tariff|rate|card|customer|plan|voucher|cli|prompt|carrier|apikey|...`), apart
from the call path: nothing under cardd/ivr, cardd/channel.py, cardd/server.py or cardd/daemon.py imports this
package, so a call never loads argparse handlers (tests/test_call_path_imports.py).

Each module registers its sub-commands with add_parsers(subparsers) and imports the shared helpers from
cardd.admin.common, never another module's parsers; the work itself is done by the services the IVR and the
HTTP API use (cardd.billing). The order matters: core creates `rate` and `card`, which identity, ops and
carriers extend.
"""

from __future__ import annotations

from typing import Any


def add_parsers(subparsers: Any) -> None:
    """Register every operator command on the cli's sub-parsers."""
    # Imported here: `import cardd.admin.common` (every command module does) stays cheap.
    from cardd.admin import apikeys, carriers, core, identity, ops, prompts

    core.add_parsers(subparsers)  # db, tariff, rate, card
    carriers.add_parsers(subparsers)  # carrier, carrier rates
    identity.add_parsers(subparsers)  # card generate/block/..., cli, customer, plan, voucher, hotdial, ...
    ops.add_parsers(subparsers)  # rate import/lookup, cdr export, reservations, audit
    prompts.add_parsers(subparsers)  # prompt
    apikeys.add_parsers(subparsers)  # apikey
