#!/usr/bin/env python3
"""A multi-host testbed on one machine: the original system's AWS topology
(the CloudFormation VPC) rebuilt with Linux network namespaces, so that the
real binaries run on separate hosts with their own addresses.

Topology (addresses as in the VPC)::

        10.0.1.0/24                               10.0.2.0/24
   server 10.0.1.10 --- br1 [ router ] br2 --- client1 10.0.2.11
                      10.0.1.1     10.0.2.1  \\-- client2 10.0.2.12

- One namespace per host (``server``, ``client1``, ``client2``) and one for
  the ``router``, which owns two bridges (br1 for 10.0.1.0/24, br2 for
  10.0.2.0/24), holds the gateways 10.0.1.1 and 10.0.2.1, and forwards
  (ip_forward=1; no NAT: the server sees the clients' own addresses).
  Each host has one veth: ``eth0`` on its side, ``r-<host>`` on the
  router's side (a port of its subnet's bridge), and a default route via
  its gateway.
- Namespace names carry a per-run prefix, ``sn<pid>`` (``sn<pid>n<k>`` for
  the k-th testbed of one process), e.g. ``sn4242-server``, so that runs in
  parallel never collide. Every interface is created inside those
  namespaces (none in the host's own), so interface names cannot collide
  either; all are at most 15 bytes.
- Only the network is separate: hosts share the file system, users and
  processes with the machine. Give each host its own directories.
- Root only. Traffic stays inside the namespaces.

API (used by tests/integ/test_reliability.py and by deploy tests)::

    from testbed import Testbed, TestbedUnavailable

    with Testbed() as tb:                 # built here, torn down at exit
        tb.addr("server")                 # "10.0.1.10"
        p = tb.popen("server", argv, **kw)    # subprocess.Popen in that host
        r = tb.run("client1", argv, timeout=30, **kw)   # CompletedProcess
        tb.cut_link("client1")            # router side of its link down
        tb.restore_link("client1")
        tb.loss(5)                        # drop 5 % of routed packets
        tb.clear_loss()
        tb.rate_limit("client1", "1mbit") # tc tbf, both directions
        tb.clear_rate_limit("client1")
        s = tb.connect("client1", "10.0.1.10", 5000)    # a socket made there
        with tb.netns("client2"):         # this thread inside that host's
            ...                           # namespace (sockets made here stay)
        tb.ns("server")                   # "sn4242-server" (ip netns exec)

- ``popen``/``run`` take the keyword arguments of ``subprocess`` and run
  ``ip netns exec <ns> argv``; the pid returned is the program's own (ip
  execs it), so ``p.kill()`` is a kill -9 of that program.
- Teardown (``close()``, the ``with`` exit, and an atexit hook) kills what
  is still running in the namespaces, deletes them, and is idempotent.
  Building first removes leftovers of this prefix and of dead runs (``sn<pid>``
  whose pid no longer exists), so a test killed by -9 leaves nothing behind
  for long.
- ``TestbedUnavailable`` is raised when the machine cannot build it (not
  root, no ``ip`` or ``nft``): tests turn it into conftest.skip_or_fail().

Command line (manual use; the testbed stays up until ``down``)::

    python3 tests/testbed.py up [--prefix sntb]
    sudo ip netns exec sntb-server sensornet-server --listen 10.0.1.10:5000
    sudo ip netns exec sntb-client1 sensornet-client --server 10.0.1.10:5000
    python3 tests/testbed.py down [--prefix sntb]
"""
import argparse
import atexit
import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

HOSTS = {
    # host: (address, prefix length, gateway, router bridge)
    "server": ("10.0.1.10", 24, "10.0.1.1", "br1"),
    "client1": ("10.0.2.11", 24, "10.0.2.1", "br2"),
    "client2": ("10.0.2.12", 24, "10.0.2.1", "br2"),
}
ROUTER = "router"
BRIDGES = {"br1": "10.0.1.1/24", "br2": "10.0.2.1/24"}
NFT_TABLE = "sntb"
# Names this module makes: sn<pid>[n<k>]-<host>.
NAME_RE = re.compile(r"^(sn(\d+)(?:n\d+)?)-(%s)$"
                     % "|".join(list(HOSTS) + [ROUTER]))
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)
_count = [0]


class TestbedUnavailable(Exception):
    """This machine cannot build the testbed (not root, tools missing)."""

    __test__ = False  # not a pytest test class


