#!/usr/bin/env python3
"""sensornet ingest benchmark, side by side with reference servers.

`make bench` runs this after a release build (bench/bench.mk). Every
scenario starts its server on 127.0.0.1 in a fresh temporary directory,
drives it with bench/loadgen (one process, one thread, bounded in lines and
time), counts what was stored, stops the server, and records the figures
together with the CPU time of the server, of the load generator and of
everything else on the machine during the run (other work on a shared
machine shows up there). Results go to bench/results/: results.csv (one row
per run), summary.txt (the table printed at the end), throughput.png
(readings/s against connections), cost.png (server CPU per reading),
machine.txt, and the perf profiles. docs/performance.md explains them.

    python3 bench/bench.py --build build/release [--quick] [--out DIR]
                           [--only NAME,...] [--no-profile]
                           [--conns N,...] [--repeats N]

--conns limits the connection counts of the sweeps (the repeats are at 100
connections, so include 100 to get them) and --repeats sets how many times
the 100-connection headline runs go (default 5, 1 with --quick); for
example the SQLite-against-InfluxDB ratio alone, three times, interleaved:

    bench.py --only sqlite-logon,sqlite-logoff,influxdb --conns 100 \
             --repeats 3 --no-profile --out /tmp/ratio

References: bench/discard (reads and drops; with --ack it counts lines and
answers "OK n", the floor of this protocol on this machine), InfluxDB 1.x
(HTTP /write, 5,000 lines a request) and Mosquitto 2 (MQTT QoS 1). A
reference whose Debian package is missing is skipped with a note.
Traffic goes to loopback only. SPDX-License-Identifier: MIT
"""
import argparse
import csv
import datetime
import glob
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")
NPROC = os.cpu_count() or 1

# Connection counts of the ingest sweep; the total window (lines in flight
# over all connections) is kept near TOTAL_WINDOW so that every run queues
# the same amount of work, within [WINDOW_MIN, WINDOW_MAX] per connection.
CONNS_FULL = [1, 10, 100, 1000, 10000]
CONNS_QUICK = [1, 100, 1000]
TOTAL_WINDOW = 200000
WINDOW_MIN, WINDOW_MAX = 50, 20000
# Lines a run may send in all, per second of its duration: a bound above
# what this machine does even against bench/discard (about 18M/s), so runs
# end on time, not on lines.
LINES_PER_SECOND_BOUND = 25000000
HTTP_BODY_LINES = 5000


