"""sensornet-client against the real sensornet-server.

Each test starts a server (fixture `server`) and one or more clients
(fixture `client`) in its own directory, then checks the client's summary
line, its stdout log and the server's log.txt (and, for the restart test,
the SQLite rows). Everything waits by polling with deadlines.
"""
import collections
import os
import re
import signal
import socket
import sqlite3
import subprocess
import time
import types

import pytest

from conftest import CLIENT, get_port, wait_until

SUMMARY_RE = re.compile(
    r"^sensornet-client: produced=(\d+) acked=(\d+) refused=(\d+) "
    r"pending=(\d+) dropped=(\d+) resumed=(\d+) spool_seq=(\d+) "
    r"digest=([0-9a-f]{16})$", re.M)
SUMMARY_KEYS = ("produced", "acked", "refused", "pending", "dropped",
                "resumed", "spool_seq")
# "[2025-06-11 10:15:42] Recebido de ('127.0.0.1', 54812): <reading>"
RECEIVED_RE = re.compile(
    r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] Recebido de "
    r"\('127\.0\.0\.1', (\d+)\): (.*)$")
NEW_CONN_RE = re.compile(r"Nova conexão de \('127\.0\.0\.1', (\d+)\)")
# The human form, as the client logs it and log.txt shows it.
HUMAN_RE = re.compile(r"^(\S+) - (Temperatura|Umidade): (-?[0-9.]+)(°C|%)$")
# "[10:15:42] [Sensor1] Enviado: Sensor1 - Temperatura: 25.34°C"
SENT_RE = re.compile(r"^\[\d\d:\d\d:\d\d\] \[(\S+)\] Enviado: (.*)$", re.M)

# Sanitizer builds are slow; these bound waits, they are not sleeps.
DEADLINE = 60


def full_summary(proc):
    """The client's exit summary: every count as an int, digest as an int
    (see docs/client.md)."""
    m = SUMMARY_RE.findall(proc.stdout())
    assert len(m) == 1, "want one summary line:\n" + proc.stdout()
    d = dict(zip(SUMMARY_KEYS, map(int, m[0][:7])))
    d["digest"] = int(m[0][7], 16)
    return d


def summary(proc):
    """The first four counts of the summary (produced, acked, refused,
    pending), the ones every run has."""
    d = full_summary(proc)
    return {k: d[k] for k in ("produced", "acked", "refused", "pending")}


def received(srv):
    """[(peer port, sensor, value)] for every reading in log.txt."""
    out = []
    for line in srv.log_lines():
        m = RECEIVED_RE.match(line)
        if not m:
            continue
        h = HUMAN_RE.match(m.group(2))
        assert h, "unexpected reading in log.txt: %r" % line
        out.append((int(m.group(1)), h.group(1), float(h.group(3))))
    return out


def sent(proc):
    """[(sensor, value)] of every reading the client sent for the first
    time ("Enviado:", resends say "Reenviado:"), from its stdout."""
    out = []
    for sensor, human in SENT_RE.findall(proc.stdout()):
        h = HUMAN_RE.match(human)
        assert h and h.group(1) == sensor, human
        out.append((sensor, float(h.group(3))))
    return out


def finish(proc, timeout=DEADLINE):
    """Wait for a client that stops by itself (--count); exit status 0."""
    try:
        rc = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.p.kill()
        proc.wait(5)
        raise AssertionError("%s still running after %ss\nstdout:\n%s\n"
                             "stderr:\n%s" % (proc.name, timeout,
                                              proc.stdout(), proc.stderr()))
    assert rc == 0, "exit %s\n%s\n%s" % (rc, proc.stdout(), proc.stderr())
    return summary(proc)


def nowhere():
    """A stand-in for a server that is not there yet: the client fixture
    only needs .port."""
    return types.SimpleNamespace(port=get_port())


