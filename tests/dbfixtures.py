"""pytest plugin: real PostgreSQL for tests.

One embedded server per test session (under a temporary directory), or the
server of CARDD_TEST_DSN when set (a role that may CREATE DATABASE). The schema
is migrated once into a template database; each test gets a fresh database
cloned from it with CREATE DATABASE ... TEMPLATE (a few milliseconds), dropped
afterwards.

Fixtures: pg_server (session), dsn, database, ledger, demo_data, pin_key (autouse); and
private_pg_server for database-fault tests that stop and start a server of
their own. create_demo_data() is importable for tests that build their own pool.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from cardd.billing import catalog, pins
from cardd.billing.ledger import Ledger
from cardd.config import load_settings
from cardd.db import Database, EmbeddedServer, dsn_with_dbname, migrate_conn


@dataclass
class PgServer:
    """A server tests may create databases on."""

    admin_dsn: str
    template: str

    def dsn_for(self, dbname: str) -> str:
        return dsn_with_dbname(self.admin_dsn, dbname)

    def create_database(self) -> str:
        name = f"cardd_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        return name

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _make_template(admin_dsn: str) -> str:
    name = f"cardd_template_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(dsn_with_dbname(admin_dsn, name), autocommit=True) as conn:
        migrate_conn(conn)
    return name


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgServer]:
    env_dsn = os.environ.get("CARDD_TEST_DSN", "")
    embedded: EmbeddedServer | None = None
    if env_dsn:
        admin = env_dsn
    else:
        embedded = EmbeddedServer(tmp_path_factory.mktemp("pg") / "data").start()
        admin = embedded.uri("postgres")
    server = PgServer(admin, _make_template(admin))
    try:
        yield server
    finally:
        if embedded is not None:
            embedded.stop()
        else:
            server.drop_database(server.template)


@pytest.fixture(autouse=True)
def pin_key() -> str:
    """The PIN key every test hashes and checks PINs with: the default settings'
    key file (as `cardd serve` with default settings uses; created on first use),
    installed afresh for each test so a test that loaded another key leaves no trace."""
    path = pins.key_path(load_settings(None).daemon)
    pins.load_key(path, create=True)
    return path


@pytest.fixture
def dsn(pg_server: PgServer) -> Iterator[str]:
    """A fresh, migrated database of its own for this test."""
    name = pg_server.create_database()
    try:
        yield pg_server.dsn_for(name)
    finally:
        pg_server.drop_database(name)


@pytest.fixture
def database(dsn: str) -> Iterator[Database]:
    """A started, migrated cardd.db.Database on this test's database."""
    db = Database(dsn, pool_size=10, pool_timeout=10.0)
    db.start()
    db.migrate()
    try:
        yield db
    finally:
        db.close()


@pytest.fixture
def ledger(database: Database) -> Ledger:
    return Ledger(database.pool)


@dataclass(frozen=True)
class DemoData:
    tariff: str
    tariff_id: int
    currency: str
    card_id: int
    card_number: str
    pin: str
    balance: Decimal
    rates: dict[str, int]  # prefix -> rate id


# prefix: (price_1, interval_1, price_n, interval_n, connect_fee, free_seconds, grace, forbidden)
DEMO_RATES: dict[str, tuple[str, int, str, int, str, int, int, bool]] = {
    # the spec's worked example: a 31 s call costs 0.13600
    "44": ("0.06", 30, "0.06", 6, "0.10", 0, 0, False),
    "4420": ("0.03", 60, "0.03", 60, "0", 0, 0, False),  # London, cheaper than the rest of 44
    "1": ("0.60", 60, "0.60", 1, "0", 0, 5, False),  # 0.01 per second after the first minute
    "4490": ("1.00", 60, "1.00", 60, "0", 0, 0, True),  # forbidden premium numbers
}


def create_demo_data(
    pool: ConnectionPool,
    *,
    tariff: str = "demo",
    currency: str = "USD",
    card_number: str = "1234567890",
    pin: str = "4321",
    balance: str = "10.00000",
    max_concurrent_calls: int | None = None,
) -> DemoData:
    """A USD tariff with a few rates (one forbidden) and a card with a PIN and a balance."""
    tariff_id = catalog.create_tariff(pool, tariff, currency)
    rates = {}
    for prefix, (p1, i1, pn, i_n, fee, free, grace, forbidden) in DEMO_RATES.items():
        rates[prefix] = catalog.add_rate(
            pool,
            tariff,
            prefix,
            price_1=p1,
            interval_1=i1,
            price_n=pn,
            interval_n=i_n,
            connect_fee=fee,
            free_seconds=free,
            grace=grace,
            forbidden=forbidden,
        )
    card_id = catalog.create_card(
        pool,
        card_number,
        tariff=tariff,
        currency=currency,
        pin=pin,
        balance=balance,
        max_concurrent_calls=max_concurrent_calls,
    )
    return DemoData(tariff, tariff_id, currency, card_id, card_number, pin, Decimal(balance), rates)


@pytest.fixture
def demo_data(database: Database) -> DemoData:
    return create_demo_data(database.pool)


class PrivatePgServer:
    """An embedded server of a test's own, for database-fault tests: stop() and start() at will."""

    def __init__(self, pgdata: Path):
        self._server = EmbeddedServer(pgdata)
        self.dsn = ""

    def start(self) -> str:
        self._server.start()
        self.dsn = self._server.uri("postgres")
        return self.dsn

    def stop(self) -> None:
        self._server.stop()


@pytest.fixture
def private_pg_server(tmp_path: Path) -> Iterator[PrivatePgServer]:
    server = PrivatePgServer(tmp_path / "pgdata")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def wait_until_serving(db: Database, timeout: float = 60.0) -> None:
    """After a test restarted the server: wait until db's pool hands out a working
    connection again. The pool reconnects in the background with a back-off, which
    on a busy machine takes longer than the short pool_timeout such tests use to
    fail fast while the server is down; a condition, not a sleep. Once it serves,
    the pool gets the suite's usual patience back (a busy machine opens the next
    connections slowly too)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with db.pool.connection() as conn:
                conn.execute("SELECT 1")
            db.pool.timeout = max(db.pool.timeout, 30.0)
            return
        except Exception:  # PoolTimeout or a connection broken by the restart
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
