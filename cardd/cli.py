"""The `cardd` command. The only module that exits."""

from gevent import monkey

monkey.patch_all()  # first: psycopg, sockets and the pool must all cooperate

import argparse  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402

from cardd import config as config_mod  # noqa: E402
from cardd.errors import CarddError, ConfigError  # noqa: E402

log = logging.getLogger("cardd")


def _config_path(given: str | None) -> str | None:
    """The file named with -c, else ./cardd.yaml when there is one, else
    none (built-in defaults)."""
    if given:
        return given
    return "cardd.yaml" if os.path.exists("cardd.yaml") else None


def setup_logging(level: str, fmt: str = "text") -> None:
    # key=value or JSON lines on stderr, the call UUID as a field (cardd/logs.py)
    from cardd import logs

    logs.setup_logging(level, fmt, sys.stderr)


# -- serve ---------------------------------------------------------------------

def cmd_serve(args, settings) -> int:
    from cardd.daemon import Daemon

    daemon = Daemon(settings)
    daemon.start(demo=args.demo)
    stop = gevent.event.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, stop.set)
    stop.wait()
    log.info("stopping: draining calls for up to %s s", settings.daemon.shutdown_grace)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cardd", description="Prepaid calling-card IVR for FreeSWITCH")
    parser.add_argument("-c", "--config", help="cardd.yaml to use (default: ./cardd.yaml if present)")
    parser.add_argument("--check-config", action="store_true",
                        help="validate the configuration, print it and exit")
    sub = parser.add_subparsers(dest="command")

    serve = sub.add_parser("serve", help="run the daemon")
    serve.add_argument("--demo", action="store_true",
                       help="create a demo tariff and card (see README) if they do not exist")
    serve.add_argument("--outbound-proxy", help="host:port where outbound calls go")
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check-config", help="validate cardd.yaml and print the effective settings")
    check.set_defaults(func=cmd_check_config)

    check_cld = sub.add_parser("check-cld", help="show what a CLD string sets")
    check_cld.add_argument("cld")
    check_cld.set_defaults(func=cmd_check_cld)

    call = sub.add_parser("call", help="place a simulated call against a running cardd")
    call.add_argument("--cli", default="15551234567", help="the caller's number")
    call.add_argument("--cld", default="cc", help="the CLD string the dialplan hands over")
    call.add_argument("--did", default="", help="the access number dialled (rdnis)")
    call.add_argument("--digits", action="append", default=None,
                      help="what to type at each prompt, in order (repeat; '-' = stay silent)")
    call.add_argument("--talk", type=float, default=30.0, help="seconds the callee talks")
    call.add_argument("--answer", choices=["answer", "busy", "no_answer", "unreachable"],
                      default="answer", help="what the callee does")
    call.add_argument("--server", help="host:port of cardd (default: daemon.listen)")
    call.add_argument("--real-time", action="store_true",
                      help="run the simulated switch on the wall clock")
    call.set_defaults(func=cmd_call)

    from cardd import admin
    admin.add_parsers(sub)
    from cardd import admin_identity  # after admin: it adds generate/block/... to admin's `card`
    admin_identity.add_parsers(sub)
    from cardd import admin_ops  # after admin: it adds `rate import/lookup` to admin's `rate`
    admin_ops.add_parsers(sub)
    from cardd import prompt_admin
    prompt_admin.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = config_mod.load_settings(_config_path(args.config))
        if getattr(args, "outbound_proxy", None):
            settings = settings.with_daemon(outbound_proxy=args.outbound_proxy)
        setup_logging(settings.daemon.log_level, settings.daemon.log_format)
        if args.check_config:
            return cmd_check_config(args, settings)
        if not getattr(args, "func", None):
            parser.print_help()
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