@pytest.mark.parametrize("fmt", ["influx", "text", "original"])
def test_count_each_format(server, client, fmt):
    srv = server()
    c = client(srv, "--count", "5", "--interval", "0.05", "--format", fmt,
               "--seed", "1")
    s = finish(c)
    assert s == {"produced": 5, "acked": 5, "refused": 0, "pending": 0}
    # OK is sent only once the readings are in log.txt: no waiting needed,
    # but poll anyway in case the log is flushed by another thread.
    got = wait_until(lambda: len(received(srv)) >= 5 and received(srv),
                     10, what="5 readings in log.txt")
    assert len(got) == 5
    # The same readings, in order, as the client sent them (log.txt
    # prints values with %.15g: "25.30" shows as "25.3").
    assert [(s_, v) for _, s_, v in got] == sent(c)
    assert all(sensor == "Sensor1" for _, sensor, _ in got)


def test_original_reply_and_log_line(server, client):
    srv = server()
    c = client(srv, "--format", "original", "--count", "2", "--interval",
               "0.05")
    s = finish(c)
    assert s["acked"] == 2 and s["pending"] == 0
    out = c.stdout()
    # The client counts an ack only for the exact 28-byte reply.
    assert out.count("Resposta: Dados recebidos com sucesso.") == 2
    ports = [int(p) for p in NEW_CONN_RE.findall(srv.log_text())]
    assert len(ports) == 1, srv.log_text()
    values = [v for _, v in sent(c)]
    want = ["Recebido de ('127.0.0.1', %d): Sensor1 - Temperatura: %s°C"
            % (ports[0], "%.15g" % v) for v in values]
    lines = [line.split("] ", 1)[1] for line in srv.log_lines()
             if "Recebido de" in line]
    assert lines == want
    # As sent: the client wrote two decimals, which log.txt shortens only
    # where the last digits are zeros.
    for v in values:
        assert re.search(r"Enviado: Sensor1 - Temperatura: %.2f°C$" % v,
                         out, re.M)


def test_humidity_defaults(server, client):
    srv = server()
    c = client(srv, "--kind", "humidity", "--count", "3", "--interval",
               "0.05", "--format", "text")
    assert finish(c)["acked"] == 3
    got = received(srv)
    assert [s for _, s, _ in got] == ["Sensor2"] * 3
    assert all(40 <= v <= 70 for _, _, v in got)
    assert "Sensor2 - Umidade: " in srv.log_text()


def db_readings(path, sensor):
    """[(ts, value)] stored for sensor (schema of src/server/store_sqlite.c)."""
    db = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        return db.execute(
            "SELECT r.ts, r.value FROM readings r JOIN series s"
            " ON s.id = r.series_id WHERE s.sensor = ? ORDER BY r.ts",
            (sensor,)).fetchall()
    finally:
        db.close()


def test_rides_out_server_restart(server, client):
    count = 60
    srv = server()
    c = client(srv, "--count", str(count), "--interval", "0.05",
               "--backoff-max", "0.5", "--seed", "7")
    wait_until(lambda: len(received(srv)) >= 10, DEADLINE,
               what="10 readings before the restart")
    assert srv.stop(signal.SIGTERM) == 0
    assert c.alive(), "client finished before the restart:\n" + c.stdout()
    # The client notices, keeps producing, and keeps retrying.
    wait_until(lambda: "Falha ao conectar" in c.stdout(), DEADLINE,
               what="a failed reconnect")
    srv2 = server(port=srv.port, name="server2")
    s = finish(c)
    assert s == {"produced": count, "acked": count, "refused": 0,
                 "pending": 0}
    out = c.stdout()
    assert "Conexão perdida" in out
    assert out.count("Conectado a") >= 2
    first = sent(c)
    assert len(first) == count
    # No reading lost: each one the client made is in log.txt (as a
    # multiset of values; a reading stored but not acknowledged before
    # the restart may appear twice, never zero times) ...
    logged = collections.Counter(v for _, _, v in received(srv2))
    missing = collections.Counter(v for _, v in first) - logged
    assert not missing, "not in log.txt: %s" % sorted(missing.elements())
    # ... and stored exactly once: one row per timestamp, all distinct,
    # with the values the client sent.
    rows = db_readings(srv2.db_path, "Sensor1")
    assert len(rows) == count
    assert len({ts for ts, _ in rows}) == count
    assert sorted(v for _, v in rows) == sorted(v for _, v in first)


