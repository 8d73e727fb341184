"""--tokens: only sensors with a token write, and only their own readings
(docs/protocol.md 8, docs/security.md)."""
import hashlib
import signal
import sqlite3
import subprocess
import urllib.error
import urllib.request

from conftest import SERVER, LineConn, get_port, wait_until

TOKEN1 = "3q2Hk9d0vYwPZ7c1eF4uJ8xLmN5sTaBg"
TOKEN2 = "Zr8yXo1Qw2Ue3Ti4Op5As6Df7Gh8Jk9L"


def tokens_file(tmp_path):
    f = tmp_path / "tokens"
    f.write_text("# sensor token\nSensor1 %s\nSensor2 sha256:%s\n"
                 % (TOKEN1, hashlib.sha256(TOKEN2.encode()).hexdigest()))
    f.chmod(0o600)        # plain tokens must not be readable by others
    return str(f)


def stored(srv, sensor):
    con = sqlite3.connect("file:%s?mode=ro" % srv.db_path, uri=True)
    try:
        return con.execute("SELECT count(*) FROM readings r JOIN series s"
                           " ON s.id = r.series_id WHERE s.sensor = ?",
                           (sensor,)).fetchone()[0]
    finally:
        con.close()


def test_line_port_needs_auth_and_own_sensor(server, tmp_path):
    srv = server("--tokens", tokens_file(tmp_path))
    c = LineConn(srv.connect())
    c.send("Sensor1 - Temperatura: 20C\n")
    assert c.readline() == "ERR 1 not authenticated"
    c.send("AUTH Sensor1 %s\n" % TOKEN1)
    assert c.readline() == "AUTH OK"
    c.send("Sensor1 - Temperatura: 21C\n"
           "Sensor2 - Umidade: 50%\n"
           "m,sensor=Sensor1 temperature=22 1700000000000000000\n")
    assert c.wait_ok(2) == ["ERR 3 sensor not allowed"]
    c.send("AUTH Sensor2 %s\n" % TOKEN2)
    assert c.readline() == "AUTH ERR already authenticated"
    assert stored(srv, "Sensor1") == 2
    assert stored(srv, "Sensor2") == 0
    log = srv.log_text()
    assert "Temperatura: 20" not in log       # strangers are not logged


def test_hashed_token_and_bad_token(server, tmp_path):
    srv = server("--tokens", tokens_file(tmp_path))
    c = LineConn(srv.connect())
    c.send("AUTH Sensor2 %s\nSensor2 - Umidade: 50%%\n" % TOKEN2)
    assert c.readline() == "AUTH OK"
    assert c.wait_ok(1) == []
    bad = LineConn(srv.connect())
    bad.send("AUTH Sensor1 wrong-token\nSensor1 - Temperatura: 20C\n")
    assert bad.readline() == "AUTH ERR bad credentials"
    bad.s.settimeout(5)
    assert bad.s.recv(100) == b""             # closed: one guess each
    assert stored(srv, "Sensor1") == 0


def test_auth_without_tokens_is_accepted(server):
    srv = server()
    c = LineConn(srv.connect())
    c.send("AUTH Sensor1 anything\nSensor1 - Temperatura: 20C\n")
    assert c.readline() == "AUTH OK"
    assert c.wait_ok(1) == []


def test_write_endpoint_needs_bearer(server, tmp_path):
    port = get_port()
    srv = server("--tokens", tokens_file(tmp_path),
                 "--http", "127.0.0.1:%d" % port)
    url = "http://127.0.0.1:%d/write?precision=s" % port
    body = b"m,sensor=Sensor1 temperature=20 1700000000\n"

    def post(data, auth=None):
        req = urllib.request.Request(url, data=data, method="POST")
        if auth:
            req.add_header("Authorization", auth)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    assert post(body)[0] == 401
    assert post(body, "Bearer Sensor1:nope")[0] == 401
    assert post(body, "Bearer Sensor1:%s" % TOKEN1)[0] == 204
    status, msg = post(b"m,sensor=Sensor2 humidity=5 1700000000\n",
                       "Bearer Sensor1:%s" % TOKEN1)
    assert status == 400 and b"sensor not allowed" in msg, msg
    assert stored(srv, "Sensor1") == 1
    assert stored(srv, "Sensor2") == 0


