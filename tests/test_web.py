"""The web console and the self-care page (cardd/web) through the API's WSGI application, on real
PostgreSQL: sign-in, CSRF, headers, escaping, and every page's money adding up."""

from __future__ import annotations

import logging
import re
import uuid
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import pytest

from cardd.api.app import ApiConfig, create_app
from cardd.billing import apiauth, vouchers
from cardd.billing.identity import Limits
from cardd.billing.ledger import Ledger
from cardd.web import CSP
from tests.dbfixtures import create_demo_data

PIN_LIMITS = Limits(window_s=900, per_cli=10, per_card=5)
TOPUP_LIMITS = Limits(window_s=3600, per_cli=5, per_card=5, service=100)
SCRIPT = "<script>alert(1)</script>"
SAME_SITE = {"Referer": "https://localhost/"}  # over https Flask-WTF also checks the referrer is this site


class Browser:
    """The Flask test client as a browser: cookies kept (over https, as the Secure cookie needs),
    the CSRF token read from the last page's form."""

    def __init__(self, app: Any):
        self.http = app.test_client()
        self.last = ""

    def get(self, path: str, **kw: Any) -> Any:
        response = self.http.get(path, base_url="https://localhost", **kw)
        self.last = response.get_data(as_text=True)
        return response

    def token(self) -> str:
        found = re.search(r'name="csrf_token" value="([^"]+)"', self.last)
        assert found, "the page has no CSRF token"
        return found.group(1)

    def post(self, path: str, data: dict[str, Any] | None = None, *, csrf: bool = True, **kw: Any) -> Any:
        form = dict(data or {})
        if csrf:
            form["csrf_token"] = self.token()
        response = self.http.post(path, data=form, base_url="https://localhost", headers=SAME_SITE, **kw)
        self.last = response.get_data(as_text=True)
        return response

    def hidden(self, name: str) -> str:
        found = re.search(rf'name="{name}" value="([^"]*)"', self.last)
        assert found, f"no hidden field {name}"
        return found.group(1)


def balance(database, card_id: int) -> Decimal:
    return Ledger(database.pool).get_card(card_id).balance


@pytest.fixture
def web(database):
    demo = create_demo_data(database.pool)
    app = create_app(database.pool, ApiConfig(limits=PIN_LIMITS, topup_limits=TOPUP_LIMITS))
    app.config["CARDD_WEB_FIGURES_CACHE_S"] = 0  # every dashboard load reads the CDRs afresh
    return app, database, demo


def operator(web, role: str = "admin", owner: str | None = None) -> Browser:
    app, database, _ = web
    key = apiauth.create_key(database.pool, "console", role, owner=owner, who="pytest")
    b = Browser(app)
    b.get("/login")
    response = b.post("/login", {"key": key})
    assert response.status_code == 302, b.last
    return b


def holder(web, number: str | None = None, pin: str | None = None) -> Browser:
    app, _, demo = web
    b = Browser(app)
    b.get("/my/login")
    response = b.post("/my/login", {"number": number or demo.card_number, "pin": pin or demo.pin})
    assert response.status_code == 302, b.last
    return b


def test_pages_need_a_signed_in_operator(web):
    app, _, _ = web
    b = Browser(app)
    for path in ("/", "/cards", "/cards/1234567890", "/rates", "/cdrs", "/cdrs.csv", "/reservations"):
        response = b.get(path)
        assert response.status_code == 302 and "/login" in response.headers["Location"], path
    assert b.get("/my").status_code == 302


def test_a_wrong_api_key_is_refused_and_a_good_one_signs_in(web):
    app, _, _ = web
    b = Browser(app)
    b.get("/login")
    assert b.post("/login", {"key": "cardd_nope_nope"}).status_code == 401
    assert "not valid" in b.last
    b = operator(web)
    assert b.get("/").status_code == 200 and "Dashboard" in b.last


def test_every_page_has_the_security_headers_and_a_secure_cookie(web):
    app, _, _ = web
    b = Browser(app)
    response = b.get("/login")
    assert response.headers["Content-Security-Policy"] == CSP
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    cookie = response.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    key = apiauth.create_key(app.extensions["cardd"]["pool"], "console", "admin", who="pytest")
    signed = b.post("/login", {"key": key}).headers["Set-Cookie"]
    assert "Secure" in signed and "HttpOnly" in signed and "Expires=" in signed  # a session that ends
    ops = operator(web)
    for path in ("/", "/cards", "/cards/1234567890", "/rates", "/cdrs", "/reservations"):
        assert ops.get(path).headers["Content-Security-Policy"] == CSP, path
    # The API keeps its own answers (no cookie, no CSP needed for JSON).
    assert "Set-Cookie" not in app.test_client().get("/api/v1/openapi.json").headers


