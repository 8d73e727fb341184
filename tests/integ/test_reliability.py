"""Fault injection on the multi-host testbed (tests/testbed.py): the real
server on 10.0.1.10, the sensors on 10.0.2.11 and 10.0.2.12, a router in
between. Each test injects one fault, lets the clients drain (SIGTERM: they
wait for their acknowledgements), and ends with an exact comparison between
what the clients produced (their summary lines) and what the server's
SQLite database holds: per sensor, count == produced (the primary key
(series, ts) rules out duplicates, so equal counts mean exactly once), and
for the 200-sensor load the digest of (sensor, ts) pairs as well.

docs/reliability.md maps each row of the failure matrix to its test here.
Root only (network namespaces, tmpfs): elsewhere the tests skip (and fail
in CI). Every wait is a deadline; the only sleeps are fault durations.
"""
import errno
import os
import re
import resource
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from conftest import CLIENT, SERVER, Proc, Server, skip_or_fail, wait_until
from testbed import Testbed, TestbedUnavailable

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
TRICKLE = os.path.join(ROOT, "tests", "trickle.py")
SERVER_ADDR = "10.0.1.10:5000"
DEADLINE = 90  # bounds each wait; sanitizer builds on 2 cores are slow
N_TRICKLE = 2000  # slow connections in the trickle test
N_PROBES = 200  # acknowledgements timed there

SUMMARY_RE = re.compile(
    r"^sensornet-client: produced=(\d+) acked=(\d+) refused=(\d+) "
    r"pending=(\d+) dropped=(\d+) resumed=(\d+) spool_seq=(\d+) "
    r"digest=([0-9a-f]{16})$", re.M)
KEYS = ("produced", "acked", "refused", "pending", "dropped", "resumed",
        "spool_seq")


def summary(proc):
    m = SUMMARY_RE.findall(proc.stdout())
    assert len(m) == 1, "%s: want one summary line:\n%s\n%s" % (
        proc.name, proc.stdout()[-2000:], proc.stderr()[-2000:])
    d = dict(zip(KEYS, map(int, m[0][:7])))
    d["digest"] = int(m[0][7], 16)
    return d


def fnv1a64(data):
    h = 0xcbf29ce484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def digest(rows):
    """The client's summary digest of [(sensor, ts)] (docs/client.md)."""
    total = 0
    for sensor, ts in rows:
        total += fnv1a64(("%s\x1f%d" % (sensor, ts)).encode())
    return total & 0xFFFFFFFFFFFFFFFF


class NsProc(Proc):
    """A Proc (conftest) started inside a testbed host."""

    def __init__(self, tb, host, argv, cwd, name):
        self.argv = argv
        self.name = name
        self.host = host
        self.err_path = os.path.join(cwd, name + ".stderr")
        self.out_path = os.path.join(cwd, name + ".stdout")
        self._err = open(self.err_path, "ab")
        self._out = open(self.out_path, "ab")
        self.p = tb.popen(host, argv, cwd=cwd, stdout=self._out,
                          stderr=self._err)


class NsServer(NsProc, Server):
    """sensornet-server on the testbed's server host, 10.0.1.10:5000."""

    def __init__(self, tb, dir, name="server", args=(), data_dir=None):
        data = data_dir or dir
        self.dir = dir
        self.port = 5000
        self.log_path = os.path.join(data, "log.txt")
        self.db_path = os.path.join(data, "sensornet.db")
        argv = [SERVER, "--listen", SERVER_ADDR, "--log", self.log_path,
                "--db", self.db_path] + list(args)
        NsProc.__init__(self, tb, "server", argv, dir, name)
        self.wait_ready(DEADLINE)


class Net:
    """What a test works with: the testbed, its directory, and factories
    for servers and clients (collected for the teardown checks)."""

    def __init__(self, tb, dir, procs):
        self.tb = tb
        self.dir = str(dir)
        self.procs = procs
        self.n = 0

    def server(self, name="server", args=(), data_dir=None):
        s = NsServer(self.tb, self.dir, name, args, data_dir)
        self.procs.append(s)
        return s

    def client(self, host, name, *args, spool=None):
        """sensornet-client on host with a spool under the test's directory
        (spool-<name>, or spool-<spool>), quick reconnects and a long
        drain."""
        spool = os.path.join(self.dir, "spool-" + (spool or name))
        argv = [CLIENT, "--server", SERVER_ADDR, "--spool", spool,
                "--backoff-max", "0.5", "--drain-timeout", "60"]
        c = NsProc(self.tb, host, argv + list(args), self.dir, name)
        self.procs.append(c)
        return c


