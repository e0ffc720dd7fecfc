"""Operator-supplied custom scripts: the destination check and the duration script.

Both are optional (path None = no-op) and both are failure-tolerant in the way
CALLING_CARD_OPTIONS.md "Custom scripts" asks:

* DestinationCheck: a Python file defining
  `check_destination(cli, translated_cli, cld, translated_cld, username, original_cli) -> bool`
  (or `checkDestination`, the reference product's name, so an operator's existing script loads as it is).
  A script that cannot be loaded is disabled (calls go on without it, as in the
  reference product) -- logged once per change of the file and reported through
  `on_load_error`. A script that loads but misbehaves while running (exception,
  non-bool, too slow) means "prohibited": we fail closed, because the operator
  wrote it to stop calls. Loading and running happen in a worker thread with a
  deadline (`_off_loop`), never on the event loop: a slow script delays its own
  call, not every call in the process. Several calls may run the function at
  once, each in its own thread: an object the script opens at load time and
  that is bound to one thread (a sqlite3 connection) must be opened per call.
* DurationScript: a program printing the duration to ANNOUNCE. It never changes
  the real limit, so any failure falls back to the computed duration.

Callbacks get `(path, reason)` where reason is a short fixed word (see the
`LOAD_*`, `RUN_*` and `DURATION_*` constants) so the daemon can use it as a
metric label without unbounded cardinality. A callback that raises is logged and
ignored: a broken metric must not break a call.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from types import ModuleType
from typing import Any

import gevent
from gevent import subprocess
from gevent.threadpool import ThreadPool

from cardd.errors import CarddError

log = logging.getLogger(__name__)

ErrorCallback = Callable[[str, str], None]
Clock = Callable[[], float]

# cardd's name first; the reference product calls the same function checkDestination.
FUNCTION_NAMES = ("check_destination", "checkDestination")

# Reasons a destination check script is disabled (on_load_error).
LOAD_MISSING = "missing"
LOAD_UNREADABLE = "unreadable"
LOAD_SYNTAX = "syntax"
LOAD_EXCEPTION = "exception"
LOAD_TIMEOUT = "timeout"
LOAD_NO_FUNCTION = "no_function"

# Reasons a call was prohibited by a misbehaving script (on_run_error).
RUN_EXCEPTION = "exception"
RUN_NOT_BOOL = "not_bool"
RUN_TIMEOUT = "timeout"

# Reasons the duration script's answer was not used (on_error).
DURATION_START_FAILED = "start_failed"
DURATION_TIMEOUT = "timeout"
DURATION_EXIT_STATUS = "exit_status"
DURATION_BAD_OUTPUT = "bad_output"
DURATION_NEGATIVE = "negative"

DEFAULT_TIMEOUT = 2.0
DEFAULT_CHECK_INTERVAL = 1.0

_MAX_LOGGED_OUTPUT = 200  # characters of a script's output quoted in a log line
_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)


def _report(callback: ErrorCallback | None, path: str, reason: str) -> None:
    if callback is None:
        return
    try:
        callback(path, reason)
    except Exception:
        log.exception("error callback for script %s failed", path)


def _short(text: str | bytes) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = text.strip()
    return text if len(text) <= _MAX_LOGGED_OUTPUT else text[:_MAX_LOGGED_OUTPUT] + "..."


# --- destination check -------------------------------------------------------


@dataclass(frozen=True)
class _Stamp:
    """What identifies one version of a file without reading it.

    ctime is included besides mtime because tools like `cp -p` or `touch -r`
    can bring back an old mtime, but nobody can set ctime.
    """

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> _Stamp:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class _LoadError(CarddError):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class DestinationCheck:
    """The operator's destination check, reloaded when its file changes.

    Cheap on the hot path: the file is stat()ed at most once per
    `check_interval` seconds (per instance; share one instance per path), and
    only read and executed again when its stamp changed.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        *,
        on_load_error: ErrorCallback | None = None,
        on_run_error: ErrorCallback | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        check_interval: float = DEFAULT_CHECK_INTERVAL,
        clock: Clock = time.monotonic,
    ):
        self.path = os.fspath(path) if path is not None else None
        self.timeout = timeout
        self.check_interval = check_interval
        self._on_load_error = on_load_error
        self._on_run_error = on_run_error
        self._clock = clock
        self._function: Callable[..., Any] | None = None
        # None until the first look; afterwards the stamp of the version we last
        # tried (or None while the file is missing), so one change = one load.
        self._stamp: _Stamp | None = None
        self._looked = False
        self._next_look = float("-inf")
        self._generation = 0
        if self.path is not None:
            # Load now so a broken script is reported when the daemon starts,
            # not on the first call.
            self._refresh()

    @property
    def enabled(self) -> bool:
        """True when a script is loaded and will be consulted."""
        return self._function is not None

    def allowed(
        self,
        *,
        call_uuid: str,
        cli: str,
        translated_cli: str,
        cld: str,
        translated_cld: str,
        username: str,
        original_cli: str,
    ) -> bool:
        """May this call go to this destination? True when no script is in force."""
        if self.path is None:
            return True
        self._refresh()
        function = self._function
        if function is None:
            return True
        # Positional, in the documented order, so the script's parameter names do
        # not matter.
        args = (cli, translated_cli, cld, translated_cld, username, original_cli)
        return self._run(function, args, call_uuid)

    # -- running --

    def _run(self, function: Callable[..., Any], args: tuple[str, ...], call_uuid: str) -> bool:
        finished, ok, result = _off_loop(function, args, self.timeout)
        if not finished:
            return self._prohibit(call_uuid, RUN_TIMEOUT, "took longer than %.3g s", self.timeout)
        if not ok:
            # SystemExit too: a script calling sys.exit() must not end the call.
            log.error(
                "destination check script %s raised %s: %s; call prohibited",
                self.path,
                type(result).__name__,
                result,
                exc_info=(type(result), result, result.__traceback__) if log.isEnabledFor(logging.DEBUG) else None,
                extra={"call_uuid": call_uuid},
            )
            _report(self._on_run_error, self.path or "", RUN_EXCEPTION)
            return False
        if not isinstance(result, bool):
            return self._prohibit(call_uuid, RUN_NOT_BOOL, "returned %s, not a bool", type(result).__name__)
        if not result:
            log.info("destination check script %s prohibited the call", self.path, extra={"call_uuid": call_uuid})
        return result

    def _prohibit(self, call_uuid: str, reason: str, what: str, *args: Any) -> bool:
        log.error(
            "destination check script %s " + what + "; call prohibited",
            self.path,
            *args,
            extra={"call_uuid": call_uuid},
        )
        _report(self._on_run_error, self.path or "", reason)
        return False

    # -- loading --

    def _refresh(self) -> None:
        assert self.path is not None
        now = self._clock()
        if now < self._next_look:
            return
        # Set before loading so concurrent greenlets keep using the current
        # version instead of loading the same file twice.
        self._next_look = now + self.check_interval
        try:
            stamp: _Stamp | None = _Stamp.of(os.stat(self.path))
        except OSError:
            stamp = None
        if self._looked and stamp == self._stamp:
            return
        self._looked = True
        self._stamp = stamp
        self._load()

    def _load(self) -> None:
        assert self.path is not None
        had_function = self._function is not None
        # The old version stays in force while the new one loads (loading may
        # yield to other calls, which must not slip through unchecked); a failed
        # load then disables the script, as the spec says, rather than keeping
        # the old version.
        try:
            function, stamp = self._import()
        except _LoadError as exc:
            self._function = None
            log.error("destination check script %s disabled (%s): %s", self.path, exc.reason, exc)
            _report(self._on_load_error, self.path, exc.reason)
            return
        # The stamp of what we actually read, so a write racing the load is seen
        # at the next look.
        self._stamp = stamp
        self._function = function
        self._generation += 1
        log.info("destination check script %s %s", self.path, "reloaded" if had_function else "loaded")

    def _import(self) -> tuple[Callable[..., Any], _Stamp]:
        assert self.path is not None
        try:
            with open(self.path, "rb") as f:
                stamp = _Stamp.of(os.fstat(f.fileno()))
                source = f.read()
        except FileNotFoundError as exc:
            raise _LoadError(LOAD_MISSING, f"file not found: {exc.filename}") from None
        except OSError as exc:
            raise _LoadError(LOAD_UNREADABLE, str(exc)) from None
        module = self._new_module()
        try:
            # compile() from the bytes we read rather than spec.loader.exec_module():
            # the import system's .pyc cache keys on whole-second mtimes and would
            # write __pycache__ into the operator's directory.
            code = compile(source, self.path, "exec", dont_inherit=True)
        except (SyntaxError, ValueError) as exc:
            raise _LoadError(LOAD_SYNTAX, str(exc)) from None
        self._exec(code, module)
        function = next((f for f in (getattr(module, name, None) for name in FUNCTION_NAMES) if callable(f)), None)
        if function is None:
            raise _LoadError(
                LOAD_NO_FUNCTION, "no function " + " or ".join(f"{name}()" for name in FUNCTION_NAMES) + " defined"
            )
        return function, stamp

    def _new_module(self) -> ModuleType:
        assert self.path is not None
        # A fresh namespace per load, never put in sys.modules: the script cannot
        # shadow or be shadowed by a real module, and old globals do not leak
        # into the new version.
        name = f"cardd_destination_check_{id(self):x}_{self._generation}"
        spec = importlib.util.spec_from_file_location(name, self.path)
        if spec is None:
            raise _LoadError(LOAD_UNREADABLE, "not loadable as a Python file")
        return importlib.util.module_from_spec(spec)

    def _exec(self, code: Any, module: ModuleType) -> None:
        finished, ok, error = _off_loop(exec, (code, module.__dict__), self.timeout)
        if not finished:
            raise _LoadError(LOAD_TIMEOUT, f"loading took longer than {self.timeout:.3g} s")
        if not ok:
            raise _LoadError(LOAD_EXCEPTION, f"{type(error).__name__}: {error}")


