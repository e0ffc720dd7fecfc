"""Custom scripts: the destination check (reload, disable, fail closed) and the duration script."""

from __future__ import annotations

import logging
import os
import stat
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from cardd import hooks
from cardd.hooks import DestinationCheck, DurationScript, ScriptHooks

CALL = dict(
    call_uuid="uuid-1",
    cli="15551230000",
    translated_cli="+15551230000",
    cld="441234567",
    translated_cld="0441234567",
    username="1000",
    original_cli="5551230000",
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, path: str, reason: str) -> None:
        self.calls.append((path, reason))

    @property
    def reasons(self) -> list[str]:
        return [reason for _, reason in self.calls]


def write(path: Path, body: str, *, bump: int = 0) -> Path:
    path.write_text(textwrap.dedent(body))
    if bump:
        # Move mtime explicitly so the change is seen without sleeping.
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + bump * 1_000_000_000))
    return path


PREFIX_44_FORBIDDEN = """
    def check_destination(cli, translated_cli, cld, translated_cld, username, original_cli):
        return not translated_cld.startswith("044")
"""


# --- destination check -------------------------------------------------------


def test_no_path_allows_everything_and_never_touches_the_disk(monkeypatch):
    def no_stat(*a, **k):
        raise AssertionError("stat called")

    monkeypatch.setattr(hooks.os, "stat", no_stat)
    check = DestinationCheck(None)
    assert check.allowed(**CALL) is True
    assert not check.enabled


def test_script_result_decides(tmp_path):
    script = write(tmp_path / "check.py", PREFIX_44_FORBIDDEN)
    check = DestinationCheck(str(script))
    assert check.enabled
    assert check.allowed(**CALL) is False
    assert check.allowed(**{**CALL, "translated_cld": "0331234567"}) is True


def test_the_reference_products_function_name_check_destination_camel_case_loads(tmp_path):
    # An operator's script written for the reference product defines checkDestination.
    script = write(
        tmp_path / "check.py",
        """
        def checkDestination(cli, translated_cli, cld, translated_cld, username, original_cli):
            return not translated_cld.startswith("044")
    """,
    )
    check = DestinationCheck(str(script))
    assert check.allowed(**CALL) is False
    assert check.allowed(**{**CALL, "translated_cld": "0331234567"}) is True


def test_with_both_names_defined_check_destination_is_used(tmp_path):
    script = write(
        tmp_path / "check.py",
        """
        def check_destination(*args):
            return True
        def checkDestination(*args):
            return False
    """,
    )
    assert DestinationCheck(str(script)).allowed(**CALL) is True


def test_arguments_are_passed_in_the_documented_order(tmp_path):
    script = write(
        tmp_path / "check.py",
        """
        SEEN = []
        def check_destination(a, b, c, d, e, f):
            SEEN.append((a, b, c, d, e, f))
            return True
    """,
    )
    check = DestinationCheck(script)
    assert check.allowed(**CALL)
    seen = check._function.__globals__["SEEN"]
    assert seen == [
        (
            CALL["cli"],
            CALL["translated_cli"],
            CALL["cld"],
            CALL["translated_cld"],
            CALL["username"],
            CALL["original_cli"],
        )
    ]


def test_edited_script_takes_effect_on_the_next_call_after_the_interval(tmp_path):
    clock = FakeClock()
    script = write(tmp_path / "check.py", "def check_destination(*a):\n    return True\n")
    check = DestinationCheck(str(script), clock=clock)
    assert check.allowed(**CALL) is True

    write(script, "def check_destination(*a):\n    return False\n", bump=5)
    # Within the throttle interval the file is not even looked at.
    assert check.allowed(**CALL) is True
    clock.now += 1.0
    assert check.allowed(**CALL) is False