def test_a_form_without_its_csrf_token_changes_nothing(web):
    app, database, demo = web
    b = operator(web)
    b.get(f"/cards/{demo.card_number}")
    response = b.post(f"/cards/{demo.card_number}/block", csrf=False)
    assert response.status_code == 400 and "not sent by this site" in b.last
    assert b.get(f"/cards/{demo.card_number}").status_code == 200 and '<dd id="status">active</dd>' in b.last
    # Nor does a sign-in form without one.
    fresh = Browser(app)
    assert fresh.post("/my/login", {"number": demo.card_number, "pin": demo.pin}, csrf=False).status_code == 400


def test_the_api_keeps_bearer_auth_beside_the_pages(web):
    app, database, _ = web
    key = apiauth.create_key(database.pool, "k", "admin", who="pytest")
    client = app.test_client()
    assert client.get("/api/v1/cards").status_code == 401
    assert client.get("/api/v1/cards", headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_the_bearer_check_guards_only_the_api_and_every_app_hook_runs_for_pages(web):
    """cardd.api.app._authenticate asks for a token under /api/v1 only; the app's hooks are not
    wrapped for the pages (the upload limit, an app-wide hook, reaches the console's rates form)."""
    app, _, _ = web
    client = app.test_client()
    assert client.get("/api/v1/nowhere").status_code == 401
    outside = client.get("/nowhere")
    assert outside.status_code == 404 and "WWW-Authenticate" not in outside.headers
    assert all(not hasattr(hook, "__wrapped__") for hook in app.before_request_funcs[None])


def test_sessions_expire(database):
    create_demo_data(database.pool)
    app = create_app(database.pool, ApiConfig(limits=PIN_LIMITS, topup_limits=TOPUP_LIMITS, session_lifetime_s=0))
    key = apiauth.create_key(database.pool, "console", "admin", who="pytest")
    b = Browser(app)
    b.get("/login")
    assert b.post("/login", {"key": key}).status_code == 302
    assert b.get("/").status_code == 302  # a session of 0 s is over at once


@pytest.mark.parametrize("target", ["//evil.example/", "/\\evil.example/", "https://evil.example/"])
def test_sign_in_never_redirects_off_the_site(web, target):
    app, database, _ = web
    key = apiauth.create_key(database.pool, "console", "admin", who="pytest")
    b = Browser(app)
    b.get("/login")
    response = b.post("/login?" + urlencode({"next": target}), {"key": key})
    assert response.status_code == 302 and response.headers["Location"] == "/"
    b2 = Browser(app)
    b2.get("/login")
    assert b2.post("/login?next=/cards", {"key": key}).headers["Location"] == "/cards"


def test_signing_out_ends_the_session(web):
    b = operator(web)
    b.get("/")
    b.post("/logout")
    assert b.get("/").status_code == 302


def test_the_card_page_history_adds_up_to_the_balance(web):
    app, database, demo = web
    ledger = Ledger(database.pool)
    ledger.adjust(demo.card_id, Decimal("2.50000"), reference="goodwill")
    ledger.adjust(demo.card_id, Decimal("-0.75000"), reference="fee")
    b = operator(web)
    b.get(f"/cards/{demo.card_number}")
    balance = re.search(r'<dd id="balance">([-\d.]+) USD</dd>', b.last).group(1)
    total = re.search(r'<td class="num" id="total">([-\d.]+) USD</td>', b.last).group(1)
    forward = Decimal(re.search(r'id="forward">([-\d.]+)<', b.last).group(1))
    amounts = re.findall(r'<td class="num">([-\d.]+)</td><td class="num">[-\d.]+</td></tr>', b.last)
    assert Decimal(balance) == Decimal("11.75000") == Decimal(total) == forward + sum(Decimal(a) for a in amounts)
    assert len(amounts) == 3  # initial, goodwill, fee


def test_an_adjustment_is_confirmed_then_made_once_and_shows_its_ledger_row(web):
    app, database, demo = web
    b = operator(web)
    b.get(f"/cards/{demo.card_number}")
    b.post(f"/cards/{demo.card_number}/adjust", {"amount": "5", "reference": "refund"})
    assert "Please confirm" in b.last and "5.00000 USD to card 1234567890" in b.last
    assert balance(database, demo.card_id) == Decimal("10")  # nothing moved yet
    confirm = {
        "step": "confirm",
        "confirm_key": b.hidden("confirm_key"),
        "amount": b.hidden("amount"),
        "reference": b.hidden("reference"),
        "allow_negative": "",
    }
    token = b.token()
    response = b.post(f"/cards/{demo.card_number}/adjust", {**confirm, "csrf_token": token}, csrf=False)
    assert response.status_code == 200 and 'id="ledger-row"' in b.last
    assert "adjustment" in b.last and "15.00000 USD" in b.last
    # The same confirmation sent again (a double click, a reload) moves nothing.
    b.post(f"/cards/{demo.card_number}/adjust", {**confirm, "csrf_token": token}, csrf=False)
    assert "already done" in b.last
    assert balance(database, demo.card_id) == Decimal("15")


def test_a_refused_adjustment_says_why_and_moves_nothing(web):
    app, database, demo = web
    b = operator(web)
    b.get(f"/cards/{demo.card_number}")
    b.post(f"/cards/{demo.card_number}/adjust", {"amount": "-50"})
    b.post(
        f"/cards/{demo.card_number}/adjust",
        {
            "step": "confirm",
            "confirm_key": b.hidden("confirm_key"),
            "amount": "-50.00000",
            "reference": b.hidden("reference"),
            "allow_negative": "",
        },
    )
    assert "would take the balance" in b.last
    assert balance(database, demo.card_id) == Decimal("10")


def test_a_readonly_key_sees_but_cannot_change(web):
    app, database, demo = web
    b = operator(web, role="readonly")
    assert b.get(f"/cards/{demo.card_number}").status_code == 200
    assert "Review adjustment" not in b.last
    assert b.post(f"/cards/{demo.card_number}/block").status_code == 403
    b.get("/rates")
    assert b.post("/rates", {"tariff": "demo"}).status_code == 403


def test_a_reseller_cannot_open_another_owners_card(web):
    b = operator(web, role="reseller", owner="acme")
    assert b.get("/cards/1234567890").status_code == 404
    assert "1234567890" not in b.get("/cards").get_data(as_text=True)


def test_block_and_set_pin(web):
    app, database, demo = web
    b = operator(web)
    b.get(f"/cards/{demo.card_number}")
    b.post(f"/cards/{demo.card_number}/block")
    b.get(f"/cards/{demo.card_number}")
    assert '<dd id="status">blocked</dd>' in b.last
    signed_in_before = holder(web)
    b.post(f"/cards/{demo.card_number}/pin", {"pin": "9999"})
    assert "PIN was changed" in b.last
    assert signed_in_before.get("/my").status_code == 302  # the old PIN's session has ended
    holder(web, pin="9999")


def _post_rates(b: Browser, tariff: str, text: str) -> Any:
    import io

    b.get("/rates")
    return b.http.post(
        "/rates",
        base_url="https://localhost",
        content_type="multipart/form-data",
        headers=SAME_SITE,
        data={
            "csrf_token": b.token(),
            "tariff": tariff,
            "mode": "merge",
            "file": (io.BytesIO(text.encode()), "rates.csv"),
        },
    )


REFRESH = '<meta http-equiv="refresh"'


def _follow_import(b: Browser, response: Any) -> tuple[Any, list[str]]:
    """The upload's answer followed as a browser without JavaScript does: the progress page's
    meta refresh until the result. Returns the result and the progress pages seen."""
    import gevent

    assert response.status_code == 303, response.get_data(as_text=True)
    progress, url = [], response.headers["Location"].replace("https://localhost", "")
    while True:
        response = b.get(url)
        if REFRESH not in b.last:
            return response, progress
        progress.append(b.last)
        gevent.sleep(0.01)  # the import's greenlet runs meanwhile


def _upload(b: Browser, tariff: str, text: str) -> Any:
    return _follow_import(b, _post_rates(b, tariff, text))[0]


def _rate_rows(count: int, bad_line: int | None = None) -> str:
    lines = ["prefix,price_1,interval_1,price_n,interval_n"]
    lines += [f"49{n:07d},{'x' if n + 2 == bad_line else '0.01'},60,0.01,60" for n in range(count)]
    return "\n".join(lines) + "\n"


def test_a_large_rates_file_shows_its_progress_then_the_counts(web):
    b = operator(web)
    text = _rate_rows(50_000)
    assert len(text) > 1 << 20  # over api.max_body_bytes: rate uploads have their own limit
    response, progress = _follow_import(b, _post_rates(b, "demo", text))
    assert progress and "rows checked" in progress[0] and 'role="status"' in progress[0]
    page = response.get_data(as_text=True)
    assert response.status_code == 200 and "50000 rows, 50000 new" in " ".join(page.split())
    assert "490049999" in b.get("/rates?tariff=demo&prefix=490049999").get_data(as_text=True)


def test_a_large_rates_file_with_one_bad_row_imports_nothing_and_names_the_row(web):
    b = operator(web)
    response, progress = _follow_import(b, _post_rates(b, "demo", _rate_rows(50_000, bad_line=40_001)))
    page = response.get_data(as_text=True)
    assert progress and response.status_code == 422
    assert "Nothing imported: 1 bad row of 50000" in page and "line 40001:" in page
    assert "No rates." in b.get("/rates?tariff=demo&prefix=49").get_data(as_text=True)


def test_a_rates_upload_to_an_unknown_tariff_or_not_in_utf8_says_why_and_imports_nothing(web):
    import io

    b = operator(web)
    response, _ = _follow_import(
        b, _post_rates(b, "nosuch", "prefix,price_1,interval_1,price_n,interval_n\n3312,0.1,60,0.1,60\n")
    )
    assert response.status_code == 422 and "nosuch" in b.last and "Nothing imported" in b.last
    b.get("/rates")
    latin1 = "prefix,description,price_1,interval_1,price_n,interval_n\n3312,Réunion,0.1,60,0.1,60\n"
    posted = b.http.post(
        "/rates",
        base_url="https://localhost",
        content_type="multipart/form-data",
        headers=SAME_SITE,
        data={
            "csrf_token": b.token(),
            "tariff": "demo",
            "mode": "merge",
            "file": (io.BytesIO(latin1.encode("latin-1")), "rates.csv"),
        },
    )
    response, _ = _follow_import(b, posted)
    assert response.status_code == 422 and "the file is not UTF-8 text" in b.last
    assert "3312" not in b.get("/rates?tariff=demo&prefix=33").get_data(as_text=True)


def test_rate_uploads_have_their_own_size_limit_over_the_body_limit(database):
    create_demo_data(database.pool)
    app = create_app(
        database.pool,
        ApiConfig(limits=PIN_LIMITS, topup_limits=TOPUP_LIMITS, max_body_bytes=16 * 1024, max_upload_bytes=64 * 1024),
    )
    key = apiauth.create_key(database.pool, "console", "admin", who="pytest")
    b = Browser(app)
    b.get("/login")
    b.post("/login", {"key": key})
    assert _post_rates(b, "demo", _rate_rows(5_000)).status_code == 413
    answer = b.http.post(
        "/api/v1/tariffs/demo/rates/import",
        data=_rate_rows(5_000).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "text/csv"},
    )
    assert answer.status_code == 413
    answer = b.http.post(
        "/api/v1/tariffs/demo/rates/import",
        data=_rate_rows(2_000).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "text/csv"},
    )
    assert answer.status_code == 200 and answer.get_json()["inserted"] == 2_000  # 52 kB: over max_body_bytes
    assert (
        b.http.post(
            "/api/v1/tariffs",
            data=b'{"name": "' + b"x" * 20_000 + b'"}',  # other routes keep it
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        ).status_code
        == 413
    )


