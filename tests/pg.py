"""A throwaway PostgreSQL server for the tests that need one.

PgServer runs initdb into a fresh temporary directory, starts the server on
127.0.0.1 and a free port (its unix socket in that directory too), trusts
every local connection and creates the database "sensornet". As root it runs
the server as the postgres user (initdb refuses root); otherwise as the
current user. stop(), start(), restart() and kill() let a test take the
server away mid-stream; destroy() stops it and removes the directory.

Use it through the `pg` fixture:

    from pg import pg  # noqa: F401 (pytest finds the fixture by name)

    def test_x(pg):
        run([...], env=dict(os.environ, SENSORNET_TEST_PG=pg.conninfo))
        assert pg.sql("SELECT count(*) FROM readings") == "10"

Missing PostgreSQL binaries skip the test outside CI and fail it in CI
(conftest.skip_or_fail).
SPDX-License-Identifier: MIT
"""
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time

import pytest

from conftest import get_port, skip_or_fail, wait_until

DBNAME = "sensornet"


def find_bindir():
    """The newest /usr/lib/postgresql/N/bin with initdb, or None."""
    found = []
    for d in glob.glob("/usr/lib/postgresql/*/bin"):
        ver = os.path.basename(os.path.dirname(d))
        if ver.isdigit() and os.access(os.path.join(d, "initdb"), os.X_OK):
            found.append((int(ver), d))
    return max(found)[1] if found else None


class PgError(Exception):
    pass


