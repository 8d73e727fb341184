"""deploy/bootstrap.sh for real, on the multi-host testbed (tests/testbed.py),
then the scale-out stack emulated on this machine.

1. The original topology: the three bootstraps of deploy/aws/
   infraestrutura.yaml start at once, as the three instances do, each on its
   host (server 10.0.1.10, client1 10.0.2.11, client2 10.0.2.12), with the
   arguments its UserData passes, from a local `make dist` tarball into its
   own prefix (no systemd here: bootstrap's background mode), the
   CloudFormation signals going to a fake AWS CLI. The clients start before
   the server is up and wait for it. It ends with the original's lines in
   the server's log.txt.

2. The scale-out stack (deploy/aws/scale.yaml): HAProxy in TCP mode stands
   in for the NLB in front of three collectors, bootstrapped with the
   collectors' UserData arguments (the database password from the fake
   Secrets Manager), one real PostgreSQL, and the load instance's
   bootstrap with 200 simulated sensors (--count K, InfluxDB line protocol).
   One collector is killed (SIGKILL) mid-run; every reading must be stored
   exactly once: SELECT count(*) = 200 * K. The testbed has a fixed set of
   hosts (server, client1, client2) and no call to add more, so the
   collectors run on distinct loopback addresses, 127.0.0.11 to
   127.0.0.13, with HAProxy on 127.0.0.10 and PostgreSQL on 127.0.0.1.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest

from conftest import ROOT, skip_or_fail, wait_until
from pg import pg  # noqa: F401 (the fixture)

sys.path.insert(0, os.path.join(ROOT, "tests", "deploy"))
import cfn_check  # noqa: E402
from deploylib import (Host, fake_aws_env, free_port, make_dist,  # noqa: E402
                       pid_alive, remove, shared_tmp, stage0_args)

AWS_DIR = os.path.join(ROOT, "deploy", "aws")


@pytest.fixture(scope="module")
def dist():
    d = tempfile.mkdtemp(prefix="sn-dist-")
    try:
        yield make_dist(d)
    finally:
        remove(d)


def template_args(name):
    """{logical id of the signalled resource: bootstrap arguments} of a
    template's UserData (no spec needed to render them)."""
    with open(os.path.join(AWS_DIR, name), encoding="utf-8") as f:
        c = cfn_check.Checker(None, f.read(), name=name, shellcheck=False)
    out = {}
    for lid, _, v in c.userdata_sources():
        script = c.render(v)
        me = re.search(r"(?m)^me=(\w+)$", script).group(1)
        out[me] = stage0_args(script)
    return out


@pytest.fixture
def testbed():
    try:
        from testbed import Testbed, TestbedUnavailable
    except ImportError as e:
        skip_or_fail("tests/testbed.py: %s" % e)
    try:
        tb = Testbed()
    except TestbedUnavailable as e:
        skip_or_fail("testbed: %s" % e)
    try:
        yield tb
    finally:
        tb.close()


def test_original_topology_on_the_testbed(testbed, dist):
    tb = testbed
    args = template_args("infraestrutura.yaml")
    assert set(args) == {"EC2Server", "EC2Client1", "EC2Client2"}
    base = shared_tmp()
    aws_log = os.path.join(base, "aws.log")
    env = fake_aws_env(aws_log)
    hosts = {"EC2Server": "server", "EC2Client1": "client1",
             "EC2Client2": "client2"}
    machines = {}
    try:
        running = {}
        # All three at once, as CloudFormation starts them.
        for lid, host in hosts.items():
            m = Host(base, host, dist, env=env,
                     launch=lambda argv, _h=host, **kw: tb.popen(_h, argv,
                                                                 **kw))
            machines[lid] = m
            running[lid] = m.start(*(args[lid] + [
                "--region", "us-east-1", "--cfn-signal", "stack:" + lid,
                "--ready-timeout", "120"]))
        for lid, p in running.items():
            Host.finish(p, hosts[lid])
        srv = machines["EC2Server"]
        conf = srv.read("etc", "sensornet", "sensornet-server.conf")
        assert "listen 0.0.0.0:5000\n" in conf
        log = srv.log()
        port = r"\d+"
        assert re.search(r"Nova conexão de \('10\.0\.2\.11', %s\)" % port,
                         log), log
        wait_until(lambda: re.search(
            r"Recebido de \('10\.0\.2\.11', %s\): Sensor1 - Temperatura: "
            r"-?\d+(\.\d+)?°C" % port, srv.log()), 20,
            what="Sensor1 from 10.0.2.11 in log.txt")
        wait_until(lambda: re.search(
            r"Recebido de \('10\.0\.2\.12', %s\): Sensor2 - Umidade: "
            r"\d+(\.\d+)?%%" % port, srv.log()), 20,
            what="Sensor2 from 10.0.2.12 in log.txt")
        # Each instance signalled its CreationPolicy once, with success.
        with open(aws_log) as f:
            calls = f.read().splitlines()
        assert sorted(re.search(r"--logical-resource-id (\w+)", c).group(1)
                      for c in calls) == sorted(hosts)
        assert all("--status SUCCESS" in c for c in calls), calls
        for m in machines.values():
            out = "".join(m.out(u) for u in m.pids())
            assert "AddressSanitizer" not in out
    finally:
        for m in machines.values():
            m.stop()
        remove(base)