def test_a_rates_file_with_bad_rows_lists_them_all_and_imports_nothing(web):
    app, database, demo = web
    b = operator(web)
    response = _upload(
        b,
        "demo",
        "prefix,price_1,interval_1,price_n,interval_n\n3312,0.1,60,0.1,60\n3313,abc,60,0.1,60\n3314,0.1,-1,0.1,60\n",
    )
    page = response.get_data(as_text=True)
    assert response.status_code == 422 and "Nothing imported: 2 bad rows" in page
    assert "line 3" in page and "line 4" in page
    assert "3312" not in b.get("/rates?tariff=demo&prefix=33").get_data(as_text=True)
    response = _upload(b, "demo", "prefix,price_1,interval_1,price_n,interval_n\n3312,0.1,60,0.1,60\n")
    assert response.status_code == 200 and "1 new" in response.get_data(as_text=True)
    assert "3312" in b.get("/rates?tariff=demo&prefix=33").get_data(as_text=True)


def test_cards_are_searched_and_paged(web):
    app, database, demo = web
    b = operator(web)
    b.get("/cards")
    for n in range(3):
        b.post("/cards/new", {"number": f"55500{n}", "tariff": "demo", "balance": "1", "pin": "1111"})
        b.get("/cards")
    page = b.get("/cards?number=555").get_data(as_text=True)
    assert page.count("/cards/55500") == 3 and "1234567890" not in page
    assert "No cards match" in b.get("/cards?status=blocked").get_data(as_text=True)