class PgServer:
    """One PostgreSQL cluster in its own temporary directory.

    Attributes a test may read: port, dir, sockdir, conninfo (libpq
    key=value form), uri (the same as a postgresql:// URI).
    """

    def __init__(self, bindir=None, settings=None):
        self.bindir = bindir or find_bindir()
        if self.bindir is None:
            raise PgError("no PostgreSQL server binaries "
                          "(/usr/lib/postgresql/*/bin/initdb)")
        self.as_root = os.geteuid() == 0
        self.owner = "postgres" if self.as_root else None
        if self.as_root:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise PgError("running as root but there is no postgres "
                              "user to run the server as")
        # Not under pytest's tmp_path: that is root-only (0700) and the
        # postgres user must reach its data directory.
        self.dir = tempfile.mkdtemp(prefix="sn-pg-")
        self.data = os.path.join(self.dir, "data")
        self.sockdir = os.path.join(self.dir, "sock")
        self.logfile = os.path.join(self.dir, "server.log")
        os.mkdir(self.sockdir)
        if self.as_root:
            for p in (self.dir, self.sockdir):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        self.port = None
        self.running = False
        try:
            self._initdb(settings or {})
            self._start_first()
            self.sql("CREATE DATABASE %s" % DBNAME, dbname="postgres")
        except BaseException:
            self.destroy()
            raise

    # -- plumbing ---------------------------------------------------------

    def _cmd(self, argv, timeout=120, check=True):
        """Run a server binary as the cluster owner; returns stdout."""
        argv = [os.path.join(self.bindir, argv[0])] + list(argv[1:])
        if self.owner:
            argv = ["runuser", "-u", self.owner, "--"] + argv
        r = subprocess.run(argv, capture_output=True, timeout=timeout,
                           stdin=subprocess.DEVNULL, cwd=self.dir)
        if check and r.returncode != 0:
            raise PgError("%s failed (%d):\n%s%s\n%s" % (
                " ".join(argv), r.returncode, r.stdout.decode(),
                r.stderr.decode(), self.log_text()[-4000:]))
        return r

    def _initdb(self, settings):
        self._cmd(["initdb", "-D", self.data, "-U", "postgres", "-A", "trust",
                   "-E", "UTF8", "--locale=C", "--no-sync"])
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": "'%s'" % self.sockdir,
            "max_connections": "50",
            "shared_buffers": "128MB",
            "logging_collector": "off",
            "log_min_messages": "warning",
        }
        conf.update(settings)
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write("\n# sensornet tests (tests/pg.py)\n")
            for k, v in conf.items():
                f.write("%s = %s\n" % (k, v))

    def _pg_ctl_start(self):
        self._cmd(["pg_ctl", "-D", self.data, "-l", self.logfile, "-w",
                   "-t", "60", "-o", "-p %d" % self.port, "start"])
        self.running = True

    def _start_first(self):
        """The first start picks the port; another process may take a free
        port between get_port() and the bind, so try a few."""
        last = None
        for _ in range(5):
            self.port = get_port()
            try:
                self._pg_ctl_start()
                return
            except PgError as e:
                last = e
        raise last

    # -- what tests use ---------------------------------------------------

    @property
    def conninfo(self):
        return ("host=127.0.0.1 port=%d user=postgres dbname=%s"
                % (self.port, DBNAME))

    @property
    def uri(self):
        return "postgresql://postgres@127.0.0.1:%d/%s" % (self.port, DBNAME)

    def log_text(self):
        try:
            with open(self.logfile, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def sql(self, query, dbname=DBNAME, timeout=60):
        """Run one statement with psql over TCP; returns its unaligned,
        tuples-only output without the final newline."""
        r = subprocess.run(
            [os.path.join(self.bindir, "psql"), "-X", "-q", "-A", "-t",
             "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.port),
             "-U", "postgres", "-d", dbname, "-c", query],
            capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise PgError("psql %r failed: %s" % (query, r.stderr.decode()))
        return r.stdout.decode().rstrip("\n")

    def ready(self):
        """True when the server accepts connections."""
        r = subprocess.run(
            [os.path.join(self.bindir, "pg_isready"), "-q", "-h", "127.0.0.1",
             "-p", str(self.port), "-d", DBNAME, "-t", "2"],
            stdin=subprocess.DEVNULL, capture_output=True)
        return r.returncode == 0

    def ctl_argv(self, action):
        """argv for a pg_ctl action ("start", "stop", "kill", "restart") on
        this cluster, for a C test that takes the server away itself."""
        base = [os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-w",
                "-t", "60"]
        if action == "start":
            argv = base + ["-l", self.logfile, "-o", "-p %d" % self.port,
                           "start"]
        elif action == "stop":
            argv = base + ["-m", "fast", "stop"]
        elif action == "kill":
            argv = base + ["-m", "immediate", "stop"]
        elif action == "restart":
            argv = base + ["-m", "fast", "-o", "-p %d" % self.port, "restart"]
        else:
            raise ValueError(action)
        if self.owner:
            argv = ["runuser", "-u", self.owner, "--"] + argv
        return argv

    def ctl_command(self, action):
        """ctl_argv() as one shell command line."""
        return " ".join("'%s'" % a.replace("'", "'\\''")
                        for a in self.ctl_argv(action))

    def start(self):
        if not self.running:
            self._pg_ctl_start()

    def stop(self):
        """Fast shutdown: sessions are ended, committed data is kept."""
        if self.running:
            self._cmd(["pg_ctl", "-D", self.data, "-w", "-t", "60", "-m",
                       "fast", "stop"])
            self.running = False

    def kill(self):
        """Immediate shutdown (like a crash; recovery runs at start)."""
        if self.running:
            self._cmd(["pg_ctl", "-D", self.data, "-w", "-t", "60", "-m",
                       "immediate", "stop"])
            self.running = False

    def restart(self):
        self.stop()
        self.start()
        wait_until(self.ready, 30, what="postgresql restart")

    def destroy(self):
        """Stop the server (immediately) and remove its directory."""
        try:
            if os.path.exists(os.path.join(self.data, "postmaster.pid")):
                self._cmd(["pg_ctl", "-D", self.data, "-w", "-t", "60", "-m",
                           "immediate", "stop"], check=False)
        finally:
            self.running = False
            shutil.rmtree(self.dir, ignore_errors=True)


def start_or_skip(**kw):
    """A started PgServer, or skip/fail (conftest.skip_or_fail) when this
    machine has no PostgreSQL server."""
    if find_bindir() is None:
        skip_or_fail("PostgreSQL server not installed "
                     "(Debian: apt-get install postgresql)")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        skip_or_fail("running as root without runuser(1)")
    try:
        return PgServer(**kw)
    except PgError as e:
        pytest.fail("could not start PostgreSQL: %s" % e)


@pytest.fixture
def pg():
    """A fresh PostgreSQL server with an empty database "sensornet"."""
    srv = start_or_skip()
    try:
        yield srv
    finally:
        srv.destroy()


if __name__ == "__main__":
    # Manual use: python3 tests/pg.py  -> prints the conninfo, Ctrl-C ends.
    s = PgServer()
    print(s.conninfo, flush=True)
    print("start:", s.ctl_command("start"), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        s.destroy()