def test_five_sensors(server, client):
    srv = server()
    c = client(srv, "--sensors", "5", "--count", "20", "--interval", "0.08")
    s = finish(c)
    assert s == {"produced": 100, "acked": 100, "refused": 0, "pending": 0}
    by_sensor = collections.Counter(s_ for _, s_, _ in received(srv))
    assert by_sensor == {"Sensor1-%d" % i: 20 for i in range(1, 6)}
    # One connection per sensor.
    assert len(set(NEW_CONN_RE.findall(srv.log_text()))) == 5
    # No per-reading lines with several sensors; a status line instead.
    assert "Enviado:" not in c.stdout()
    assert re.search(r"sent/s=\d+ acked/s=\d+ connected=\d/5 pending=\d+",
                     c.stderr()), c.stderr()


def test_started_before_server(server, client):
    spot = nowhere()
    c = client(spot, "--count", "3", "--interval", "0.1", "--backoff-max",
               "0.5")
    wait_until(lambda: c.stdout().count("Falha ao conectar") >= 2, DEADLINE,
               what="two failed connects")
    assert c.alive()
    srv = server(port=spot.port)
    s = finish(c)
    assert s == {"produced": 3, "acked": 3, "refused": 0, "pending": 0}
    assert len(received(srv)) == 3


def test_sigterm_exits_0_with_summary(server, client):
    srv = server()
    c = client(srv, "--interval", "0.05")
    wait_until(lambda: len(received(srv)) >= 3, DEADLINE,
               what="3 readings")
    assert c.stop(signal.SIGTERM) == 0
    s = summary(c)
    # The server is up: the drain gets every acknowledgement.
    assert s["pending"] == 0 and s["refused"] == 0
    assert s["acked"] == s["produced"] >= 3
    assert len(received(srv)) == s["acked"]


def test_sigterm_while_disconnected(client):
    c = client(nowhere(), "--interval", "0.05", "--drain-timeout", "0.5")
    wait_until(lambda: "Falha ao conectar" in c.stdout(), DEADLINE,
               what="a failed connect")
    start = time.monotonic()
    assert c.stop(signal.SIGTERM) == 0
    assert time.monotonic() - start < 10
    s = summary(c)
    assert s["acked"] == 0 and s["pending"] == s["produced"] >= 1


def test_load_interval_zero(server, client):
    srv = server()
    c = client(srv, "--interval", "0", "--count", "3000", "--window", "200",
               "--quiet")
    s = finish(c)
    assert s == {"produced": 3000, "acked": 3000, "refused": 0,
                 "pending": 0}
    assert "Enviado:" not in c.stdout()
    assert len(received(srv)) == 3000


def run_client(*args):
    return subprocess.run([CLIENT] + list(args), capture_output=True,
                          timeout=30, stdin=subprocess.DEVNULL)


def test_help_version_usage():
    if not os.path.exists(CLIENT):
        pytest.fail("%s not built" % CLIENT)
    r = run_client("--help")
    assert r.returncode == 0
    text = r.stdout.decode()
    for opt in ("--server", "--kind", "--id", "--interval", "--count",
                "--format", "--sensors", "--window", "--max-pending",
                "--backoff-max", "--quiet", "--seed", "--drain-timeout",
                "--keepalive", "--spool", "--no-spool", "--spool-max",
                "--help", "--version"):
        assert opt in text, opt
    r = run_client("--version")
    assert r.returncode == 0 and r.stdout.startswith(b"sensornet-client ")
    for bad in (["--format", "xml"], ["--server", "nohost"],
                ["--interval", "-1"], ["--bogus"], ["--count"],
                ["--spool-max", "1k"], ["--keepalive", "x"],
                ["--spool", "d", "--no-spool"]):
        r = run_client(*bad)
        assert r.returncode == 2, bad
        assert b"sensornet-client:" in r.stderr
        assert r.stdout == b""


