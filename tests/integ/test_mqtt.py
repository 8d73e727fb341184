"""MQTT 3.1.1 into the collector (docs/protocol.md 7): real clients
(mosquitto_pub from mosquitto-clients, paho from python3-paho-mqtt) and raw
packets, on --mqtt-listen and on the sensor port (detected by the first
byte), checked against the SQLite rows and log.txt."""
import shutil
import socket
import sqlite3
import struct
import subprocess
import threading
import time

import pytest

from conftest import get_port, skip_or_fail, wait_until

MOSQUITTO_PUB = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"
TOKEN1 = "3q2Hk9d0vYwPZ7c1eF4uJ8xLmN5sTaBg"
TOKEN2 = "Zr8yXo1Qw2Ue3Ti4Op5As6Df7Gh8Jk9L"

CONNACK_OK = b"\x20\x02\x00\x00"


# ---- raw MQTT packets ------------------------------------------------------

def varint(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(first, body):
    return bytes([first]) + varint(len(body)) + body


def mstr(x):
    if isinstance(x, str):
        x = x.encode()
    return struct.pack(">H", len(x)) + x


def connect(client_id="raw", keepalive=60, user=None, password=None,
            level=4):
    flags = 0x02                        # clean session
    if user is not None:
        flags |= 0x80
    if password is not None:
        flags |= 0x40
    body = (mstr("MQTT") + bytes([level, flags])
            + struct.pack(">H", keepalive) + mstr(client_id))
    if user is not None:
        body += mstr(user)
    if password is not None:
        body += mstr(password)
    return packet(0x10, body)


def publish(topic, payload, qos=0, pid=0):
    if isinstance(payload, str):
        payload = payload.encode()
    body = mstr(topic)
    if qos:
        body += struct.pack(">H", pid)
    return packet(0x30 | (qos << 1), body + payload)


def puback(pid):
    return b"\x40\x02" + struct.pack(">H", pid)


PINGREQ = b"\xc0\x00"
PINGRESP = b"\xd0\x00"
DISCONNECT = b"\xe0\x00"


class Raw:
    """A raw MQTT connection that reads whole packets."""

    def __init__(self, port, timeout=10):
        self.s = socket.create_connection(("127.0.0.1", port), timeout)
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def _fill(self, n, timeout):
        deadline = time.monotonic() + timeout
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no reply within %ss (have %r)"
                                     % (timeout, self.buf))
            self.s.settimeout(left)
            try:
                chunk = self.s.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                raise AssertionError("connection closed (have %r)"
                                     % self.buf)
            self.buf += chunk

    def read_packet(self, timeout=10):
        """One whole packet's bytes."""
        self._fill(2, timeout)
        n, mult, i = 0, 1, 1
        while True:
            self._fill(i + 1, timeout)
            b = self.buf[i]
            n += (b & 0x7F) * mult
            mult *= 128
            i += 1
            if not b & 0x80:
                break
        self._fill(i + n, timeout)
        p, self.buf = self.buf[:i + n], self.buf[i + n:]
        return p

    def closed(self, timeout=10):
        """True once the server closes; what it sent before must be
        nothing (violations are closed without an answer)."""
        deadline = time.monotonic() + timeout
        got = self.buf
        while time.monotonic() < deadline:
            self.s.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = self.s.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                return got
            if not chunk:
                return got
            got += chunk
        raise AssertionError("still open after %ss" % timeout)

    def close(self):
        self.s.close()


def connected(port, **kw):
    c = Raw(port)
    c.send(connect(**kw))
    assert c.read_packet() == CONNACK_OK
    return c


# ---- the server and its database -------------------------------------------

def mqtt_server(server, *args):
    mport = get_port()
    srv = server("--mqtt-listen", "127.0.0.1:%d" % mport, *args)
    srv.mqtt_port = mport
    return srv


