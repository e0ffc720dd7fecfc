from gevent import monkey

monkey.patch_all()  # as `cardd serve` does: the daemon runs in-process in most tests

import os  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

pytest_plugins = ["tests.dbfixtures", "tests.callfixtures"]


def pytest_configure(config):
    """Each session's temporary files in a directory of its own, outside
    /tmp/pytest-of-<user>.

    Run as root, embedded PostgreSQL runs as its own system user and opens up
    the directories above its data directory so that user can reach it. Every
    pytest session that starts resets /tmp/pytest-of-<user> to mode 0700, so a
    second test run on the same machine cut the first one's servers off from
    their own data (connection refused, `pg_ctl stop`: permission denied). A
    directory no other session touches keeps them reachable; it is removed at
    the end unless CARDD_KEEP_TEST_FILES is set.
    """
    if config.option.basetemp is None:
        config.option.basetemp = tempfile.mkdtemp(prefix="cardd-tests-")
        config._cardd_own_basetemp = config.option.basetemp


def pytest_unconfigure(config):
    own = getattr(config, "_cardd_own_basetemp", None)
    if own and not os.environ.get("CARDD_KEEP_TEST_FILES"):
        shutil.rmtree(own, ignore_errors=True)
