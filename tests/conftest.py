"""Shared helpers for the sensornet test suite (pytest).

Every test starts the real binaries from $SENSORNET_BUILD (make test sets it
to the AddressSanitizer+UBSan build) on ports from get_port(), in its own
temporary directory, and polls with deadlines instead of sleeping.
"""
import os
import signal
import socket
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("SENSORNET_BUILD", os.path.join(ROOT, "build"))
SERVER = os.path.join(BUILD, "sensornet-server")
CLIENT = os.path.join(BUILD, "sensornet-client")
IN_CI = os.environ.get("CI") == "true"

# Sanitizer runtime options: fail hard, report leaks.
os.environ.setdefault("ASAN_OPTIONS",
                      "abort_on_error=0:detect_leaks=1:exitcode=23")
os.environ.setdefault("UBSAN_OPTIONS",
                      "print_stacktrace=1:halt_on_error=1:exitcode=24")


def get_port():
    """A free TCP port on 127.0.0.1 (the kernel picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout=10.0, interval=0.02, what="condition"):
    """Poll pred() until it returns a true value or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s"
                                 % (timeout, what))
        time.sleep(interval)


def skip_or_fail(why):
    """Outside CI a missing environment skips with a reason; in CI it fails
    (nothing is skipped there)."""
    if IN_CI:
        pytest.fail(why)
    pytest.skip(why)


class Proc:
    """A running binary with its stderr captured to a file."""

    def __init__(self, argv, cwd, name, env=None):
        self.argv = argv
        self.name = name
        self.err_path = os.path.join(cwd, name + ".stderr")
        self.out_path = os.path.join(cwd, name + ".stdout")
        self._err = open(self.err_path, "ab")
        self._out = open(self.out_path, "ab")
        self.p = subprocess.Popen(argv, cwd=cwd, stdout=self._out,
                                  stderr=self._err, stdin=subprocess.DEVNULL,
                                  env=env)

    @property
    def pid(self):
        return self.p.pid

    def stderr(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stdout(self):
        with open(self.out_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def alive(self):
        return self.p.poll() is None

    def signal(self, sig):
        if self.alive():
            self.p.send_signal(sig)

    def wait(self, timeout=20):
        try:
            return self.p.wait(timeout)
        finally:
            self._err.close()
            self._out.close()

    def stop(self, sig=None, timeout=20):
        """Stop with sig (SIGTERM) and return the exit code (killed after
        timeout)."""
        if sig is None:
            sig = signal.SIGTERM
        if self.alive():
            self.p.send_signal(sig)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.wait(5)
            raise AssertionError("%s did not exit within %ss of signal %s"
                                 % (self.name, timeout, sig))

    def assert_clean(self):
        """No sanitizer report in stderr."""
        err = self.stderr()
        for marker in ("ERROR: AddressSanitizer", "runtime error:",
                       "ERROR: LeakSanitizer"):
            assert marker not in err, "%s: %s\n%s" % (self.name, marker, err)


class Server(Proc):
    """sensornet-server on 127.0.0.1:<free port> in dir, SQLite in dir."""

    def __init__(self, dir, args=(), port=None, name="server", env=None,
                 wait=True):
        self.dir = dir
        self.port = port or get_port()
        self.log_path = os.path.join(dir, "log.txt")
        self.db_path = os.path.join(dir, "sensornet.db")
        argv = [SERVER, "--listen", "127.0.0.1:%d" % self.port,
                "--log", self.log_path, "--db", self.db_path] + list(args)
        if "--http" not in args:
            # Tests run in parallel: no test binds the default 8080.
            argv += ["--http", "off"]
        super().__init__(argv, dir, name, env)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout=15):
        """The server writes "Servidor iniciando em" to log.txt once its
        listeners are bound; wait for that (no probe connection, which
        would show up in log.txt)."""
        start = self.log_text().count("Servidor iniciando em")

        def ready():
            if not self.alive():
                raise AssertionError("server exited early (%s):\n%s"
                                     % (self.p.returncode, self.stderr()))
            return self.log_text().count("Servidor iniciando em") > start
        wait_until(ready, timeout, what="server start")

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_lines(self):
        return self.log_text().splitlines()

    def connect(self, timeout=5):
        s = socket.create_connection(("127.0.0.1", self.port), timeout)
        s.settimeout(timeout)
        return s


class LineConn:
    """A raw line-protocol connection that reads replies line by line."""

    def __init__(self, sock):
        self.s = sock
        self.buf = b""

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.s.sendall(data)

    def readline(self, timeout=10):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no reply line within %ss (have %r)"
                                     % (timeout, self.buf))
            self.s.settimeout(left)
            try:
                chunk = self.s.recv(65536)
            except socket.timeout:
                continue           # the deadline check above reports it
            if not chunk:
                raise AssertionError("connection closed (have %r)" % self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode("utf-8", "replace")

    def wait_ok(self, n, timeout=10):
        """Read replies until "OK m" with m >= n; returns the ERR lines
        seen on the way."""
        errs = []
        while True:
            line = self.readline(timeout)
            if line.startswith("OK "):
                if int(line[3:]) >= n:
                    return errs
            else:
                errs.append(line)

    def close(self):
        self.s.close()


@pytest.fixture
def procs():
    """Collects started processes; stops and checks each at teardown."""
    started = []
    yield started
    # Stop what is still running the orderly way, so that LeakSanitizer
    # runs at exit and a shutdown bug fails the test.
    for p in started:
        if p.alive():
            p.signal(signal.SIGTERM)
    codes = {}
    for p in started:
        was_alive = p.p.returncode is None
        try:
            rc = p.wait(30)
        except subprocess.TimeoutExpired:
            p.p.kill()
            p.wait(5)
            raise AssertionError("%s did not stop on SIGTERM" % p.name)
        if was_alive:
            codes[p.name] = rc
    for p in started:
        p.assert_clean()
    for name, rc in codes.items():
        assert rc == 0, "%s exited %s after SIGTERM" % (name, rc)


@pytest.fixture
def server(tmp_path, procs):
    """A factory: server(args...) starts a server in tmp_path."""
    def start(*args, **kw):
        kw.setdefault("dir", str(tmp_path))
        s = Server(args=args, **kw)
        procs.append(s)
        return s
    return start


@pytest.fixture
def client(tmp_path, procs):
    """A factory: client(server, args...) starts sensornet-client."""
    n = [0]

    def start(srv, *args, name=None, env=None):
        n[0] += 1
        argv = [CLIENT, "--server", "127.0.0.1:%d" % srv.port] + list(args)
        c = Proc(argv, str(tmp_path), name or "client%d" % n[0], env)
        procs.append(c)
        return c
    return start