def rows(srv, sensor=None):
    con = sqlite3.connect("file:%s?mode=ro" % srv.db_path, uri=True,
                          timeout=10)
    try:
        q = ("SELECT s.sensor, s.quantity, s.unit, r.value FROM readings r"
             " JOIN series s ON s.id = r.series_id")
        if sensor is None:
            return con.execute(q).fetchall()
        return con.execute(q + " WHERE s.sensor = ?", (sensor,)).fetchall()
    except sqlite3.OperationalError:
        return []                      # not created yet
    finally:
        con.close()


def mosquitto_pub(port, *args):
    if not shutil.which(MOSQUITTO_PUB):
        skip_or_fail("mosquitto_pub missing (Debian's mosquitto-clients)")
    return subprocess.run([MOSQUITTO_PUB, "-V", "mqttv311", "-h",
                           "127.0.0.1", "-p", str(port)] + list(args),
                          capture_output=True, timeout=60)


def paho_client(client_id):
    try:
        import paho.mqtt.client as mqtt
    except ImportError:
        skip_or_fail("paho missing (Debian's python3-paho-mqtt)")
    kw = {"client_id": client_id, "protocol": mqtt.MQTTv311}
    if hasattr(mqtt, "CallbackAPIVersion"):         # paho 2.x
        kw["callback_api_version"] = mqtt.CallbackAPIVersion.VERSION1
    return mqtt, mqtt.Client(**kw)


def tokens_file(tmp_path):
    f = tmp_path / "tokens"
    f.write_text("Sensor1 %s\nSensor2 %s\n" % (TOKEN1, TOKEN2))
    f.chmod(0o600)
    return str(f)


# ---- real clients -----------------------------------------------------------

@pytest.mark.parametrize("qos", ["0", "1"])
def test_mosquitto_pub_both_ports(server, qos):
    srv = mqtt_server(server)
    for port, sensor in ((srv.mqtt_port, "mq%s" % qos),
                         (srv.port, "sp%s" % qos)):
        r = mosquitto_pub(port, "-q", qos, "-t",
                          "sensors/%s/temperature" % sensor, "-m", "21.5")
        assert r.returncode == 0, r.stderr
        r = mosquitto_pub(port, "-q", qos, "-t",
                          "sensors/%s/humidity" % sensor, "-m",
                          '{"value": 57.96, "unit": "%", '
                          '"ts": 1718100942000000000}')
        assert r.returncode == 0, r.stderr
        if qos == "1":
            # mosquitto_pub exits after its PUBACK: already committed.
            got = rows(srv, sensor)
        else:
            got = wait_until(lambda: len(rows(srv, sensor)) == 2 and
                             rows(srv, sensor), what="QoS 0 rows")
        assert sorted(got) == [(sensor, "humidity", "%", 57.96),
                               (sensor, "temperature", "°C", 21.5)]
        log = srv.log_text()
        assert "%s - Temperatura: 21.5°C" % sensor in log
        assert "%s - Umidade: 57.96%%" % sensor in log
    # The sensor port still speaks lines.
    c = socket.create_connection(("127.0.0.1", srv.port), 10)
    c.sendall(b"Sensor9 - Temperatura: 20C\n")
    c.settimeout(10)
    assert c.recv(100) == b"OK 1\n"
    c.close()


def test_paho_qos1_every_puback_and_stored_once(server):
    srv = mqtt_server(server)
    mqtt, cl = paho_client("paho-qos1")
    acked = set()
    done = threading.Event()
    n = 500

    def on_publish(client, userdata, mid):
        acked.add(mid)
        if len(acked) == n:
            done.set()

    cl.on_publish = on_publish
    cl.max_inflight_messages_set(100)
    cl.connect("127.0.0.1", srv.mqtt_port, keepalive=30)
    cl.loop_start()
    try:
        mids = []
        for i in range(n):
            info = cl.publish("sensors/paho/temperature",
                              '{"value": %d, "ts": %d}'
                              % (i, 1700000000000000000 + i), qos=1)
            assert info.rc == mqtt.MQTT_ERR_SUCCESS
            mids.append(info.mid)
        assert done.wait(60), "%d of %d PUBACKs" % (len(acked), n)
        assert acked == set(mids)
        cl.disconnect()
    finally:
        cl.loop_stop()
    got = rows(srv, "paho")
    assert len(got) == n
    assert sorted(r[3] for r in got) == [float(i) for i in range(n)]