# ---- spool and keepalive ---------------------------------------------------


def spool_files(path):
    """{name: size} of the files under path (recursively)."""
    out = {}
    for d, _, files in os.walk(path):
        for f in files:
            p = os.path.join(d, f)
            out[os.path.relpath(p, path)] = os.path.getsize(p)
    return out


def test_spool_default_dir_and_no_spool(tmp_path, server, client):
    srv = server()
    c = client(srv, "--count", "3", "--interval", "0.02")
    finish(c)
    s = full_summary(c)
    assert s["spool_seq"] == 3 and s["resumed"] == 0
    # Default: ./sensornet-spool/<id>, one segment and the ack state.
    files = spool_files(str(tmp_path / "sensornet-spool"))
    assert "Sensor1/ack" in files
    assert any(f.startswith("Sensor1/") and f.endswith(".seg")
               for f in files), files
    c2 = client(srv, "--count", "3", "--interval", "0.02", "--no-spool",
                "--id", "NoSpool")
    finish(c2)
    s2 = full_summary(c2)
    assert s2["spool_seq"] == 0 and s2["acked"] == 3
    assert not os.path.exists(tmp_path / "sensornet-spool" / "NoSpool")


def test_spool_state_directory(tmp_path, client):
    env = dict(os.environ,
               STATE_DIRECTORY="%s:%s" % (tmp_path / "state", tmp_path / "x"))
    c = client(nowhere(), "--interval", "0.02", "--drain-timeout", "0",
               env=env)
    wait_until(lambda: "Falha ao conectar" in c.stdout(), DEADLINE,
               what="a failed connect")
    assert c.stop() == 0
    s = full_summary(c)
    assert s["pending"] == s["produced"] == s["spool_seq"] >= 1
    files = spool_files(str(tmp_path / "state"))
    assert any(f.startswith("Sensor1/") and f.endswith(".seg")
               for f in files), files
    assert not (tmp_path / "sensornet-spool").exists()


def test_spool_in_use(client):
    spot = nowhere()
    c1 = client(spot, "--interval", "0.05", "--drain-timeout", "0")
    wait_until(lambda: "Falha ao conectar" in c1.stdout(), DEADLINE,
               what="the first client up")
    c2 = client(spot, "--interval", "0.05", name="second")
    assert c2.wait(DEADLINE) == 1
    assert "in use by another process" in c2.stderr(), c2.stderr()


def test_spool_resume_after_kill9(server, client):
    """No server: readings pile up in the spool; kill -9; a server comes
    and a new client on the same spool delivers all of them, once."""
    spot = nowhere()
    c1 = client(spot, "--interval", "0.01", "--backoff-max", "0.2")
    spool = os.path.join(os.path.dirname(c1.out_path), "sensornet-spool")
    # Some 30 records (about 90 bytes each) on disk.
    wait_until(lambda: sum(spool_files(spool).values()) > 3000, DEADLINE,
               what="readings spooled while disconnected")
    c1.signal(signal.SIGKILL)
    c1.wait(10)
    srv = server(port=spot.port)
    c2 = client(srv, "--interval", "0.05", "--backoff-max", "0.2",
                name="again")
    wait_until(lambda: "leituras do spool" in c2.stdout(), DEADLINE,
               what="the resume")
    n = int(re.search(r"(\d+) leituras do spool", c2.stdout()).group(1))
    assert n >= 30
    wait_until(lambda: len(db_readings(srv.db_path, "Sensor1")) >= n + 3,
               DEADLINE, what="the backlog and new readings stored")
    assert c2.stop() == 0
    s = full_summary(c2)
    assert s["resumed"] == n and s["pending"] == 0
    rows = db_readings(srv.db_path, "Sensor1")
    # Every reading of both runs, once.
    assert len(rows) == s["spool_seq"] == n + s["produced"]
    assert len({ts for ts, _ in rows}) == len(rows)