def test_same_size_edit_is_seen(tmp_path):
    # The two versions have the same length: the mtime (and ctime) must carry the change.
    clock = FakeClock()
    script = write(tmp_path / "check.py", "def check_destination(*a):\n    return True \n")
    check = DestinationCheck(str(script), clock=clock)
    assert check.allowed(**CALL) is True
    write(script, "def check_destination(*a):\n    return False\n", bump=1)
    clock.now += 1.0
    assert check.allowed(**CALL) is False


def test_file_is_stat_at_most_once_per_interval(tmp_path, monkeypatch):
    clock = FakeClock()
    script = write(tmp_path / "check.py", PREFIX_44_FORBIDDEN)
    check = DestinationCheck(str(script), clock=clock)
    stats = []
    real_stat = os.stat
    # Only the script's own stats count: other code in the process (the
    # database pool, logging) may stat files meanwhile.
    monkeypatch.setattr(
        hooks.os,
        "stat",
        lambda p, *a, **k: (stats.append(p) if str(p) == str(script) else None) or real_stat(p, *a, **k),
    )
    for _ in range(50):
        check.allowed(**CALL)
    assert stats == []
    clock.now += 1.0
    for _ in range(50):
        check.allowed(**CALL)
    assert len(stats) == 1


def test_unchanged_file_is_not_reloaded(tmp_path):
    clock = FakeClock()
    script = write(
        tmp_path / "check.py",
        """
        LOADS = []
        LOADS.append(1)
        def check_destination(*a):
            return len(LOADS) == 1
    """,
    )
    check = DestinationCheck(str(script), clock=clock)
    for _ in range(3):
        clock.now += 5
        assert check.allowed(**CALL) is True


def test_syntax_error_disables_the_script_and_is_reported_once(tmp_path, caplog):
    clock = FakeClock()
    load_errors = Recorder()
    script = write(tmp_path / "check.py", "def check_destination(*a):\n    return (\n")
    with caplog.at_level(logging.ERROR, logger="cardd.hooks"):
        check = DestinationCheck(str(script), on_load_error=load_errors, clock=clock)
        for _ in range(5):
            assert check.allowed(**CALL) is True
            clock.now += 2
    assert load_errors.calls == [(str(script), hooks.LOAD_SYNTAX)]
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1
    assert not check.enabled


def test_fixing_a_broken_script_enables_it(tmp_path):
    clock = FakeClock()
    load_errors = Recorder()
    script = write(tmp_path / "check.py", "def check_destination(*a) return True\n")
    check = DestinationCheck(str(script), on_load_error=load_errors, clock=clock)
    assert check.allowed(**CALL) is True
    write(script, PREFIX_44_FORBIDDEN, bump=3)
    clock.now += 1
    assert check.allowed(**CALL) is False
    assert load_errors.reasons == [hooks.LOAD_SYNTAX]


def test_breaking_a_working_script_disables_it(tmp_path):
    # The spec: a load error disables the script (the old version is not kept).
    clock = FakeClock()
    load_errors = Recorder()
    script = write(tmp_path / "check.py", PREFIX_44_FORBIDDEN)
    check = DestinationCheck(str(script), on_load_error=load_errors, clock=clock)
    assert check.allowed(**CALL) is False
    write(script, "def check_destination(:\n", bump=3)
    clock.now += 1
    assert check.allowed(**CALL) is True
    assert load_errors.reasons == [hooks.LOAD_SYNTAX]


@pytest.mark.parametrize(
    "body, reason",
    [
        ("def other(*a):\n    return True\n", hooks.LOAD_NO_FUNCTION),
        ("check_destination = 42\n", hooks.LOAD_NO_FUNCTION),
        ("raise RuntimeError('boom at import')\n", hooks.LOAD_EXCEPTION),
        ("import sys\nsys.exit(3)\n", hooks.LOAD_EXCEPTION),
        ("import gevent\ngevent.sleep(5)\n", hooks.LOAD_TIMEOUT),
    ],
)
def test_load_errors_disable_the_script(tmp_path, body, reason):
    load_errors = Recorder()
    script = write(tmp_path / "check.py", body)
    check = DestinationCheck(str(script), on_load_error=load_errors, timeout=0.05)
    assert check.allowed(**CALL) is True
    assert load_errors.reasons == [reason]