def test_paho_backpressure_over_inflight_limit(server):
    """The client allows far more in flight than --mqtt-max-inflight: the
    server stops reading instead of losing anything."""
    srv = mqtt_server(server, "--mqtt-max-inflight", "4")
    mqtt, cl = paho_client("paho-inflight")
    acked = set()
    done = threading.Event()
    n = 300

    def on_publish(client, userdata, mid):
        acked.add(mid)
        if len(acked) == n:
            done.set()

    cl.on_publish = on_publish
    cl.max_inflight_messages_set(0)          # unlimited on the client
    cl.max_queued_messages_set(0)
    cl.connect("127.0.0.1", srv.mqtt_port, keepalive=30)
    cl.loop_start()
    try:
        for i in range(n):
            cl.publish("sensors/bp/humidity", '{"value": %d, "ts": %d}'
                       % (i, 1700000000000000000 + i), qos=1)
        assert done.wait(60), "%d of %d PUBACKs" % (len(acked), n)
        cl.disconnect()
    finally:
        cl.loop_stop()
    got = rows(srv, "bp")
    assert sorted(r[3] for r in got) == [float(i) for i in range(n)]


# ---- acknowledgements -------------------------------------------------------

def test_puback_only_after_commit(server):
    """With a slow group commit, each PUBACK finds its row already in the
    database (an early PUBACK would come before the commit)."""
    srv = mqtt_server(server, "--commit-interval", "300ms")
    c = connected(srv.mqtt_port, client_id="commit")
    for i in range(1, 6):
        c.send(publish("sensors/commit/temperature",
                       '{"value": %d, "ts": %d}' % (i, 1700000000 + i),
                       qos=1, pid=i))
        assert c.read_packet() == puback(i)
        assert len(rows(srv, "commit")) == i
    c.close()


def test_pipelined_qos1_in_order_with_bad_ones(server):
    """Pipelined QoS 1 over a tiny inflight limit: every PUBACK, in order;
    a PUBLISH without a reading is acknowledged in its place and not
    stored."""
    srv = mqtt_server(server, "--mqtt-max-inflight", "3")
    c = connected(srv.mqtt_port, client_id="pipe")
    data = b""
    good = 0
    for pid in range(1, 201):
        if pid % 10 == 0:
            data += publish("elsewhere/pipe/x", "1", qos=1, pid=pid)
        elif pid % 10 == 5:
            data += publish("sensors/pipe/temperature", "warm", qos=1,
                            pid=pid)
        else:
            good += 1
            data += publish("sensors/pipe/temperature",
                            '{"value": %d, "ts": %d}'
                            % (pid, 1700000000 + pid), qos=1, pid=pid)
    c.send(data)
    for pid in range(1, 201):
        assert c.read_packet() == puback(pid)
    assert len(rows(srv, "pipe")) == good
    c.send(DISCONNECT)
    assert c.closed() == b""
    # Logged, rate-limited per connection: the first one only.
    err = srv.stderr()
    assert "PUBLISH on 'sensors/pipe/temperature' dropped" in err
    assert "elsewhere/pipe/x" not in err


def test_disconnect_after_qos0_stores_and_closes(server):
    srv = mqtt_server(server)
    c = connected(srv.port, client_id="q0")     # the sensor port
    c.send(b"".join(publish("sensors/q0/pressure", str(1000 + i))
                    for i in range(20)) + DISCONNECT)
    assert c.closed() == b""
    wait_until(lambda: len(rows(srv, "q0")) == 20, what="20 rows")