def test_holder_sees_balance_calls_and_tops_up_with_a_voucher(web):
    app, database, demo = web
    [number] = vouchers.generate(database.pool, 1, amount="5", currency="USD")
    b = holder(web)
    b.get("/my")
    assert '<dd id="balance">10.00000 USD</dd>' in b.last
    b.post("/my/topup", {"voucher": number, "confirm_key": b.hidden("confirm_key")})
    assert "Your balance is now 15.00000 USD" in b.last and '<dd id="balance">15.00000 USD</dd>' in b.last
    b.post("/my/topup", {"voucher": number, "confirm_key": b.hidden("confirm_key")})
    assert "cannot be used" in b.last and balance(database, demo.card_id) == Decimal("15")


def test_a_self_care_top_up_is_audited_as_the_apis_is_and_a_web_rate_import_too(web):
    """The page and the API share apistore.redeem_voucher_throttled and apistore.import_rates_audited:
    the same audit lines (the voucher by its last 4 digits only), whichever door the change came in by."""
    app, database, demo = web
    [number] = vouchers.generate(database.pool, 1, amount="5", currency="USD")
    b = holder(web)
    b.get("/my")
    b.post("/my/topup", {"voucher": number, "confirm_key": b.hidden("confirm_key")})
    _upload(operator(web), "demo", "prefix,price_1,interval_1,price_n,interval_n\n3399,0.1,60,0.1,60\n")
    with database.pool.connection() as conn:
        lines = conn.execute(
            "SELECT action, args::text, account_id, detail FROM operator_audit"
            " WHERE action IN ('voucher redeem', 'rate import') ORDER BY id"
        ).fetchall()
    (redeem, redeem_args, account, credited), (imported, _, _, detail) = lines
    assert redeem == "voucher redeem" and account == demo.card_id and credited == "5.00000 USD credited"
    assert number[-4:] in redeem_args and number not in redeem_args
    assert imported == "rate import" and detail == "tariff demo: 1 rows, 1 new, 0 changed, 0 deleted (web console)"


