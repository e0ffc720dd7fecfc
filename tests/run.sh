#!/bin/sh
# Set up a virtualenv in .venv (first run only), install cardd with its test
# extras, and run the whole test suite. Arguments go to pytest. The suite also
# proves a normal install: tests/test_install.py builds a wheel, installs it into
# a fresh venv outside the checkout and serves a call from it.
set -eu
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
# promtool runs the alert rules' unit tests (monitoring/*test*.yml); Debian's
# prometheus package has it. Installed only as root and only when missing.
if ! command -v promtool >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y prometheus >/dev/null || { apt-get update >/dev/null && apt-get install -y prometheus >/dev/null; }
fi
# Chromium and its WebDriver drive the web console's browser tests (tests/test_web_browser.py;
# under CI=true they fail rather than skip without them). Installed only as root and only when missing.
if ! command -v chromedriver >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y chromium chromium-driver >/dev/null ||
        { apt-get update >/dev/null && apt-get install -y chromium chromium-driver >/dev/null; }
fi
exec .venv/bin/python -m pytest "$@"