@pytest.fixture
def bed():
    try:
        tb = Testbed()
    except TestbedUnavailable as e:
        skip_or_fail(str(e))
    yield tb
    tb.close()


@pytest.fixture
def net(bed, procs, tmp_path):
    # Set up after bed and procs, so torn down first: procs stops the
    # programs orderly (and checks them) before the namespaces go.
    return Net(bed, tmp_path, procs)


def stop_all(clients, timeout=DEADLINE):
    """SIGTERM the clients at once (they drain), wait, exit 0, summaries."""
    for c in clients:
        c.signal(signal.SIGTERM)
    out = {}
    for c in clients:
        # Only one signal: a second one would end the drain at once.
        try:
            rc = c.wait(timeout)
        except subprocess.TimeoutExpired:
            c.p.kill()
            c.wait(5)
            raise AssertionError("%s still draining after %ss" % (c.name,
                                                                  timeout))
        assert rc == 0, "%s exit %s\n%s" % (c.name, rc, c.stderr()[-3000:])
        c.assert_clean()
        out[c.name] = summary(c)
    return out


def db_rows(path):
    """{sensor: [ts, ...]} of every stored reading."""
    db = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        rows = db.execute(
            "SELECT s.sensor, r.ts FROM readings r JOIN series s"
            " ON s.id = r.series_id").fetchall()
    finally:
        db.close()
    out = {}
    for sensor, ts in rows:
        out.setdefault(sensor, []).append(ts)
    return out


def db_count(path, sensor):
    db = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=5)
    try:
        return db.execute(
            "SELECT count(*) FROM readings r JOIN series s"
            " ON s.id = r.series_id WHERE s.sensor = ?",
            (sensor,)).fetchone()[0]
    except sqlite3.OperationalError:
        return 0  # not created yet
    finally:
        db.close()


def check_exact(rows, sensor, s):
    """Every reading the client made is stored once: nothing pending,
    dropped or refused, and the count equals what it produced."""
    assert s["pending"] == 0 and s["dropped"] == 0 and s["refused"] == 0, s
    assert s["acked"] == s["produced"], s
    got = rows.get(sensor, [])
    assert len(got) == s["produced"], "%s: %d stored, %d produced" % (
        sensor, len(got), s["produced"])
    assert digest((sensor, ts) for ts in got) == s["digest"], sensor


def grows(fn, timeout=DEADLINE, what="progress"):
    """Wait until fn() exceeds its current value."""
    start = fn()
    wait_until(lambda: fn() > start, timeout, 0.05, what)


# ---------------------------------------------------------------------------


def test_server_kill9_every_2s(net):
    """kill -9 of the server every 2 s, 10 times, while Sensor1, Sensor2
    and 200 simulated sensors stream: every reading stored exactly once."""
    srv = net.server()
    c1 = net.client("client1", "c1", "--interval", "0.05", "--quiet")
    c2 = net.client("client2", "c2", "--kind", "humidity", "--interval",
                    "0.05", "--quiet")
    load = net.client("client2", "load", "--sensors", "200", "--id", "L",
                      "--interval", "0.5", "--quiet")
    wait_until(lambda: db_count(srv.db_path, "L-200") > 0, DEADLINE, 0.1,
               "the load to reach the server")
    for i in range(10):
        started = time.monotonic()
        # Progress on this instance first, so each kill hits live traffic.
        grows(lambda: db_count(srv.db_path, "Sensor1"), DEADLINE,
              "Sensor1 stored by server %d" % i)
        left = 2.0 - (time.monotonic() - started)
        if left > 0:
            time.sleep(left)  # the fault's period, not a synchronization
        srv.signal(signal.SIGKILL)
        assert srv.wait(10) == -signal.SIGKILL
        srv.assert_clean()
        srv = net.server(name="server%d" % (i + 1))
    grows(lambda: db_count(srv.db_path, "Sensor2"), DEADLINE,
          "Sensor2 after the last restart")
    sums = stop_all([c1, c2, load])
    assert srv.stop() == 0
    log = srv.log_text()
    # The server sees the sensors' own addresses (routed, no NAT).
    assert "Nova conexão de ('10.0.2.11'," in log
    assert "Nova conexão de ('10.0.2.12'," in log
    rows = db_rows(srv.db_path)
    check_exact(rows, "Sensor1", sums["c1"])
    check_exact(rows, "Sensor2", sums["c2"])
    s = sums["load"]
    assert s["pending"] == 0 and s["dropped"] == 0 and s["refused"] == 0
    assert s["acked"] == s["produced"]
    load_rows = [(k, ts) for k, v in rows.items() if k.startswith("L-")
                 for ts in v]
    assert len({k for k, _ in load_rows}) == 200
    assert len(load_rows) == s["produced"]
    assert digest(load_rows) == s["digest"]