def test_missing_file_disables_until_it_appears(tmp_path):
    clock = FakeClock()
    load_errors = Recorder()
    script = tmp_path / "check.py"
    check = DestinationCheck(str(script), on_load_error=load_errors, clock=clock)
    for _ in range(3):
        assert check.allowed(**CALL) is True
        clock.now += 1
    assert load_errors.reasons == [hooks.LOAD_MISSING]
    write(script, PREFIX_44_FORBIDDEN)
    clock.now += 1
    assert check.allowed(**CALL) is False
    script.unlink()
    clock.now += 1
    assert check.allowed(**CALL) is True
    assert load_errors.reasons == [hooks.LOAD_MISSING, hooks.LOAD_MISSING]


def test_replacing_the_file_by_rename_is_seen(tmp_path):
    # Editors and deploy tools often write a new file and rename it over the old one.
    clock = FakeClock()
    script = write(tmp_path / "check.py", "def check_destination(*a):\n    return True\n")
    check = DestinationCheck(str(script), clock=clock)
    assert check.allowed(**CALL) is True
    new = write(tmp_path / "check.py.new", "def check_destination(*a):\n    return False\n")
    os.replace(new, script)
    clock.now += 1
    assert check.allowed(**CALL) is False


def test_exception_while_running_prohibits_and_is_reported(tmp_path, caplog):
    run_errors = Recorder()
    script = write(tmp_path / "check.py", "def check_destination(*a):\n    raise KeyError('x')\n")
    check = DestinationCheck(str(script), on_run_error=run_errors)
    with caplog.at_level(logging.ERROR, logger="cardd.hooks"):
        assert check.allowed(**CALL) is False
    assert run_errors.reasons == [hooks.RUN_EXCEPTION]
    assert [r.call_uuid for r in caplog.records] == ["uuid-1"]  # the line names its call (cardd/logs.py)


def test_sys_exit_while_running_prohibits(tmp_path):
    run_errors = Recorder()
    script = write(tmp_path / "check.py", "import sys\ndef check_destination(*a):\n    sys.exit(0)\n")
    check = DestinationCheck(str(script), on_run_error=run_errors)
    assert check.allowed(**CALL) is False
    assert run_errors.reasons == [hooks.RUN_EXCEPTION]


@pytest.mark.parametrize("value", ["None", "1", "0", "'yes'", "[]", "[True]"])
def test_non_bool_result_prohibits(tmp_path, value):
    run_errors = Recorder()
    script = write(tmp_path / "check.py", f"def check_destination(*a):\n    return {value}\n")
    check = DestinationCheck(str(script), on_run_error=run_errors)
    assert check.allowed(**CALL) is False
    assert run_errors.reasons == [hooks.RUN_NOT_BOOL]


def test_slow_script_is_cut_off_and_prohibits(tmp_path):
    run_errors = Recorder()
    script = write(
        tmp_path / "check.py", "import gevent\ndef check_destination(*a):\n    gevent.sleep(5)\n    return True\n"
    )
    check = DestinationCheck(str(script), on_run_error=run_errors, timeout=0.05)
    # cut off, not waited for: the script would have allowed the call after 5 s
    assert check.allowed(**CALL) is False
    assert run_errors.reasons == [hooks.RUN_TIMEOUT]


def test_script_blocking_past_the_limit_prohibits(tmp_path):
    # time.sleep may not yield (no monkey-patching): the answer still does not count.
    run_errors = Recorder()
    script = write(
        tmp_path / "check.py", "import time\ndef check_destination(*a):\n    time.sleep(0.2)\n    return True\n"
    )
    check = DestinationCheck(str(script), on_run_error=run_errors, timeout=0.05)
    assert check.allowed(**CALL) is False
    assert run_errors.reasons == [hooks.RUN_TIMEOUT]