def test_holder_page_speaks_spanish_and_french(web):
    b = holder(web)
    assert "Saldo" in b.get("/my?lang=es").get_data(as_text=True)
    assert "Solde" in b.get("/my?lang=fr").get_data(as_text=True)
    assert 'lang="fr"' in b.last


def test_five_wrong_pins_throttle_even_the_right_one(web):
    app, _, demo = web
    b = Browser(app)
    b.get("/my/login")
    for _ in range(5):
        assert b.post("/my/login", {"number": demo.card_number, "pin": "0000"}).status_code == 401
    assert b.post("/my/login", {"number": demo.card_number, "pin": demo.pin}).status_code == 429
    assert "Too many failed attempts" in b.last


def test_holder_changes_pin_after_proving_the_old_one(web):
    app, _, demo = web
    b = holder(web)
    b.get("/my")
    b.post("/my/pin", {"current_pin": "0000", "new_pin": "2468", "repeat_pin": "2468"})
    assert "Wrong card number or PIN" in b.last
    elsewhere = holder(web)
    b.post("/my/pin", {"current_pin": demo.pin, "new_pin": "2468", "repeat_pin": "2468"})
    assert "Your PIN was changed" in b.last
    assert b.get("/my").status_code == 200  # this browser goes on ...
    assert elsewhere.get("/my").status_code == 302  # ... one signed in with the old PIN does not
    holder(web, pin="2468")


def test_nothing_typed_is_rendered_unescaped(web):
    """<script> typed into every text field of every form and filter comes back escaped."""
    app, database, demo = web
    b = operator(web)
    pages = [
        f"/cards?number={SCRIPT}&customer={SCRIPT}&status={SCRIPT}",
        f"/cdrs?card=&destination={SCRIPT}&cause={SCRIPT}",
        f"/rates?tariff=demo&prefix={SCRIPT}",
    ]
    for path in pages:
        text = b.get(path).get_data(as_text=True)
        assert SCRIPT not in text and ("&lt;script&gt;" in text or "%3Cscript%3E" in text), path
    b.get("/cards")
    b.post("/cards/new", {"number": SCRIPT, "tariff": "demo", "balance": "0", "customer": SCRIPT, "pin": ""})
    assert SCRIPT not in b.last
    b.get(f"/cards/{demo.card_number}")
    b.post(f"/cards/{demo.card_number}/adjust", {"amount": "1", "reference": SCRIPT})
    assert SCRIPT not in b.last and "&lt;script&gt;" in b.last
    b.post(
        f"/cards/{demo.card_number}/adjust",
        {
            "step": "confirm",
            "confirm_key": b.hidden("confirm_key"),
            "amount": "1.00000",
            "reference": SCRIPT,
            "allow_negative": "",
        },
    )
    assert SCRIPT not in b.last and "&lt;script&gt;" in b.last
    assert SCRIPT not in b.get(f"/cards/{demo.card_number}").get_data(as_text=True)
    for field in ("amount", "pin"):
        b.post(f"/cards/{demo.card_number}/{'adjust' if field == 'amount' else 'pin'}", {field: SCRIPT})
        assert SCRIPT not in b.last, field
    b.get("/rates")
    b.post("/tariffs/new", {"name": SCRIPT, "currency": "USD"})
    assert SCRIPT not in b.get("/rates").get_data(as_text=True)
    b.post("/tariffs/new", {"name": "t2", "currency": SCRIPT})
    assert SCRIPT.upper() not in b.last and "&lt;script&gt;" in b.last.lower()  # (the message upper-cases it)
    text = _upload(b, "demo", f"prefix,price_1,interval_1,price_n,interval_n\n{SCRIPT},0.1,60,0.1,60\n")
    assert SCRIPT not in text.get_data(as_text=True)
    b.get("/vouchers")
    b.post("/vouchers/generate", {"count": "1", "amount": "1", "currency": "USD", "batch": SCRIPT})
    assert SCRIPT not in b.last and "&lt;script&gt;" in b.last
    assert SCRIPT not in b.get(f"/vouchers?batch={SCRIPT}").get_data(as_text=True)
    b.post("/cards/batch", {"count": "1", "tariff": "demo", "balance": "0", "customer": SCRIPT})
    assert SCRIPT not in b.last and "&lt;script&gt;" in b.last
    b.post(
        "/cards/batch",
        {
            "step": "confirm",
            "confirm_key": b.hidden("confirm_key"),
            "count": "1",
            "tariff": "demo",
            "balance": "0.00000",
            "customer": SCRIPT,
        },
    )
    assert SCRIPT not in b.last and "&lt;script&gt;" in b.last
    b.get("/keys")
    b.post("/keys", {"name": SCRIPT, "role": "reseller", "owner": SCRIPT})
    assert SCRIPT not in b.last and "&lt;script&gt;" in b.last
    b.post("/keys", {"name": "x", "role": SCRIPT, "owner": ""})
    assert SCRIPT not in b.last and "&lt;script&gt;" in b.last
    b.post("/keys", {"revoke": SCRIPT})
    assert SCRIPT not in b.last and "&lt;script&gt;" in b.last
    b.get("/login")
    b.post("/login", {"key": SCRIPT})
    assert SCRIPT not in b.last
    h = Browser(app)
    h.get("/my/login")
    h.post("/my/login", {"number": SCRIPT, "pin": SCRIPT})
    assert SCRIPT not in h.last and "&lt;script&gt;" in h.last
    h = holder(web)
    h.get("/my")
    for path, form in (
        ("/my/topup", {"voucher": SCRIPT, "confirm_key": h.hidden("confirm_key")}),
        ("/my/pin", {"current_pin": SCRIPT, "new_pin": SCRIPT, "repeat_pin": SCRIPT}),
    ):
        h.post(path, form)
        assert SCRIPT not in h.last, path