# --- running operator Python off the event loop ---------------------------------

# Threads for the destination check script, apart from the hub's own pool (which
# resolves host names): a script stuck for good keeps its thread, and must not
# starve anything but other checks, which then time out and prohibit their calls.
SCRIPT_THREADS = 16
_pool: ThreadPool | None = None


class _Job:
    """One piece of operator code handed to a worker thread."""

    __slots__ = ("function", "args", "abandoned")

    def __init__(self, function: Callable[..., Any], args: tuple[Any, ...]):
        self.function = function
        self.args = args
        self.abandoned = False

    def __call__(self) -> tuple[bool, Any]:
        # In the worker thread. A job whose caller gave up while it waited for a
        # thread (all busy) is not run at all: its answer would not count.
        if self.abandoned:
            return False, None
        try:
            return True, self.function(*self.args)
        except BaseException as exc:  # SystemExit, KeyboardInterrupt: the script's, not ours
            return False, exc


def _off_loop(function: Callable[..., Any], args: tuple[Any, ...], timeout: float) -> tuple[bool, bool, Any]:
    """Run operator code in a worker thread, waiting at most `timeout` seconds.

    (finished, ok, result or exception). The event loop keeps serving every other
    call meanwhile, whatever the code does (blocking I/O, time.sleep, a busy
    loop: a thread switch every few ms). A thread cannot be killed: code past its
    deadline runs on unobserved and its answer is dropped. A gevent.Timeout of the
    caller's own (the call's deadline) goes through.
    """
    global _pool
    if _pool is None or _pool.hub is not gevent.get_hub():
        _pool = ThreadPool(SCRIPT_THREADS)
    job = _Job(function, args)
    # One deadline over both waits: for a free thread (spawn() waits for one
    # without a deadline of its own when every thread is taken) and for the answer.
    timer = gevent.Timeout(timeout)
    timer.start()
    try:
        waiter = _pool.spawn(job)
        waiter.wait()
    except gevent.Timeout as exc:
        if exc is not timer:
            raise  # somebody else's deadline (e.g. the call's): not ours to judge
        return False, False, None
    finally:
        timer.close()
        job.abandoned = True
    if not waiter.successful():
        return True, False, waiter.exception
    ok, result = waiter.value
    return True, ok, result