# Two calls whose checks each need the other's to be running: call "slow" says it has
# started, then waits for call "fast"; call "fast" waits for "slow" to have started.
# select() is the unpatched one: operator code that blocks the thread it runs on.
# Run on the event loop, whichever check ran first would hold the loop until its
# 10 s cap and answer False; off the loop both are allowed.
TWO_CALLS = """
    import os
    from gevent.monkey import get_original
    select = get_original("select", "select")

    def wait_for(fd):
        ready, _, _ = select([fd], [], [], 10)
        return bool(ready) and os.read(fd, 1) == b"x"

    def check_destination(cli, translated_cli, cld, translated_cld, username, original_cli):
        if cld == "slow":
            os.write({started_w}, b"x")
            return wait_for({progress_r})
        if not wait_for({started_r}):
            return False
        os.write({progress_w}, b"x")
        return True
"""


def test_a_blocking_check_does_not_stall_the_other_calls(tmp_path):
    import gevent

    started_r, started_w = os.pipe()
    progress_r, progress_w = os.pipe()
    try:
        script = write(
            tmp_path / "check.py",
            TWO_CALLS.format(started_r=started_r, started_w=started_w, progress_r=progress_r, progress_w=progress_w),
        )
        check = DestinationCheck(str(script), timeout=30)
        slow = gevent.spawn(check.allowed, **dict(CALL, cld="slow"))
        assert check.allowed(**dict(CALL, cld="fast")) is True
        assert slow.get(timeout=30) is True
    finally:
        for fd in (started_r, started_w, progress_r, progress_w):
            os.close(fd)


def test_a_check_blocked_past_its_deadline_prohibits_and_the_loop_runs_on(tmp_path, caplog):
    import gevent

    run_errors = Recorder()
    release_r, release_w = os.pipe()
    try:
        script = write(
            tmp_path / "check.py",
            f"""
            import os
            from gevent.monkey import get_original
            select = get_original("select", "select")
            def check_destination(*a):
                select([{release_r}], [], [], 30)
                return True
        """,
        )
        check = DestinationCheck(str(script), on_run_error=run_errors, timeout=0.1)
        other_call = gevent.spawn(lambda: "served")
        assert check.allowed(**CALL) is False
        # The loop served another greenlet while the script blocked its thread.
        assert other_call.ready() and other_call.value == "served"
        assert run_errors.reasons == [hooks.RUN_TIMEOUT]
        assert "took longer than 0.1 s; call prohibited" in caplog.text
    finally:
        os.write(release_w, b"x")  # let the abandoned thread finish
        os.close(release_w)


def test_with_every_script_thread_stuck_a_check_still_ends_by_its_deadline(tmp_path, monkeypatch):
    from gevent.threadpool import ThreadPool

    monkeypatch.setattr(hooks, "_pool", ThreadPool(1))
    run_errors = Recorder()
    release_r, release_w = os.pipe()
    try:
        script = write(
            tmp_path / "check.py",
            f"""
            import os
            from gevent.monkey import get_original
            select = get_original("select", "select")
            def check_destination(cli, translated_cli, cld, translated_cld, username, original_cli):
                if cld == "stuck":
                    select([{release_r}], [], [], 30)
                return True
        """,
        )
        check = DestinationCheck(str(script), on_run_error=run_errors, timeout=0.1)
        assert check.allowed(**dict(CALL, cld="stuck")) is False  # its thread stays stuck
        assert check.allowed(**CALL) is False  # no thread free: prohibited in time
        assert run_errors.reasons == [hooks.RUN_TIMEOUT, hooks.RUN_TIMEOUT]
        os.write(release_w, b"x")
        check.timeout = 30
        assert check.allowed(**CALL) is True  # the thread is back
    finally:
        os.close(release_w)
        os.close(release_r)


