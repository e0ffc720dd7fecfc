"""What a call flow holds while it runs: the channel, the options in force,
the language, and the two ways to speak (a sentence, or a question).

Sentences are queued, not played at once: the next question plays them as
the prompt of its play_and_get_digits, so a caller who knows the drill can
type over them (capture 18; a plain playback would drop the digits: 19).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from cardd.channel import Channel, Collected
from cardd.options import CardOptions, translate

if TYPE_CHECKING:  # the services' types only: the IVR is handed them, it does not build them
    from cardd.billing.identity import Identity
    from cardd.billing.journal import SettlementJournal
    from cardd.billing.ledger import Ledger
    from cardd.billing.prompt_store import PromptStore
    from cardd.billing.vouchers import Vouchers
    from cardd.config import Settings
    from cardd.hooks import ScriptHooks
    from cardd.metrics import Metrics
    from cardd.prompts import Prompts

log = logging.getLogger(__name__)


@dataclass
class Call:
    channel: Channel
    options: CardOptions
    lang: str
    services: Services
    instance: str = ""
    customer: str | None = None  # who owns the instance (own_accounts_only)
    pending: list[str] = field(default_factory=list)
    # The languages the access number offers (CLD tokens or the instance), and
    # whether the caller picked call.lang in the language menu: a card's own
    # language replaces call.lang only when it is offered and nobody chose.
    languages: tuple[str, ...] = ()
    lang_chosen: bool = False
    # For cardd_call_setup_seconds: the Call is made as the flow starts, right
    # after the ESL connect; observed when the first bridge is sent.
    connected_at: float = field(default_factory=time.monotonic)
    bridges_sent: int = 0

    # The call's lines carry its UUID through cardd.logs.call_context, which
    # the server sets around the call's greenlet: no prefix to add here.
    log: ClassVar[logging.Logger] = log

    @property
    def cli(self) -> str:
        """The caller's CLI after cli_translation: what identification, CLI
        registration, smart dial and the black list go by, so a rule can turn
        a bogus CLI into an unusable one (the reference's Note 1)."""
        return translate(self.channel.cli, self.options.cli_translation)

    # -- speaking ------------------------------------------------------------------

    def queue(self, *ids: str) -> None:
        """Add prompt ids to the sentence the caller hears next."""
        self.pending.extend(ids)

    def flush(self) -> None:
        """Play what is queued now (nothing to type over follows)."""
        if self.pending and not self.channel.hung_up:
            sound = self.services.prompts.sentence(self.lang, self.pending)
            self.pending = []
            self.channel.play(sound)

    def ask(
        self,
        *ids: str,
        min_digits: int,
        max_digits: int,
        regex: str,
        timeout_ms: int = 5000,
        digit_timeout_ms: int = 3000,
        terminators: str = "#",
    ) -> Collected:
        """One play_and_get_digits whose prompt is the queued sentence + ids.

        It accepts one digit more than `max_digits` (the regex holds the real
        bounds): play_and_get_digits returns as soon as it has max digits, and
        the pound key that ends a full-length entry would then land in the
        next question as an empty entry (capture 19)."""
        prompts = self.services.prompts
        sound = prompts.sentence(self.lang, self.pending + list(ids))
        self.pending = []
        entry = self.channel.collect(
            sound,
            prompts.path("invalid_input", self.lang),
            min_digits=min_digits,
            max_digits=max_digits + 1,
            tries=1,
            timeout_ms=timeout_ms,
            terminators=terminators,
            regex=regex,
            digit_timeout_ms=digit_timeout_ms,
        )
        if entry.digits is None and entry.keys_pressed:
            # The rest of a bad entry (a long number, a flood of * and #)
            # waits in FreeSWITCH's DTMF queue; it must not answer the retry.
            self.channel.flush_keys()
        return entry

    def goodbye(self, *ids: str) -> None:
        self.queue(*ids, "goodbye")
        self.flush()
        self.channel.hangup()


@dataclass
class Services:
    """Long-lived things every call uses (one set per daemon)."""

    settings: Settings
    prompts: Prompts
    # The repositories (cardd.billing.repository): each query timed into cardd_db_query_seconds{op}. The IVR
    # reaches the database only through them, never through a pool.
    ledger: Ledger
    identity: Identity
    vouchers: Vouchers
    prompt_store: PromptStore
    metrics: Metrics
    hooks: ScriptHooks
    # Settles through the ledger, or journals the settlement while the
    # database is unreachable.
    journal: SettlementJournal | None = None
