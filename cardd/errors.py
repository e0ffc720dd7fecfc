"""The domain errors of cardd, in one place.

Flows catch these by class; nobody matches on message text.
"""


class CarddError(Exception):
    """Base of every error cardd raises on purpose."""


class ConfigError(CarddError):
    """A configuration file or value is wrong. The message names file and key."""


# --- the Event Socket --------------------------------------------------------

class ProtocolError(CarddError):
    """The ESL byte stream broke the protocol.

    `peer` says who broke it: True when the bytes we received were bad,
    False when we were asked to encode something that cannot be sent.
    """

    def __init__(self, message: str, *, peer: bool = True):
        super().__init__(message)
        self.peer = peer


class CallGone(CarddError):
    """The call went away (hangup, disconnect notice, socket closed).

    Every waiter of a call is released with this one exception type, so a flow
    unwinds through its `finally` blocks to billing.
    """


class ESLTimeout(CarddError):
    """A deadline passed while waiting for FreeSWITCH (reply, completion, event)."""


# --- cards and money --------------------------------------------------------

class CardNotFound(CarddError):
    pass


class CardBlocked(CarddError):
    pass


class CardExpired(CarddError):
    pass


class WrongPin(CarddError):
    pass


class InsufficientFunds(CarddError):
    pass


class NoRate(CarddError):
    """No tariff rate matches the destination."""


class ForbiddenDestination(CarddError):
    pass


class TooManyCalls(CarddError):
    """The card already has as many calls up as it may."""


class NoRoute(CarddError):
    """Carriers are configured but none may carry the destination (no buy rate,
    disabled, at its channel limit, or dearer than the sell price)."""


class DatabaseUnavailable(CarddError):
    pass


class SchemaError(CarddError):
    """The database has no cardd schema, or an older one, or cardd has no migrations to apply.
    Only `cardd db migrate` and `cardd serve` change the schema."""


class ListenError(CarddError):
    """An address cardd must listen on is taken or impossible. The message names it."""