def test_outer_timeout_is_not_swallowed(tmp_path):
    import gevent

    script = write(
        tmp_path / "check.py", "import gevent\ndef check_destination(*a):\n    gevent.sleep(5)\n    return True\n"
    )
    check = DestinationCheck(str(script), timeout=2.0)
    outer = gevent.Timeout(0.05)
    with pytest.raises(gevent.Timeout) as raised:
        with outer:
            check.allowed(**CALL)
    assert raised.value is outer


def test_failing_callback_does_not_break_the_call(tmp_path):
    def broken(path, reason):
        raise RuntimeError("metrics down")

    script = write(tmp_path / "check.py", "def check_destination(*a):\n    return 1\n")
    check = DestinationCheck(str(script), on_run_error=broken)
    assert check.allowed(**CALL) is False


def test_script_is_not_put_in_sys_modules_nor_cached_as_bytecode(tmp_path):
    import sys

    script = write(tmp_path / "check.py", PREFIX_44_FORBIDDEN)
    before = set(sys.modules)
    DestinationCheck(str(script))
    assert set(sys.modules) == before
    assert not (tmp_path / "__pycache__").exists()


# --- duration script ---------------------------------------------------------

DURATION_ARGS = dict(
    call_uuid="uuid-2",
    username="1000",
    balance=Decimal("12.50000"),
    cli="15551230000",
    cld="441234567",
    max_duration_s=600,
    tariff_id=7,
    translated_cli="+15551230000",
    translated_cld="0441234567",
)


def program(tmp_path: Path, body: str, name: str = "duration.sh") -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_duration_no_path_returns_the_computed_duration():
    assert DurationScript(None).announced(**DURATION_ARGS) == 600


def test_duration_script_output_is_announced(tmp_path):
    errors = Recorder()
    script = DurationScript(program(tmp_path, "echo '  300 '\n"), on_error=errors)
    assert script.announced(**DURATION_ARGS) == 300
    assert errors.calls == []


def test_duration_script_gets_the_documented_arguments(tmp_path):
    out = tmp_path / "argv"
    script = DurationScript(program(tmp_path, f'printf "%s\\n" "$@" > {out}\necho 1\n'))
    assert script.announced(**{**DURATION_ARGS, "balance": Decimal("1E+2")}) == 1
    assert out.read_text().splitlines() == [
        "1000",
        "100",
        "15551230000",
        "441234567",
        "600",
        "7",
        "+15551230000",
        "0441234567",
    ]


def test_duration_balance_is_passed_as_exact_decimal(tmp_path):
    out = tmp_path / "argv"
    script = DurationScript(program(tmp_path, f'echo "$2" > {out}\necho 1\n'))
    script.announced(**{**DURATION_ARGS, "balance": Decimal("0.10000")})
    assert out.read_text().strip() == "0.10000"


def test_duration_missing_values_keep_argument_positions(tmp_path):
    out = tmp_path / "argv"
    script = DurationScript(program(tmp_path, f'echo "$#:$6:$8" > {out}\necho 1\n'))
    script.announced(**{**DURATION_ARGS, "tariff_id": None})
    assert out.read_text().strip() == "8::0441234567"


@pytest.mark.parametrize(
    "body, reason",
    [
        ("echo 300\nexit 3\n", hooks.DURATION_EXIT_STATUS),
        ("echo five minutes\n", hooks.DURATION_BAD_OUTPUT),
        ("echo 12.5\n", hooks.DURATION_BAD_OUTPUT),
        ("true\n", hooks.DURATION_BAD_OUTPUT),
        ("echo -5\n", hooks.DURATION_NEGATIVE),
    ],
)
def test_duration_failures_fall_back_to_the_computed_duration(tmp_path, body, reason, caplog):
    errors = Recorder()
    script = DurationScript(program(tmp_path, body), on_error=errors)
    with caplog.at_level(logging.ERROR, logger="cardd.hooks"):
        assert script.announced(**DURATION_ARGS) == 600
    assert errors.reasons == [reason]
    assert [r.call_uuid for r in caplog.records] == ["uuid-2"]  # the line names its call (cardd/logs.py)


