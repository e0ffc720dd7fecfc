"""The web console and the self-care page in a real headless Chromium (selenium + Debian's chromium
and chromium-driver), against `cardd api` as a process of its own and a simulated call placed with
`cardd call`. Each main page's screenshot is kept and written under the test's tmp dir when a test
fails (CARDD_KEEP_TEST_FILES=1 keeps that dir). Without Chromium these tests skip, except in CI
(CI=true), where they fail: CI installs it (tests/run.sh).

CARDD_WEB_SCREENSHOTS=DIR also writes the dashboard and card page screenshots the README shows."""

from __future__ import annotations

import base64
import contextlib
import io
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from cardd import cli
from cardd.billing import pins, vouchers

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
BAD_RATES = (
    "prefix,price_1,interval_1,price_n,interval_n,connect_fee\n44,0.06,30,0.06,6,0.10\n4420,0.05,thirty,0.05,6,0\n"
)
GOOD_RATES = "prefix,price_1,interval_1,price_n,interval_n,connect_fee\n44,0.06,30,0.06,6,0.10\n4420,0.05,30,0.05,6,0\n"


def _need_chromium() -> None:
    if CHROMIUM and CHROMEDRIVER:
        return
    missing = "chromium" if not CHROMIUM else "chromedriver"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{missing} is missing in CI: tests/run.sh installs chromium and chromium-driver")
    pytest.skip(f"{missing} is not installed (apt-get install -y chromium chromium-driver)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def web_process(dsn, tmp_path, restore_logging) -> Iterator[tuple[str, Path]]:
    """`cardd api` on a free port; its base URL (localhost: a secure context, so the Secure cookie is kept)."""
    port = _free_port()
    config = tmp_path / "cardd.yaml"
    config.write_text(
        "daemon:\n"
        f'  dsn: "{dsn}"\n'
        f"  pin_key_file: {pins.installed_key().path}\n"
        "  pin_failures_per_card: 5\n"
        "api:\n"
        f"  listen: 127.0.0.1:{port}\n"
    )
    log = tmp_path / "api.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cardd", "-c", str(config), "api"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=err
        )
    deadline = time.monotonic() + 60
    while "API listening" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"cardd api did not come up:\n{log.read_text()}")
        time.sleep(0.05)
    yield f"http://localhost:{port}", config
    proc.terminate()
    assert proc.wait(30) == 0, log.read_text()


def cardd(config: Path, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["-c", str(config), *argv])
    return code, out.getvalue()


