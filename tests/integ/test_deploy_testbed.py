"""deploy/bootstrap.sh for real, on the multi-host testbed (tests/testbed.py),
then the scale-out stack emulated on this machine.

1. The original topology: the three bootstraps of deploy/aws/
   infraestrutura.yaml start at once, as the three instances do, each on its
   host (server 10.0.1.10, client1 10.0.2.11, client2 10.0.2.12), with the
   arguments its UserData passes, from a local `make dist` tarball into its
   own prefix (no systemd here: bootstrap's background mode), the
   CloudFormation signals going to a fake AWS CLI. The clients start before
   the server is up and wait for it. It ends with the original's lines in
   the server's log.txt and the readings in its database. Twice: with the
   template's defaults, TLS and tokens on (the master secret and the CA's
   SSM parameter kept by the fake AWS CLI: the server publishes the CA
   there, the clients wait for it; a client with a wrong token is refused),
   and with EnableTls=false and EnableTokens=false (clear text, what the
   original Python clients need).

2. The scale-out stack (deploy/aws/scale.yaml): HAProxy in TCP mode stands
   in for the NLB in front of three collectors, bootstrapped with the
   collectors' UserData arguments (the database password and the tokens'
   master secret from the fake Secrets Manager; HAProxy checks GET /healthz
   on each collector's HTTP port, as the NLB does), one real PostgreSQL,
   and the load instance's
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
import sqlite3
import subprocess
import sys
import tempfile

import pytest

from conftest import BUILD, ROOT, skip_or_fail, wait_until
from pg import pg  # noqa: F401 (the fixture)

sys.path.insert(0, os.path.join(ROOT, "tests", "deploy"))
import cfn_check  # noqa: E402
from deploylib import (Host, fake_aws_env, fake_key, free_port,  # noqa: E402
                       make_dist, pid_alive, remove, sensor_token, set_arg,
                       shared_tmp, stage0_args, tls_support)

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


MASTER = "testbedMasterSecret0123456789abcdefABCDEF0123456789abcdefXY"

# The other side of each Fn::If of the templates' UserData maps: what the
# instances get with EnableTls=false and EnableTokens=false.
PLAIN = {"--tls": "off", "--tls-publish-ssm": "", "--tls-ca-ssm": "",
         "--token-secret": ""}

REFUSED_PROBE = r"""
import socket, ssl, sys
host, ca, token = sys.argv[1], sys.argv[2], sys.argv[3]
def talk(lines):
    s = socket.create_connection((host, 5000), timeout=10)
    s = ssl.create_default_context(cafile=ca).wrap_socket(
        s, server_hostname=host)
    f = s.makefile("rb")
    for ln in lines:
        s.sendall(ln.encode() + b"\n")
        print(f.readline().decode().rstrip("\n"))
    s.close()