def test_duration_timeout_kills_the_script_and_falls_back(tmp_path):
    errors = Recorder()
    pidfile = tmp_path / "pid"
    script = DurationScript(program(tmp_path, f"echo $$ > {pidfile}\nsleep 30\necho 1\n"), timeout=0.2, on_error=errors)
    # killed, not waited for: the script would have answered 1 after 30 s
    assert script.announced(**DURATION_ARGS) == 600
    assert errors.reasons == [hooks.DURATION_TIMEOUT]
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.parametrize(
    "make",
    [
        lambda tmp_path: str(tmp_path / "nope.sh"),
        lambda tmp_path: str(write(tmp_path / "not-executable.sh", "#!/bin/sh\necho 1\n")),
    ],
)
def test_duration_script_that_cannot_start_falls_back(tmp_path, make):
    errors = Recorder()
    script = DurationScript(make(tmp_path), on_error=errors)
    assert script.announced(**DURATION_ARGS) == 600
    assert errors.reasons == [hooks.DURATION_START_FAILED]


# --- sharing ------------------------------------------------------------------


def test_script_hooks_share_one_instance_per_path(tmp_path):
    load_errors = Recorder()
    hub = ScriptHooks(on_load_error=load_errors)
    path = str(tmp_path / "missing.py")
    assert hub.destination_check(path) is hub.destination_check(path)
    assert hub.duration_script(path) is hub.duration_script(path)
    assert hub.destination_check(None).allowed(**CALL) is True
    assert load_errors.reasons == [hooks.LOAD_MISSING]


def test_calls_during_a_reload_still_use_the_old_version(tmp_path):
    # Loading may yield (here: the new version sleeps at import time); a call
    # arriving meanwhile must not go unchecked.
    import gevent

    clock = FakeClock()
    script = write(tmp_path / "check.py", PREFIX_44_FORBIDDEN)
    check = DestinationCheck(str(script), clock=clock)
    write(script, "import gevent\ngevent.sleep(0.1)\n" + textwrap.dedent(PREFIX_44_FORBIDDEN), bump=2)
    clock.now += 1
    reloading = gevent.spawn(check.allowed, **CALL)
    gevent.sleep(0.01)
    assert check.allowed(**CALL) is False  # checked by the old version
    assert reloading.get(timeout=2) is False


# --- through a running cardd -------------------------------------------------


def test_a_blocking_destination_check_on_one_call_does_not_stall_another_call(
    cardd_with, database, demo_data, tmp_path
):
    """Two calls through cardd and the simulated switch: the first call's check
    waits until the second call's check has run. With the check on the event
    loop, cardd (and the in-process switch) would stand still until the first
    script's 10 s cap, and the first call would be refused."""
    from cardd.sim import Callee, Caller

    slow, fast = "447700900123", "447700900124"
    started_r, started_w = os.pipe()
    progress_r, progress_w = os.pipe()
    try:
        script = write(
            tmp_path / "check.py",
            TWO_CALLS.replace('cld == "slow"', f'cld == "{slow}"').format(
                started_r=started_r, started_w=started_w, progress_r=progress_r, progress_w=progress_w
            ),
        )
        running = cardd_with(database, f"calling_card:\n  destination_check_script: {script}\n", tmp_path=tmp_path)

        def card_call(destination):
            return Caller(
                destination="cc.noredial",
                type_after=6,
                digits=[demo_data.card_number + "#", demo_data.pin + "#", destination + "#"],
            )

        first = running.dial(card_call(slow), Callee(talk=5))
        second = running.dial(card_call(fast), Callee(talk=5))
        for call in (second.wait(120), first.wait(120)):
            assert "destination_forbidden" not in running.heard(call) and len(call.bridges) == 1
        assert running.metric("cardd_destination_check_errors_total", reason="timeout") == 0
    finally:
        for fd in (started_r, started_w, progress_r, progress_w):
            os.close(fd)