def _stuck_reservation(database, demo) -> Any:
    """An open reservation to 4412345 (the 44 rate: 31 s cost 0.13600) past its expiry."""
    grant = Ledger(database.pool).grant(
        demo.card_id, a_uuid=uuid.uuid4(), b_uuid=uuid.uuid4(), destination="4412345", max_call_duration=600
    )
    with database.pool.connection() as conn:
        conn.execute(
            "UPDATE reservations SET expires_at = now() - interval '1 minute' WHERE b_uuid = %s", (grant.b_uuid,)
        )
    return grant


def test_an_expired_reservation_is_settled_once_after_confirmation_showing_its_ledger_row(web):
    app, database, demo = web
    grant = _stuck_reservation(database, demo)
    b = operator(web)
    page = b.get("/reservations?expired=1").get_data(as_text=True)
    assert "4412345" in page and "expired" in page
    assert '<span class="figure" id="expired-reservations">1</span>' in b.get("/").get_data(as_text=True)
    b.get("/reservations")
    b.post(f"/reservations/{grant.b_uuid}/settle", {"billed_seconds": "31"})
    assert "Please confirm" in b.last and "at 31 billed seconds" in b.last
    confirm = {
        "step": "confirm",
        "confirm_key": b.hidden("confirm_key"),
        "billed_seconds": "31",
        "reason": b.hidden("reason"),
    }
    token = b.token()
    b.post(f"/reservations/{grant.b_uuid}/settle", {**confirm, "csrf_token": token}, csrf=False)
    assert 'id="ledger-row"' in b.last and "-0.13600 USD" in b.last and "9.86400 USD" in b.last
    b.post(f"/reservations/{grant.b_uuid}/settle", {**confirm, "csrf_token": token}, csrf=False)
    assert "already done" in b.last and balance(database, demo.card_id) == Decimal("9.86400")
    assert "No open reservations" in b.get("/reservations").get_data(as_text=True)
    # The CDR it wrote is found by card, and in the CSV export; the dashboard counts it today.
    page = b.get(f"/cdrs?card={demo.card_number}&destination=44").get_data(as_text=True)
    assert str(grant.b_uuid) in page and "0.13600 USD" in page
    csv_text = b.get(f"/cdrs.csv?card={demo.card_number}").get_data(as_text=True)
    assert csv_text.startswith("id,b_uuid,card") and str(grant.b_uuid) in csv_text and ",0.13600," in csv_text
    assert "No CDRs match" in b.get(f"/cdrs?card={demo.card_number}&destination=33").get_data(as_text=True)
    dash = b.get("/").get_data(as_text=True)
    assert re.search(r"<td>USD</td><td class=\"num\">1</td><td class=\"num\">0.13600</td>", dash)
    assert "<svg" in dash and "ASR by hour" in dash


def test_a_release_moves_no_money(web):
    app, database, demo = web
    grant = _stuck_reservation(database, demo)
    b = operator(web)
    b.get("/reservations")
    b.post(f"/reservations/{grant.b_uuid}/release")
    b.post(
        f"/reservations/{grant.b_uuid}/release",
        {"step": "confirm", "confirm_key": b.hidden("confirm_key"), "billed_seconds": "", "reason": b.hidden("reason")},
    )
    assert "Done" in b.last and balance(database, demo.card_id) == Decimal("10")