def test_bad_tokens_file_is_a_clear_error(tmp_path):
    f = tmp_path / "tokens"
    f.write_text("Sensor1 ok-token-1234567890\nonly-one-word\n")
    f.chmod(0o600)
    r = subprocess.run([SERVER, "--listen", "127.0.0.1:%d" % get_port(),
                        "--tokens", str(f), "--http", "off",
                        "--db", str(tmp_path / "d.db"),
                        "--log", str(tmp_path / "l.txt")],
                       capture_output=True, timeout=30)
    assert r.returncode == 1
    assert b":2" in r.stderr, r.stderr


def test_write_takes_influxdb_1x_credentials(server, tmp_path):
    """InfluxDB 1.x clients: HTTP Basic (Telegraf's influxdb output, curl
    -u) and the u/p query parameters, sensor id as the user name."""
    port = get_port()
    srv = server("--tokens", tokens_file(tmp_path),
                 "--http", "127.0.0.1:%d" % port)
    base = "http://127.0.0.1:%d/write?precision=s" % port

    def curl(*args):
        r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w",
                            "%{http_code}", "--data-binary", "@-"]
                           + list(args), input=body, capture_output=True,
                           timeout=30)
        return int(r.stdout)

    body = b"m,sensor=Sensor1 temperature=20 1700000000\n"
    assert curl("-u", "Sensor1:%s" % TOKEN1, base) == 204
    body = b"m,sensor=Sensor1 temperature=21 1700000001\n"
    assert curl("-u", "Sensor1:wrong-token-0123456789", base) == 401
    assert curl(base + "&u=Sensor1&p=" + TOKEN1) == 204
    body = b"m,sensor=Sensor2 humidity=50 1700000002\n"
    assert curl(base + "&u=Sensor2&p=" + TOKEN1) == 401
    assert curl(base + "&u=Sensor2&p=" + TOKEN2) == 204
    assert curl(base + "&u=Sensor2") == 401
    assert stored(srv, "Sensor1") == 2
    assert stored(srv, "Sensor2") == 1


def test_sighup_reloads_tokens(server, tmp_path):
    """Rotation without a restart: SIGHUP reads the file again; a broken
    file keeps the tokens in force and says why."""
    path = tokens_file(tmp_path)
    srv = server("--tokens", path)

    def auth(sensor, token):
        c = LineConn(srv.connect())
        c.send("AUTH %s %s\n" % (sensor, token))
        line = c.readline()
        c.close()
        return line

    assert auth("Sensor1", TOKEN1) == "AUTH OK"
    kept = LineConn(srv.connect())
    kept.send("AUTH Sensor1 %s\n" % TOKEN1)
    assert kept.readline() == "AUTH OK"

    new = "Sensor1 %s\nSensor3 %s\n" % (TOKEN2, TOKEN1)
    (tmp_path / "tokens").write_text(new)
    srv.signal(signal.SIGHUP)
    wait_until(lambda: "tokens reloaded" in srv.stderr(),
               what="tokens reloaded")
    assert auth("Sensor1", TOKEN1) == "AUTH ERR bad credentials"
    assert auth("Sensor1", TOKEN2) == "AUTH OK"
    assert auth("Sensor3", TOKEN1) == "AUTH OK"
    # An authenticated connection stays so (documented).
    kept.send("Sensor1 - Temperatura: 20C\n")
    assert kept.wait_ok(1) == []

    (tmp_path / "tokens").write_text("Sensor1 short\n")
    srv.signal(signal.SIGHUP)
    wait_until(lambda: "tokens not reloaded" in srv.stderr(),
               what="reload refused")
    assert "tokens:1" in srv.stderr() or ":1:" in srv.stderr()
    assert auth("Sensor1", TOKEN2) == "AUTH OK"
