from gevent import monkey

monkey.patch_all()  # as `cardd serve` does: the daemon runs in-process in most tests

pytest_plugins = ["tests.dbfixtures", "tests.callfixtures"]