def log(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise RuntimeError("timed out after %ss waiting for %s"
                               % (timeout, what))
        time.sleep(0.05)


# ---- /proc ---------------------------------------------------------------

def proc_cpu_s(pid):
    """User+system CPU seconds of a process, all its threads."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def proc_threads_cpu_s(pid):
    """{tid: (ns on a CPU, ns waiting in the run queue)} of every thread
    of pid (/proc/PID/task/TID/schedstat)."""
    out = {}
    for d in glob.glob("/proc/%d/task/*" % pid):
        try:
            with open(d + "/schedstat") as f:
                v = f.read().split()
            out[int(os.path.basename(d))] = (int(v[0]), int(v[1]))
        except (OSError, IndexError, ValueError):
            pass
    return out


def thread_roles(pid, tids):
    """(writer tids, log thread tids, worker tids) of a sensornet server.
    The writer names its threads (sn-writer, sn-log); the others are, in
    tid order, main (signals only) and then the workers. A server from
    before the names: main, the writer (started first), the workers."""
    comm = {}
    for t in tids:
        try:
            with open("/proc/%d/task/%d/comm" % (pid, t)) as f:
                comm[t] = f.read().strip()
        except OSError:
            comm[t] = ""
    tids = sorted(tids)
    writer = [t for t in tids if comm[t] == "sn-writer"]
    logt = [t for t in tids if comm[t] == "sn-log"]
    if not writer:
        return tids[1:2], [], tids[2:]
    rest = [t for t in tids if t not in writer and t not in logt]
    return writer, logt, rest[1:]


def proc_status_kb(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def machine_cpu_s():
    """Busy CPU seconds of the whole machine (all cores) so far."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return (sum(v[:8]) - idle) / CLK_TCK


def meminfo_kb(key):
    """A /proc/meminfo field (the kernel's slab holds socket structs)."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


class CpuWindow:
    """CPU used by the given pids and by the whole machine between
    start() and stop(); 'other' is the machine minus those pids."""

    def __init__(self, pids):
        self.pids = [p for p in pids if p]

    def start(self):
        self.t0 = time.monotonic()
        self.m0 = machine_cpu_s()
        self.p0 = {p: proc_cpu_s(p) for p in self.pids}
        return self

    def stop(self):
        self.wall = time.monotonic() - self.t0
        self.machine = machine_cpu_s() - self.m0
        self.used = {p: proc_cpu_s(p) - self.p0[p] for p in self.pids}
        return self

    def pct(self, pid):
        return 100.0 * self.used.get(pid, 0.0) / max(self.wall, 1e-9)

    def other_pct(self, exclude_s):
        return 100.0 * max(0.0, self.machine - sum(self.used.values())
                           - exclude_s) / max(self.wall, 1e-9)


# ---- processes -----------------------------------------------------------

class Proc:
    def __init__(self, argv, cwd, name, env=None, user=None):
        self.name = name
        self.err_path = os.path.join(cwd, name + ".stderr")
        self.out_path = os.path.join(cwd, name + ".stdout")
        self._err = open(self.err_path, "wb")
        self._out = open(self.out_path, "wb")
        if user:
            argv = ["runuser", "-u", user, "--"] + list(argv)
        self.p = subprocess.Popen(argv, cwd=cwd, stdout=self._out,
                                  stderr=self._err, stdin=subprocess.DEVNULL,
                                  env=env)

    @property
    def pid(self):
        return self.p.pid

    def alive(self):
        return self.p.poll() is None

    def text(self, which="err"):
        with open(self.err_path if which == "err" else self.out_path,
                  "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self, timeout=30, sig=signal.SIGTERM):
        if self.alive():
            self.p.send_signal(sig)
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            log("%s did not stop in %ss: killing it" % (self.name, timeout))
            self.p.kill()
            rc = self.p.wait(10)
        self._err.close()
        self._out.close()
        return rc


def parse_kv(line):
    out = {}
    for tok in line.split():
        if "=" in tok:
            k, v = tok.split("=", 1)
            try:
                out[k] = float(v) if "." in v else int(v)
            except ValueError:
                out[k] = v
    return out


class Loadgen:
    """One bench/loadgen run; returns its summary as a dict."""

    def __init__(self, build, tmp):
        self.bin = os.path.join(build, "loadgen")
        self.tmp = tmp
        self.n = 0

    def run(self, port, conns, seconds, mode="line", window=None,
            lines=None, rate=None, extra=(), watch=()):
        self.n += 1
        if window is None:
            window = window_for(conns)
        if lines is None:
            lines = max(1, int(LINES_PER_SECOND_BOUND * seconds / conns))
        argv = [self.bin, "--server", "127.0.0.1:%d" % port, "--mode", mode,
                "--conns", str(conns), "--lines", str(lines),
                "--window", str(window), "--seconds", str(seconds),
                "--warmup", str(min(1.0, seconds / 4))]
        if rate:
            argv += ["--rate", "%.0f" % rate]
        argv += list(extra)
        p = Proc(argv, self.tmp, "loadgen%d" % self.n)
        # loadgen reports its own CPU time (it has exited when we look).
        cw = CpuWindow(list(watch)).start()
        try:
            p.p.wait(seconds + 60)
        except subprocess.TimeoutExpired:
            log("loadgen overran its bound: stopping it")
        p.stop(10)
        cw.stop()
        out = p.text("out").strip().splitlines()
        err = p.text("err").strip()
        if not out:
            raise RuntimeError("loadgen printed nothing: %s" % err[-2000:])
        r = parse_kv(out[-1])
        r["cpu"] = cw
        r["stderr"] = err[-500:]
        r["argv"] = " ".join(argv[1:])
        return r


def window_for(conns):
    return max(WINDOW_MIN, min(WINDOW_MAX, TOTAL_WINDOW // conns))


# ---- servers -------------------------------------------------------------

class Sensornet:
    """sensornet-server with SQLite (default) or PostgreSQL."""

    kind = "sensornet"

    def __init__(self, build, tmp, log_on=True, pg=None, extra=()):
        self.build, self.log_on, self.pg = build, log_on, pg
        self.dir = tempfile.mkdtemp(prefix="sn-", dir=tmp)
        self.port = free_port()
        self.db = os.path.join(self.dir, "sensornet.db")
        argv = [os.path.join(build, "sensornet-server"),
                "--listen", "127.0.0.1:%d" % self.port,
                "--log", os.path.join(self.dir, "log.txt") if log_on
                else "off", "--fsync", "batch"]
        if pg is not None:
            argv += ["--postgres", pg.conninfo]
        else:
            argv += ["--db", self.db]
        argv += list(extra)
        self.proc = Proc(argv, self.dir, "server")
        wait_until(lambda: "listening on" in self.proc.text()
                   or not self.proc.alive(), 30, "sensornet-server to listen")
        if not self.proc.alive():
            raise RuntimeError("sensornet-server exited: %s"
                               % self.proc.text()[-2000:])

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        rc = self.proc.stop(60)
        if rc != 0:
            log("sensornet-server exit status %s: %s"
                % (rc, self.proc.text()[-1000:]))
        return rc

    def count(self):
        if self.pg is not None:
            return int(self.pg.sql("SELECT count(*) FROM readings"))
        if not os.path.exists(self.db):
            return None     # --db off: nothing to count
        r = subprocess.run(["sqlite3", self.db,
                            "SELECT count(*) FROM readings"],
                           capture_output=True, text=True, timeout=120)
        return int(r.stdout.strip()) if r.returncode == 0 else -1

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


class Discard:
    kind = "discard"

    def __init__(self, build, tmp, ack=True):
        self.dir = tempfile.mkdtemp(prefix="discard-", dir=tmp)
        self.port = free_port()
        argv = [os.path.join(build, "discard"), "--listen",
                "127.0.0.1:%d" % self.port, "--seconds", "600"]
        if ack:
            argv.append("--ack")
        self.proc = Proc(argv, self.dir, "discard")
        wait_until(lambda: "listening" in self.proc.text(), 10,
                   "discard to listen")

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        return self.proc.stop(10)

    def count(self):
        return None

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


INFLUX_CONF = """reporting-disabled = true
bind-address = "127.0.0.1:{rpc}"
[meta]
  dir = "{d}/meta"
  logging-enabled = false
[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  wal-fsync-delay = "0s"
  index-version = "inmem"
  query-log-enabled = false
[monitor]
  store-enabled = false
[subscriber]
  enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:{port}"
  log-enabled = false
  pprof-enabled = false
[logging]
  level = "warn"
  suppress-logo = true
"""


class Influx:
    """InfluxDB 1.x from Debian, its own config and directory; the WAL is
    fsynced on every write (wal-fsync-delay 0, the default)."""

    kind = "influxdb"

    def __init__(self, tmp):
        self.dir = tempfile.mkdtemp(prefix="influx-", dir=tmp)
        self.port = free_port()
        conf = os.path.join(self.dir, "influxdb.conf")
        with open(conf, "w") as f:
            f.write(INFLUX_CONF.format(d=self.dir, port=self.port,
                                       rpc=free_port()))
        self.proc = Proc(["influxd", "-config", conf], self.dir, "influxd",
                         env=dict(os.environ, HOME=self.dir))
        self.version = ""
        wait_until(self._ping, 60, "influxd to answer /ping")
        self.reset()

    def _ping(self):
        if not self.proc.alive():
            raise RuntimeError("influxd exited: %s" % self.proc.text()[-2000:])
        try:
            with urllib.request.urlopen(
                    "http://127.0.0.1:%d/ping" % self.port, timeout=2) as r:
                self.version = r.headers.get("X-Influxdb-Version", "")
                return r.status == 204
        except OSError:
            return False

    def query(self, q, post=False):
        url = "http://127.0.0.1:%d/query?%s" % (
            self.port, urllib.parse.urlencode({"q": q, "db": "bench"}))
        req = urllib.request.Request(url, data=b"" if post else None)
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read().decode())

    def reset(self):
        self.query("DROP DATABASE bench", post=True)
        self.query("CREATE DATABASE bench", post=True)

    @property
    def pid(self):
        return self.proc.pid

    def count(self):
        j = self.query("SELECT count(temperature) FROM bench")
        try:
            return int(j["results"][0]["series"][0]["values"][0][1])
        except (KeyError, IndexError):
            return 0

    def stop(self):
        return self.proc.stop(30)

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


class Mosquitto:
    """Mosquitto 2 from Debian: QoS 1 publishes, no subscriber, no
    persistence. It acknowledges a message once it has routed it (to
    nobody), so this is a messaging ceiling, not a durable store."""

    kind = "mosquitto"

    def __init__(self, tmp):
        self.dir = tempfile.mkdtemp(prefix="mosq-", dir=tmp)
        self.port = free_port()
        conf = os.path.join(self.dir, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write("listener %d 127.0.0.1\nallow_anonymous true\n"
                    "persistence false\nlog_dest stderr\nlog_type error\n"
                    "max_connections -1\nset_tcp_nodelay true\n"
                    % self.port)
        self.proc = Proc(["mosquitto", "-c", conf], self.dir, "mosquitto")

        def up():
            if not self.proc.alive():
                raise RuntimeError("mosquitto exited: %s"
                                   % self.proc.text()[-2000:])
            try:
                socket.create_connection(("127.0.0.1", self.port), 1).close()
                return True
            except OSError:
                return False
        wait_until(up, 20, "mosquitto to listen")

    @property
    def pid(self):
        return self.proc.pid

    def count(self):
        return None

    def stop(self):
        return self.proc.stop(20)

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def start_pg(tmp):
    """A throwaway PostgreSQL through tests/pg.py (the test suite's)."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    try:
        import pg as pgmod  # noqa: E402
    except Exception as e:  # pytest missing, file moved
        raise RuntimeError("tests/pg.py not importable: %s" % e)
    return pgmod.PgServer()


# ---- the benchmark -------------------------------------------------------

class Bench:
    def __init__(self, args):
        self.args = args
        self.build = os.path.abspath(args.build)
        self.out = os.path.abspath(args.out)
        os.makedirs(self.out, exist_ok=True)
        self.tmp = tempfile.mkdtemp(prefix="sn-bench-")
        os.chmod(self.tmp, 0o755)
        self.lg = Loadgen(self.build, self.tmp)
        self.rows = []
        self.notes = []
        self.quick = args.quick
        self.secs = 2.0 if self.quick else 8.0
        self.conns = CONNS_QUICK if self.quick else CONNS_FULL
        if args.conns:
            self.conns = sorted({int(n) for n in args.conns.split(",")})
        self.repeats = 1 if self.quick else 5
        if args.repeats is not None:
            self.repeats = args.repeats
        self.t_start = time.monotonic()
        self.budget = 170 if self.quick else 870  # seconds, whole run
        self.only = set(args.only.split(",")) if args.only else None

    def want(self, name):
        return self.only is None or name in self.only

    def time_left(self):
        return self.budget - (time.monotonic() - self.t_start)

    def note(self, msg):
        log(msg)
        self.notes.append(msg)

    def record(self, scenario, system, server, r, run=1, stored=None,
               rate_target=None, extra=None):
        cw = r["cpu"]
        srv_pid = server.pid if server is not None else None
        row = {
            "scenario": scenario, "system": system, "run": run,
            "mode": r.get("mode"), "conns": r.get("conns"),
            "connected": r.get("connected"), "failed": r.get("failed"),
            "connecting": r.get("connecting"), "closed": r.get("closed"),
            "window": window_for(r["conns"])
            if r.get("mode") != "http" else 1,
            "rate_target": "" if rate_target is None else
            int(rate_target),
            "seconds": r.get("seconds"), "sent": r.get("sent"),
            "acked": r.get("acked"), "errs": r.get("errs"),
            "stored": "" if stored is None else stored,
            "stored_ok": "" if stored is None else
            ("yes" if r["acked"] <= stored <= r["sent"] else "NO"),
            "rate": r.get("rate"), "steady_rate": r.get("steady_rate"),
            "lat_n": r.get("lat_n"), "lat_p50_ms": r.get("lat_p50_ms"),
            "lat_p99_ms": r.get("lat_p99_ms"),
            "lat_p999_ms": r.get("lat_p999_ms"),
            "connect_ms": r.get("connect_ms"),
            "server_cpu_pct": round(cw.pct(srv_pid), 1) if srv_pid else "",
            "loadgen_cpu_pct": r.get("cpu_pct"),
            "other_cpu_pct": round(cw.other_pct(
                getattr(server, "helper_cpu_s", 0.0) + r.get("cpu_s", 0)),
                1),
            "server_rss_kb": proc_status_kb(srv_pid, "VmHWM")
            if srv_pid else "",
        }
        if extra:
            row.update(extra)
        # Server CPU per acknowledged reading (PostgreSQL's own processes
        # included): steadier than the rate when other work shares the
        # machine.
        if srv_pid and r.get("acked"):
            used = cw.used.get(srv_pid, 0.0) + \
                getattr(server, "helper_cpu_s", 0.0)
            row["srv_us_per_reading"] = round(1e6 * used / r["acked"], 3)
        self.rows.append(row)
        log("%-13s %-24s conns=%-6s rate=%-9s p99=%sms srv=%s%% (writer "
            "%s%%) lg=%s%% other=%s%% stored=%s %s"
            % (scenario, system, row["conns"], row["steady_rate"],
               row["lat_p99_ms"], row["server_cpu_pct"],
               row.get("writer_cpu_pct", "-"), row["loadgen_cpu_pct"],
               row["other_cpu_pct"], row["stored"], row["stored_ok"]))
        if r.get("errs") or r.get("failed") or r.get("connecting"):
            self.note("%s %s conns=%s: %s errors, %s failed connections, "
                      "%s still connecting at the end: %s"
                      % (scenario, system, r["conns"], r.get("errs"),
                         r.get("failed"), r.get("connecting"),
                         " / ".join(r.get("stderr", "").splitlines())[:300]))
        return row

    # -- scenarios ---------------------------------------------------------

    def sensornet_run(self, scenario, system, conns, log_on=True, pg=None,
                      run=1, mode="line", seconds=None, server_extra=(),
                      **kw):
        srv = Sensornet(self.build, self.tmp, log_on=log_on, pg=pg,
                        extra=server_extra)
        try:
            if pg is not None:
                # PostgreSQL's own processes work for sensornet: count
                # them with the server, not as "other".
                pg_pids = pg_backend_pids(pg)
                p0 = sum(proc_cpu_s(p) for p in pg_pids)
            th0 = proc_threads_cpu_s(srv.pid)
            r = self.lg.run(srv.port, conns, seconds or self.secs, mode=mode,
                            watch=[srv.pid], **kw)
            extra = thread_split(th0, proc_threads_cpu_s(srv.pid),
                                 r["cpu"].wall, srv.pid)
            if pg is not None:
                used = sum(proc_cpu_s(p) for p in pg_backend_pids(pg)) - p0
                srv.helper_cpu_s = used
                extra["helper_cpu_pct"] = round(
                    100 * used / r["cpu"].wall, 1)
        finally:
            srv.stop()
        stored = srv.count()
        row = self.record(scenario, system, srv, r, run=run, stored=stored,
                          rate_target=kw.get("rate"), extra=extra)
        srv.cleanup()
        return row

    def ingest_sweeps(self):
        for log_on in (True, False):
            name = "sqlite-log" + ("on" if log_on else "off")
            if not self.want(name):
                continue
            for n in self.conns:
                self.sensornet_run("ingest", "sensornet-" + name, n,
                                   log_on=log_on)

    def discard_sweep(self):
        if not self.want("discard"):
            return
        srv = Discard(self.build, self.tmp, ack=True)
        try:
            for n in self.conns:
                r = self.lg.run(srv.port, n, self.secs, watch=[srv.pid])
                self.record("ingest", "discard-ack", srv, r)
        finally:
            srv.stop()
            srv.cleanup()
        # Pure drop: loadgen does not wait for replies (--window 0).
        srv = Discard(self.build, self.tmp, ack=False)
        try:
            r = self.lg.run(srv.port, 100, self.secs, window=0,
                            watch=[srv.pid])
            self.record("ingest", "discard-drop", srv, r)
        finally:
            srv.stop()
            srv.cleanup()

    def nostore_sweep(self, conns, run=1):
        """Storage and log.txt off (--db off --log off): parse, batch and
        acknowledge only, against discard-ack (issue #4's 50 % target)."""
        if not self.want("nostore"):
            return
        for n in conns:
            self.sensornet_run("ingest", "sensornet-nostore", n,
                               log_on=False, run=run,
                               server_extra=["--db", "off"])

    def mqtt_sweep(self, conns, run=1):
        """sensornet's own MQTT path (first byte on the sensor port), QoS
        1, stored in SQLite with log.txt, the same load as Mosquitto's."""
        if not self.want("mqtt"):
            return
        for n in conns:
            self.sensornet_run("ingest", "sensornet-mqtt-qos1", n,
                               log_on=True, run=run, mode="mqtt",
                               window=min(1000, window_for(n)))

    def pg_sweep(self):
        if not self.want("pg"):
            return
        try:
            pg = start_pg(self.tmp)
        except Exception as e:
            self.note("PostgreSQL scenarios skipped: %s" % e)
            return
        try:
            conns = [100] if self.quick else self.conns
            for n in conns:
                # A fresh database per run, so count(*) is this run's.
                pg.sql("DROP DATABASE IF EXISTS sensornet", dbname="postgres")
                pg.sql("CREATE DATABASE sensornet", dbname="postgres")
                self.sensornet_run("ingest", "sensornet-pg-logon", n,
                                   log_on=True, pg=pg)
        finally:
            pg.destroy()

    def influx_sweep(self, conns, run=1):
        if not self.want("influxdb"):
            return
        if shutil.which("influxd") is None:
            self.note("InfluxDB skipped: influxd not installed "
                      "(Debian package influxdb)")
            return
        try:
            srv = Influx(self.tmp)
        except Exception as e:
            self.note("InfluxDB skipped: %s" % e)
            return
        try:
            for n in conns:
                srv.reset()
                r = self.lg.run(srv.port, n, self.secs + 2, mode="http",
                                window=1, watch=[srv.pid],
                                extra=["--body-lines", str(HTTP_BODY_LINES)])
                stored = srv.count()
                self.record("ingest", "influxdb-" + srv.version, srv, r,
                            run=run, stored=stored)
        finally:
            srv.stop()
            srv.cleanup()

    def mosquitto_sweep(self, conns, run=1):
        if not self.want("mosquitto"):
            return
        if shutil.which("mosquitto") is None:
            self.note("Mosquitto skipped: not installed (Debian package "
                      "mosquitto)")
            return
        try:
            srv = Mosquitto(self.tmp)
        except Exception as e:
            self.note("Mosquitto skipped: %s" % e)
            return
        try:
            for n in conns:
                r = self.lg.run(srv.port, n, self.secs, mode="mqtt",
                                window=min(1000, window_for(n)),
                                watch=[srv.pid])
                self.record("ingest", "mosquitto-qos1", srv, r, run=run)
        finally:
            srv.stop()
            srv.cleanup()

    def open_at_once(self):
        if not self.want("burst"):
            return
        for n in ([1000] if self.quick else [1000, 10000]):
            self.sensornet_run("open-at-once", "sensornet-sqlite-logon", n,
                               lines=1, window=1, seconds=60)

    def idle(self):
        if not self.want("idle"):
            return
        soft, hard = __import__("resource").getrlimit(
            __import__("resource").RLIMIT_NOFILE)
        want = 2000 if self.quick else 100000
        # One loadgen process holds at most its own open-file limit; the
        # server (which raises its soft limit to the hard one) at most
        # hard - 256. Without CAP_SYS_RESOURCE neither can go further.
        n = min(want, hard - 300)
        if n < want:
            self.note("idle: %d connections wanted, %d reachable: the "
                      "open-file hard limit is %d and raising it needs "
                      "CAP_SYS_RESOURCE, which this sandbox lacks"
                      % (want, n, hard))
        binds = ",".join("127.0.0.%d" % i for i in range(2, 10))
        srv = Sensornet(self.build, self.tmp, log_on=True)
        try:
            time.sleep(0.3)
            rss0 = proc_status_kb(srv.pid, "VmRSS")
            slab0 = meminfo_kb("Slab")
            p = Proc([self.lg.bin, "--server", "127.0.0.1:%d" % srv.port,
                      "--idle", "--conns", str(n), "--seconds", "120",
                      "--bind", binds], self.tmp, "loadgen-idle")
            ready = wait_until(
                lambda: [l for l in p.text("out").splitlines()
                         if l.startswith("ready")] or not p.alive(),
                110, "idle connections")
            time.sleep(1.0)  # let the server accept the last ones
            rss1 = proc_status_kb(srv.pid, "VmRSS")
            slab1 = meminfo_kb("Slab")
            got = parse_kv(ready[0]) if isinstance(ready, list) else {}
            p.stop(20, signal.SIGTERM)
            r = parse_kv(p.text("out").strip().splitlines()[-1])
        finally:
            srv.stop()
        held = got.get("connected", 0) - r.get("closed", 0)
        row = {
            "scenario": "idle", "system": "sensornet-sqlite-logon",
            "run": 1, "mode": "idle", "conns": n, "connected":
            got.get("connected"), "failed": got.get("failed"),
            "closed": r.get("closed"), "connect_ms": got.get("connect_ms"),
            "server_rss_kb": rss1,
            "rss_per_conn_b": round((rss1 - rss0) * 1024 / max(held, 1)),
            "kernel_per_conn_b": round((slab1 - slab0) * 1024 /
                                       max(held, 1) / 2),
        }
        self.rows.append(row)
        log("idle: %s held, RSS %d -> %d KiB = %s B/conn; kernel slab "
            "%d -> %d KiB (both ends, whole machine)"
            % (held, rss0, rss1, row["rss_per_conn_b"], slab0, slab1))
        srv.cleanup()

    def latency(self, max_rate):
        if not self.want("latency"):
            return
        for frac in (0.1, 0.5, 0.9):
            self.sensornet_run("latency-%d%%" % int(frac * 100),
                               "sensornet-sqlite-logon", 100,
                               rate=frac * max_rate, window=WINDOW_MAX,
                               seconds=self.secs + 2)

    def original(self):
        if not self.want("original"):
            return
        n = 200 if self.quick else 1000
        self.sensornet_run("original", "sensornet-sqlite-logon", n,
                           mode="original", lines=1000, window=1,
                           seconds=self.secs + 2)

    def sqlite_floor(self):
        if not self.want("floor"):
            return
        d = tempfile.mkdtemp(prefix="floor-", dir=self.tmp)
        rows = 500000 if self.quick else 2000000
        for rep in range(1 if self.quick else 2):
            for multi in (1, 64):
                cw = CpuWindow([]).start()
                r = subprocess.run(
                    [os.path.join(self.build, "sqlite_floor"), "--dir", d,
                     "--rows", str(rows), "--group", "20480", "--multi",
                     str(multi)], capture_output=True, text=True,
                    timeout=300)
                cw.stop()
                if r.returncode != 0:
                    self.note("sqlite_floor failed: %s" % r.stderr[-300:])
                    return
                v = parse_kv(r.stdout.strip())
                row = {"scenario": "floor", "system":
                       "sqlite-alone-%s" % ("1row" if multi == 1 else
                                             "64rows"), "run": rep + 1,
                       "steady_rate": v["rate"], "seconds": v["seconds"],
                       "acked": v["rows"], "srv_us_per_reading":
                       v["us_per_row"], "server_cpu_pct":
                       round(100 * v["cpu_s"] / v["seconds"], 1),
                       "other_cpu_pct": round(cw.other_pct(v["cpu_s"]), 1)}
                self.rows.append(row)
                log("floor %s: %s rows/s, %s us of CPU per row, other "
                    "%s%%" % (row["system"], v["rate"], v["us_per_row"],
                              row["other_cpu_pct"]))
        shutil.rmtree(d, ignore_errors=True)

    def profile(self):
        if self.args.no_profile or not self.want("profile"):
            return
        if shutil.which("perf") is None:
            self.note("profile skipped: perf not installed (linux-perf)")
            return
        for log_on in (True, False):
            name = "sqlite-log%s" % ("on" if log_on else "off")
            srv = Sensornet(self.build, self.tmp, log_on=log_on)
            data = os.path.join(self.tmp, "perf-%s.data" % name)
            perf = Proc(["perf", "record", "-F", "999", "--call-graph",
                         "dwarf,16384", "-o", data, "-p", str(srv.pid)],
                        self.tmp, "perf-" + name)
            th0 = {}
            split = {}
            roles3 = ([], [], [])
            try:
                time.sleep(0.5)
                th0 = proc_threads_cpu_s(srv.pid)
                r = self.lg.run(srv.port, 100, self.secs,
                                watch=[srv.pid])
                split = thread_split(th0, proc_threads_cpu_s(srv.pid),
                                     r["cpu"].wall, srv.pid)
                roles3 = thread_roles(srv.pid, sorted(th0))
            finally:
                perf.stop(30, signal.SIGINT)
                srv.stop()
            self.record("profile", "sensornet-" + name, srv, r,
                        stored=srv.count(), extra=split)
            srv.cleanup()
            report = os.path.join(self.out, "profile-%s.txt" % name)
            wr, lt, wk = roles3
            roles = [("writer thread", wr), ("log thread", lt),
                     ("worker threads", wk)]
            with open(report, "w") as f:
                f.write("# perf record -F 999 --call-graph dwarf, 100 "
                        "connections, %s, %.0f readings/s during the "
                        "profile.\n# Server CPU %% of one core: writer %s, "
                        "log thread %s, workers %s (together), loadgen "
                        "%s.\n"
                        % (name, r["steady_rate"],
                           split.get("writer_cpu_pct"),
                           split.get("logthread_cpu_pct"),
                           split.get("workers_cpu_pct"), r.get("cpu_pct")))
                sections = [("samples by thread (writer %s, log thread %s, "
                             "workers %s)" % (wr, lt, wk),
                             ["--sort", "pid"]),
                            ("self time by library", ["--sort", "dso"])]
                for role, ts in roles:
                    if not ts:
                        continue
                    tl = ",".join(str(t) for t in ts)
                    sections.append(
                        ("%s: self time by function (%% of these threads)"
                         % role, ["--tid", tl, "--percentage", "relative",
                                  "--sort", "dso,sym",
                                  "--percent-limit", "0.7"]))
                    sections.append(
                        ("%s: inclusive time (children) by function"
                         % role, ["--tid", tl, "--percentage", "relative",
                                  "--children", "--sort", "sym",
                                  "--percent-limit", "3"]))
                for title, opts in sections:
                    f.write("\n## %s\n" % title)
                    f.flush()
                    rep = subprocess.run(
                        ["perf", "report", "-i", data, "--stdio",
                         "--no-children", "-g", "none"] + opts,
                        capture_output=True, text=True, timeout=300)
                    f.write("\n".join(
                        l for l in rep.stdout.splitlines()
                        if l.strip() and not l.startswith("#")) + "\n")
            os.unlink(data)
            log("profile written to %s" % report)

    # -- the whole run -----------------------------------------------------

    def run(self):
        write_machine(self.out, self.tmp)
        self.discard_sweep()
        self.nostore_sweep(self.conns)
        self.ingest_sweeps()
        self.influx_sweep([n for n in
                           ([1, 10, 100] if not self.quick else [1, 100])
                           if n in self.conns])
        self.mosquitto_sweep(self.conns)
        self.mqtt_sweep(self.conns)
        self.pg_sweep()
        self.open_at_once()
        self.original()
        self.idle()
        self.sqlite_floor()
        self.profile()
        # Repeats of the headline figures, spread over the run so that
        # other work on the machine shows up as spread, not as a bias.
        for rep in range(2, self.repeats + 1):
            if self.time_left() < 200:
                self.note("repeats %d-%d skipped: time budget"
                          % (rep, self.repeats))
                break
            if self.want("discard"):
                srv = Discard(self.build, self.tmp, ack=True)
                try:
                    r = self.lg.run(srv.port, 100, self.secs,
                                    watch=[srv.pid])
                    self.record("ingest", "discard-ack", srv, r, run=rep)
                finally:
                    srv.stop()
                    srv.cleanup()
            for log_on in (True, False):
                name = "sqlite-log" + ("on" if log_on else "off")
                if self.want(name):
                    self.sensornet_run("ingest", "sensornet-" + name, 100,
                                       log_on=log_on, run=rep)
            self.nostore_sweep([100], run=rep)
            self.influx_sweep([100], run=rep)
            self.mosquitto_sweep([100], run=rep)
            self.mqtt_sweep([100], run=rep)
        # Latency at fractions of the maximum: the median of all the
        # 100-connection runs above.
        max_rate = self.median_rate("sensornet-sqlite-logon", 100)
        if max_rate:
            self.latency(max_rate)
        self.write()

    def median_rate(self, system, conns):
        v = [r["steady_rate"] for r in self.rows
             if r["system"] == system and r["conns"] == conns
             and r["scenario"] == "ingest"]
        return statistics.median(v) if v else None

    # -- output ------------------------------------------------------------

    def write(self):
        fields = []
        for r in self.rows:
            for k in r:
                if k not in fields:
                    fields.append(k)
        with open(os.path.join(self.out, "results.csv"), "w",
                  newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            for r in self.rows:
                w.writerow(r)
        text = summary(self.rows, self.notes, self.quick)
        with open(os.path.join(self.out, "summary.txt"), "w") as f:
            f.write(text)
        print(text)
        plot(self.rows, self.out)
        shutil.rmtree(self.tmp, ignore_errors=True)


def thread_split(before, after, wall, pid):
    """Server CPU by thread, % of one core: the writer, its log thread
    and the workers (thread_roles). From /proc/PID/task/TID/schedstat: time
    on a CPU and time runnable but waiting for one (CPU contention)."""
    tids = sorted(after)
    if len(tids) < 3 or wall <= 0:
        return {}
    wr, lt, wk = thread_roles(pid, tids)

    def d(ts, i):
        return sum((after[t][i] - before.get(t, (0, 0))[i]) / 1e9
                   for t in ts)

    return {"writer_cpu_pct": round(100 * d(wr, 0) / wall, 1),
            "writer_runq_pct": round(100 * d(wr, 1) / wall, 1),
            "logthread_cpu_pct": round(100 * d(lt, 0) / wall, 1),
            "workers_cpu_pct": round(100 * d(wk, 0) / wall, 1),
            "workers_runq_pct": round(100 * d(wk, 1) / wall, 1)}


def pg_backend_pids(pg):
    """Every process of the throwaway PostgreSQL cluster."""
    pids = []
    try:
        with open(os.path.join(pg.data, "postmaster.pid")) as f:
            master = int(f.readline())
    except (OSError, ValueError):
        return pids
    pids.append(master)
    for d in glob.glob("/proc/[0-9]*"):
        try:
            with open(d + "/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid == master:
                pids.append(int(os.path.basename(d)))
        except (OSError, ValueError, IndexError):
            pass
    return pids


def fsync_us(tmp):
    """Median cost of a 4 KiB write + fdatasync in the temp directory."""
    path = os.path.join(tmp, "fsync.probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    times = []
    try:
        for _ in range(200):
            os.write(fd, b"x" * 4096)
            t = time.perf_counter()
            os.fdatasync(fd)
            times.append((time.perf_counter() - t) * 1e6)
    finally:
        os.close(fd)
        os.unlink(path)
    return statistics.median(times)


def source_version():
    """The commit measured, "-dirty" when src/ or lib/ differ from it;
    BENCH_SOURCE overrides (a tree that is not a git checkout)."""
    if os.environ.get("BENCH_SOURCE"):
        return os.environ["BENCH_SOURCE"]
    try:
        rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short",
                              "HEAD"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain",
                                "--", "src", "lib"], capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (rev or "unknown") + ("-dirty" if dirty else "")


def write_machine(out, tmp):
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    disk = subprocess.run(["df", "-h", "--output=source,size,fstype", tmp],
                          capture_output=True, text=True).stdout.strip()
    with open("/proc/meminfo") as f:
        mem = f.readline().split(":", 1)[1].strip()
    info = [
        "date: %s" % datetime.datetime.now().astimezone().isoformat(
            timespec="seconds"),
        "source: %s" % source_version(),
        "nproc: %d" % NPROC,
        "cpu: %s" % cpu,
        "memory: %s" % mem,
        "kernel: %s" % platform.release(),
        "disk (temp dir): %s" % " ".join(disk.splitlines()[1:]),
        "fdatasync 4 KiB median: %.0f us" % fsync_us(tmp),
        "open files (soft/hard): %s" % " ".join(
            str(x) for x in __import__("resource").getrlimit(
                __import__("resource").RLIMIT_NOFILE)),
        "somaxconn: %s" % open("/proc/sys/net/core/somaxconn").read()
        .strip(),
        "loadavg at start: %s" % open("/proc/loadavg").read().strip(),
    ]
    with open(os.path.join(out, "machine.txt"), "w") as f:
        f.write("\n".join(info) + "\n")
    log("machine: " + "; ".join(info))


def fmt_rate(v):
    if v is None or v == "":
        return "-"
    v = float(v)
    if v >= 1e6:
        return "%.2fM" % (v / 1e6)
    if v >= 1e3:
        return "%.0fk" % (v / 1e3)
    return "%.0f" % v


def spread(vals):
    """'median' or 'median [min-max]' of a list of rates."""
    m = statistics.median(vals)
    if len(vals) < 2:
        return fmt_rate(m)
    return "%s [%s-%s]" % (fmt_rate(m), fmt_rate(min(vals)),
                           fmt_rate(max(vals)))


def summary(rows, notes, quick):
    out = []
    ing = [r for r in rows if r["scenario"] == "ingest"]
    systems = []
    for r in ing:
        if r["system"] not in systems:
            systems.append(r["system"])
    conns = sorted({r["conns"] for r in ing})

    def med(system, n, key="steady_rate"):
        v = [float(r[key]) for r in ing if r["system"] == system
             and r["conns"] == n and r.get(key) not in (None, "")]
        return statistics.median(v) if v else None

    out.append("Ingest: readings/s acknowledged (steady state; median "
               "[min-max] where repeated)")
    head = "%-26s" % "system" + "".join("%23s" % ("%d conns" % n)
                                        for n in conns)
    out.append(head)
    for s in systems:
        cells = []
        for n in conns:
            v = [float(r["steady_rate"]) for r in ing
                 if r["system"] == s and r["conns"] == n]
            cells.append("%23s" % (spread(v) if v else "-"))
        out.append("%-26s" % s + "".join(cells))
    out.append("")
    out.append("CPU during those runs, % of one core (server / loadgen / "
               "everything else), median")
    for s in systems:
        cells = []
        for n in conns:
            a = med(s, n, "server_cpu_pct")
            b = med(s, n, "loadgen_cpu_pct")
            c = med(s, n, "other_cpu_pct")
            cells.append("%23s" % ("-" if a is None else
                                   "%.0f/%.0f/%.0f" % (a, b, c)))
        out.append("%-26s" % s + "".join(cells))
    out.append("")
    out.append("Server CPU per acknowledged reading, microseconds "
               "(PostgreSQL's processes included), median")
    for s in systems:
        cells = []
        for n in conns:
            a = med(s, n, "srv_us_per_reading")
            cells.append("%23s" % ("-" if a is None else "%.2f" % a))
        out.append("%-26s" % s + "".join(cells))
    out.append("")
    out.append("sensornet by thread, median: CPU per reading in us, writer "
               "/ workers, and the writer's time runnable but waiting for a "
               "CPU (% of the run)")
    for s in [s for s in systems if s.startswith("sensornet")]:
        cells = []
        for n in conns:
            v = [r for r in ing if r["system"] == s and r["conns"] == n
                 and r.get("writer_cpu_pct") not in (None, "")
                 and float(r["steady_rate"] or 0) > 0]
            if not v:
                cells.append("%23s" % "-")
                continue
            wr = statistics.median(float(r["writer_cpu_pct"]) * 1e4 /
                                   float(r["steady_rate"]) for r in v)
            wk = statistics.median(float(r["workers_cpu_pct"]) * 1e4 /
                                   float(r["steady_rate"]) for r in v)
            rq = statistics.median(float(r["writer_runq_pct"]) for r in v)
            cells.append("%23s" % ("%.2f / %.2f, %.0f%%" % (wr, wk, rq)))
        out.append("%-26s" % s + "".join(cells))
    out.append("")
    out.append("Ack latency p50 / p99 ms during those runs (full window: "
               "queueing, not service time)")
    for s in systems:
        cells = []
        for n in conns:
            a, b = med(s, n, "lat_p50_ms"), med(s, n, "lat_p99_ms")
            cells.append("%23s" % ("-" if a is None else
                                   "%.1f / %.1f" % (a, b)))
        out.append("%-26s" % s + "".join(cells))
    out.append("")
    out.append("Ratios, sensornet / reference at the same connections:")
    refs = [s for s in systems if not s.startswith("sensornet")]
    for s in [s for s in systems if s.startswith("sensornet")]:
        for ref in refs:
            cells = []
            for n in conns:
                a, b = med(s, n), med(ref, n)
                cells.append("%8s" % ("-" if a is None or not b else
                                      "%.2f" % (a / b)))
            out.append("  %-26s / %-18s %s" % (s, ref, "".join(cells)))
    out.append("  (columns: %s connections)" % ", ".join(str(n)
                                                          for n in conns))
    floor = [r for r in rows if r["scenario"] == "floor"]
    if floor:
        out.append("")
        out.append("SQLite alone (bench/sqlite_floor: sensornet's table and "
                   "settings, one connection, no network):")
        for s in sorted({r["system"] for r in floor}):
            v = [float(r["steady_rate"]) for r in floor
                 if r["system"] == s]
            us = [float(r["srv_us_per_reading"]) for r in floor
                  if r["system"] == s]
            out.append("  %-22s %s rows/s, %.2f us of CPU per row"
                       % (s, spread(v), statistics.median(us)))
    stored = [r for r in rows if r.get("stored_ok")]
    bad = [r for r in stored if r["stored_ok"] != "yes"]
    out.append("")
    out.append("Stored check (acked <= stored <= sent): %d runs checked, "
               "%d failed" % (len(stored), len(bad)))
    for r in bad:
        out.append("  FAILED %s %s conns=%s acked=%s stored=%s sent=%s"
                   % (r["scenario"], r["system"], r["conns"], r["acked"],
                      r["stored"], r["sent"]))
    other = [r for r in rows
             if r["scenario"] not in ("ingest", "idle", "floor")]
    if other:
        out.append("")
        out.append("%-14s %-24s %7s %9s %10s %9s %9s %9s %8s %s" % (
            "scenario", "system", "conns", "target/s", "readings/s",
            "p50 ms", "p99 ms", "p99.9 ms", "srv CPU", "notes"))
        for r in other:
            notes_ = ""
            if r["scenario"] == "open-at-once":
                notes_ = "served %s/%s, all connected after %s ms, all " \
                         "answered after %.2f s" % (
                             r["acked"], r["conns"], r["connect_ms"],
                             float(r["seconds"]))
            out.append("%-14s %-24s %7s %9s %10s %9s %9s %9s %7s%% %s" % (
                r["scenario"], r["system"], r["conns"],
                fmt_rate(r.get("rate_target")), fmt_rate(r["steady_rate"]),
                r["lat_p50_ms"], r["lat_p99_ms"], r["lat_p999_ms"],
                r["server_cpu_pct"], notes_))
    for r in rows:
        if r["scenario"] == "idle":
            out.append("")
            out.append("Idle: %s connections asked, %s connected, %s closed "
                       "by the server; server RSS %s KiB, %s B per "
                       "connection in the process, about %s B per "
                       "connection in the kernel (one end)" % (
                           r["conns"], r["connected"], r["closed"],
                           r["server_rss_kb"], r["rss_per_conn_b"],
                           r["kernel_per_conn_b"]))
    if notes:
        out.append("")
        out.append("Notes:")
        out.extend("  - " + n for n in notes)
    if quick:
        out.append("")
        out.append("(BENCH_QUICK: short runs, fewer points, no repeats: a "
                   "smoke test, not figures to quote)")
    return "\n".join(out) + "\n"


def plot(rows, out):
    """throughput.png: readings/s against connections, one line a system;
    cost.png: server CPU per reading against connections."""
    plot_one(rows, out, "steady_rate", "throughput",
             "readings/s acknowledged", True)
    plot_one(rows, out, "srv_us_per_reading", "cost",
             "server CPU per reading (us)", True)


def plot_one(rows, out, key, name, ylabel, logy):
    if shutil.which("gnuplot") is None:
        log("gnuplot missing (Debian gnuplot-nox): no plot")
        return
    ing = [r for r in rows if r["scenario"] == "ingest"]
    systems = []
    for r in ing:
        if r["system"] not in systems:
            systems.append(r["system"])
    plots = []
    if not systems:
        return
    for i, s in enumerate(systems):
        dat = os.path.join(out, "%s-%d.dat" % (name, i))
        with open(dat, "w") as f:
            for n in sorted({r["conns"] for r in ing if r["system"] == s}):
                v = [float(r[key]) for r in ing
                     if r["system"] == s and r["conns"] == n
                     and r.get(key) not in (None, "")]
                if not v:
                    continue
                f.write("%d %f %f %f\n" % (n, statistics.median(v),
                                           min(v), max(v)))
        plots.append("'%s' using 1:2:3:4 with yerrorlines lw 2 title '%s'"
                     % (os.path.basename(dat), s))
    gp = os.path.join(out, name + ".gp")
    cairo = subprocess.run(["gnuplot", "-e", "set terminal pngcairo"],
                           capture_output=True).returncode == 0
    with open(gp, "w") as f:
        f.write("set terminal %s size 1000,600 noenhanced\n"
                % ("pngcairo" if cairo else "png"))
        f.write("set output '%s.png'\n" % name)
        f.write("set title 'Ingest on loopback, %d cores shared by server "
                "and load generator'\n" % NPROC)
        f.write("set xlabel 'connections'\nset ylabel '%s'\n"
                "set logscale x\n%s\nset grid\nset key outside right\n"
                % (ylabel, "set logscale y" if logy else ""))
        if key == "steady_rate":
            f.write("set format y '%.0s%c'\n")
        f.write("plot " + ", \\\n     ".join(plots) + "\n")
    # Paths relative to out, so "cd bench/results && gnuplot cost.gp" works.
    r = subprocess.run(["gnuplot", os.path.basename(gp)], cwd=out,
                       capture_output=True, text=True)
    if r.returncode != 0:
        log("gnuplot failed: %s" % r.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build",
                                                    "release"))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    ap.add_argument("--quick", action="store_true",
                    default=os.environ.get("BENCH_QUICK") not in (None, "",
                                                                 "0"))
    ap.add_argument("--only", help="comma list: discard, sqlite-logon, "
                    "sqlite-logoff, nostore, influxdb, mosquitto, mqtt, pg, burst, "
                    "original, latency, idle, floor, profile")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--conns", help="comma list of connection counts for "
                    "the sweeps (default 1,10,100,1000,10000)")
    ap.add_argument("--repeats", type=int, help="runs of the 100-connection "
                    "headline figures (default 5, 1 with --quick)")
    args = ap.parse_args()
    for b in ("sensornet-server", "loadgen", "discard", "sqlite_floor"):
        if not os.access(os.path.join(args.build, b), os.X_OK):
            sys.exit("bench: %s/%s missing: run make bench" % (args.build, b))
    b = Bench(args)
    t = time.monotonic()
    try:
        b.run()
    except KeyboardInterrupt:
        log("interrupted: writing what was measured")
        b.write()
    log("done in %.0f s; results in %s" % (time.monotonic() - t, b.out))


if __name__ == "__main__":
    main()
