"""The black list check at the start of a call: a blacklisted CLI hears why
and the call ends before anything else happens."""

from __future__ import annotations

from cardd.ivr.call import Call


def refused(call: Call) -> bool:
    """True when the caller's CLI is blacklisted (the call has been ended)."""
    if not call.options.blacklist:
        return False
    if not call.services.identity.is_blacklisted(call.cli):
        return False
    call.log.info("CLI %s is blacklisted: refused", call.cli)
    call.services.metrics.auth_failures.labels("blacklisted").inc()
    call.goodbye("cli_blacklisted")
    return True
