"""sensornet-server with --postgres: what the collector acknowledges is
stored, exactly once, also when PostgreSQL restarts or crashes while
readings stream in (the writer holds acknowledgements and retries; the
store reconnects).
"""
import re

import pytest

from conftest import wait_until
from pg import pg  # noqa: F401 (the fixture)

SENSORS = 4


def client_totals(c):
    """(produced, acked) from the client's exit line."""
    m = re.search(r"produced=(\d+) acked=(\d+) refused=(\d+) pending=(\d+)",
                  c.stdout() + c.stderr())
    assert m, "no totals line:\n%s%s" % (c.stdout(), c.stderr())
    assert m.group(3) == "0" and m.group(4) == "0", m.group(0)
    return int(m.group(1)), int(m.group(2))


def stored(pg):
    return int(pg.sql("SELECT count(*) FROM readings"))


def assert_consistent(pg):
    """Each series' count is its rows: nothing counted twice."""
    assert pg.sql("SELECT count(*) FROM series s WHERE s.count <>"
                  " (SELECT count(*) FROM readings r"
                  " WHERE r.series_id = s.id)") == "0"
    assert pg.sql("SELECT count(*) FROM series") == str(SENSORS)


def test_acknowledged_equals_stored(pg, server, client):
    srv = server("--postgres", pg.conninfo)
    c = client(srv, "--count", "3000", "--format", "influx", "--sensors",
               str(SENSORS), "--interval", "0", "-q")
    assert c.wait(120) == 0, c.stderr()
    produced, acked = client_totals(c)
    assert acked == produced == SENSORS * 3000
    assert stored(pg) == acked
    assert_consistent(pg)


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_postgresql_down_mid_stream(pg, server, client, how):
    """PostgreSQL goes away (a clean stop, or a crash) and comes back while
    four sensors send: every reading gets acknowledged in the end, and the
    database holds each exactly once."""
    srv = server("--postgres", pg.conninfo)
    c = client(srv, "--count", "4000", "--format", "influx", "--sensors",
               str(SENSORS), "--interval", "0.001", "-q")
    wait_until(lambda: stored(pg) > 1000, 60, what="first readings stored")
    if how == "stop":
        pg.stop()
    else:
        pg.kill()
    wait_until(lambda: "postgresql unreachable" in srv.stderr(), 30,
               what="the writer to notice")
    pg.start()
    assert c.wait(180) == 0, c.stderr()
    produced, acked = client_totals(c)
    assert acked == produced == SENSORS * 4000
    assert stored(pg) == acked
    assert_consistent(pg)
    assert "storage recovered" in srv.stderr()


def test_kill9_right_after_ack_loses_nothing(pg, server):
    """The collector killed right after each acknowledgement: PostgreSQL
    holds everything acknowledged, and resends are stored once."""
    from conftest import LineConn
    srv = server("--postgres", pg.conninfo)
    acked = 0
    for rnd in range(4):
        c = LineConn(srv.connect())
        # Each round resends the previous round's last 100 lines too.
        start = max(0, rnd * 1000 - 100)
        c.send("".join("m,sensor=k9 temperature=%d %d\n"
                       % (i, 1700000000000000000 + i)
                       for i in range(start, (rnd + 1) * 1000)))
        assert c.wait_ok((rnd + 1) * 1000 - start) == []
        acked = (rnd + 1) * 1000
        srv.p.kill()
        srv.wait(10)
        assert stored(pg) == acked
        srv = server("--postgres", pg.conninfo, port=srv.port)
    assert pg.sql("SELECT count FROM series WHERE sensor = 'k9'") == \
        str(acked)
