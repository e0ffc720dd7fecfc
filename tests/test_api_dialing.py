"""The API's card operations beyond the basics (transfer, terms, a batch as CSV once) and the dialling
resources (trusted CLIs, hot dial, smart dial, black list), plus the live-calls view per cardd process."""

from __future__ import annotations

import csv
import io
import uuid
from decimal import Decimal

from cardd.billing import identity
from cardd.billing.ledger import Ledger
from tests.test_api import Client, _reseller_world, admin_client, api, sign_in  # noqa: F401 (fixture)


def test_a_transfer_moves_credit_once_per_idempotency_key(api):
    app, database, demo = api
    client = admin_client(api)
    client.post("/cards", json={"number": "7100001", "tariff": "demo", "currency": "USD"})
    body = {"to": "7100001", "amount": "4"}
    first = client.post(f"/cards/{demo.card_number}/transfer", json=body, headers={"Idempotency-Key": "t"})
    again = client.post(f"/cards/{demo.card_number}/transfer", json=body, headers={"Idempotency-Key": "t"})
    assert first.status_code == 200 and first.get_json() == again.get_json()
    assert first.get_json() == {
        "from": demo.card_number,
        "to": "7100001",
        "amount": "4.00000",
        "currency": "USD",
        "from_balance": "6.00000",
        "to_balance": "4.00000",
    }
    too_much = client.post(
        f"/cards/{demo.card_number}/transfer", json={"to": "7100001", "amount": "7"}, headers={"Idempotency-Key": "t2"}
    )
    assert too_much.status_code == 422
    ledger = Ledger(database.pool)
    assert ledger.get_card(demo.card_id).balance == Decimal("6")
    assert ledger.find_card("7100001").balance == Decimal("4")


def test_a_resellers_transfer_to_another_resellers_card_is_refused(api):
    app, database, demo = api
    acme, _ = _reseller_world(database)
    refused = Client(app, acme).post(
        "/cards/880001/transfer", json={"to": "880002", "amount": "1"}, headers={"Idempotency-Key": "x"}
    )
    assert refused.status_code == 404
    assert Ledger(database.pool).find_card("880001").balance == Decimal("5")


def test_terms_change_expiry_plan_and_customer(api):
    app, database, demo = api
    client = admin_client(api)
    client.post("/plans", json={"name": "gold"})
    client.post("/customers", json={"name": "walk-in"})
    changed = client.request(
        "PATCH",
        f"/cards/{demo.card_number}/terms",
        json={"expires_at": "2030-01-01T00:00:00Z", "plan": "gold", "customer": "walk-in"},
    )
    assert changed.status_code == 200, changed.get_json()
    card = changed.get_json()
    assert (card["expires_at"], card["plan"], card["customer"]) == ("2030-01-01T00:00:00Z", "gold", "walk-in")
    cleared = client.request("PATCH", f"/cards/{demo.card_number}/terms", json={"expires_at": None, "plan": None})
    assert cleared.get_json()["expires_at"] is None and cleared.get_json()["plan"] is None
    assert client.request("PATCH", f"/cards/{demo.card_number}/terms", json={"plan": "nope"}).status_code == 422


def test_a_batch_of_cards_comes_as_csv_with_pins_shown_once(api):
    app, database, demo = api
    client = admin_client(api)
    body = {"count": 3, "tariff": "demo", "currency": "USD", "balance": "2", "pin_length": 6}
    first = client.post("/cards/batch", json=body, headers={"Idempotency-Key": "b1"})
    assert first.status_code == 201 and first.content_type.startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(first.get_data(as_text=True))))
    assert len(rows) == 3 and all(len(r["pin"]) == 6 and r["balance"] == "2.00000" for r in rows)
    again = client.post("/cards/batch", json=body, headers={"Idempotency-Key": "b1"})
    replayed = list(csv.DictReader(io.StringIO(again.get_data(as_text=True))))
    assert [r["number"] for r in replayed] == [r["number"] for r in rows] and {r["pin"] for r in replayed} == {""}
    assert client.get("/cards", query_string={"balance_below": "3"}).get_json()["items"].__len__() == 3
    assert sign_in(app, rows[0]["number"], rows[0]["pin"]).status_code == 201
    assert (
        client.post(
            "/cards/batch", json={**body, "length": 6, "count": 10000}, headers={"Idempotency-Key": "b2"}
        ).status_code
        == 422
    )


