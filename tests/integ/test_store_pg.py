"""The PostgreSQL store against a throwaway server (tests/pg.py).

Runs the backend-generic store suite (tests/unit/test_store.c) with
SENSORNET_TEST_PG set, and each test of the PostgreSQL-only suite
(tests/unit/test_store_pg.c: restarts and crashes mid-stream, concurrent
collectors, migration, read-only opens, retention) on a server of its own,
with the commands that stop, kill and start that server.
"""
import os
import re
import subprocess

import pytest

from conftest import BUILD, ROOT, skip_or_fail
from pg import pg  # noqa: F401 (the fixture)

PG_SUITE = os.path.join(ROOT, "tests", "unit", "test_store_pg.c")


def pg_tests():
    """The cmocka tests of test_store_pg.c, in order, each once."""
    with open(PG_SUITE) as f:
        names = re.findall(r"cmocka_unit_test\((test_\w+)\)", f.read())
    return list(dict.fromkeys(names))


def unit_binary(name):
    exe = os.path.join(BUILD, "tests", name)
    if not os.path.exists(exe):
        skip_or_fail("%s not built (make unit)" % exe)
    return exe


def run_suite(exe, srv, tmp_path, conninfo=None, **env_extra):
    env = dict(os.environ, TMPDIR=str(tmp_path),
               SENSORNET_TEST_PG=conninfo or srv.conninfo,
               SENSORNET_TEST_PG_STOP=srv.ctl_command("stop"),
               SENSORNET_TEST_PG_KILL=srv.ctl_command("kill"),
               SENSORNET_TEST_PG_START=srv.ctl_command("start"))
    env.update(env_extra)
    r = subprocess.run([exe], cwd=ROOT, env=env, capture_output=True,
                       timeout=600)
    out = r.stdout.decode("utf-8", "replace") + r.stderr.decode(
        "utf-8", "replace")
    assert r.returncode == 0, out
    assert "[  PASSED  ]" in out, out
    for bad in ("[  FAILED  ]", "[  SKIPPED ]", "ERROR: AddressSanitizer",
                "ERROR: LeakSanitizer", "runtime error:"):
        assert bad not in out, out
    return out


def test_generic_suite_on_postgresql(pg, tmp_path):
    out = run_suite(unit_binary("test_store"), pg, tmp_path)
    assert "PostgreSQL store tests not run" not in out, out


def test_generic_suite_with_uri_conninfo(pg, tmp_path):
    """A postgresql:// URI works as well as key=value pairs."""
    out = run_suite(unit_binary("test_store"), pg, tmp_path, conninfo=pg.uri,
                    SENSORNET_TEST_FILTER="test_create_append_commit")
    assert "PostgreSQL store tests not run" not in out, out


@pytest.mark.parametrize("name", pg_tests())
def test_store_pg(name, pg, tmp_path):
    out = run_suite(unit_binary("test_store_pg"), pg, tmp_path,
                    SENSORNET_TEST_FILTER=name)
    assert "[       OK ] %s" % name in out, out
    assert "1 test(s) run" in out, out


def test_store_pg_does_not_leave_server_down(pg):
    """The ctl commands the suite runs leave the server as they found it
    (a check on this file's plumbing, not on the store)."""
    assert subprocess.run(pg.ctl_command("stop"), shell=True).returncode == 0
    assert not pg.ready()
    assert subprocess.run(pg.ctl_command("start"), shell=True,
                          capture_output=True).returncode == 0
    assert pg.sql("SELECT 1") == "1"
