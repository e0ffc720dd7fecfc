"""Billing as repositories (cardd.billing.repository): the IVR reaches the database only through the
repositories in Services (Ledger, Identity, Vouchers, PromptStore), each query timed into
cardd_db_query_seconds{op=<method>} and a lost database raised as DatabaseUnavailable, the same way for all.

Demo card (tests/dbfixtures.py): 1234567890, PIN 4321, 10.00 USD."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
import pytest
from prometheus_client import CollectorRegistry
from psycopg_pool import ConnectionPool

from cardd.billing.identity import Identity
from cardd.billing.ledger import Ledger
from cardd.billing.prompt_store import PromptStore
from cardd.billing.vouchers import Vouchers
from cardd.errors import DatabaseUnavailable
from cardd.metrics import Metrics
from cardd.sim import Caller
from tests.test_vouchers import add_voucher

IVR = Path(__file__).resolve().parent.parent / "cardd" / "ivr"


def test_a_calls_identification_blacklist_and_voucher_queries_are_timed(cardd_with, database, demo_data, tmp_path):
    add_voucher(database.pool, "9000000001", "5")
    running = cardd_with(database, "calling_card:\n  blacklist: true\n", tmp_path=tmp_path)
    caller = Caller(
        cli="15555550100",
        destination="cc.topupext5",
        type_after=6,
        digits=[demo_data.card_number + "#", demo_data.pin + "#", "5#", "9000000001#"],
    )
    heard = running.heard(running.call(caller))
    assert "topup_successful" in heard
    timed = {
        s.labels["op"]
        for s in running.metrics.db_query_seconds.collect()[0].samples
        if s.name == "cardd_db_query_seconds_count" and s.value > 0
    }
    # blacklist, identification (the CLI's throttle, the card with its PIN buckets, the PIN's verdict),
    # the top-up's throttle, gate and voucher
    assert {"is_blacklisted", "throttled", "card_for_pin", "verdict", "is_full", "gate", "redeem_in"} <= timed, timed


def test_the_ivr_never_reaches_for_a_pool():
    reaches = [
        f"{path.name}:{n}: {line.strip()}"
        for path in sorted(IVR.glob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\.pool\b", line)
    ]
    assert reaches == []


@pytest.fixture
def unreachable_pool():
    """A pool whose server is not there: every checkout fails after its short timeout."""
    pool = ConnectionPool(
        "host=127.0.0.1 port=1 connect_timeout=1", min_size=0, max_size=1, timeout=0.3, reconnect_timeout=0.3, open=True
    )
    yield pool
    pool.close()


def test_every_repository_times_a_failed_query_and_raises_database_unavailable(unreachable_pool):
    metrics = Metrics(CollectorRegistry())
    observe = metrics.observe_query
    queries = [
        (lambda: Ledger(unreachable_pool, observe=observe).find_card("1234567890"), "find_card"),
        (lambda: Identity(unreachable_pool, observe=observe).is_blacklisted("15555550100"), "is_blacklisted"),
        (lambda: Vouchers(unreachable_pool, observe=observe).redeem("9000000001", 1), "redeem"),
        (lambda: PromptStore(unreachable_pool, observe=observe).get_prompt(1), "get_prompt"),
    ]
    for run, op in queries:
        with pytest.raises(DatabaseUnavailable) as raised:
            run()
        assert isinstance(raised.value.__cause__, psycopg.OperationalError)
        assert metrics.registry.get_sample_value("cardd_db_query_seconds_count", {"op": op}) == 1, op