# ---- refusals ---------------------------------------------------------------

def test_qos2_closes_and_stores_nothing(server):
    srv = mqtt_server(server, "--threads", "1")
    c = connected(srv.mqtt_port, client_id="q2")
    c.send(publish("sensors/q2/temperature", "20", qos=2, pid=7))
    assert c.closed() == b""
    # A later QoS 1 on the same (only) worker: its PUBACK means any batch
    # before it has been committed.
    d = connected(srv.mqtt_port, client_id="q2b")
    d.send(publish("sensors/q2b/temperature", "21", qos=1, pid=1))
    assert d.read_packet() == puback(1)
    assert rows(srv, "q2") == []
    assert len(rows(srv, "q2b")) == 1
    r = mosquitto_pub(srv.mqtt_port, "-q", "2", "-t",
                      "sensors/q2/temperature", "-m", "22")
    assert r.returncode != 0
    assert rows(srv, "q2") == []


@pytest.mark.parametrize("what,data,port", [
    ("remaining length over 4 bytes",
     b"\x10\xff\xff\xff\xff\x01", "mqtt"),
    ("remaining length over 4 bytes, sensor port",
     b"\x10\xff\xff\xff\xff\x01", "sensor"),
    ("PINGREQ before CONNECT", PINGREQ, "mqtt"),
    ("PUBLISH before CONNECT", publish("sensors/a/temperature", "1"),
     "mqtt"),
    ("unknown protocol name", packet(0x10, mstr("MQTX") + b"\x04\x02\x00"
                                     b"\x3c" + mstr("x")), "mqtt"),
    ("reserved type 0", b"\x00\x00", "mqtt"),
])
def test_malformed_before_connect_closes(server, what, data, port):
    srv = mqtt_server(server)
    c = Raw(srv.mqtt_port if port == "mqtt" else srv.port)
    c.send(data)
    assert c.closed() == b"", what


@pytest.mark.parametrize("what,data", [
    ("second CONNECT", connect(client_id="again")),
    ("PUBACK from the client", puback(1)),
    ("PINGREQ with a body", b"\xc0\x01\x00"),
    ("PUBLISH with QoS 3", b"\x36\x05" + mstr("a") + b"\x00\x01"),
    ("topic with a wildcard", publish("sensors/+/temperature", "1")),
    ("packet id 0", publish("sensors/a/temperature", "1", qos=1, pid=0)),
    ("overlong remaining length", b"\x30\x80\x00"),
])
def test_malformed_after_connect_closes(server, what, data):
    srv = mqtt_server(server)
    c = connected(srv.mqtt_port, client_id="bad")
    c.send(data)
    assert c.closed() == b"", what


def test_oversize_packet_closed_before_its_body(server):
    srv = mqtt_server(server, "--mqtt-max-packet", "1024")
    c = connected(srv.mqtt_port, client_id="big")
    # Only the fixed header of a 2000-byte PUBLISH: refused on its length.
    c.send(b"\x30" + varint(2000))
    assert c.closed() == b""
    d = connected(srv.port, client_id="big2")
    d.send(publish("sensors/big2/temperature", "1" * 1100))
    assert d.closed() == b""
    e = connected(srv.mqtt_port, client_id="small")
    e.send(publish("sensors/small/temperature", "1" * 900, qos=1, pid=3))
    assert e.read_packet() == puback(3)


def test_unsupported_protocol_level_gets_connack_1(server):
    srv = mqtt_server(server)
    c = Raw(srv.mqtt_port)
    c.send(connect(level=3))
    assert c.read_packet() == b"\x20\x02\x00\x01"
    assert c.closed() == b""