def _sh(argv, check=True, input=None, timeout=30):
    r = subprocess.run(argv, capture_output=True, input=input,
                       timeout=timeout, stdin=None if input else
                       subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise RuntimeError("%s: exit %d: %s" % (
            " ".join(argv), r.returncode,
            (r.stderr or r.stdout).decode("utf-8", "replace").strip()))
    return r


def _list_netns():
    r = _sh(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in r.stdout.decode().splitlines()
            if line.strip()]


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_netns_pids(name):
    """SIGKILL whatever still runs in namespace name (started by us)."""
    r = _sh(["ip", "netns", "pids", name], check=False)
    for tok in r.stdout.decode().split():
        try:
            os.kill(int(tok), signal.SIGKILL)
        except (ValueError, ProcessLookupError):
            pass


def _delete_netns(name):
    _kill_netns_pids(name)
    _sh(["ip", "netns", "del", name], check=False)


def _setns(fd):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "setns: " + os.strerror(e))


def check_available():
    """Raise TestbedUnavailable with the reason if the testbed cannot be
    built here."""
    if os.geteuid() != 0:
        raise TestbedUnavailable("the testbed needs root (network "
                                 "namespaces)")
    for tool, pkg in (("ip", "iproute2"), ("nft", "nftables"),
                      ("tc", "iproute2")):
        if shutil.which(tool) is None:
            raise TestbedUnavailable("%s not found (apt-get install %s)"
                                     % (tool, pkg))


def sweep(prefix=None):
    """Delete namespaces of this module whose run is dead (or, with prefix,
    those of that prefix). Returns the names deleted."""
    gone = []
    for name in _list_netns():
        m = NAME_RE.match(name)
        if prefix is not None:
            if name.startswith(prefix + "-"):
                _delete_netns(name)
                gone.append(name)
            continue
        if m and not _pid_alive(int(m.group(2))):
            _delete_netns(name)
            gone.append(name)
    return gone


