"""The collector with its SQLite store: acknowledged means committed.

Real server, real SQLite file, raw sockets; the database is read with
Python's sqlite3 after (or while) the server writes it.
"""
import os
import signal
import socket
import sqlite3
import subprocess
import time

import pytest

from conftest import SERVER, LineConn, get_port, wait_until

T0 = 1700000000000000000


def influx(sensor, n, start=0, quantity="temperature"):
    return "".join("m,sensor=%s %s=%d.25 %d\n"
                   % (sensor, quantity, i % 50, T0 + i * 1000)
                   for i in range(start, start + n))


def db_count(path, sensor=None):
    con = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=10)
    try:
        if sensor is None:
            return con.execute("SELECT count(*) FROM readings").fetchone()[0]
        return con.execute(
            "SELECT count(*) FROM readings r JOIN series s "
            "ON s.id = r.series_id WHERE s.sensor = ?",
            (sensor,)).fetchone()[0]
    finally:
        con.close()


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_acknowledged_equals_stored(server):
    srv = server()
    conns = [LineConn(srv.connect()) for _ in range(4)]
    for i, c in enumerate(conns):
        c.send(influx("s%d" % i, 2500))
    for c in conns:
        assert c.wait_ok(2500) == []
    assert db_count(srv.db_path) == 10000
    con = sqlite3.connect(srv.db_path)
    rows = con.execute("SELECT sensor, quantity, unit, count, last_value "
                       "FROM series ORDER BY sensor").fetchall()
    con.close()
    assert rows == [("s%d" % i, "temperature", "°C", 2500, 49.25)
                    for i in range(4)]


def test_resent_reading_stored_once(server):
    srv = server()
    for _ in range(2):                     # a resend after a lost ack
        c = LineConn(srv.connect())
        c.send(influx("dup", 300))
        assert c.wait_ok(300) == []
        c.close()
    assert db_count(srv.db_path, "dup") == 300
    con = sqlite3.connect(srv.db_path)
    assert con.execute("SELECT count FROM series WHERE sensor='dup'") \
        .fetchone()[0] == 300
    con.close()


def test_text_form_keyed_by_arrival_is_stored_each_time(server):
    """No timestamp of its own: two sends are two readings (docs say so)."""
    srv = server()
    c = LineConn(srv.connect())
    c.send("Sensor1 - Temperatura: 25.34°C\n" * 5)
    assert c.wait_ok(5) == []
    assert db_count(srv.db_path, "Sensor1") == 5


def test_kill9_right_after_ack_loses_nothing(server, tmp_path):
    srv = server()
    acked = 0
    for rnd in range(5):
        c = LineConn(srv.connect())
        c.send(influx("k9", 1000, start=rnd * 1000))
        assert c.wait_ok(1000) == []
        acked += 1000
        srv.p.kill()                       # SIGKILL right after the ack
        srv.wait(10)
        assert db_count(srv.db_path, "k9") == acked
        srv = server(port=srv.port)