def test_subscribe_refused_ping_answered(server):
    srv = mqtt_server(server)
    c = connected(srv.mqtt_port, client_id="sub")
    c.send(packet(0x82, struct.pack(">H", 9) + mstr("a/#") + b"\x01"
                  + mstr("sensors/+/x") + b"\x00"))
    assert c.read_packet() == b"\x90\x04\x00\x09\x80\x80"
    c.send(packet(0xa2, struct.pack(">H", 10) + mstr("a/#")))
    assert c.read_packet() == b"\xb0\x02\x00\x0a"
    c.send(PINGREQ)
    assert c.read_packet() == PINGRESP
    c.send(DISCONNECT)
    assert c.closed() == b""


def test_keep_alive_closes_silent_client(server):
    srv = mqtt_server(server)
    quiet = connected(srv.mqtt_port, client_id="quiet", keepalive=1)
    patient = connected(srv.port, client_id="patient", keepalive=60)
    t0 = time.monotonic()
    assert quiet.closed(timeout=15) == b""
    assert time.monotonic() - t0 >= 1.0    # not before 1.5 x 1 s
    patient.send(PINGREQ)
    assert patient.read_packet() == PINGRESP


def test_session_takeover_closes_older(server):
    """MQTT-3.1.4-2; with two workers some pairs cross threads."""
    srv = mqtt_server(server, "--threads", "2")
    pairs = []
    for i in range(8):
        old = connected(srv.mqtt_port, client_id="dup%d" % i)
        new = connected(srv.port if i % 2 else srv.mqtt_port,
                        client_id="dup%d" % i)
        pairs.append((old, new))
    for old, new in pairs:
        assert old.closed() == b""
        new.send(publish("sensors/dup/temperature", "20", qos=1, pid=1))
        assert new.read_packet() == puback(1)
    # An empty client id (clean session) takes nothing over.
    a = connected(srv.mqtt_port, client_id="")
    b = connected(srv.mqtt_port, client_id="")
    for c in (a, b):
        c.send(PINGREQ)
        assert c.read_packet() == PINGRESP


# ---- --tokens ---------------------------------------------------------------

def test_tokens_connack_codes_and_own_sensor(server, tmp_path):
    srv = mqtt_server(server, "--tokens", tokens_file(tmp_path))
    c = Raw(srv.mqtt_port)
    c.send(connect(client_id="t1"))
    assert c.read_packet() == b"\x20\x02\x00\x05"     # none: not authorized
    assert c.closed() == b""
    c = Raw(srv.port)
    c.send(connect(client_id="t2", user="Sensor1", password="wrong-token-x"))
    assert c.read_packet() == b"\x20\x02\x00\x04"     # bad credentials
    assert c.closed() == b""
    c = Raw(srv.mqtt_port)
    c.send(connect(client_id="t3", user="Sensor1"))
    assert c.read_packet() == b"\x20\x02\x00\x05"
    assert c.closed() == b""

    r = mosquitto_pub(srv.mqtt_port, "-q", "1", "-u", "Sensor1", "-P",
                      "nope-nope-nope-nope", "-t",
                      "sensors/Sensor1/temperature", "-m", "20")
    assert r.returncode != 0
    r = mosquitto_pub(srv.mqtt_port, "-q", "1", "-u", "Sensor1", "-P",
                      TOKEN1, "-t", "sensors/Sensor1/temperature", "-m",
                      "21")
    assert r.returncode == 0, r.stderr
    assert rows(srv, "Sensor1") == [("Sensor1", "temperature", "°C", 21.0)]

    own = connected(srv.mqtt_port, client_id="t4", user="Sensor2",
                    password=TOKEN2)
    own.send(publish("sensors/Sensor2/humidity", "50", qos=1, pid=1))
    assert own.read_packet() == puback(1)
    own.send(publish("sensors/Sensor1/temperature", "99", qos=1, pid=2))
    assert own.closed() == b""
    assert rows(srv, "Sensor2") == [("Sensor2", "humidity", "%", 50.0)]
    # Barrier: a later PUBACK on the same sensor; 99 was never stored.
    r = mosquitto_pub(srv.mqtt_port, "-q", "1", "-u", "Sensor1", "-P",
                      TOKEN1, "-t", "sensors/Sensor1/temperature", "-m",
                      "22")
    assert r.returncode == 0, r.stderr
    assert sorted(v[3] for v in rows(srv, "Sensor1")) == [21.0, 22.0]