class Testbed:
    """The four namespaces and their links; see the module docstring."""

    __test__ = False  # not a pytest test class

    def __init__(self, prefix=None, build=True):
        if prefix is None:
            _count[0] += 1
            prefix = "sn%d" % os.getpid()
            if _count[0] > 1:
                prefix += "n%d" % _count[0]
        self.prefix = prefix
        self.procs = []
        self._up = False
        if build:
            self.up()

    # ---- names and addresses ---------------------------------------------

    def ns(self, host):
        """The namespace name of host ("server", ..., or "router")."""
        if host != ROUTER and host not in HOSTS:
            raise KeyError(host)
        return "%s-%s" % (self.prefix, host)

    @staticmethod
    def addr(host):
        """The host's address: "10.0.1.10" for "server"."""
        return HOSTS[host][0]

    @staticmethod
    def router_if(host):
        """The router-side interface of host's link ("r-client1")."""
        if host not in HOSTS:
            raise KeyError(host)
        return "r-" + host

    # ---- building and tearing down ------------------------------------------

    def _ip(self, ns, *args):
        return _sh(["ip", "-n", self.ns(ns)] + list(args))

    def up(self):
        """Build the topology (after removing leftovers). Idempotent."""
        if self._up:
            return self
        check_available()
        sweep()
        sweep(self.prefix)
        atexit.register(self.close)
        self._up = True
        try:
            self._build()
        except Exception:
            self.close()
            raise
        return self

    def _build(self):
        r = ROUTER
        for h in [r] + list(HOSTS):
            _sh(["ip", "netns", "add", self.ns(h)])
            self._ip(h, "link", "set", "lo", "up")
        for br, cidr in BRIDGES.items():
            self._ip(r, "link", "add", br, "type", "bridge")
            self._ip(r, "addr", "add", cidr, "dev", br)
            self._ip(r, "link", "set", br, "up")
        for h, (a, plen, gw, br) in HOSTS.items():
            rif = self.router_if(h)
            self._ip(r, "link", "add", rif, "type", "veth", "peer", "name",
                     "eth0", "netns", self.ns(h))
            self._ip(r, "link", "set", rif, "master", br)
            self._ip(r, "link", "set", rif, "up")
            self._ip(h, "addr", "add", "%s/%d" % (a, plen), "dev", "eth0")
            self._ip(h, "link", "set", "eth0", "up")
            self._ip(h, "route", "add", "default", "via", gw)
        self.exec_router(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        # Bridged frames must not go through the IP hooks a second time
        # (br_netfilter): loss applies once, on the routed path.
        for k in ("iptables", "ip6tables", "arptables"):
            self.exec_router(["sysctl", "-qw",
                              "net.bridge.bridge-nf-call-%s=0" % k],
                             check=False)
        self._nft("add table inet %s\n"
                  "add chain inet %s lossy { type filter hook forward "
                  "priority 0; policy accept; }\n" % (NFT_TABLE, NFT_TABLE))

    def close(self):
        """Kill what runs in the namespaces and delete them. Idempotent."""
        for p in self.procs:
            if p.poll() is None:
                try:
                    p.kill()
                except ProcessLookupError:
                    pass
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self.procs = []
        if not self._up:
            return
        for h in list(HOSTS) + [ROUTER]:
            _delete_netns(self.ns(h))
        self._up = False
        try:
            atexit.unregister(self.close)
        except Exception:
            pass

    down = close

    def __enter__(self):
        return self.up()

    def __exit__(self, *exc):
        self.close()
        return False

    # ---- running programs ---------------------------------------------------

    def _argv(self, host, argv):
        return ["ip", "netns", "exec", self.ns(host)] + list(argv)

    def popen(self, host, argv, **kw):
        """subprocess.Popen(argv) inside host; stdin defaults to /dev/null.
        Killed at teardown if still running."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(self._argv(host, argv), **kw)
        self.procs.append(p)
        return p

    def run(self, host, argv, timeout=60, check=False, **kw):
        """subprocess.run(argv) inside host, output captured unless stdout
        or stderr are given."""
        if "stdout" not in kw and "stderr" not in kw:
            kw["capture_output"] = True
        kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.run(self._argv(host, argv), timeout=timeout,
                              check=check, **kw)

    def exec_router(self, argv, check=True, input=None):
        return _sh(self._argv(ROUTER, argv), check=check, input=input)

    @contextlib.contextmanager
    def netns(self, host):
        """Run the body with this thread in host's network namespace;
        sockets created there keep it after the body."""
        orig = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            target = os.open("/run/netns/" + self.ns(host), os.O_RDONLY)
            try:
                _setns(target)
                try:
                    yield
                finally:
                    _setns(orig)
            finally:
                os.close(target)
        finally:
            os.close(orig)

    def connect(self, host, addr, port, timeout=5.0):
        """A TCP socket connected from host to (addr, port)."""
        with self.netns(host):
            s = socket.create_connection((addr, port), timeout)
        s.settimeout(timeout)
        return s

    # ---- faults -------------------------------------------------------------

    def cut_link(self, host):
        """Down the router side of host's link: its packets go nowhere, its
        own interface and routes stay (as when a cable is pulled upstream)."""
        self._ip(ROUTER, "link", "set", self.router_if(host), "down")

    def restore_link(self, host):
        self._ip(ROUTER, "link", "set", self.router_if(host), "up")

    def _nft(self, script):
        self.exec_router(["nft", "-f", "-"], input=script.encode())

    def loss(self, percent):
        """Drop percent % of the packets the router forwards (each
        direction, independently), until clear_loss()."""
        if not 0 <= percent <= 100:
            raise ValueError(percent)
        self._nft("flush chain inet %s lossy\n"
                  "add rule inet %s lossy numgen random mod 100 < %d "
                  "drop\n"
                  % (NFT_TABLE, NFT_TABLE, int(percent)))

    def clear_loss(self):
        self._nft("flush chain inet %s lossy\n" % NFT_TABLE)

    def rate_limit(self, host, rate, burst="32kbit", latency="400ms"):
        """Limit host's link to rate (tc syntax: "1mbit") in both
        directions with a token bucket (tc tbf)."""
        for ns, dev in ((ROUTER, self.router_if(host)), (host, "eth0")):
            _sh(["ip", "netns", "exec", self.ns(ns), "tc", "qdisc",
                 "replace", "dev", dev, "root", "tbf", "rate", rate,
                 "burst", burst, "latency", latency])

    def clear_rate_limit(self, host):
        for ns, dev in ((ROUTER, self.router_if(host)), (host, "eth0")):
            _sh(["ip", "netns", "exec", self.ns(ns), "tc", "qdisc", "del",
                 "dev", dev, "root"], check=False)


def wait_port(tb, host, addr, port, timeout=15.0):
    """Poll until a TCP connect from host to (addr, port) succeeds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            tb.connect(host, addr, port, 1.0).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="sensornet's multi-host testbed (network namespaces)")
    ap.add_argument("cmd", choices=["up", "down", "status"])
    ap.add_argument("--prefix", default="sntb",
                    help="namespace name prefix (default sntb)")
    a = ap.parse_args(argv)
    try:
        check_available()
    except TestbedUnavailable as e:
        print("testbed: %s" % e, file=sys.stderr)
        return 1
    if a.cmd == "up":
        tb = Testbed(prefix=a.prefix, build=False)
        tb.up()
        atexit.unregister(tb.close)  # stays up until "down"
        for h in HOSTS:
            print("%-8s %-10s ip netns exec %s ..." % (h, tb.addr(h),
                                                      tb.ns(h)))
        print("router   10.0.1.1 10.0.2.1 ip netns exec %s ..."
              % tb.ns(ROUTER))
        return 0
    if a.cmd == "down":
        gone = sweep(a.prefix) + sweep()
        print("removed: %s" % (" ".join(gone) or "nothing"))
        return 0
    names = [n for n in _list_netns()
             if n.startswith(a.prefix + "-") or NAME_RE.match(n)]
    print("\n".join(names) or "no testbed namespaces")
    return 0


if __name__ == "__main__":
    sys.exit(main())