def test_locked_database_holds_acks_then_resumes(server):
    srv = server()
    c = LineConn(srv.connect())
    c.send(influx("lk", 10))
    assert c.wait_ok(10) == []
    lock = sqlite3.connect(srv.db_path, timeout=1, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        c.send(influx("lk", 500, start=10))
        with pytest.raises(AssertionError, match="no reply"):
            c.wait_ok(510, timeout=1.5)
        wait_until(lambda: "locked" in srv.stderr(), what="lock logged")
        assert srv.alive()
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert c.wait_ok(510, timeout=15) == []
    assert db_count(srv.db_path, "lk") == 510


def test_backpressure_instead_of_unbounded_memory(server):
    """While storage is stuck the server stops reading: the sender blocks,
    the server's memory stays bounded, and everything is stored after."""
    srv = server("--threads", "1", "--batch-max", "1000")
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    s.connect(("127.0.0.1", srv.port))
    c = LineConn(s)
    c.send(influx("bp", 1))
    assert c.wait_ok(1) == []
    lock = sqlite3.connect(srv.db_path, timeout=1, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    rss0 = rss_kb(srv.pid)
    sent, total, blocked = 0, 200000, False
    c.s.settimeout(2)
    try:
        chunk = 10000
        while sent < total:
            data = influx("bp", chunk, start=1 + sent).encode()
            try:
                c.s.sendall(data)
            except socket.timeout:
                blocked = True
                break
            sent += chunk
        assert blocked, "the server kept reading while storage was stuck"
        assert rss_kb(srv.pid) - rss0 < 200 * 1024
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    # Send the rest, starting again with the chunk that was interrupted
    # (part of it may have gone through: resent readings are stored once).
    c.s.settimeout(120)
    c.s.sendall(influx("bp", total - sent, start=1 + sent).encode())
    wait_until(lambda: db_count(srv.db_path, "bp") == total + 1,
               timeout=120, what="everything stored after the stall")
    assert srv.alive()


def test_corrupt_db_file_refused_untouched(tmp_path):
    db = tmp_path / "junk.db"
    junk = os.urandom(8192)
    db.write_bytes(junk)
    r = subprocess.run([SERVER, "--listen", "127.0.0.1:%d" % get_port(), "--db", str(db),
                        "--log", str(tmp_path / "log.txt")],
                       capture_output=True, timeout=30)
    assert r.returncode == 1
    assert str(db).encode() in r.stderr or b"not a" in r.stderr, r.stderr
    assert db.read_bytes() == junk


def test_foreign_sqlite_database_refused_untouched(tmp_path):
    db = tmp_path / "other.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    con.execute("INSERT INTO invoices VALUES (1, 9.5)")
    con.commit()
    con.close()
    before = db.read_bytes()
    r = subprocess.run([SERVER, "--listen", "127.0.0.1:%d" % get_port(), "--db", str(db),
                        "--log", str(tmp_path / "log.txt")],
                       capture_output=True, timeout=30)
    assert r.returncode == 1, r.stderr
    assert b"sensornet" in r.stderr
    assert db.read_bytes() == before


def test_newer_schema_refused(server, tmp_path):
    srv = server()
    srv.stop()
    con = sqlite3.connect(srv.db_path)
    con.execute("PRAGMA user_version = 99")
    con.commit()
    con.close()
    r = subprocess.run([SERVER, "--listen", "127.0.0.1:%d" % get_port(),
                        "--db", srv.db_path,
                        "--log", str(tmp_path / "log2.txt")],
                       capture_output=True, timeout=30)
    assert r.returncode == 1
    assert b"newer" in r.stderr, r.stderr


def test_retention_deletes_old_readings_in_background(server):
    srv = server("--retention", "1h")
    now = time.time_ns()
    c = LineConn(srv.connect())
    old = "".join("m,sensor=ret temperature=1 %d\n"
                  % (now - 7200 * 10**9 + i) for i in range(3000))
    new = "".join("m,sensor=ret temperature=2 %d\n" % (now + i)
                  for i in range(100))
    c.send(old + new)
    assert c.wait_ok(3100) == []
    wait_until(lambda: db_count(srv.db_path, "ret") == 100, timeout=30,
               what="old readings deleted")


@pytest.mark.parametrize("mode", ["always", "off"])
def test_fsync_modes(server, mode):
    srv = server("--fsync", mode)
    c = LineConn(srv.connect())
    c.send(influx("fs", 1000))
    assert c.wait_ok(1000) == []
    assert db_count(srv.db_path, "fs") == 1000


def test_sigterm_stores_everything_acknowledged(server):
    srv = server()
    c = LineConn(srv.connect())
    # 2,000 lines (about 100 KB) fit the server's socket buffer, so they
    # have all "arrived" when sendall returns; more could still sit in this
    # side's send buffer, which a stopping server rightly does not wait for.
    c.send(influx("st", 2000))
    srv.signal(signal.SIGTERM)
    assert c.wait_ok(2000) == []
    assert srv.wait(20) == 0
    assert db_count(srv.db_path, "st") == 2000


def test_db_off_logs_and_acknowledges_without_a_database(server):
    """--db off: the original's behaviour (log.txt only), acknowledged once
    log.txt is synced; no database file appears, the API has no series."""
    port = get_port()
    srv = server("--db", "off", "--http", "127.0.0.1:%d" % port)
    c = LineConn(srv.connect())
    c.send(influx("S1", 500))
    c.send("Sensor1 - Temperatura: 25.34°C\n")
    assert c.wait_ok(501) == []
    log = srv.log_text()
    assert log.count("Recebido de") == 501
    assert "Sensor1 - Temperatura: 25.34°C" in log
    assert not os.path.exists(srv.db_path)
    out = subprocess.run(["curl", "-s", "http://127.0.0.1:%d/api/sensors"
                          % port], capture_output=True, timeout=30).stdout
    assert b'"sensors":[]' in out, out
    srv.stop()
    assert not os.path.exists(srv.db_path)
    assert "--db off" in srv.stderr()
