"""The API's other resources on real PostgreSQL: CDRs (filters, cursor, CSV), reservations (settle,
release, once), tariffs and rates (CRUD, lookup with the max duration, CSV import refused whole with
every bad row), vouchers, customers, plans; every change audited with who and from where."""

from __future__ import annotations

import csv
import io
import logging
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg

from cardd.billing import catalog
from cardd.billing.ledger import Ledger
from cardd.billing.rating import Rate, max_duration
from tests.test_api import Client, _reseller_world, admin_client, api  # noqa: F401 (fixture)


def call(database, card_id: int, destination: str, seconds: int, cause: str = "NORMAL_CLEARING") -> uuid.UUID:
    ledger = Ledger(database.pool)
    b_uuid = uuid.uuid4()
    ledger.grant(card_id, a_uuid=uuid.uuid4(), b_uuid=b_uuid, destination=destination)
    ledger.settle(b_uuid, billmsec=seconds * 1000, hangup_cause=cause)
    return b_uuid


def test_cdrs_filter_by_card_destination_cause_and_time_and_page_by_cursor(api):
    app, database, demo = api
    other = catalog.create_card(database.pool, "5551234", tariff="demo", currency="USD", balance="10")
    london = [call(database, demo.card_id, "442071234567", 30 + i) for i in range(3)]
    call(database, demo.card_id, "15551230000", 10, cause="USER_BUSY")
    call(database, other, "442079999999", 40)
    client = admin_client(api)
    by_card = client.get("/cdrs", query_string={"card": demo.card_number, "destination": "4420"}).get_json()
    assert {c["b_uuid"] for c in by_card["items"]} == {str(u) for u in london}
    assert [c["card"] for c in client.get("/cdrs", query_string={"cause": "USER_BUSY"}).get_json()["items"]] == [
        demo.card_number
    ]
    seen, cursor = [], None
    while True:
        page = client.get("/cdrs", query_string={"limit": 2, **({"cursor": cursor} if cursor else {})}).get_json()
        seen += [c["id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == sorted(seen, reverse=True) and len(seen) == len(set(seen)) == 5
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert client.get("/cdrs", query_string={"from": future}).get_json()["items"] == []
    naive = client.get("/cdrs", query_string={"from": "2026-01-01T00:00:00"})
    assert naive.status_code == 422 and naive.get_json()["invalid_params"][0]["name"] == "from"
    text = client.get("/cdrs", query_string={"card": "5551234", "format": "csv"}).get_data(as_text=True)
    [row] = list(csv.DictReader(io.StringIO(text)))
    assert row["card"] == "5551234" and row["billed_seconds"] == "40" and len(row["cost"].split(".")[1]) == 5


def test_reservations_are_listed_and_settled_once_with_an_idempotency_key(api):
    app, database, demo = api
    ledger = Ledger(database.pool)
    b_uuid = uuid.uuid4()
    ledger.grant(demo.card_id, a_uuid=uuid.uuid4(), b_uuid=b_uuid, destination="441234567890")
    client = admin_client(api)
    [listed] = client.get("/reservations").get_json()["items"]
    assert listed["b_uuid"] == str(b_uuid) and listed["card"] == demo.card_number and not listed["expired"]
    # not expired yet: the call may be up; refused unless forced
    early = client.post(
        f"/reservations/{b_uuid}/settle", json={"billed_seconds": 31}, headers={"Idempotency-Key": "s0"}
    )
    assert early.status_code == 422 and "not expired" in early.get_json()["detail"]
    body = {"billed_seconds": 31, "force": True, "reason": "switch lost"}
    first = client.post(f"/reservations/{b_uuid}/settle", json=body, headers={"Idempotency-Key": "s1"})
    again = client.post(f"/reservations/{b_uuid}/settle", json=body, headers={"Idempotency-Key": "s1"})
    assert first.status_code == again.status_code == 200 and first.get_json() == again.get_json()
    assert first.get_json()["cost"] == "0.13600"  # the spec's worked example: 31 s to 44
    assert ledger.get_card(demo.card_id).balance == Decimal("9.864")
    # a new key is a new request: the reservation is closed, nothing is charged twice
    twice = client.post(f"/reservations/{b_uuid}/release", json={"force": True}, headers={"Idempotency-Key": "s2"})
    assert twice.status_code == 422 and ledger.get_card(demo.card_id).balance == Decimal("9.864")
    assert client.get("/reservations").get_json()["items"] == []
    with psycopg.connect(database.dsn) as conn:
        [(who, action)] = conn.execute("SELECT who, action FROM operator_audit WHERE b_uuid = %s", (b_uuid,)).fetchall()
    assert action == "reservations settle" and who.endswith("from 127.0.0.1")


def test_a_reseller_cannot_see_or_settle_another_resellers_reservation(api):
    app, database, demo = api
    acme, globex = _reseller_world(database)
    card = Ledger(database.pool).find_card("880002")
    b_uuid = uuid.uuid4()
    Ledger(database.pool).grant(card.id, a_uuid=uuid.uuid4(), b_uuid=b_uuid, destination="442071234567")
    assert Client(app, acme).get("/reservations").get_json()["items"] == []
    assert len(Client(app, globex).get("/reservations").get_json()["items"]) == 1
    refused = Client(app, acme).post(
        f"/reservations/{b_uuid}/release", json={"force": True}, headers={"Idempotency-Key": "x"}
    )
    assert refused.status_code == 404


def test_rates_are_added_listed_looked_up_and_deleted(api):
    app, database, demo = api
    client = admin_client(api)
    assert client.post("/tariffs", json={"name": "retail", "currency": "EUR"}).status_code == 201
    assert client.post("/tariffs", json={"name": "retail", "currency": "EUR"}).status_code == 422
    rate = {"prefix": "33", "price_1": "0.02", "interval_1": 60, "price_n": "0.02", "interval_n": 60}
    assert client.request("PUT", "/tariffs/retail/rates", json=rate).status_code == 200
    assert (
        client.request(
            "PUT", "/tariffs/retail/rates", json={**rate, "prefix": "331", "price_1": "0.05", "price_n": "0.05"}
        ).status_code
        == 200
    )
    listed = client.get("/tariffs/retail/rates", query_string={"prefix": "331"}).get_json()["items"]
    assert [r["prefix"] for r in listed] == ["331"] and listed[0]["price_1"] == "0.05000"
    found = client.get("/tariffs/retail/lookup", query_string={"number": "33112345", "credit": "1"}).get_json()
    expected = max_duration(
        Rate(prefix="331", price_1=Decimal("0.05"), interval_1=60, price_n=Decimal("0.05"), interval_n=60), Decimal("1")
    )
    assert found["rate"]["prefix"] == "331" and found["max_duration_s"] == expected == 1200
    assert client.request("DELETE", "/tariffs/retail/rates/331").status_code == 204
    after = client.get("/tariffs/retail/lookup", query_string={"number": "33112345"}).get_json()
    assert after["rate"]["prefix"] == "33"
    assert client.request("DELETE", "/tariffs/retail/rates/331").status_code == 404
    tariffs = client.get("/tariffs").get_json()["items"]
    assert {(t["name"], t["rates"]) for t in tariffs} == {("demo", 4), ("retail", 1)}


HEADER = "prefix,description,price_1,interval_1,price_n,interval_n,connect_fee,free_seconds,grace\n"


def test_a_rates_csv_with_bad_rows_is_refused_whole_with_every_bad_row_named(api):
    app, database, demo = api
    client = admin_client(api)
    bad = HEADER + "49,Germany,0.05,60,0.05,60,0,0,0\n4930,Berlin,abc,60,0.05,60,0,0,0\n49x,Bad,0.05,0,0.05,60,0,0,0\n"
    refused = client.post("/tariffs/demo/rates/import", data=bad, content_type="text/csv")
    assert refused.status_code == 422
    names = [p["name"] for p in refused.get_json()["invalid_params"]]
    assert names[0] == "line 3" and "line 4" in names
    assert client.get("/tariffs/demo/rates", query_string={"prefix": "49"}).get_json()["items"] == []
    good = HEADER + "49,Germany,0.05,60,0.05,60,0,0,0\n4930,Berlin,0.04,60,0.04,60,0,0,0\n"
    done = client.post("/tariffs/demo/rates/import", data=good, content_type="text/csv")
    assert done.status_code == 200 and done.get_json()["inserted"] == 2


def test_vouchers_are_generated_listed_voided_and_redeemed_once(api, caplog):
    caplog.set_level(logging.INFO)
    app, database, demo = api
    client = admin_client(api)
    made = client.post("/vouchers", json={"count": 3, "amount": "5", "currency": "USD", "batch": "shop-1"})
    assert made.status_code == 201
    numbers = made.get_json()["numbers"]
    listed = client.get("/vouchers", query_string={"batch": "shop-1"}).get_json()["items"]
    assert [v["number"] for v in listed] == numbers and {v["amount"] for v in listed} == {"5.00000"}
    assert client.post(f"/vouchers/{numbers[0]}/void").status_code == 204
    assert client.post(f"/vouchers/{numbers[0]}/void").status_code == 404
    body = {"card": demo.card_number}
    first = client.post(f"/vouchers/{numbers[1]}/redeem", json=body, headers={"Idempotency-Key": "v1"})
    again = client.post(f"/vouchers/{numbers[1]}/redeem", json=body, headers={"Idempotency-Key": "v1"})
    assert first.get_json() == again.get_json() and first.get_json()["balance"] == "15.00000"
    voided = client.post(f"/vouchers/{numbers[0]}/redeem", json=body, headers={"Idempotency-Key": "v2"})
    assert voided.status_code == 422
    assert Ledger(database.pool).get_card(demo.card_id).balance == Decimal("15")
    assert [v["status"] for v in client.get("/vouchers", query_string={"batch": "shop-1"}).get_json()["items"]] == [
        "void",
        "used",
        "unused",
    ]
    # a voucher number is as good as money: the request log keeps its last 4 digits only
    assert f"/vouchers/…{numbers[1][-4:]}/redeem" in caplog.text
    assert all(n not in caplog.text for n in numbers)


def test_resellers_do_not_see_vouchers_tariff_changes_or_plans(api):
    app, database, demo = api
    acme, _ = _reseller_world(database)
    reseller = Client(app, acme)
    assert reseller.get("/vouchers").status_code == 403
    assert reseller.post("/vouchers", json={"count": 1, "amount": "5", "currency": "USD"}).status_code == 403
    assert reseller.post("/tariffs", json={"name": "mine", "currency": "USD"}).status_code == 403
    assert reseller.get("/plans").status_code == 403


def test_plans_and_customers_are_created_and_listed(api):
    app, database, demo = api
    client = admin_client(api)
    made = client.post("/plans", json={"name": "gold", "minutes_plan": True, "minutes": {"44": 100}})
    assert made.status_code == 201 and made.get_json()["minutes"] == {"44": 100}
    assert client.get("/plans").get_json()["items"][0]["name"] == "gold"
    assert client.post("/customers", json={"name": "walk-in"}).get_json() | {"created_at": None} == {
        "name": "walk-in",
        "owner": None,
        "cards": 0,
        "created_at": None,
    }
    assert client.post("/customers", json={"name": "walk-in"}).status_code == 422
    created = client.post(
        "/cards", json={"number": "6000001", "tariff": "demo", "currency": "USD", "customer": "walk-in", "plan": "gold"}
    ).get_json()
    assert created["customer"] == "walk-in" and created["plan"] == "gold"


def test_every_api_change_is_audited_with_who_and_from_where(api):
    app, database, demo = api
    client = admin_client(api)
    client.post("/tariffs", json={"name": "t2", "currency": "USD"})
    client.post("/cards", json={"number": "6000002", "tariff": "demo", "currency": "USD"})
    client.post("/vouchers", json={"count": 1, "amount": "1", "currency": "USD"})
    with psycopg.connect(database.dsn) as conn:
        rows = conn.execute("SELECT who, action FROM operator_audit WHERE who LIKE 'api key%' ORDER BY id").fetchall()
    assert [a for _, a in rows] == ["tariff add", "card add", "voucher generate"]
    assert all(w.startswith("api key test (") and w.endswith(" from 127.0.0.1") for w, _ in rows)


def test_customers_and_plans_are_renamed_and_deleted_and_the_audit_is_paged(api):
    app, database, demo = api
    client = admin_client(api)
    client.post("/customers", json={"name": "walk-in"})
    renamed = client.request("PATCH", "/customers/walk-in", json={"name": "street"})
    assert renamed.status_code == 200 and renamed.get_json()["name"] == "street"
    assert client.get("/customers/walk-in").status_code == 404
    client.post("/cards", json={"number": "6100001", "tariff": "demo", "currency": "USD", "customer": "street"})
    assert client.request("DELETE", "/customers/street").status_code == 422  # still has a card
    client.post("/plans", json={"name": "gold", "minutes": {"44": 10}})
    changed = client.request(
        "PATCH", "/plans/gold", json={"suspended": True, "minutes": {"1": 5}, "remove_prefixes": ["44"]}
    )
    assert changed.get_json()["suspended"] is True and changed.get_json()["minutes"] == {"1": 5}
    assert client.request("DELETE", "/plans/gold").status_code == 204
    actions, cursor = [], None
    while True:
        page = client.get("/audit", query_string={"limit": 2, **({"cursor": cursor} if cursor else {})}).get_json()
        actions += [line["action"] for line in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert actions == [
        "plan delete",
        "plan update",
        "plan add",
        "card add",
        "customer rename",
        "customer add",
        "apikey add",
    ]
    card_lines = client.get("/audit", query_string={"card": "6100001"}).get_json()["items"]
    assert [line["action"] for line in card_lines] == ["card add"]


def test_a_cards_csv_with_bad_rows_is_refused_whole_and_a_good_one_imported(api):
    app, database, demo = api
    client = admin_client(api)
    query = {"tariff": "demo", "currency": "USD"}
    bad = "number,pin,balance\n5000001,1111,5\n50x,1111,5\n5000001,2222,5\n"
    refused = client.post("/cards/import", query_string=query, data=bad, content_type="text/csv")
    assert refused.status_code == 422
    assert [p["name"] for p in refused.get_json()["invalid_params"]] == ["line 3", "line 4"]
    assert Ledger(database.pool).find_card("5000001") is None
    good = "number,pin,balance\n5000001,1111,5\n5000002,,2.5\n"
    done = client.post("/cards/import", query_string=query, data=good, content_type="text/csv")
    assert done.status_code == 201 and done.get_json() == {"cards": 2}
    assert Ledger(database.pool).find_card("5000002").balance == Decimal("2.5")
    assert "1111" not in done.get_data(as_text=True) + refused.get_data(as_text=True)


def test_customer_and_reseller_cdr_lists_follow_the_customer_a_call_was_billed_to(api):
    app, database, demo = api
    acme, globex = _reseller_world(database)
    acme_card = Ledger(database.pool).find_card("880001")
    globex_card = Ledger(database.pool).find_card("880002")
    acme_call = call(database, acme_card.id, "442071234567", 30)
    globex_call = call(database, globex_card.id, "442071234567", 30)
    call(database, demo.card_id, "442071234567", 30)  # the operator's own card, no customer
    client = admin_client(api)
    by_customer = client.get("/cdrs", query_string={"customer": "acme shop"}).get_json()["items"]
    assert [c["b_uuid"] for c in by_customer] == [str(acme_call)]
    assert [c["b_uuid"] for c in Client(app, acme).get("/cdrs").get_json()["items"]] == [str(acme_call)]
    assert Client(app, acme).get("/cdrs", query_string={"customer": "globex shop"}).status_code == 404
    # the card moves to acme: its earlier call stays globex's (billed to globex's customer), later ones are acme's
    client.request("PATCH", "/cards/880002/terms", json={"customer": "acme shop"})
    later = call(database, globex_card.id, "442071234567", 30)
    assert [c["b_uuid"] for c in Client(app, acme).get("/cdrs").get_json()["items"]] == [str(later), str(acme_call)]
    assert [c["b_uuid"] for c in Client(app, globex).get("/cdrs").get_json()["items"]] == [str(globex_call)]
