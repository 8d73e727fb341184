"""TLS on the sensor port, the MQTT port and the HTTP port, and the
client's --tls and --token options (docs/security.md 2 and 4,
docs/client.md). Certificates are made here with the openssl CLI: a CA,
a server certificate for 127.0.0.1 and localhost, client certificates,
another CA, and an expired server certificate."""
import os
import re
import shutil
import socket
import sqlite3
import ssl
import subprocess

import pytest

from conftest import CLIENT, SERVER, LineConn, get_port, skip_or_fail, \
    wait_until

TOKEN1 = "3q2Hk9d0vYwPZ7c1eF4uJ8xLmN5sTaBg"
TOKEN2 = "Zr8yXo1Qw2Ue3Ti4Op5As6Df7Gh8Jk9L"
LINE = "m,sensor=Sensor1 temperature=%d %d000000000\n"

CA_CNF = """[ ca ]
default_ca = sn
[ sn ]
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = any
copy_extensions = copy
unique_subject = no
[ any ]
commonName = supplied
"""


def openssl(cwd, *args):
    if not shutil.which("openssl"):
        skip_or_fail("openssl CLI missing (Debian's openssl)")
    r = subprocess.run(["openssl"] + list(args), cwd=cwd,
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()


def make_ca(d, name):
    openssl(d, "req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:P-256", "-sha256", "-days", "30", "-nodes",
            "-keyout", name + ".key", "-out", name + ".crt",
            "-subj", "/CN=%s" % name)


def make_cert(d, ca, name, cn, ext, expired=False):
    openssl(d, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", name + ".key", "-out", name + ".csr",
            "-subj", "/CN=%s" % cn)
    with open(os.path.join(d, name + ".ext"), "w") as f:
        f.write(ext)
    if not expired:
        openssl(d, "x509", "-req", "-in", name + ".csr", "-CA", ca + ".crt",
                "-CAkey", ca + ".key", "-CAcreateserial", "-days", "30",
                "-sha256", "-out", name + ".crt", "-extfile", name + ".ext")
        return
    # OpenSSL 3.0's x509 cannot back-date: "openssl ca" can.
    with open(os.path.join(d, "ca.cnf"), "w") as f:
        f.write(CA_CNF)
    open(os.path.join(d, "index.txt"), "w").close()
    with open(os.path.join(d, "serial"), "w") as f:
        f.write("1000\n")
    openssl(d, "ca", "-batch", "-config", "ca.cnf", "-cert", ca + ".crt",
            "-keyfile", ca + ".key", "-in", name + ".csr", "-out",
            name + ".crt", "-startdate", "20200101000000Z", "-enddate",
            "20200201000000Z", "-extfile", name + ".ext")


SERVER_EXT = ("subjectAltName=DNS:localhost,IP:127.0.0.1\n"
              "extendedKeyUsage=serverAuth\n")
CLIENT_EXT = "extendedKeyUsage=clientAuth\n"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("pki"))
    make_ca(d, "ca")
    make_ca(d, "other")
    make_cert(d, "ca", "server", "localhost", SERVER_EXT)
    make_cert(d, "ca", "expired", "localhost", SERVER_EXT, expired=True)
    make_cert(d, "ca", "sensor1", "Sensor1", CLIENT_EXT)
    make_cert(d, "other", "stranger", "Sensor1", CLIENT_EXT)
    return lambda name: os.path.join(d, name)


def tls_args(pki, cert="server", ca=False):
    a = ["--tls-cert", pki(cert + ".crt"), "--tls-key", pki(cert + ".key")]
    if ca:
        a += ["--tls-ca", pki("ca.crt")]
    return a