class Browser:
    """A headless Chromium on one site, keeping a screenshot of each main page it shows."""

    def __init__(self, base: str, artefacts: Path):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM or ""
        for arg in (
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--window-size=1000,760",
            "--hide-scrollbars",
        ):
            options.add_argument(arg)
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.driver.implicitly_wait(0)
        self.base = base
        self.artefacts = artefacts
        self.shots: dict[str, bytes] = {}

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def fill(self, label_for: str, text: str) -> None:
        field = self.driver.find_element("id", label_for)
        # Every field is found by its label: the page is usable by a screen reader too.
        assert self.driver.find_element("css selector", f'label[for="{label_for}"]').text.strip()
        field.clear()
        field.send_keys(text)

    def submit(self, form_css: str = "main form") -> None:
        self.driver.find_element("css selector", f"{form_css} button[type=submit]").click()

    def text(self, css: str = "main") -> str:
        return self.driver.find_element("css selector", css).text

    def wait_text(self, needle: str, css: str = "main", timeout: float = 20.0) -> str:
        """The element's text once it holds `needle` (a page load or a form's answer)."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(Exception):
                text = self.text(css)
                if needle in text:
                    return text
            if time.monotonic() > deadline:
                text = ""
                with contextlib.suppress(Exception):
                    text = self.text("body")
                raise AssertionError(f"{needle!r} never appeared in {css} of {self.driver.current_url}:\n{text}")
            time.sleep(0.05)

    def shot(self, name: str) -> bytes:
        """The whole page, beyond the window's height (Chromium's DevTools screenshot)."""
        width, height = self.driver.execute_script(
            "return [document.documentElement.clientWidth, document.documentElement.scrollHeight]"
        )
        shot = self.driver.execute_cdp_cmd(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": min(height, 4000), "scale": 1},
            },
        )
        png = base64.b64decode(shot["data"])
        self.shots[name] = png
        return png

    def save_shots(self) -> Path:
        self.artefacts.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(Exception):
            self.shot("at-failure")
        for name, png in self.shots.items():
            (self.artefacts / f"{name}.png").write_bytes(png)
        return self.artefacts

    def quit(self) -> None:
        self.driver.quit()


@pytest.fixture
def browser(web_process, tmp_path) -> Iterator[Browser]:
    _need_chromium()
    base, _ = web_process
    b = Browser(base, tmp_path / "screenshots")
    try:
        yield b
    finally:
        b.quit()


@contextlib.contextmanager
def screenshots_on_failure(b: Browser) -> Iterator[None]:
    try:
        yield
    except BaseException as exc:
        where = b.save_shots()
        raise AssertionError(f"{exc}\n(screenshots of each page: {where})") from exc


def _readme_shot(b: Browser, name: str) -> None:
    target = os.environ.get("CARDD_WEB_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        (Path(target) / f"{name}.png").write_bytes(b.shots[name])


def test_operator_imports_rates_creates_a_card_and_finds_a_simulated_calls_cdr_and_balance(
    browser, web_process, cardd_with, database, tmp_path
):
    b = browser
    base, config = web_process
    code, key = cardd(config, "apikey", "add", "console", "--role", "admin", "--by", "pytest")
    assert code == 0
    with screenshots_on_failure(b):
        b.open("/rates")  # not signed in: the sign-in page, then back here
        b.wait_text("Operator sign-in")
        b.shot("login")
        b.fill("key", key.strip())
        b.submit()
        # (the dashboard is first shown after the call: it reuses its CDR figures for 20 s)
        b.wait_text("New tariff")
        b.fill("tariff-name", "retail")
        b.fill("tariff-currency", "USD")
        b.submit("#new-tariff")
        b.wait_text("Rates of retail")
        bad, good = tmp_path / "bad.csv", tmp_path / "good.csv"
        bad.write_text(BAD_RATES)
        good.write_text(GOOD_RATES)
        b.driver.find_element("id", "file").send_keys(str(bad))
        b.submit("#import")
        report = b.wait_text("Nothing imported", "#import-report")
        assert "1 bad row of 2" in report and "line 3" in report
        b.shot("rates-report")
        assert "No rates." in b.text("#rates")  # the good row of the bad file was not imported either
        b.driver.find_element("id", "file").send_keys(str(good))
        b.submit("#import")
        assert "2 rows, 2 new" in b.wait_text("Imported", "#import-report")
        b.shot("rates")

        b.open("/cards")
        b.fill("new-number", "1000000001")
        b.fill("new-balance", "10")
        b.fill("new-pin", "1234")
        b.submit('form[action="/cards/new"]')
        b.wait_text("Card 1000000001", "h1")
        assert b.text("#balance") == "10.00000 USD"

        running = cardd_with(database)
        host, port = running.address
        code, out = cardd(
            config,
            "call",
            "--server",
            f"{host}:{port}",
            "--digits",
            "1000000001#",
            "--digits",
            "1234#",
            "--digits",
            "442071234567#",
            "--talk",
            "31",
        )
        assert code == 0, out

        b.open("/cdrs")
        b.fill("card", "1000000001")
        b.submit("form.filters")
        row = b.wait_text("442071234567", "#cdrs tbody")
        cost = Decimal(re.search(r"(\d+\.\d{5}) USD", row).group(1))
        assert cost > 0
        b.shot("cdrs")
        b.driver.find_element("link text", "1000000001").click()
        b.wait_text("Card 1000000001", "h1")
        assert b.text("#balance") == f"{Decimal('10') - cost:.5f} USD"
        assert b.text("#total") == b.text("#balance")  # the history adds up to the balance
        assert "call" in b.text("#history")
        b.shot("card")
        _readme_shot(b, "card")

        b.open("/")
        today = b.wait_text("USD", "#today")
        assert f"{cost:.5f}" in today
        b.shot("dashboard")
        _readme_shot(b, "dashboard")


def test_card_holder_tops_up_with_a_voucher_and_sees_the_balance_change(browser, database, demo_data):
    b = browser
    [voucher] = vouchers.generate(database.pool, 1, amount="5", currency="USD")
    with screenshots_on_failure(b):
        b.open("/my/login?lang=es")
        b.wait_text("Número de tarjeta")
        b.open("/my/login?lang=en")
        b.fill("number", demo_data.card_number)
        b.fill("pin", demo_data.pin)
        b.submit()
        assert b.wait_text("USD", "#balance") == "10.00000 USD"
        b.shot("my")
        b.fill("voucher", voucher)
        b.submit('form[action="/my/topup"]')
        assert "Your balance is now 15.00000 USD" in b.wait_text("15.00000", "#message")
        assert b.text("#balance") == "15.00000 USD"
        b.shot("my-topped-up")


def test_a_wrong_pin_five_times_is_throttled(browser, demo_data):
    b = browser
    with screenshots_on_failure(b):
        for attempt in range(5):
            b.open("/my/login")
            b.fill("number", demo_data.card_number)
            b.fill("pin", "0000")
            b.submit()
            assert "Wrong card number or PIN" in b.wait_text("Wrong", "#login-error"), attempt
        b.open("/my/login")
        b.fill("number", demo_data.card_number)
        b.fill("pin", demo_data.pin)  # even the right PIN, now
        b.submit()
        b.wait_text("Too many failed attempts", "#login-error")
        b.shot("throttled")


def test_signing_in_by_keyboard_alone_and_every_page_fits_a_phone(browser, web_process, demo_data):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    b = browser
    _, config = web_process
    _, key = cardd(config, "apikey", "add", "phone", "--role", "admin")
    keyboard = ActionChains(b.driver)
    with screenshots_on_failure(b):
        b.open("/my/login")
        b.wait_text("Card number")
        # The number field has the focus; Tab reaches the PIN, Enter submits.
        keyboard.send_keys(demo_data.card_number, Keys.TAB, demo_data.pin, Keys.ENTER).perform()
        assert b.wait_text("USD", "#balance") == "10.00000 USD"
        b.driver.set_window_size(390, 844)
        b.shot("my-phone")
        assert _fits(b), "the self-care page scrolls sideways on a phone"
        b.open("/login")
        b.wait_text("Operator sign-in")
        ActionChains(b.driver).send_keys(key.strip(), Keys.ENTER).perform()
        b.wait_text("calls up now")
        for path in ("/", "/cards", f"/cards/{demo_data.card_number}", "/rates", "/cdrs", "/reservations"):
            b.driver.set_window_size(390, 844)
            b.open(path)
            b.wait_text("", "h1")
            assert _fits(b), f"{path} scrolls sideways on a phone"


def _fits(b: Browser) -> bool:
    """Nothing wider than the screen: wide tables scroll inside their own box, the page does not."""
    assert b.driver.execute_script("return window.innerWidth") <= 400  # the phone's width, really
    return b.driver.execute_script(
        "return document.documentElement.scrollWidth <= document.documentElement.clientWidth"
    )