def test_spool_full_drops_oldest(tmp_path, server, client):
    spot = nowhere()
    c1 = client(spot, "--sensors", "2", "--interval", "0.002",
                "--spool-max", "64k", "--drain-timeout", "0")
    wait_until(lambda: re.search(r"dropped=[1-9]", c1.stderr()), DEADLINE,
               what="the spool to drop readings")
    assert c1.stop() == 0
    s1 = full_summary(c1)
    assert s1["acked"] == 0 and s1["dropped"] > 0
    assert s1["pending"] + s1["dropped"] == s1["produced"]
    for sensor in ("Sensor1-1", "Sensor1-2"):
        size = sum(spool_files(str(tmp_path / "sensornet-spool" /
                                   sensor)).values())
        assert size <= 64 * 1024 + 200, size  # segments plus the ack file
    srv = server(port=spot.port)
    c2 = client(srv, "--sensors", "2", "--interval", "1", name="again")
    wait_until(lambda: sum(len(db_readings(srv.db_path, x))
                           for x in ("Sensor1-1", "Sensor1-2"))
               >= s1["pending"], DEADLINE, what="the spooled readings")
    assert c2.stop() == 0
    s2 = full_summary(c2)
    assert s2["resumed"] == s1["pending"] and s2["pending"] == 0
    stored = sum(len(db_readings(srv.db_path, x))
                 for x in ("Sensor1-1", "Sensor1-2"))
    assert stored == s1["pending"] + s2["produced"]


@pytest.mark.parametrize("keepalive", ["0.3", "0"])
def test_keepalive_keeps_idle_connection(server, client, keepalive):
    """The server closes connections idle for --idle-timeout (1 s here);
    PINGs every 0.3 s keep a sensor that reports every 2.5 s connected."""
    srv = server("--idle-timeout", "1s")
    c = client(srv, "--count", "2", "--interval", "2.5", "--keepalive",
               keepalive)
    finish(c)
    conns = srv.log_text().count("Nova conexão")
    if keepalive != "0":
        assert conns == 1 and "Conexão perdida" not in c.stdout()
    else:
        assert conns >= 2 and "Conexão perdida" in c.stdout()


def test_keepalive_detects_silent_peer(client):
    """A peer that accepts and never answers: PING after --keepalive, and
    after as long again without a byte the client reconnects."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(4)
    ls.settimeout(DEADLINE)
    spot = types.SimpleNamespace(port=ls.getsockname()[1])
    c = client(spot, "--keepalive", "0.5", "--interval", "60",
               "--ack-timeout", "60", "--backoff-max", "0.2",
               "--drain-timeout", "0")
    try:
        a, _ = ls.accept()
        a.settimeout(DEADLINE)
        got = b""
        t0 = time.monotonic()
        while b"PING\n" not in got:
            chunk = a.recv(4096)
            assert chunk, got
            got += chunk
        t_ping = time.monotonic() - t0
        # Nothing answered: the client gives up on this connection ...
        while a.recv(4096):
            pass
        t_dead = time.monotonic() - t0
        # ... and connects again, resending its reading.
        b, _ = ls.accept()
        b.close()
        a.close()
    finally:
        ls.close()
    assert 0.4 <= t_ping < 5, t_ping
    assert t_dead >= 0.9, t_dead
    wait_until(lambda: "nem resposta ao PING" in c.stdout(), DEADLINE,
               what="the log line")