def test_a_card_holder_stays_signed_in_while_the_page_loads_its_stylesheet(web):
    b = holder(web)
    b.get("/my")
    token = b.token()
    assert b.get("/assets/style.css").status_code == 200
    assert b.get("/").status_code == 302  # a card holder opens no console page ...
    assert b.get("/my").status_code == 200 and b.token() == token  # ... and keeps their own session


def test_the_dashboard_charts_are_svg_with_a_text_alternative(web):
    b = operator(web)
    page = b.get("/").get_data(as_text=True)
    assert page.count('<svg xmlns="http://www.w3.org/2000/svg"') == 2 and page.count("<desc>") == 2
    assert "no calls" in page


def test_a_card_batch_is_confirmed_then_its_pins_are_downloaded_once(web):
    app, database, demo = web
    b = operator(web)
    b.get("/cards")
    b.post("/cards/batch", {"count": "3", "tariff": "demo", "balance": "2", "customer": ""})
    assert "Please confirm" in b.last and "3 cards on tariff demo, each with 2.00000 USD" in b.last
    confirm = {k: b.hidden(k) for k in ("confirm_key", "count", "tariff", "balance", "customer")}
    token = b.token()
    first = b.http.post(
        "/cards/batch",
        data={**confirm, "step": "confirm", "csrf_token": token},
        base_url="https://localhost",
        headers=SAME_SITE,
    )
    assert first.headers["Content-Disposition"] == "attachment; filename=cards.csv"
    rows = [line.split(",") for line in first.get_data(as_text=True).splitlines()[1:]]
    assert len(rows) == 3 and all(len(pin) == 4 and amount == "2.00000" for _, pin, amount, _ in rows)
    again = b.http.post(
        "/cards/batch",
        data={**confirm, "step": "confirm", "csrf_token": token},
        base_url="https://localhost",
        headers=SAME_SITE,
    )
    repeat = [line.split(",") for line in again.get_data(as_text=True).splitlines()[1:]]
    assert [r[0] for r in repeat] == [r[0] for r in rows] and all(r[1] == "" for r in repeat)  # no PINs twice
    page = b.get("/cards").get_data(as_text=True)
    assert all(f"/cards/{number}" in page for number, *_ in rows)
    holder(web, number=rows[0][0], pin=rows[0][1])


def test_vouchers_are_generated_listed_and_voided_by_an_admin_only(web, caplog):
    app, database, demo = web
    b = operator(web)
    b.get("/vouchers")
    response = b.post("/vouchers/generate", {"count": "2", "amount": "5", "currency": "USD", "batch": "promo"})
    assert response.status_code == 201
    made = re.findall(r"<li>(\d+)</li>", b.last)
    assert len(made) == 2
    with caplog.at_level(logging.INFO, logger="cardd.api"):
        b.post("/vouchers/void", {"number": made[0]})
    assert made[0] not in caplog.text and "POST /vouchers/void 302" in caplog.text  # never in a log line
    page = b.get("/vouchers?status=void").get_data(as_text=True)
    assert made[0] in page and made[1] not in page
    h = holder(web)
    h.get("/my")
    h.post("/my/topup", {"voucher": made[0], "confirm_key": h.hidden("confirm_key")})
    assert "cannot be used" in h.last and balance(database, demo.card_id) == Decimal("10")
    readonly = operator(web, role="readonly")
    assert made[1] in readonly.get("/vouchers").get_data(as_text=True) and "Generate vouchers" not in readonly.last
    assert readonly.post("/vouchers/void", {"number": made[1]}).status_code == 403
    assert operator(web, role="reseller", owner="acme").get("/vouchers").status_code == 403


def test_an_admin_makes_a_key_shown_once_and_revoking_it_signs_its_browser_out(web):
    app, database, demo = web
    b = operator(web)
    b.get("/keys")
    assert b.post("/keys", {"name": "shop", "role": "readonly", "owner": ""}).status_code == 201
    made = re.search(r"<code>(cardd_[^<]+)</code>", b.last).group(1)
    assert made not in b.get("/keys").get_data(as_text=True)  # shown on that answer only
    shop = Browser(app)
    shop.get("/login")
    assert shop.post("/login", {"key": made}).status_code == 302
    assert shop.get("/cards").status_code == 200
    key_id = made.split("_")[1]
    b.get("/keys")
    b.post("/keys", {"revoke": key_id})
    assert "revoked" in b.last
    assert shop.get("/cards").status_code == 302  # back to the sign-in page
    b.post("/keys", {"name": "r", "role": "reseller", "owner": ""})
    assert "needs --owner" in b.last  # the service's own refusal
    assert operator(web, role="readonly").get("/keys").status_code == 403