# --- duration script ---------------------------------------------------------


class DurationScript:
    """The operator's program choosing the duration to announce.

    argv: username, balance, cli, cld, max_duration_s, tariff id, translated
    cli, translated cld. stdout: an integer number of seconds. Only the
    announcement uses it; the real limit stays `max_duration_s`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        on_error: ErrorCallback | None = None,
    ):
        self.path = os.fspath(path) if path is not None else None
        self.timeout = timeout
        self._on_error = on_error

    def announced(
        self,
        *,
        call_uuid: str,
        username: str,
        balance: Decimal,
        cli: str,
        cld: str,
        max_duration_s: int,
        tariff_id: Any,
        translated_cli: str,
        translated_cld: str,
    ) -> int:
        """Seconds to announce; `max_duration_s` when there is no script or it fails."""
        if self.path is None:
            return max_duration_s
        argv = [
            self.path,
            _arg(username),
            # format "f": plain digits even for Decimal('1E+2'); never via float.
            format(balance, "f"),
            _arg(cli),
            _arg(cld),
            str(int(max_duration_s)),
            _arg(tariff_id),
            _arg(translated_cli),
            _arg(translated_cld),
        ]
        try:
            seconds = self._run(argv, call_uuid)
        except _ScriptFailed as exc:
            log.error(
                "duration script %s failed (%s): %s; announcing the computed %d s",
                self.path,
                exc.reason,
                exc,
                max_duration_s,
                extra={"call_uuid": call_uuid},
            )
            _report(self._on_error, self.path, exc.reason)
            return max_duration_s
        log.debug(
            "duration script says %d s (real limit %d s)", seconds, max_duration_s, extra={"call_uuid": call_uuid}
        )
        return seconds

    def _run(self, argv: list[str], call_uuid: str) -> int:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                close_fds=True,
                # Own process group, so a timeout kills whatever the script forked too.
                start_new_session=True,
            )
        except OSError as exc:
            raise _ScriptFailed(DURATION_START_FAILED, str(exc)) from None
        try:
            out, err = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            _kill(proc)
            raise _ScriptFailed(DURATION_TIMEOUT, f"no answer within {self.timeout:.3g} s; killed") from None
        except BaseException:
            _kill(proc)  # the call greenlet was killed: do not leave the child behind
            raise
        if err:
            log.warning(
                "duration script %s wrote to stderr: %s", self.path, _short(err), extra={"call_uuid": call_uuid}
            )
        if proc.returncode != 0:
            raise _ScriptFailed(DURATION_EXIT_STATUS, f"exit status {proc.returncode}")
        return _parse_seconds(out)


def _arg(value: Any) -> str:
    # A value the call does not have (no translation, no tariff) is an empty
    # argument, so the positions of the others never shift.
    return "" if value is None else str(value)


class _ScriptFailed(CarddError):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _parse_seconds(out: bytes) -> int:
    text = out.decode("ascii", "replace").strip()
    if not _INTEGER.fullmatch(text):
        raise _ScriptFailed(DURATION_BAD_OUTPUT, f"output is not an integer: {_short(out)!r}")
    seconds = int(text)
    if seconds < 0:
        raise _ScriptFailed(DURATION_NEGATIVE, f"negative duration {seconds}")
    return seconds


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass  # already gone
    try:
        # Reap it so no zombie is left; SIGKILL makes this quick.
        proc.communicate(timeout=1.0)
    except Exception:
        log.warning("duration script pid %d did not go away after SIGKILL", proc.pid)


# --- one instance per path ---------------------------------------------------


class ScriptHooks:
    """Hands out one DestinationCheck / DurationScript per path.

    Per-call options can name different scripts (instances, CLD tokens), but the
    once-per-second stat and the loaded module should be shared by every call
    using the same file.
    """

    def __init__(
        self,
        *,
        on_load_error: ErrorCallback | None = None,
        on_run_error: ErrorCallback | None = None,
        on_duration_error: ErrorCallback | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Clock = time.monotonic,
    ):
        self._on_load_error = on_load_error
        self._on_run_error = on_run_error
        self._on_duration_error = on_duration_error
        self._timeout = timeout
        self._clock = clock
        self._checks: dict[str | None, DestinationCheck] = {}
        self._durations: dict[str | None, DurationScript] = {}

    def destination_check(self, path: str | None) -> DestinationCheck:
        check = self._checks.get(path)
        if check is None:
            check = DestinationCheck(
                path,
                on_load_error=self._on_load_error,
                on_run_error=self._on_run_error,
                timeout=self._timeout,
                clock=self._clock,
            )
            self._checks[path] = check
        return check

    def duration_script(self, path: str | None) -> DurationScript:
        script = self._durations.get(path)
        if script is None:
            script = DurationScript(path, timeout=self._timeout, on_error=self._on_duration_error)
            self._durations[path] = script
        return script
