"""Graphite plaintext from a real client: collectd's write_graphite plugin
(Debian's collectd-core) sending to the sensor port."""
import os
import shutil
import sqlite3
import subprocess

from conftest import LineConn, skip_or_fail, wait_until

COLLECTD = shutil.which("collectd") or "/usr/sbin/collectd"

CONF = """\
Hostname "sn-test"
FQDNLookup false
Interval 0.5
BaseDir "{dir}"
PIDFile "{dir}/collectd.pid"
PluginDir "/usr/lib/collectd"
TypesDB "/usr/share/collectd/types.db"
LoadPlugin load
LoadPlugin write_graphite
<Plugin write_graphite>
  <Node "sensornet">
    Host "127.0.0.1"
    Port "{port}"
    Protocol "tcp"
    Prefix "collectd."
    EscapeCharacter "_"
    AlwaysAppendDS false
  </Node>
</Plugin>
"""


def series(db):
    con = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=10)
    try:
        return con.execute("SELECT sensor, quantity, count FROM series "
                           "ORDER BY quantity").fetchall()
    finally:
        con.close()


def test_collectd_write_graphite(server, tmp_path, procs):
    if not os.path.exists(COLLECTD):
        skip_or_fail("collectd not installed (Debian package collectd-core)")
    srv = server("--graphite-prefix", "collectd.",
                 "--graphite-sensor-parts", "1")
    conf = tmp_path / "collectd.conf"
    conf.write_text(CONF.format(dir=tmp_path, port=srv.port))
    p = subprocess.Popen([COLLECTD, "-f", "-C", str(conf)], cwd=tmp_path,
                         stdout=subprocess.DEVNULL,
                         stderr=open(tmp_path / "collectd.err", "wb"))
    try:
        def loads():
            rows = [r for r in series(srv.db_path) if r[0] == "sn-test"]
            return rows if len(rows) == 3 and all(r[2] >= 2 for r in rows) \
                else None
        rows = wait_until(loads, timeout=30, what="collectd load readings")
    finally:
        p.terminate()
        p.wait(10)
    assert [r[1] for r in rows] == ["load.load.longterm",
                                    "load.load.midterm",
                                    "load.load.shortterm"], rows
    # Graphite lines are logged in log.txt like any reading.
    assert "sn-test - load.load.shortterm: " in srv.log_text()
    # And a Graphite line by hand, with "-1" for "now", gets its OK.
    c = LineConn(srv.connect())
    c.send("collectd.hand.made.temperature 21.5 -1\n")
    assert c.wait_ok(1) == []
    assert ("hand", "made.temperature") in \
        [(r[0], r[1]) for r in series(srv.db_path)]