def test_link_cut_10s(net):
    """client1's link down for 10 s: client2 carries on meanwhile, client1
    drains its backlog afterwards, nothing lost."""
    tb = net.tb
    srv = net.server()
    c1 = net.client("client1", "c1", "--interval", "0.1", "--quiet")
    c2 = net.client("client2", "c2", "--kind", "humidity", "--interval",
                    "0.1", "--quiet")
    grows(lambda: db_count(srv.db_path, "Sensor1"))
    grows(lambda: db_count(srv.db_path, "Sensor2"))
    tb.cut_link("client1")
    cut_at = time.monotonic()
    try:
        before = db_count(srv.db_path, "Sensor1")
        # The other host is not affected.
        grows(lambda: db_count(srv.db_path, "Sensor2"), 5, "Sensor2")
        time.sleep(max(0.0, 10.0 - (time.monotonic() - cut_at)))
        # Nothing from client1 got through (a commit may have been
        # under way at the cut).
        assert db_count(srv.db_path, "Sensor1") <= before + 20
    finally:
        tb.restore_link("client1")
    # The backlog (about 100 readings) arrives after the link is back.
    wait_until(lambda: db_count(srv.db_path, "Sensor1") >= before + 100,
               DEADLINE, 0.1, "client1's backlog")
    sums = stop_all([c1, c2])
    assert srv.stop() == 0
    rows = db_rows(srv.db_path)
    check_exact(rows, "Sensor1", sums["c1"])
    check_exact(rows, "Sensor2", sums["c2"])


def test_keepalive_notices_dead_path(net):
    """An idle connection whose path dies: the client's PING goes
    unanswered and it gives up within two --keepalive periods (TCP alone
    would not notice for minutes), then reconnects once the path is back."""
    tb = net.tb
    srv = net.server()
    c1 = net.client("client1", "c1", "--interval", "3600", "--keepalive",
                    "1")
    wait_until(lambda: db_count(srv.db_path, "Sensor1") == 1, DEADLINE,
               0.05, "the first reading")
    tb.cut_link("client1")
    t0 = time.monotonic()
    try:
        wait_until(lambda: "nem resposta ao PING" in c1.stdout(), DEADLINE,
                   0.02, "the client to notice")
        took = time.monotonic() - t0
    finally:
        tb.restore_link("client1")
    assert took < 3.5, "noticed after %.1f s" % took
    wait_until(lambda: c1.stdout().count("Conectado a") >= 2, DEADLINE,
               0.05, "a new connection")
    s = stop_all([c1])["c1"]
    assert srv.stop() == 0
    check_exact(db_rows(srv.db_path), "Sensor1", s)


def test_client_kill9_resumes_spool(net):
    """kill -9 of a client holding unacknowledged readings (its link is cut
    at that moment), restarted on the same spool: it resends them, nothing
    is lost or stored twice."""
    tb = net.tb
    srv = net.server()
    args = ("--interval", "0.02", "--quiet")
    c1 = net.client("client1", "c1", *args)
    wait_until(lambda: db_count(srv.db_path, "Sensor1") >= 50, DEADLINE,
               0.05, "50 readings")
    tb.cut_link("client1")
    try:
        # Readings pile up unacknowledged (50 a second) ...
        time.sleep(1.0)
        # ... and the client dies with them.
        c1.signal(signal.SIGKILL)
        assert c1.wait(10) == -signal.SIGKILL
    finally:
        tb.restore_link("client1")
    again = net.client("client1", "c1-again", *args, spool="c1")
    wait_until(lambda: "leituras do spool" in again.stdout(), DEADLINE,
               0.05, "the restarted client to resume")
    n = db_count(srv.db_path, "Sensor1")
    wait_until(lambda: db_count(srv.db_path, "Sensor1") >= n + 50, DEADLINE,
               0.05, "new readings after the restart")
    s = stop_all([again])["c1-again"]
    assert srv.stop() == 0
    assert s["resumed"] >= 25, s  # about a second's worth was cut off
    assert s["pending"] == 0 and s["dropped"] == 0 and s["refused"] == 0
    # Over both runs the spool numbered every reading: that many stored.
    rows = db_rows(srv.db_path)
    assert len(rows["Sensor1"]) == s["spool_seq"], (len(rows["Sensor1"]), s)


