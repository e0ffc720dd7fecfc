"""Demo data for a newcomer's first call (`cardd serve --demo`).

A USD tariff whose UK rate is the spec's worked example, and one card. Made
once; a second start finds them and changes nothing."""

from __future__ import annotations

import logging

from psycopg_pool import ConnectionPool

from cardd.billing import catalog

log = logging.getLogger(__name__)

DEMO_TARIFF = "demo"
DEMO_CARD = "1000000001"
DEMO_PIN = "1234"
DEMO_BALANCE = "10.00000"

# prefix: price_1, interval_1, price_n, interval_n, connect_fee, forbidden
DEMO_RATES = {
    "44": ("0.06", 30, "0.06", 6, "0.10", False),  # a 31 s call costs 0.13600
    "1": ("0.02", 60, "0.02", 60, "0", False),
    "4490": ("1.00", 60, "1.00", 60, "0", True),  # premium numbers: forbidden
}


def ensure_demo_data(pool: ConnectionPool) -> None:
    with pool.connection() as conn:
        exists = conn.execute("SELECT 1 FROM accounts WHERE username = %s", (DEMO_CARD,)).fetchone()
    if exists:
        return
    catalog.create_tariff(pool, DEMO_TARIFF, "USD")
    for prefix, (p1, i1, pn, i_n, fee, forbidden) in DEMO_RATES.items():
        catalog.add_rate(
            pool,
            DEMO_TARIFF,
            prefix,
            price_1=p1,
            interval_1=i1,
            price_n=pn,
            interval_n=i_n,
            connect_fee=fee,
            forbidden=forbidden,
        )
    catalog.create_card(pool, DEMO_CARD, tariff=DEMO_TARIFF, currency="USD", pin=DEMO_PIN, balance=DEMO_BALANCE)
    log.info("demo data: card %s, PIN %s, %s USD on tariff %r", DEMO_CARD, DEMO_PIN, DEMO_BALANCE, DEMO_TARIFF)