def test_mqtt_listen_bad_address_is_an_error(tmp_path):
    from conftest import SERVER
    r = subprocess.run([SERVER, "--listen", "127.0.0.1:%d" % get_port(),
                        "--mqtt-listen", "nowhere:notaport", "--http",
                        "off", "--db", str(tmp_path / "d.db"),
                        "--log", str(tmp_path / "log.txt")],
                       cwd=str(tmp_path), capture_output=True, timeout=30)
    assert r.returncode != 0
    assert b"--mqtt-listen" in r.stderr, r.stderr


def test_keep_alive_zero_uses_idle_timeout(server):
    """Keep alive 0: --idle-timeout applies; a keep alive replaces it."""
    srv = mqtt_server(server, "--idle-timeout", "1s")
    zero = connected(srv.mqtt_port, client_id="zero", keepalive=0)
    long_ka = connected(srv.mqtt_port, client_id="long", keepalive=60)
    assert zero.closed(timeout=15) == b""
    time.sleep(1.5)             # past the idle timeout, well within 90 s
    long_ka.send(PINGREQ)
    assert long_ka.read_packet() == PINGRESP


def test_metrics_count_mqtt(server, tmp_path):
    """/metrics: CONNACKs, PUBLISHes by QoS, PUBACKs, violations and
    takeovers, each from something the test did."""
    hport = get_port()
    srv = mqtt_server(server, "--tokens", tokens_file(tmp_path),
                      "--http", "127.0.0.1:%d" % hport)
    a = connected(srv.mqtt_port, client_id="m1", user="Sensor1",
                  password=TOKEN1)
    for pid in (1, 2, 3):
        a.send(publish("sensors/Sensor1/temperature", "2%d" % pid, qos=1,
                       pid=pid))
        assert a.read_packet() == puback(pid)
    a.send(publish("sensors/Sensor1/temperature", "30", qos=0))
    # Taken over: the same client id again.
    b = connected(srv.mqtt_port, client_id="m1", user="Sensor1",
                  password=TOKEN1)
    assert a.closed() == b""
    # Refused: a wrong password gets CONNACK 4.
    r = mosquitto_pub(srv.mqtt_port, "-q", "1", "-u", "Sensor1", "-P",
                      "wrong-token-0123456789", "-t",
                      "sensors/Sensor1/temperature", "-m", "1")
    assert r.returncode != 0
    # A violation: QoS 2.
    b.send(publish("sensors/Sensor1/temperature", "20", qos=2, pid=9))
    assert b.closed() == b""

    def metrics():
        out = subprocess.run(["curl", "-s", "http://127.0.0.1:%d/metrics"
                              % hport], capture_output=True,
                             timeout=30).stdout.decode()
        return dict(l.rsplit(" ", 1) for l in out.splitlines()
                    if l.startswith("sensornet_mqtt_"))

    m = wait_until(lambda: (lambda m: m if m.get(
        'sensornet_mqtt_publish_total{qos="0"}') == "1" else None)(
        metrics()), what="the QoS 0 publish counted")
    assert m["sensornet_mqtt_connections_total"] == "2"
    assert m["sensornet_mqtt_connections_refused_total"] == "1"
    assert m['sensornet_mqtt_publish_total{qos="1"}'] == "3"
    assert m["sensornet_mqtt_puback_total"] == "3"
    assert m["sensornet_mqtt_violations_total"] == "1"
    assert m["sensornet_mqtt_takeovers_total"] == "1"
