"""Lint and types are part of the suite (the suite is what CI runs): ruff and mypy, configured in
pyproject.toml, report nothing. Both come with the test extras (setup.cfg)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_finds_nothing_in_cardd_tests_and_bench():
    result = run_tool("ruff", "check", "--output-format", "concise", "cardd", "tests", "bench")
    assert result.returncode == 0, f"ruff check:\n{result.stdout}{result.stderr}"


def test_mypy_finds_no_type_error_in_cardd():
    result = run_tool("mypy", "cardd")
    assert result.returncode == 0, f"mypy cardd:\n{result.stdout}{result.stderr}"
    lines = result.stdout.splitlines()
    # Notes count too (a config section that matches nothing, a body left unchecked).
    assert len(lines) == 1 and lines[0].startswith("Success: no issues found"), f"mypy cardd:\n{result.stdout}"


def test_the_code_is_as_ruff_format_writes_it():
    result = run_tool("ruff", "format", "--check", "cardd", "tests", "bench")
    assert result.returncode == 0, f"ruff format --check (run `ruff format cardd tests bench`):\n{result.stdout}"