HAPROXY_CFG = """\
# The NLB's stand-in: TCP, round robin, health checks, the NLB's 350 s
# idle timeout; connections of a collector marked down are closed (as the
# target group's connection_termination does).
global
    maxconn 4000
    nbthread 1
defaults
    mode tcp
    timeout connect 1s
    timeout client 350s
    timeout server 350s
    timeout check 1s
    retries 3
    option redispatch
frontend sensors
    bind {front}
    default_backend collectors
backend collectors
    balance roundrobin
{servers}
"""


def test_scale_out_emulated(dist, pg):
    if shutil.which("haproxy") is None:
        skip_or_fail("haproxy not installed (Debian: apt-get install "
                     "haproxy)")
    args = template_args("scale.yaml")
    assert set(args) == {"Collectors", "LoadInstance"}
    base = shared_tmp()
    aws_log = os.path.join(base, "aws.log")
    env = fake_aws_env(aws_log, secret='{"username": "postgres", '
                                       '"password": "unused-trust"}')
    work = os.path.join(base, "src")  # one build for the four installs
    # The collectors' UserData arguments, with the database's address.
    col_args = [{
        "X_Database_MasterUserSecret_SecretArn": "arn:db-secret",
        "X_Database_Endpoint_Address": "127.0.0.1",
        "X_Database_Endpoint_Port": str(pg.port)}.get(a, a)
        for a in args["Collectors"]]
    assert "--pg-secret" in col_args and "arn:db-secret" in col_args
    collectors = []
    haproxy = None
    hlog = None
    load = None
    sensors, count = 200, 100
    try:
        addrs = ["127.0.0.%d" % i for i in (11, 12, 13)]
        for i, addr in enumerate(addrs, 1):
            c = Host(base, "collector%d" % i, dist, env=env, work=work)
            listen = "%s:%d" % (addr, free_port(addr))
            c.bootstrap(*(col_args + ["--listen", listen,
                                      "--pg-sslmode", "prefer"]))
            c.listen = listen
            collectors.append(c)
        front = "127.0.0.10:%d" % free_port("127.0.0.10")
        servers = "\n".join(
            "    server c%d %s check inter 300ms fall 2 rise 1 "
            "on-marked-down shutdown-sessions" % (i, c.listen)
            for i, c in enumerate(collectors, 1))
        cfg = os.path.join(base, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(HAPROXY_CFG.format(front=front, servers=servers))
        hlog = open(os.path.join(base, "haproxy.log"), "w")
        haproxy = subprocess.Popen(["haproxy", "-db", "-f", cfg],
                                   stdout=hlog, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
        # The load instance's arguments, pointed at the stand-in NLB, with
        # a count so that the run ends.
        load_args = [front if a == "X_LoadBalancer_DNSName:5000" else a
                     for a in args["LoadInstance"]]
        assert load_args[load_args.index("--sensors") + 1] == "200"
        load = Host(base, "load", dist, env=env, work=work)
        load.bootstrap(*(load_args + [
            "--client-arg", "--count", "--client-arg", str(count),
            "--client-arg", "--interval", "--client-arg", "0.05",
            "--client-arg", "--format", "--client-arg", "influx"]))
        total = sensors * count

        def stored():
            return int(pg.sql("SELECT count(*) FROM readings"))
        # Mid-run: kill the first collector the hard way.
        wait_until(lambda: stored() >= total // 5, 60,
                   what="a fifth of the readings stored")
        victim = collectors[0]
        vpid = victim.pids()["sensornet-server"]
        os.kill(vpid, signal.SIGKILL)
        at_kill = stored()
        assert at_kill < total, "the run ended before the kill"
        assert "Recebido de" in victim.log()
        # The load finishes: every sensor had all its readings acked.
        lpid = load.pids()["sensornet-client@load"]
        wait_until(lambda: not pid_alive(lpid), 120,
                   what="the load client to finish")
        out = load.out("sensornet-client@load")
        summary = [ln for ln in out.splitlines()
                   if ln.startswith("sensornet-client: produced=")]
        assert summary, out[-2000:]
        got = dict(kv.split("=", 1) for kv in summary[-1].split()[1:])
        assert (got["acked"], got["refused"], got["pending"]) == \
            (str(total), "0", "0"), summary[-1]
        # Stored exactly once: as many rows as readings, and no sensor with
        # more or fewer than its count.
        assert stored() == total
        per = pg.sql("SELECT count(*) FROM (SELECT s.sensor, count(*) AS n "
                     "FROM readings r JOIN series s ON s.id = r.series_id "
                     "GROUP BY s.sensor) x WHERE n <> %d" % count)
        assert per == "0"
        assert pg.sql("SELECT count(DISTINCT sensor) FROM series") == \
            str(sensors)
        # The survivors took the victim's sensors over.
        for c in collectors[1:]:
            assert pid_alive(c.pids()["sensornet-server"])
            assert "Recebido de" in c.log()
    finally:
        if load is not None:
            load.stop()
        if haproxy is not None:
            haproxy.terminate()
            try:
                haproxy.wait(10)
            except subprocess.TimeoutExpired:
                haproxy.kill()
                haproxy.wait(5)
        if hlog is not None:
            hlog.close()
        for c in collectors:
            c.stop()
        remove(base)
