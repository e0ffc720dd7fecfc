"""The `cardd` command. The only module that exits."""

from gevent import monkey

monkey.patch_all()  # first: psycopg, sockets and the pool must all cooperate

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
from typing import NoReturn  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402

from cardd import config as config_mod  # noqa: E402
from cardd.errors import CarddError, ConfigError  # noqa: E402

log = logging.getLogger("cardd")


def setup_logging(level: str, fmt: str = "text") -> None:
    # key=value or JSON lines on stderr, the call UUID as a field (cardd/logs.py)
    from cardd import logs

    logs.setup_logging(level, fmt, sys.stderr)


# -- serve ---------------------------------------------------------------------

# Each of these stops `cardd serve` the same way: drain the calls, then stop
# the embedded PostgreSQL. SIGHUP is the terminal closing, not a reload.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def cmd_serve(args, settings) -> int:
    from cardd.daemon import Daemon

    stop = gevent.event.Event()
    received: list[signal.Signals] = []

    def on_signal(signum: int) -> None:
        received.append(signal.Signals(signum))
        stop.set()

    # Before the daemon starts: a signal during start-up (the embedded
    # PostgreSQL starting) stops it right after, instead of killing cardd
    # and leaving the server behind.
    for signum in STOP_SIGNALS:
        gevent.signal_handler(signum, on_signal, signum)
    log.info("%s", settings.where())
    daemon = Daemon(settings)
    daemon.start(demo=args.demo)  # stops what it started if it fails
    stop.wait()
    log.info("stopping on %s: draining calls for up to %s s", received[0].name, settings.daemon.shutdown_grace)
    daemon.stop()
    log.info("stopped")
    return 0


def cmd_check_config(args, settings) -> int:
    print(config_mod.format_settings(settings))
    return 0


def cmd_check_cld(args, settings) -> int:
    print(config_mod.describe_cld(settings, args.cld))
    return 0


def cmd_call(args, settings) -> int:
    from cardd.phone import place_call

    return place_call(args, settings)


def cmd_api(args, settings) -> int:
    from cardd.api.server import cmd_api as run_api

    return run_api(args, settings)


class _Parser(argparse.ArgumentParser):
    """argparse whose mistakes are one `cardd: …` line and exit status 2, as
    every other refusal; the usage block is for --help."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.partition(" ")[2]
        where = f"{command}: " if command else ""
        self.exit(2, f"cardd: {where}{message} (see {self.prog} --help)\n")


_CONFIG_HELP = "cardd.yaml to use (default: ./cardd.yaml, else /etc/cardd/cardd.yaml, else built-in defaults)"


def _config_after_commands(parser: argparse.ArgumentParser) -> None:
    """-c/--config at every level, so `cardd card list -c cardd.yaml` works like
    `cardd -c cardd.yaml card list`. SUPPRESS: a sub-command without it keeps
    the value given before it."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for sub in set(action.choices.values()):
            if "-c" not in sub._option_string_actions and "--config" not in sub._option_string_actions:
                sub.add_argument("-c", "--config", default=argparse.SUPPRESS, help=_CONFIG_HELP)
            _config_after_commands(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cardd", description="Prepaid calling-card IVR for FreeSWITCH")
    parser.add_argument("-c", "--config", help=_CONFIG_HELP)
    parser.add_argument("--check-config", action="store_true", help="validate the configuration, print it and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the daemon")
    serve.add_argument(
        "--demo", action="store_true", help="create a demo tariff and card (see README) if they do not exist"
    )
    serve.add_argument("--outbound-proxy", help="host:port where outbound calls go")
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check-config", help="validate cardd.yaml and print the effective settings")
    check.set_defaults(func=cmd_check_config)

    check_cld = sub.add_parser("check-cld", help="show what a CLD string sets")
    check_cld.add_argument("cld")
    check_cld.set_defaults(func=cmd_check_cld)

    from cardd.phone import CallHelpFormatter, add_call_options

    call = sub.add_parser(
        "call", help="place a simulated call against a running cardd", formatter_class=CallHelpFormatter
    )
    call.add_argument("--cli", default="15551234567", help="the caller's number")
    call.add_argument("--cld", default="cc", help="the CLD string the dialplan hands over")
    call.add_argument("--did", default="", help="the access number dialled (rdnis)")
    call.add_argument(
        "--digits",
        action="append",
        default=None,
        help="what to type at each prompt, in order (repeat; '-' = stay silent)",
    )
    call.add_argument("--talk", type=float, default=30.0, help="seconds the callee talks")
    call.add_argument(
        "--answer",
        choices=["answer", "busy", "no_answer", "unreachable"],
        default="answer",
        help="what the callee does",
    )
    call.add_argument("--server", help="host:port of cardd (default: daemon.listen)")
    call.add_argument("--real-time", action="store_true", help="run the simulated switch on the wall clock")
    add_call_options(call)
    call.set_defaults(func=cmd_call)

    from cardd import admin  # every operator command (cardd/admin/)

    admin.add_parsers(sub)
    api = sub.add_parser("api", help="run the HTTP JSON API (the api: section of cardd.yaml)")
    api.set_defaults(func=cmd_api)
    _config_after_commands(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        path, found_by = config_mod.find_config(args.config)
        settings = dataclasses.replace(config_mod.load_settings(path), found_by=found_by)
        if getattr(args, "outbound_proxy", None):
            settings = settings.with_daemon(outbound_proxy=args.outbound_proxy)
        setup_logging(settings.daemon.log_level, settings.daemon.log_format)
        if args.check_config:
            return cmd_check_config(args, settings)
        if not getattr(args, "func", None):
            print("cardd: which command? (cardd --help lists them)", file=sys.stderr)
            return 2
        return args.func(args, settings)
    except ConfigError as exc:
        print(f"cardd: configuration error: {exc}", file=sys.stderr)
        return 2
    except CarddError as exc:
        print(f"cardd: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
