"""One error tree: every exception class of cardd derives from cardd.errors.CarddError,
and every public one is declared in cardd/errors.py, so a caller finds them all in one file
and `except CarddError` is the one way to catch "cardd refused this"."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import uuid

import pytest

import cardd
from cardd import errors
from cardd.errors import CarddError, DuplicateGrant, LocalProtocolError, ProtocolError, RemoteProtocolError


def cardd_exception_classes() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for module_info in pkgutil.walk_packages(cardd.__path__, "cardd."):
        if module_info.name.endswith("__main__"):
            continue
        module = importlib.import_module(module_info.name)
        for name, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == module.__name__:
                found[f"{module.__name__}.{name}"] = value
    return found


def test_every_exception_class_of_cardd_derives_from_cardd_error():
    classes = cardd_exception_classes()
    outside = {name for name, cls in classes.items() if not issubclass(cls, CarddError)}
    assert outside == set()


def test_every_public_exception_class_is_declared_in_errors_py():
    classes = cardd_exception_classes()
    elsewhere = {
        name for name, cls in classes.items() if cls.__module__ != "cardd.errors" and not cls.__name__.startswith("_")
    }
    assert elsewhere == set()


def test_modules_that_raised_their_own_errors_still_export_the_same_classes():
    # Callers import these from where they used to live; they are the errors.py classes.
    from cardd.billing.ledger import ReservationNotFound
    from cardd.billing.prompt_store import PromptError
    from cardd.billing.rate_import import ImportRefused
    from cardd.cdr_http import BadCdr
    from cardd.ivr.dial import CardRefused
    from cardd.options import BadValue

    for cls in (ImportRefused, ReservationNotFound, BadCdr, CardRefused, BadValue, PromptError):
        assert getattr(errors, cls.__name__) is cls
    # the web console reaches these through the billing modules that raise them
    from cardd.billing import apiauth, apistore

    assert apiauth.SignInRefused is errors.SignInRefused and apistore.NotVisible is errors.NotVisible


def test_an_api_problem_is_a_cardd_error_that_keeps_its_http_answer():
    problem = errors.Problem(409, "Conflict", "taken", headers={"Retry-After": "1"})
    assert isinstance(problem, CarddError)
    assert problem.body() == {"type": "about:blank", "title": "Conflict", "status": 409, "detail": "taken"}
    from cardd.api.app import problem_of

    assert problem_of(problem) is problem
    assert problem_of(errors.NotVisible("no card 1")).status == 404


def test_the_two_protocol_errors_say_who_broke_the_protocol():
    from cardd.esl.protocol import FrameParser, encode_execute

    parser = FrameParser()
    parser.feed(b"Content-Length: nope\nContent-Type: text/event-plain\n\n")
    with pytest.raises(RemoteProtocolError) as remote:
        parser.next_frame()
    with pytest.raises(LocalProtocolError) as local:
        encode_execute("bridge", "sofia/x/1\nexecute-app-name: hangup", event_uuid="u")
    # code that catches ProtocolError catches both
    assert isinstance(remote.value, ProtocolError) and isinstance(local.value, ProtocolError)
    assert not isinstance(remote.value, LocalProtocolError)


def test_wrong_pin_is_gone_a_wrong_pin_is_a_false_verify_not_an_error():
    assert not hasattr(errors, "WrongPin")


def test_granting_the_same_b_leg_twice_raises_a_cardd_error(ledger, demo_data):
    b_uuid = uuid.uuid4()
    ledger.grant(demo_data.card_id, a_uuid=uuid.uuid4(), b_uuid=b_uuid, destination="4412345678")
    with pytest.raises(DuplicateGrant, match="already granted"):
        ledger.grant(demo_data.card_id, a_uuid=uuid.uuid4(), b_uuid=b_uuid, destination="4412345678")