def mount_tmpfs(path, size):
    os.mkdir(path)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + size,
                        "tmpfs", path], capture_output=True)
    if r.returncode != 0:
        skip_or_fail("cannot mount a tmpfs: %s" % r.stderr.decode().strip())
    return path


@pytest.fixture
def tmpfs(tmp_path):
    # Room for the database's WAL to grow for a minute; the test fills it.
    path = mount_tmpfs(str(tmp_path / "fs"), "64m")
    yield path
    subprocess.run(["umount", "-l", path], capture_output=True)


@pytest.fixture
def small_tmpfs(tmp_path):
    path = mount_tmpfs(str(tmp_path / "cfs"), "256k")
    yield path
    subprocess.run(["umount", "-l", path], capture_output=True)


def fill(path):
    """Write a file until the file system is full; returns its path."""
    filler = os.path.join(path, "filler")
    chunk = b"\0" * (1 << 20)
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
    # Top up the last partial chunk.
    with open(filler, "ab", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 512)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
    return filler


def test_disk_full(net, tmpfs):
    """The server's disk fills up: no acknowledgements while it is full,
    nothing lost, and everything stored once space returns."""
    srv = net.server(data_dir=tmpfs)
    # Not --quiet: one "Confirmado" line per acknowledgement.
    c1 = net.client("client1", "c1", "--interval", "0.05")
    c2 = net.client("client2", "c2", "--kind", "humidity", "--interval",
                    "0.05", "--quiet")

    def acks():
        return c1.stdout().count("Confirmado:")

    grows(acks, DEADLINE, "acknowledgements")
    filler = fill(tmpfs)
    try:
        # Commits in flight may still finish; then none can.
        wait_until(lambda: "holding acknowledgements" in srv.stderr(),
                   DEADLINE, 0.05, "the server to notice the full disk")
        time.sleep(0.5)
        stalled = acks()
        time.sleep(3.0)  # the fault's duration: no ack may come meanwhile
        assert acks() == stalled, "acknowledged while the disk was full"
        assert c1.alive() and c2.alive() and srv.alive()
    finally:
        os.unlink(filler)
    grows(acks, DEADLINE, "acknowledgements after space returned")
    sums = stop_all([c1, c2])
    assert srv.stop() == 0
    rows = db_rows(srv.db_path)
    check_exact(rows, "Sensor1", sums["c1"])
    check_exact(rows, "Sensor2", sums["c2"])


def test_client_disk_full(net, small_tmpfs):
    """The client's own disk fills up while the server is away: production
    pauses instead of losing what was produced; once the backlog is
    acknowledged the spool frees its space and production resumes."""
    argv = [CLIENT, "--server", SERVER_ADDR, "--spool", small_tmpfs,
            "--spool-max", "1M", "--interval", "0.001", "--backoff-max",
            "0.2", "--drain-timeout", "60"]
    c1 = NsProc(net.tb, "client1", argv, net.dir, "c1")
    net.procs.append(c1)
    wait_until(lambda: "Spool sem gravar" in c1.stdout(), DEADLINE, 0.05,
               "the client's disk to fill")
    assert "dropped" not in c1.stdout()
    srv = net.server()
    wait_until(lambda: "Spool gravando de novo" in c1.stdout(), DEADLINE,
               0.05, "the spool to recover")
    grows(lambda: db_count(srv.db_path, "Sensor1"), DEADLINE,
          "new readings after the recovery")
    s = stop_all([c1])["c1"]
    assert srv.stop() == 0
    check_exact(db_rows(srv.db_path), "Sensor1", s)