talk(["AUTH Sensor1 " + token])
talk(["Sensor1 - Temperatura: 99.25\u00b0C"])
"""


def plain_args(args):
    for opt, value in PLAIN.items():
        if opt in args:
            args = set_arg(args, opt, value)
    return args


@pytest.mark.parametrize("mode", ["tls+tokens", "plain"])
def test_original_topology_on_the_testbed(testbed, dist, mode):
    tb = testbed
    secure = mode == "tls+tokens"
    if secure:
        why = tls_support(BUILD)
        if why:
            skip_or_fail(why)
    args = template_args("infraestrutura.yaml")
    assert set(args) == {"EC2Server", "EC2Client1", "EC2Client2"}
    if not secure:
        args = {k: plain_args(v) for k, v in args.items()}
    base = shared_tmp()
    aws_dir = os.path.join(base, "aws")
    os.mkdir(aws_dir)
    # What CloudFormation makes: the generated master secret, the CA
    # parameter at its initial value.
    with open(os.path.join(aws_dir, "secret-X_TokenSecret"), "w") as f:
        f.write(MASTER)
    param = os.path.join(aws_dir, "param-" + fake_key("X_CaCertParameter"))
    with open(param, "w") as f:
        f.write("pending")
    aws_log = os.path.join(base, "aws.log")
    env = fake_aws_env(aws_log, aws_dir=aws_dir)
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
        assert ("tokens " in conf) == secure
        assert ("tls-cert " in conf) == secure
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
        # Stored, not only logged.
        db = srv.path("var", "lib", "sensornet", "sensornet.db")

        def stored(sensor):
            with sqlite3.connect("file:%s?mode=ro" % db, uri=True,
                                 timeout=5) as c:
                return c.execute(
                    "SELECT count(*) FROM readings r JOIN series s "
                    "ON s.id = r.series_id WHERE s.sensor = ?",
                    (sensor,)).fetchone()[0]
        for sensor in ("Sensor1", "Sensor2"):
            wait_until(lambda: stored(sensor) > 0, 20,
                       what="%s's readings in the database" % sensor)
        # Each instance signalled its CreationPolicy once, with success.
        with open(aws_log) as f:
            calls = f.read().splitlines()
        signals = [c for c in calls if "signal-resource" in c]
        assert sorted(re.search(r"--logical-resource-id (\w+)", c).group(1)
                      for c in signals) == sorted(hosts)
        assert all("--status SUCCESS" in c for c in signals), calls
        if secure:
            # The CA went through the parameter; the clients trust it.
            ca = srv.path("etc", "sensornet", "tls", "ca.crt")
            with open(ca) as f, open(param) as g:
                assert g.read().strip() == f.read().strip()
            for lid in ("EC2Client1", "EC2Client2"):
                with open(machines[lid].path("etc", "sensornet",
                                             "ca.crt")) as f, open(ca) as g:
                    assert f.read().strip() == g.read().strip()
            # A wrong token is refused, and unauthenticated data neither
            # stored nor logged.
            wrong = sensor_token(MASTER + "x", "Sensor1")
            p = tb.popen("client1", [sys.executable, "-c", REFUSED_PROBE,
                                     "10.0.1.10", ca, wrong],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
            out, err = p.communicate(timeout=30)
            assert p.returncode == 0, err
            replies = out.splitlines()
            assert replies[0] == "AUTH ERR bad credentials", out
            assert "not authenticated" in replies[1], out
            assert "99.25" not in srv.log()
        else:
            assert not any("get-secret-value" in c or "ssm " in c
                           for c in calls), calls
        for m in machines.values():
            out = "".join(m.out(u) for u in m.pids())
            assert "AddressSanitizer" not in out
    finally:
        for m in machines.values():
            m.stop()
        remove(base)


HAPROXY_CFG = """\
# The NLB's stand-in: TCP, round robin, health checks (GET /healthz on
# each collector's HTTP port, as the target group does), the NLB's 350 s
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
    option httpchk GET /healthz
    http-check expect status 200
{servers}
"""


def test_scale_out_emulated(dist, pg):
    if shutil.which("haproxy") is None:
        skip_or_fail("haproxy not installed (Debian: apt-get install "
                     "haproxy)")
    args = template_args("scale.yaml")
    assert set(args) == {"Collectors", "LoadInstance"}
    # Tokens as the template has them (the collectors list Sensor1-1 ..
    # Sensor1-200, the load instance computes each one's token), once the
    # client can send them; TLS is off by default (no TlsCertificateArn:
    # HAProxy in TCP mode stands in for the TCP listener).
    tokens = tls_support(BUILD) is None
    # TlsOn's other side (no TlsCertificateArn): the default.
    args = {k: set_arg(v, "--tls", "off") for k, v in args.items()}
    if not tokens:
        args = {k: set_arg(v, "--token-secret", "")
                for k, v in args.items()}
    base = shared_tmp()
    aws_dir = os.path.join(base, "aws")
    os.mkdir(aws_dir)
    with open(os.path.join(aws_dir, "secret-X_TokenSecret"), "w") as f:
        f.write(MASTER)
    aws_log = os.path.join(base, "aws.log")
    env = fake_aws_env(aws_log, secret='{"username": "postgres", '
                                       '"password": "unused-trust"}',
                       aws_dir=aws_dir)
    work = os.path.join(base, "src")  # one build for the four installs
    # The collectors' UserData arguments, with the database's address.
    col_args = [{
        "X_Database_MasterUserSecret_SecretArn": "arn:db-secret",
        "X_Database_Endpoint_Address": "127.0.0.1",
        "X_Database_Endpoint_Port": str(pg.port)}.get(a, a)
        for a in args["Collectors"]]
    assert "--pg-secret" in col_args and "arn:db-secret" in col_args
    assert col_args[col_args.index("--token-sensor") + 1] == "Sensor1,200"
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
            # One host here: each collector's HTTP port (8080 on AWS) is
            # its own.
            c.http = free_port()
            c.bootstrap(*(set_arg(col_args, "--http-port", str(c.http))
                          + ["--listen", listen, "--pg-sslmode", "prefer"]))
            c.listen = listen
            if tokens:
                tf = c.read("etc", "sensornet", "tokens")
                assert len([ln for ln in tf.splitlines()
                            if ln.startswith("Sensor1-")]) == sensors
            collectors.append(c)
        front = "127.0.0.10:%d" % free_port("127.0.0.10")
        servers = "\n".join(
            "    server c%d %s check port %d inter 300ms fall 2 rise 1 "
            "on-marked-down shutdown-sessions" % (i, c.listen, c.http)
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