def test_trusted_clis_are_mapped_listed_and_unmapped(api):
    app, database, demo = api
    client = admin_client(api)
    client.post("/cards", json={"number": "7200001", "tariff": "demo", "currency": "USD"})
    assert client.request("PUT", f"/cards/{demo.card_number}/clis/15551230001").status_code == 200
    assert identity.card_id_for_cli(database.pool, "15551230001") == demo.card_id
    taken = client.request("PUT", "/cards/7200001/clis/15551230001")
    assert taken.status_code == 409
    moved = client.request("PUT", "/cards/7200001/clis/15551230001", query_string={"replace": "true"})
    assert moved.status_code == 200
    assert client.get("/cards/7200001/clis").get_json()["items"] == [{"cli": "15551230001", "card": "7200001"}]
    assert client.request("DELETE", f"/cards/{demo.card_number}/clis/15551230001").status_code == 404
    assert client.request("DELETE", "/cards/7200001/clis/15551230001").status_code == 204
    assert identity.card_id_for_cli(database.pool, "15551230001") is None


def test_hot_dial_and_smart_dial_entries(api):
    app, database, demo = api
    client = admin_client(api)
    assert (
        client.request("PUT", f"/cards/{demo.card_number}/hotdial/1", json={"destination": "442071234567"}).status_code
        == 200
    )
    assert (
        client.request("PUT", f"/cards/{demo.card_number}/hotdial/123", json={"destination": "44"}).status_code == 422
    )
    assert client.get(f"/cards/{demo.card_number}/hotdial").get_json()["items"] == [
        {"key": "1", "destination": "442071234567"}
    ]
    assert identity.hot_dial_get(database.pool, demo.card_id, "1") == "442071234567"
    assert client.request("DELETE", f"/cards/{demo.card_number}/hotdial/1").status_code == 204
    assert (
        client.request(
            "PUT", f"/cards/{demo.card_number}/smartdial/18005550100", json={"destination": "4420", "exclusive": True}
        ).status_code
        == 200
    )
    [entry] = client.get("/smartdial").get_json()["items"]
    assert entry == {"did": "18005550100", "card": demo.card_number, "destination": "4420", "exclusive": True}
    assert client.request("DELETE", f"/cards/{demo.card_number}/smartdial/18005550100").status_code == 204
    assert client.get("/smartdial").get_json()["items"] == []


def test_the_black_list_is_the_operators(api):
    app, database, demo = api
    client = admin_client(api)
    assert client.request("PUT", "/blacklist/15559990000", json={"reason": "fraud"}).status_code == 204
    assert identity.is_blacklisted(database.pool, "15559990000")
    [entry] = client.get("/blacklist").get_json()["items"]
    assert entry["cli"] == "15559990000" and entry["reason"] == "fraud" and entry["blocked"]
    acme, _ = _reseller_world(database)
    assert Client(app, acme).get("/blacklist").status_code == 403
    assert client.request("DELETE", "/blacklist/15559990000").status_code == 204
    assert not identity.is_blacklisted(database.pool, "15559990000")


def test_live_calls_per_cardd_process(api, cardd):
    app, database, demo = api
    client = admin_client(api)
    [node] = client.get("/nodes").get_json()["items"]
    assert node["alive"] and node["calls"] == 0
    # a call granted by that process is one of its live calls
    Ledger(database.pool, node=node["node"]).grant(
        demo.card_id, a_uuid=uuid.uuid4(), b_uuid=uuid.uuid4(), destination="442071234567"
    )
    assert client.get("/nodes").get_json()["items"][0]["calls"] == 1