def stored(srv, sensor=None):
    try:
        con = sqlite3.connect("file:%s?mode=ro" % srv.db_path, uri=True,
                              timeout=10)
    except sqlite3.OperationalError:
        return 0
    try:
        q = ("SELECT count(*) FROM readings r JOIN series s"
             " ON s.id = r.series_id")
        if sensor is None:
            return con.execute(q).fetchone()[0]
        return con.execute(q + " WHERE s.sensor = ?",
                           (sensor,)).fetchone()[0]
    except sqlite3.OperationalError:
        return 0                        # not created yet
    finally:
        con.close()


def tls_conn(srv, pki, cert=None, port=None, hostname="127.0.0.1"):
    ctx = ssl.create_default_context(cafile=pki("ca.crt"))
    if cert:
        ctx.load_cert_chain(pki(cert + ".crt"), pki(cert + ".key"))
    s = socket.create_connection(("127.0.0.1", port or srv.port), 10)
    return ctx.wrap_socket(s, server_hostname=hostname)


def summary(proc):
    m = re.search(r"produced=(\d+) acked=(\d+)", proc.stdout())
    assert m, proc.stdout()
    return int(m.group(1)), int(m.group(2))


# ---- the sensor port ---------------------------------------------------------

def test_client_tls_good_chain_stores_and_acks(server, client, pki):
    srv = server(*tls_args(pki))
    c = client(srv, "--tls-ca", pki("ca.crt"), "--id", "Sensor1",
               "--count", "20", "--interval", "0", "--no-spool", "--quiet")
    assert c.wait(60) == 0, c.stderr()
    assert summary(c) == (20, 20)
    assert stored(srv, "Sensor1") == 20
    assert "Conectado a" in c.stdout()
    assert "with TLS" in srv.stderr()


def test_python_ssl_and_name_check(server, pki):
    srv = server(*tls_args(pki))
    t = tls_conn(srv, pki, hostname="localhost")
    assert t.version() in ("TLSv1.2", "TLSv1.3")
    c = LineConn(t)
    c.send(LINE % (20, 1700000000) + "PING\n" + LINE % (21, 1700000001))
    assert c.readline() == "PONG"
    assert c.wait_ok(2) == []
    t.unwrap()
    t.close()
    assert stored(srv, "Sensor1") == 2
    # The certificate names localhost and 127.0.0.1, nothing else.
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_conn(srv, pki, hostname="collector.example")


