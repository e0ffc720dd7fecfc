"""cardd installed the ordinary way (a wheel, not `pip install -e`), used from a
directory that is not the checkout: the operator's first day.

The wheel is built from a copy of the checkout and installed into a fresh venv
outside the source tree. That venv has no pip and downloads nothing: the wheel
goes in with this venv's pip (`pip --python`), and its dependencies, which
this suite's venv installed from the same setup.cfg, are made visible through
a .pth file; `pip check` then proves the wheel's requirements are met there.
CARDD_INSTALL_DEPENDENCIES=1 installs them from the package index instead.
"""

from __future__ import annotations

import configparser
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "var",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".hypothesis",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    "custom",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition, timeout: float, what: str) -> None:
    """Poll `condition`; the timeout is a deadline for a stuck test, not a wait."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_every_package_directory_of_cardd_is_listed_in_setup_cfg():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    found = {
        ".".join(d.relative_to(REPO).parts)
        for d in (REPO / "cardd").rglob("*")
        if d.is_dir() and d.name != "__pycache__" and any(d.glob("*.py"))
    } | {"cardd"}
    missing_init = sorted(p for p in found if not (REPO / p.replace(".", "/") / "__init__.py").exists())
    assert missing_init == []
    assert found <= listed, f"not in setup.cfg packages: {sorted(found - listed)}"
    assert {"cardd.schema", "cardd.sounds"} <= listed


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv outside the checkout with cardd installed from a wheel; returns its bin/."""
    tmp = tmp_path_factory.mktemp("install")
    source = tmp / "source"
    shutil.copytree(REPO, source, ignore=_NOT_SOURCE, symlinks=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    # offline: the build backend (setuptools, wheel) comes with the test extras
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "wheels"), str(source)],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp,
    )
    (wheel,) = (tmp / "wheels").glob("cardd-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    target_python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(target_python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    if os.environ.get("CARDD_INSTALL_DEPENDENCIES"):
        # fully fresh: the dependencies from the package index too (network, ~40 MB)
        subprocess.run(
            [*pip, "--python", str(target_python), "install", str(wheel)],
            check=True,
            capture_output=True,
            text=True,
            cwd=tmp,
        )
    else:
        # the dependencies, not cardd: a path line in a .pth adds the directory, and
        # does not run that directory's own .pth files (the editable cardd's finder)
        (site / "cardd-test-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
        subprocess.run(
            [*pip, "--python", str(target_python), "install", "--no-deps", str(wheel)],
            check=True,
            capture_output=True,
            text=True,
            cwd=tmp,
        )
    check = subprocess.run([*pip, "--python", str(target_python), "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    shutil.rmtree(source)  # nothing may read the checkout it was built from
    return venv / "bin"


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return env


def test_the_wheel_carries_its_schema_prompts_and_every_module(installed, tmp_path):
    code = (
        "import cardd, cardd.db, cardd.config, cardd.ivr.session\n"
        "print(cardd.__file__); print(cardd.db.SCHEMA_DIR); print(cardd.config.INSTALLED_SOUNDS_DIR)\n"
        "print(len(cardd.db.find_migrations()))"
    )
    done = subprocess.run(
        [str(installed / "python"), "-c", code], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    package, schema, sounds, migrations = done.stdout.split("\n")[:4]
    venv = str(installed.parent)
    assert package.startswith(venv) and schema.startswith(venv) and sounds.startswith(venv)
    assert int(migrations) == len(list((REPO / "schema").glob("*.sql")))
    assert (Path(sounds) / "catalogue.yaml").is_file() and (Path(sounds) / "en" / "welcome.wav").is_file()


def test_an_installed_cardd_migrates_serves_and_takes_a_call_outside_the_checkout(installed, tmp_path):
    cardd = str(installed / "cardd")
    home = tmp_path / "operator"
    home.mkdir()
    port = free_port()
    (home / "cardd.yaml").write_text(
        "daemon:\n"
        f"  listen: 127.0.0.1:{port}\n"
        f"  metrics_listen: 127.0.0.1:{free_port()}\n"
        f"  cdr_listen: 127.0.0.1:{free_port()}\n"
        "  outbound_proxy: 198.51.100.7:5060\n"
    )

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([cardd, *args], cwd=home, env=_env(), capture_output=True, text=True, timeout=120)

    # before `db migrate`, an operator command refuses instead of creating a database
    refused = run("card", "list")
    assert refused.returncode == 2 and "run `cardd db migrate` first" in refused.stderr
    migrated = run("db", "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.startswith("schema at version ") and "version 0" not in migrated.stdout
    settings = run("check-config")
    assert f'sounds_dir: "{installed.parent}' in settings.stdout or f"sounds_dir: {installed.parent}" in settings.stdout

    log = tmp_path / "serve.log"
    with open(log, "w") as err:
        serve = subprocess.Popen(
            [cardd, "serve", "--demo"], cwd=home, env=_env(), stdout=subprocess.DEVNULL, stderr=err
        )
    try:
        wait_until(lambda: "ready:" in log.read_text() or serve.poll() is not None, 120, "cardd serve")
        assert serve.poll() is None, log.read_text()
        call = run("call", "--digits", "1000000001#", "--digits", "1234#", "--digits", "442071234567#", "--talk", "42")
        assert call.returncode == 0, call.stderr
        assert '"Welcome." [en/welcome]' in call.stdout
        assert "bridge to 442071234567: SUCCESS" in call.stdout
        show = run("card", "show", "1000000001")
        assert show.returncode == 0, show.stderr
        assert "last CDRs: 1" in show.stdout
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=90) == 0, log.read_text()
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
    assert "Traceback" not in log.read_text()
    assert (home / "var" / "pg" / "PG_VERSION").is_file()  # data_dir beside the config it came from
    assert not (home / "var" / "pg" / "postmaster.pid").exists()