def test_customers_and_plans_are_listed_a_reseller_sees_only_its_own(web):
    app, database, demo = web
    from cardd.billing import apistore
    from cardd.billing import operator as ops

    acme = ops.add_customer(database.pool, "acme shop", who="pytest")
    with database.pool.connection() as conn:
        apistore.set_customer_owner(conn, acme, "acme")
    ops.add_customer(database.pool, "other shop", who="pytest")
    ops.add_plan(database.pool, "gold", who="pytest")
    page = operator(web).get("/customers").get_data(as_text=True)
    assert "acme shop" in page and "other shop" in page
    reseller = operator(web, role="reseller", owner="acme")
    page = reseller.get("/customers").get_data(as_text=True)
    assert "acme shop" in page and "other shop" not in page
    assert reseller.get("/plans").status_code == 403
    assert "gold" in operator(web, role="readonly").get("/plans").get_data(as_text=True)


def test_the_dashboard_lists_failed_calls_by_cause(web):
    app, database, demo = web
    ledger = Ledger(database.pool)
    for cause in ("USER_BUSY", "USER_BUSY", "NO_ANSWER"):
        grant = ledger.grant(demo.card_id, a_uuid=uuid.uuid4(), b_uuid=uuid.uuid4(), destination="4412345")
        ledger.settle(grant.b_uuid, billmsec=0, hangup_cause=cause)
    page = operator(web).get("/").get_data(as_text=True)
    table = page[page.index('id="failures"') :]
    assert re.search(r"USER_BUSY</a></td><td class=\"num\">2<", table)
    assert re.search(r"NO_ANSWER</a></td><td class=\"num\">1<", table)


def test_the_dashboard_reuses_its_cdr_figures_for_a_while_but_not_the_live_counts(web):
    app, database, demo = web
    app.config["CARDD_WEB_FIGURES_CACHE_S"] = 3600
    b = operator(web)
    assert "No calls today." in b.get("/").get_data(as_text=True)
    ledger = Ledger(database.pool)
    grant = ledger.grant(demo.card_id, a_uuid=uuid.uuid4(), b_uuid=uuid.uuid4(), destination="4412345")
    page = b.get("/").get_data(as_text=True)
    assert '<span class="figure" id="open-reservations">1</span>' in page  # live
    ledger.settle(grant.b_uuid, billmsec=31000, hangup_cause="NORMAL_CLEARING")
    assert "No calls today." in b.get("/").get_data(as_text=True)  # the CDR scan reused
    app.config["CARDD_WEB_FIGURES_CACHE_S"] = 0
    assert "No calls today." not in b.get("/").get_data(as_text=True)


def _plan(conn: Any, sql: str, params: tuple[Any, ...]) -> str:
    return str(conn.execute("EXPLAIN (FORMAT JSON) " + sql, params).fetchone()[0])


def test_the_console_filters_at_scale_are_served_by_their_indexes(database):
    """schema/010: at many cards and CDRs, a destination-prefix CDR search, a cards-by-status search and
    the dashboard's 24 h scan read an index range, not every row (the queries of apistore.cdrs_page,
    apistore.cards_page and cardd.billing.stats, with the planner's statistics of 20,000 rows)."""
    import psycopg

    demo = create_demo_data(database.pool)
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO accounts (username, currency, tariff_id)"
            " SELECT (5000000000 + i)::text, 'USD', %s FROM generate_series(1, 20000) i",
            (demo.tariff_id,),
        )
        conn.execute(
            "INSERT INTO cdrs (b_uuid, a_uuid, account_id, username, currency, cli, cld, translated_cld, rate_prefix,"
            "                  started_at, answered_at, ended_at, granted_seconds, billed_seconds, cost, hangup_cause)"
            " SELECT gen_random_uuid(), gen_random_uuid(), %s, '1234567890', 'USD', '1555', '44' || (2071000000 + g),"
            "        '44' || (2071000000 + g), '44', t, t, t + interval '60 s', 60, 60, 0.1, 'NORMAL_CLEARING'"
            "   FROM (SELECT g, now() - interval '30 days' + g * interval '2 min' AS t"
            "           FROM generate_series(1, 20000) g) s",
            (demo.card_id,),
        )
        conn.execute("ANALYZE accounts")
        conn.execute("ANALYZE cdrs")
        assert "cdrs_translated_cld_idx" in _plan(
            conn, "SELECT id FROM cdrs WHERE translated_cld LIKE %s ORDER BY id DESC LIMIT 51", ("44207100012%",)
        )
        assert "accounts_status_idx" in _plan(
            conn, "SELECT a.id FROM accounts a WHERE a.status = %s ORDER BY a.id LIMIT 51", ("blocked",)
        )
        figures = _plan(
            conn,
            "SELECT date_trunc('hour', ended_at), currency, hangup_cause, answered_at IS NOT NULL,"
            " count(*), sum(cost), sum(billed_seconds) FROM cdrs"
            " WHERE ended_at >= now() - interval '24 hours' GROUP BY 1, 2, 3, 4",
            (),
        )
        assert "cdrs_ended_figures_idx" in figures and "Index Only Scan" in figures