def test_openssl_s_client(server, pki):
    srv = server(*tls_args(pki))
    r = subprocess.run(["openssl", "s_client", "-connect",
                        "127.0.0.1:%d" % srv.port, "-CAfile", pki("ca.crt"),
                        "-verify_return_error", "-quiet", "-no_ign_eof"],
                       input=(LINE % (20, 1700000000)).encode(),
                       capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    wait_until(lambda: stored(srv, "Sensor1") == 1, what="stored")


def test_wrong_ca_refused_by_client(server, client, pki):
    srv = server(*tls_args(pki))
    c = client(srv, "--tls-ca", pki("other.crt"), "--id", "Sensor1",
               "--interval", "0.05", "--no-spool", "--backoff-max", "0.2")
    wait_until(lambda: "certificate verify failed" in c.stderr(),
               what="the client's refusal")
    wait_until(lambda: "TLS handshake failed" in srv.stderr(),
               what="the server's log line")
    assert "unable to get local issuer certificate" in c.stderr()
    assert "Falha ao conectar" in c.stdout()
    assert "Conectado" not in c.stdout()
    assert c.stop() == 0
    assert summary(c)[1] == 0
    assert stored(srv) == 0


def test_expired_server_certificate_refused(server, client, pki):
    srv = server(*tls_args(pki, cert="expired"))
    c = client(srv, "--tls-ca", pki("ca.crt"), "--id", "Sensor1",
               "--no-spool", "--backoff-max", "0.2")
    wait_until(lambda: "certificate has expired" in c.stderr(),
               what="the client's refusal")
    assert c.stop() == 0
    assert stored(srv) == 0
    with pytest.raises(ssl.SSLCertVerificationError, match="expired"):
        tls_conn(srv, pki)


def test_wrong_server_name_refused(server, client, pki):
    srv = server(*tls_args(pki))
    c = client(srv, "--tls-ca", pki("ca.crt"), "--tls-server-name",
               "collector.example", "--no-spool", "--backoff-max", "0.2")
    wait_until(lambda: "certificate verify failed" in c.stderr(),
               what="the client's refusal")
    assert "hostname mismatch" in c.stderr()
    assert c.stop() == 0
    assert stored(srv) == 0


def test_sighup_reloads_certificate(server, pki, tmp_path):
    """Rotation: new files at the same paths and SIGHUP; new connections
    get the new certificate, the one already open keeps working; a broken
    file is refused and the certificate in use stays."""
    import signal
    d = str(tmp_path)
    cert, key = os.path.join(d, "s.crt"), os.path.join(d, "s.key")
    shutil.copy(pki("server.crt"), cert)
    shutil.copy(pki("server.key"), key)
    srv = server("--tls-cert", cert, "--tls-key", key)
    kept = LineConn(tls_conn(srv, pki))
    kept.send(LINE % (20, 1700000000))
    assert kept.wait_ok(1) == []

    # A certificate for the same names, from another CA.
    make_ca(d, "newca")
    make_cert(d, "newca", "s2", "localhost", SERVER_EXT)
    shutil.copy(os.path.join(d, "s2.crt"), cert)
    shutil.copy(os.path.join(d, "s2.key"), key)
    srv.signal(signal.SIGHUP)
    wait_until(lambda: "TLS certificate reloaded" in srv.stderr(),
               what="the reload")
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_conn(srv, pki)                      # the old CA: refused now
    ctx = ssl.create_default_context(cafile=os.path.join(d, "newca.crt"))

    def send_one_new(v):
        t = ctx.wrap_socket(socket.create_connection(("127.0.0.1",
                                                      srv.port), 10),
                            server_hostname="127.0.0.1")
        c = LineConn(t)
        c.send(LINE % (v, 1700000000 + v))
        assert c.wait_ok(1) == []
        c.close()

    send_one_new(21)
    kept.send(LINE % (22, 1700000002))          # still on the old session
    assert kept.wait_ok(1) == []

    # A key that does not match: refused, the new certificate stays.
    shutil.copy(pki("server.key"), key)
    srv.signal(signal.SIGHUP)
    wait_until(lambda: "certificate not reloaded" in srv.stderr(),
               what="the refusal")
    assert "key values mismatch" in srv.stderr()
    send_one_new(23)
    assert stored(srv, "Sensor1") == 4


def test_plaintext_on_tls_port(server, pki):
    srv = server(*tls_args(pki), "--threads", "1")  # one rate limiter
    for _ in range(3):
        c = LineConn(srv.connect())
        c.send("Sensor1 - Temperatura: 20C\n")
        assert c.readline() == "ERR tls required"
        c.s.settimeout(10)
        assert c.s.recv(100) == b""           # then closed
        c.close()
    # One warning for the three (rate-limited per thread), nothing stored.
    assert srv.stderr().count("plain text on a TLS port") == 1
    assert stored(srv) == 0


def test_partial_line_needs_close_notify(server, pki):
    """A stream cut without close_notify may have been cut by someone on
    the path: the last line without its line end is dropped; with
    close_notify it counts (as on plain TCP)."""
    srv = server(*tls_args(pki))
    t = tls_conn(srv, pki)
    t.sendall((LINE % (1, 1700000001) + LINE % (2, 1700000002))
              .rstrip("\n").encode())
    LineConn(t).wait_ok(1)
    t.close()                                 # no close_notify
    t = tls_conn(srv, pki)
    t.sendall((LINE % (3, 1700000003) + LINE % (4, 1700000004))
              .rstrip("\n").encode())
    LineConn(t).wait_ok(1)
    try:
        t.unwrap()                            # close_notify
    except ssl.SSLError:
        pass        # the last "OK" may follow our close_notify (TLS 1.3)
    t.close()
    wait_until(lambda: stored(srv, "Sensor1") == 3, what="3 rows")
    con = sqlite3.connect("file:%s?mode=ro" % srv.db_path, uri=True)
    vals = sorted(v for (v,) in con.execute("SELECT value FROM readings"))
    con.close()
    assert vals == [1, 3, 4]


def test_handshake_timeout(server, pki):
    srv = server(*tls_args(pki), "--idle-timeout", "1s")
    s = srv.connect()
    s.sendall(b"\x16\x03\x01")                # a record header, then nothing
    s.settimeout(15)
    assert s.recv(100) == b""                 # closed by the server
    s.close()


# ---- client certificates -------------------------------------------------------

def test_client_certificate_required(server, client, pki):
    srv = server(*tls_args(pki, ca=True))
    good = client(srv, "--tls-ca", pki("ca.crt"), "--tls-cert",
                  pki("sensor1.crt"), "--tls-key", pki("sensor1.key"),
                  "--id", "Sensor1", "--count", "5", "--interval", "0",
                  "--no-spool", "--quiet")
    assert good.wait(60) == 0, good.stderr()
    assert stored(srv, "Sensor1") == 5
    bad = client(srv, "--tls-ca", pki("ca.crt"), "--id", "Sensor2",
                 "--interval", "0.05", "--no-spool", "--backoff-max", "0.2")
    wait_until(lambda: "certificate required" in bad.stderr(),
               what="the refusal reaching the client")
    wait_until(lambda: "peer did not return a certificate" in srv.stderr(),
               what="the server's log line")
    assert bad.stop() == 0
    assert stored(srv, "Sensor2") == 0
    # A certificate from another CA is refused as well (TLS 1.3: the
    # alert comes after the client's side of the handshake ended).
    with pytest.raises((ssl.SSLError, ConnectionError)):
        t = tls_conn(srv, pki, cert="stranger")
        t.sendall(LINE.encode() % (1, 1700000000))
        t.recv(100)
    assert stored(srv, "Sensor1") == 5


def test_certificate_cn_authenticates(server, pki, tmp_path):
    f = tmp_path / "tokens"
    f.write_text("Sensor1 %s\nSensor2 %s\n" % (TOKEN1, TOKEN2))
    f.chmod(0o600)
    srv = server(*tls_args(pki, ca=True), "--tokens", str(f))
    c = LineConn(tls_conn(srv, pki, cert="sensor1"))
    c.send(LINE % (20, 1700000000) +
           "m,sensor=Sensor2 temperature=1 1700000000000000000\n")
    assert c.wait_ok(1) == ["ERR 2 sensor not allowed"]
    c.send("AUTH Sensor2 %s\n" % TOKEN2)
    assert c.readline() == "AUTH ERR already authenticated"
    assert stored(srv, "Sensor1") == 1
    assert stored(srv, "Sensor2") == 0


# ---- tokens from the client --------------------------------------------------

def test_client_token(server, client, pki, tmp_path):
    f = tmp_path / "tokens"
    f.write_text("Sensor1 %s\nS-1 %s\nS-2 %s\n" % (TOKEN1, TOKEN1, TOKEN2))
    f.chmod(0o600)
    srv = server(*tls_args(pki), "--tokens", str(f))
    ok = client(srv, "--tls-ca", pki("ca.crt"), "--id", "Sensor1",
                "--token", TOKEN1, "--count", "10", "--interval", "0",
                "--no-spool", "--quiet")
    assert ok.wait(60) == 0, ok.stderr()
    assert stored(srv, "Sensor1") == 10
    bad = client(srv, "--tls-ca", pki("ca.crt"), "--id", "Sensor1",
                 "--token", TOKEN2, "--count", "10", "--no-spool")
    assert bad.wait(60) == 1
    assert "AUTH ERR bad credentials" in bad.stderr()
    assert summary(bad)[1] == 0
    assert stored(srv, "Sensor1") == 10
    # --sensors with a token file: S-1 and S-2 each with its own.
    tf = tmp_path / "client-tokens"
    tf.write_text("# id token\nS-1 %s\nS-2 %s\n" % (TOKEN1, TOKEN2))
    tf.chmod(0o600)
    many = client(srv, "--tls-ca", pki("ca.crt"), "--id", "S",
                  "--sensors", "2", "--token-file", str(tf), "--count", "3",
                  "--interval", "0", "--no-spool", "--quiet")
    assert many.wait(60) == 0, many.stderr()
    assert stored(srv, "S-1") == 3 and stored(srv, "S-2") == 3


def test_client_token_plain_tcp(server, client, tmp_path):
    f = tmp_path / "tokens"
    f.write_text("Sensor1 %s\n" % TOKEN1)
    f.chmod(0o600)
    srv = server("--tokens", str(f))
    ok = client(srv, "--id", "Sensor1", "--token", TOKEN1, "--count", "3",
                "--interval", "0", "--no-spool", "--quiet", "--format",
                "text")
    assert ok.wait(60) == 0, ok.stderr()
    assert stored(srv, "Sensor1") == 3


def test_client_option_errors(tmp_path, pki):
    def run(*args):
        return subprocess.run([CLIENT, "--no-spool"] + list(args),
                              capture_output=True, timeout=30)
    r = run("--token", "short")
    assert r.returncode == 2 and b"--token" in r.stderr
    r = run("--token", TOKEN1, "--format", "original")
    assert r.returncode == 2 and b"original" in r.stderr
    r = run("--tls-cert", pki("sensor1.crt"))
    assert r.returncode == 2 and b"--tls-key" in r.stderr
    r = run("--tls-ca", str(tmp_path / "missing.crt"), "--count", "1")
    assert r.returncode == 2 and b"missing.crt" in r.stderr, r.stderr
    tf = tmp_path / "t"
    tf.write_text("Other %s\n" % TOKEN1)
    tf.chmod(0o644)
    r = run("--token-file", str(tf), "--count", "1")
    assert r.returncode == 2 and b"chmod 600" in r.stderr, r.stderr
    tf.chmod(0o600)
    r = run("--token-file", str(tf), "--count", "1")
    assert r.returncode == 2 and b"no token for sensor Sensor1" in r.stderr


def test_server_tls_file_errors(tmp_path, pki):
    def run(*args):
        return subprocess.run([SERVER, "--listen", "127.0.0.1:%d" % get_port(),
                               "--http", "off", "--db", str(tmp_path / "d"),
                               "--log", "off"] + list(args),
                              capture_output=True, timeout=30)
    r = run("--tls-cert", pki("server.crt"), "--tls-key",
            str(tmp_path / "nokey.pem"))
    assert r.returncode == 2 and b"nokey.pem" in r.stderr, r.stderr
    r = run("--tls-cert", pki("server.crt"), "--tls-key",
            pki("sensor1.key"))
    assert r.returncode == 2 and b"mismatch" in r.stderr, r.stderr
    r = run("--tls-cert", pki("ca.key"), "--tls-key", pki("ca.key"))
    assert r.returncode == 2 and b"ca.key" in r.stderr, r.stderr
    r = run("--tls-cert", pki("server.crt"), "--tls-key", pki("server.key"),
            "-t")
    assert r.returncode == 0, r.stderr


# ---- HTTPS and MQTT over TLS ----------------------------------------------------

def curl(*args):
    if not shutil.which("curl"):
        skip_or_fail("curl missing")
    return subprocess.run(["curl", "-sS", "--max-time", "20"] + list(args),
                          capture_output=True, timeout=60)


def test_https_healthz(server, pki):
    port = get_port()
    server(*tls_args(pki), "--http", "127.0.0.1:%d" % port)
    r = curl("--cacert", pki("ca.crt"), "https://127.0.0.1:%d/healthz" % port)
    assert r.returncode == 0, r.stderr
    assert b'"ok"' in r.stdout
    r = curl("http://127.0.0.1:%d/healthz" % port)
    assert r.returncode != 0                  # plain HTTP gets no answer
    r = curl("--cacert", pki("other.crt"),
             "https://127.0.0.1:%d/healthz" % port)
    assert r.returncode == 60, r.stderr       # server certificate refused


def test_https_client_certificate(server, pki):
    port = get_port()
    server(*tls_args(pki, ca=True), "--http", "127.0.0.1:%d" % port)
    url = "https://127.0.0.1:%d/healthz" % port
    r = curl("--cacert", pki("ca.crt"), "-o", "/dev/null", "-w",
             "%{http_code}", url)
    assert r.stdout == b"403"
    r = curl("--cacert", pki("ca.crt"), "--cert", pki("stranger.crt"),
             "--key", pki("stranger.key"), "-o", "/dev/null", "-w",
             "%{http_code}", url)
    assert r.stdout == b"403"
    r = curl("--cacert", pki("ca.crt"), "--cert", pki("sensor1.crt"),
             "--key", pki("sensor1.key"), url)
    assert r.returncode == 0 and b'"ok"' in r.stdout, r.stderr


def test_mqtt_over_tls(server, pki):
    pub = shutil.which("mosquitto_pub")
    if pub is None:
        skip_or_fail("mosquitto_pub missing (Debian's mosquitto-clients)")
    mport = get_port()
    srv = server(*tls_args(pki), "--mqtt-listen", "127.0.0.1:%d" % mport)
    for port in (mport, srv.port):
        r = subprocess.run([pub, "-V", "mqttv311", "-h", "127.0.0.1", "-p",
                            str(port), "--cafile", pki("ca.crt"), "-q", "1",
                            "-i", "tls-%d" % port, "-t",
                            "sensors/Sensor1/temperature", "-m", "21.5"],
                           capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
    wait_until(lambda: stored(srv, "Sensor1") == 2, what="2 rows")
    # Plain MQTT to the TLS port is refused like any plain text.
    r = subprocess.run([pub, "-V", "mqttv311", "-h", "127.0.0.1", "-p",
                        str(mport), "-q", "1", "-t",
                        "sensors/Sensor1/temperature", "-m", "1"],
                       capture_output=True, timeout=60)
    assert r.returncode != 0
    assert stored(srv, "Sensor1") == 2


def test_mqtt_with_certificate_and_tokens(server, pki, tmp_path):
    """With --tls-ca and --tokens an MQTT client on the sensor port has a
    certificate identity first, then CONNECT's: CONNECT decides (and the
    first is freed: the sanitizer build checks)."""
    pub = shutil.which("mosquitto_pub")
    if pub is None:
        skip_or_fail("mosquitto_pub missing (Debian's mosquitto-clients)")
    f = tmp_path / "tokens"
    f.write_text("Sensor1 %s\n" % TOKEN1)
    f.chmod(0o600)
    srv = server(*tls_args(pki, ca=True), "--tokens", str(f))
    base = [pub, "-V", "mqttv311", "-h", "127.0.0.1", "-p", str(srv.port),
            "--cafile", pki("ca.crt"), "--cert", pki("sensor1.crt"),
            "--key", pki("sensor1.key"), "-q", "1", "-t",
            "sensors/Sensor1/temperature", "-m", "20"]
    r = subprocess.run(base + ["-u", "Sensor1", "-P", TOKEN1],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(base, capture_output=True, timeout=60)
    assert r.returncode != 0                   # no password: CONNACK 5
    wait_until(lambda: stored(srv, "Sensor1") == 1, what="1 row")
