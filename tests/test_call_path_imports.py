"""The call path never loads operator code: importing what a call runs (the daemon, the server, the Channel,
every IVR module) loads no module of cardd/admin/, no argparse command module (cardd.cli, cardd.phone), and
neither the HTTP API nor the web console. Checked in a fresh interpreter, so what this test process already
imported cannot hide an import."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import cardd.ivr

CALL_PATH = [
    "cardd.daemon",
    "cardd.server",
    "cardd.channel",
    *(f"cardd.ivr.{m.name}" for m in pkgutil.iter_modules(cardd.ivr.__path__)),
]
OPERATOR_CODE = ("cardd.admin", "cardd.cli", "cardd.phone", "cardd.api", "cardd.web")


def _loaded_after_importing(modules: list[str]) -> list[str]:
    program = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_call_path_imports_no_operator_command_api_or_web_module():
    assert "cardd.ivr.greeting" in CALL_PATH and "cardd.ivr.dial" in CALL_PATH
    loaded = _loaded_after_importing(CALL_PATH)
    assert "cardd.ivr.greeting" in loaded and "cardd.daemon" in loaded
    operator = [name for name in loaded if any(name == root or name.startswith(root + ".") for root in OPERATOR_CODE)]
    assert operator == []


def test_the_check_sees_operator_code_when_it_is_imported():
    loaded = _loaded_after_importing(["cardd.admin.core"])
    assert "cardd.admin.common" in loaded and "cardd.admin" in loaded