def test_packet_loss_5pct(net):
    """5 % of the routed packets dropped (each direction) for 20 s."""
    tb = net.tb
    srv = net.server()
    c1 = net.client("client1", "c1", "--interval", "0.05", "--quiet")
    c2 = net.client("client2", "c2", "--kind", "humidity", "--interval",
                    "0.05", "--quiet")
    grows(lambda: db_count(srv.db_path, "Sensor1"))
    tb.loss(5)
    try:
        start = time.monotonic()
        grows(lambda: db_count(srv.db_path, "Sensor2"), 10,
              "progress through the lossy router")
        time.sleep(max(0.0, 20.0 - (time.monotonic() - start)))
    finally:
        tb.clear_loss()
    sums = stop_all([c1, c2])
    assert srv.stop() == 0
    rows = db_rows(srv.db_path)
    check_exact(rows, "Sensor1", sums["c1"])
    check_exact(rows, "Sensor2", sums["c2"])


def test_trickle_does_not_delay_acks(net):
    """2,000 connections trickling one byte a second: a healthy sensor's
    acknowledgements still come within 100 ms (99 % of 200; none over 1 s).

    The server runs with --fsync off here: what is measured is its event
    loops under 2,000 slow connections. With syncing, the disk's own
    latency adds to every acknowledgement, trickle or not, and on a disk
    shared with other jobs an fsync now and then takes over 100 ms. The
    1 % allows for the same on the CPU: on a loaded 2-core machine a sample
    now and then waits for a core (alone, the max is about 25 ms)."""
    tb = net.tb
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 2 * N_TRICKLE + 256:
        skip_or_fail("open-file hard limit %d: %d connections need more"
                     % (hard, N_TRICKLE))
    srv = net.server(args=("--fsync", "off"))
    trickle_out = os.path.join(net.dir, "trickle.stdout")
    with open(trickle_out, "wb") as out:
        trickle = tb.popen("client2", [sys.executable, TRICKLE, "--connect",
                                       SERVER_ADDR, "--conns",
                                       str(N_TRICKLE),
                                       "--duration", "60"],
                           stdout=out, stderr=subprocess.STDOUT)

    def trickle_text():
        with open(trickle_out, "rb") as f:
            return f.read().decode("utf-8", "replace")

    try:
        m = wait_until(lambda: re.search(r"ready connected=(\d+)",
                                         trickle_text()), DEADLINE, 0.1,
                       "the trickle connections")
        assert int(m.group(1)) == N_TRICKLE, trickle_text()
        wait_until(lambda: srv.log_text().count("Nova conexão")
                   >= N_TRICKLE, DEADLINE, 0.1,
                   "the connections at the server")
        s = tb.connect("client1", "10.0.1.10", 5000, timeout=10)
        buf = b""
        lat = []
        base = time.time_ns()
        for i in range(N_PROBES):
            line = ("sensornet,sensor=healthy temperature=%d.5 %d\n"
                    % (20 + i % 5, base + i)).encode()
            t0 = time.monotonic()
            s.sendall(line)
            while not re.search(rb"OK %d\n" % (i + 1), buf):
                chunk = s.recv(4096)
                assert chunk, "connection closed: %r" % buf
                buf += chunk
            lat.append(time.monotonic() - t0)
            buf = b""
            time.sleep(0.02)  # pacing: samples spread over 5 s of trickle
        s.close()
        lat.sort()
        p50, p99, worst = lat[len(lat) // 2], lat[len(lat) * 99 // 100], \
            lat[-1]
        print("ack latency under trickle: p50 %.1f ms, p99 %.1f ms, max "
              "%.1f ms; top 5 %s" % (p50 * 1e3, p99 * 1e3, worst * 1e3,
                                     [round(x * 1e3, 1) for x in lat[-5:]]))
        assert p99 < 0.100, "p99 ack latency %.1f ms" % (p99 * 1e3)
        assert worst < 1.0, "max ack latency %.1f ms" % (worst * 1e3)
        assert trickle.poll() is None, trickle_text()
    finally:
        trickle.send_signal(signal.SIGTERM)
        trickle.wait(30)
    assert "closed_by_peer=0 errors=0" in trickle_text(), trickle_text()
    assert srv.stop() == 0
    assert db_count(srv.db_path, "healthy") == N_PROBES
