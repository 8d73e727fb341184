"""The collector end to end: framing, replies, log.txt, limits, signals.

Each test starts the real sensornet-server on a free port and talks raw
bytes to it, then checks the replies and log.txt line by line.
"""
import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import SERVER, LineConn, wait_until

STAMP = r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] "
ORIGINAL_REPLY = b"Dados recebidos com sucesso."


def peer_of(sock):
    host, port = sock.getsockname()[:2]
    return "('%s', %d)" % (host, port)


def received(srv):
    """The payloads of the "Recebido de" lines of log.txt."""
    out = []
    for line in srv.log_lines():
        m = re.match(STAMP + r"Recebido de \('[^']*', \d+\): (.*)$", line)
        if m:
            out.append(m.group(1))
    return out


def recv_exactly(sock, n, timeout=10):
    sock.settimeout(timeout)
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def recv_until_closed(sock, timeout=10, limit=1 << 26):
    sock.settimeout(timeout)
    data = b""
    while len(data) < limit:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    raise AssertionError("connection not closed")


# ---- the original clients ------------------------------------------------

def test_original_client_served_and_logged_like_the_original(server):
    srv = server()
    s = srv.connect()
    peer = peer_of(s)
    for msg in ("Sensor1 - Temperatura: 25.34°C",
                "Sensor1 - Temperatura: 25.41°C"):
        s.sendall(msg.encode())        # no line end, like client.py
        assert recv_exactly(s, len(ORIGINAL_REPLY)) == ORIGINAL_REPLY
    s.close()
    wait_until(lambda: any("Conexão encerrada" in l for l in srv.log_lines()),
               what="close logged")
    lines = srv.log_lines()
    assert re.fullmatch(STAMP + r"Servidor iniciando em 127\.0\.0\.1:\d+",
                        lines[0]), lines[0]
    body = [l[22:] for l in lines[1:]]
    assert all(re.match(STAMP, l) for l in lines), lines
    assert body == [
        "Nova conexão de %s" % peer,
        "Conexões ativas: 1",
        "Recebido de %s: Sensor1 - Temperatura: 25.34°C" % peer,
        "Recebido de %s: Sensor1 - Temperatura: 25.41°C" % peer,
        "Conexão encerrada com %s" % peer,
    ]


def test_original_humidity_and_two_clients(server):
    srv = server()
    a, b = srv.connect(), srv.connect()
    a.sendall("Sensor1 - Temperatura: 25.34°C".encode())
    b.sendall(b"Sensor2 - Umidade: 57.96%")
    assert recv_exactly(a, len(ORIGINAL_REPLY)) == ORIGINAL_REPLY
    assert recv_exactly(b, len(ORIGINAL_REPLY)) == ORIGINAL_REPLY
    got = received(srv)
    assert sorted(got) == ["Sensor1 - Temperatura: 25.34°C",
                           "Sensor2 - Umidade: 57.96%"]
    assert any(l.endswith("Conexões ativas: 2") for l in srv.log_lines())


def test_degree_sign_split_across_reads(server):
    srv = server()
    s = srv.connect()
    msg = "Sensor1 - Temperatura: 25.34°C".encode()
    cut = msg.index(b"\xb0")           # between the two bytes of U+00B0
    s.sendall(msg[:cut])
    time.sleep(0.03)                    # shorter than the silence rule
    s.sendall(msg[cut:])
    assert recv_exactly(s, len(ORIGINAL_REPLY)) == ORIGINAL_REPLY
    assert received(srv) == ["Sensor1 - Temperatura: 25.34°C"]


def test_incomplete_text_waits_for_more(server):
    """Bytes that are not one whole reading are never taken as a message."""
    srv = server("--silence", "50ms")
    s = srv.connect()
    s.sendall(b"Sensor1 - Temperatura: ")
    s.settimeout(0.4)
    with pytest.raises(socket.timeout):
        s.recv(100)
    s.sendall(b"21.5C")
    assert recv_exactly(s, len(ORIGINAL_REPLY)) == ORIGINAL_REPLY
    assert received(srv) == ["Sensor1 - Temperatura: 21.5°C"]


def test_line_protocol_never_cut_by_silence(server):
    """A line-protocol reading delayed mid-line is not split."""
    srv = server("--silence", "30ms")
    c = LineConn(srv.connect())
    c.send("sensornet,sensor=S1 temperature=2")
    time.sleep(0.3)
    c.send("1.5 1700000000000000000\n")
    assert c.wait_ok(1) == []
    assert received(srv) == ["S1 - Temperatura: 21.5°C"]


# ---- line mode -------------------------------------------------------------

def test_line_protocol_and_text_lines_acknowledged(server):
    srv = server()
    c = LineConn(srv.connect())
    c.send("sensornet,sensor=Sensor1 temperature=25.34 1718100942000000000\n"
           "Sensor2 - Umidade: 57.96%\r\n"
           "\n"
           "weather,sensor=roof humidity=40i,pressure=1013.2,note=\"x y\"\n")
    assert c.wait_ok(3) == []
    assert received(srv) == [
        "Sensor1 - Temperatura: 25.34°C",
        "Sensor2 - Umidade: 57.96%",
        "roof - Umidade: 40%",
        "roof - pressure: 1013.2 hPa",
    ]


def test_lines_split_and_merged_arbitrarily(server):
    srv = server()
    n = 500
    data = "".join("sensornet,sensor=S%d temperature=%d.5 %d\n"
                   % (i % 7, i % 40, 1700000000000000000 + i)
                   for i in range(n)).encode()
    s = srv.connect()
    c = LineConn(s)
    pos, step = 0, 1
    while pos < len(data):             # 1, 2, 3 ... 97 byte writes
        s.sendall(data[pos:pos + step])
        pos += step
        step = step % 97 + 1
    assert c.wait_ok(n) == []
    assert len(received(srv)) == n
    assert received(srv)[123] == "S4 - Temperatura: 3.5°C"


def test_refused_line_gets_err_and_connection_goes_on(server):
    srv = server()
    c = LineConn(srv.connect())
    c.send("Sensor1 - Temperatura: 20C\n"
           "this is not a reading\n"
           "Sensor1 - Temperatura: 21C\n")
    errs = c.wait_ok(2)
    assert errs == ["ERR 2 syntax error"]
    got = received(srv)
    assert got[0] == "Sensor1 - Temperatura: 20°C"
    assert got[1] == "this is not a reading"     # logged as received
    assert got[2] == "Sensor1 - Temperatura: 21°C"


@pytest.mark.parametrize("payload,reason", [
    (b"Sensor1 - Temperatura: 2\xff5C\n", "invalid utf-8"),
    (b"Sensor1 - Temp\x00eratura: 25C\n", "nul or control byte"),
    (b"m,sensor=a temperature=nan\n", None),
    (b"m,sensor=a note=\"only a string\"\n", "no numeric field"),
])
def test_bad_input_classes(server, payload, reason):
    srv = server()
    c = LineConn(srv.connect())
    c.send(payload)
    c.send("Sensor1 - Temperatura: 21C\n")
    errs = c.wait_ok(1)
    assert len(errs) == 1 and errs[0].startswith("ERR 1 "), errs
    if reason:
        assert errs[0] == "ERR 1 " + reason
    log = srv.log_lines()
    assert all("\x00" not in l for l in log)
    # The refused line is logged escaped, on one line.
    assert len(received(srv)) == 2


def test_line_too_long_is_refused_and_skipped(server):
    srv = server("--max-line", "100")
    c = LineConn(srv.connect())
    c.send("Sensor1 - Temperatura: 20C\n")
    c.send("x" * 5000)                 # no line end yet: refused early
    c.send("y" * 5000 + "\n")
    c.send("Sensor1 - Temperatura: 22C\n")
    errs = c.wait_ok(2)
    assert errs == ["ERR 2 line too long"]
    assert received(srv) == ["Sensor1 - Temperatura: 20°C",
                             "Sensor1 - Temperatura: 22°C"]


def test_final_line_without_line_end_at_eof(server):
    srv = server()
    s = srv.connect()
    c = LineConn(s)
    c.send("Sensor1 - Temperatura: 20C\nSensor1 - Temperatura: 21C")
    s.shutdown(socket.SHUT_WR)
    assert c.wait_ok(2) == []
    assert len(received(srv)) == 2


def test_many_connections_at_once(server):
    srv = server()
    n_conn, n_lines = 200, 25
    socks = [srv.connect() for _ in range(n_conn)]
    for i, s in enumerate(socks):
        s.sendall("".join("m,sensor=c%d temperature=%d %d\n"
                          % (i, j, 1700000000000000000 + j)
                          for j in range(n_lines)).encode())
    for s in socks:
        assert LineConn(s).wait_ok(n_lines) == []
        s.close()
    assert len(received(srv)) == n_conn * n_lines


# ---- HTTP on the sensor port ----------------------------------------------

def test_browser_on_sensor_port_gets_http_answer_not_logged(server):
    srv = server()
    s = srv.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: example.test:5000\r\n"
              b"User-Agent: Mozilla/5.0\r\n\r\n")
    resp = recv_until_closed(s)
    assert resp.startswith(b"HTTP/1.0 "), resp
    assert b"sensornet sensor port" in resp
    assert received(srv) == []


# ---- limits -----------------------------------------------------------------

def test_idle_timeout_closes(server):
    srv = server("--idle-timeout", "1s")
    s = srv.connect()
    t0 = time.monotonic()
    assert recv_until_closed(s, timeout=10) == b""
    assert time.monotonic() - t0 >= 0.9


def test_max_connections(server):
    srv = server("--max-connections", "2")
    a, b = srv.connect(), srv.connect()
    for s in (a, b):                   # make sure both were accepted
        LineConn(s).send("Sensor1 - Temperatura: 20C\n")
        assert LineConn(s).wait_ok(1) == []
    c = srv.connect()
    assert recv_until_closed(c) == b"ERR server full\n"
    a.close()
    wait_until(lambda: any("Conexão encerrada" in l
                           for l in srv.log_lines()), what="close")
    d = LineConn(srv.connect())
    d.send("Sensor1 - Temperatura: 20C\n")
    assert d.wait_ok(1) == []


def test_client_that_never_reads_is_bounded(server):
    """Only ERR replies can pile up (acks coalesce); past 64 KiB unread the
    connection is closed instead of buffering without bound."""
    srv = server()
    s = srv.connect()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    bad = b"bad line\n" * 20000
    closed = False
    try:
        for _ in range(100):
            s.sendall(bad)
    except (BrokenPipeError, ConnectionResetError):
        closed = True
    if not closed:
        data = recv_until_closed(s, timeout=20)
        assert data.count(b"\n") < 100 * 20000
    assert srv.alive()


def test_bad_options_exit_2_and_help_lists_every_option(tmp_path):
    r = subprocess.run([SERVER, "--no-such-option"], capture_output=True)
    assert r.returncode == 2
    assert b"--no-such-option" in r.stderr or b"unknown" in r.stderr
    r = subprocess.run([SERVER, "--max-line", "10"], capture_output=True)
    assert r.returncode == 2 and b"max-line" in r.stderr
    r = subprocess.run([SERVER, "--help"], capture_output=True)
    assert r.returncode == 0
    for opt in ("--listen", "--log", "--db", "--fsync", "--max-line",
                "--silence", "--idle-timeout", "--max-connections",
                "--threads", "--commit-interval", "--retention",
                "--postgres", "--version", "--config"):
        assert opt.encode() in r.stdout, opt
    r = subprocess.run([SERVER, "--version"], capture_output=True)
    assert r.returncode == 0 and r.stdout.startswith(b"sensornet-server ")


def test_config_file_and_unknown_key(tmp_path):
    good = tmp_path / "ok.conf"
    good.write_text("# comment\nlisten 127.0.0.1:5999\nmax-line 200\n")
    r = subprocess.run([SERVER, "-c", str(good), "-t"], capture_output=True)
    assert r.returncode == 0, r.stderr
    bad = tmp_path / "bad.conf"
    bad.write_text("listen 127.0.0.1:5999\nbogus 1\n")
    r = subprocess.run([SERVER, "-c", str(bad), "-t"], capture_output=True)
    assert r.returncode == 2 and b"bad.conf:2" in r.stderr, r.stderr


def test_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        r = subprocess.run([SERVER, "--listen", "127.0.0.1:%d" % port,
                            "--log", str(tmp_path / "l2"),
                            "--db", str(tmp_path / "d2.db")],
                           capture_output=True, timeout=20)
    assert r.returncode == 1
    assert b"cannot listen on 127.0.0.1:%d" % port in r.stderr, r.stderr


def test_ipv4_and_ipv6_listeners(server):
    try:
        with socket.socket(socket.AF_INET6) as t:
            t.bind(("::1", 0))
    except OSError:
        pytest.skip("no ::1 on this machine")
    from conftest import get_port
    port = get_port()
    srv = server("--listen", "127.0.0.1:%d,[::1]:%d" % (port, port),
                 port=port)
    s6 = socket.create_connection(("::1", port), 5)
    c = LineConn(s6)
    c.send("Sensor1 - Temperatura: 20C\n")
    assert c.wait_ok(1) == []
    c4 = LineConn(srv.connect())
    c4.send("Sensor1 - Temperatura: 21C\n")
    assert c4.wait_ok(1) == []
    log = srv.log_text()
    assert ("Recebido de ('::1', %d): Sensor1 - Temperatura: 20°C"
            % s6.getsockname()[1]) in log
    assert "Recebido de ('127.0.0.1', " in log


# ---- signals ----------------------------------------------------------------

def test_sigterm_acknowledges_what_arrived_and_exits_0(server):
    srv = server()
    c = LineConn(srv.connect())
    n = 2000
    c.send("".join("m,sensor=s temperature=%d %d\n"
                   % (i, 1700000000000000000 + i) for i in range(n)))
    time.sleep(0.05)
    srv.signal(signal.SIGTERM)
    assert c.wait_ok(n) == []
    assert srv.wait(20) == 0
    assert len(received(srv)) == n


def test_sigterm_answers_pending_original_message(server):
    srv = server("--silence", "10s")
    s = srv.connect()
    s.sendall(b"Sensor2 - Umidade: 57.96%")
    time.sleep(0.2)
    srv.signal(signal.SIGTERM)
    assert recv_exactly(s, len(ORIGINAL_REPLY)) == ORIGINAL_REPLY
    assert srv.wait(20) == 0
    assert received(srv) == ["Sensor2 - Umidade: 57.96%"]


def test_sighup_reopens_log(server, tmp_path):
    srv = server()
    c = LineConn(srv.connect())
    c.send("Sensor1 - Temperatura: 20C\n")
    c.wait_ok(1)
    os.rename(srv.log_path, srv.log_path + ".1")
    srv.signal(signal.SIGHUP)
    wait_until(lambda: "SIGHUP" in srv.stderr(), what="SIGHUP seen")
    c.send("Sensor1 - Temperatura: 21C\n")
    c.wait_ok(2)
    assert received(srv) == ["Sensor1 - Temperatura: 21°C"]


def test_ping_is_answered_and_not_counted(server):
    srv = server()
    c = LineConn(srv.connect())
    c.send("PING\n")
    assert c.readline() == "PONG"
    c.send("Sensor1 - Temperatura: 20C\nPING\nbad\n")
    lines = [c.readline() for _ in range(3)]
    assert lines == ["PONG", "ERR 2 syntax error", "OK 1"] or \
        sorted(lines) == sorted(["PONG", "ERR 2 syntax error", "OK 1"])
    assert received(srv) == ["Sensor1 - Temperatura: 20°C", "bad"]


def test_message_cut_inside_its_number_is_not_taken(server):
    """The silence rule wants the unit: "...: 25.3" may be half of 25.34."""
    srv = server("--silence", "30ms")
    s = srv.connect()
    s.sendall(b"Sensor1 - Temperatura: 25.3")
    s.settimeout(0.3)
    with pytest.raises(socket.timeout):
        s.recv(100)
    s.sendall("4°C".encode())
    assert recv_exactly(s, len(ORIGINAL_REPLY)) == ORIGINAL_REPLY
    assert received(srv) == ["Sensor1 - Temperatura: 25.34°C"]


def test_max_connection_age_acks_then_closes(server):
    """Clients are asked to reconnect (to spread over new collectors) by a
    close that comes only after what they sent is acknowledged; a partial
    line is never taken as complete."""
    srv = server("--max-connection-age", "1s")
    s = srv.connect()
    c = LineConn(s)
    c.send("Sensor1 - Temperatura: 20C\nm,sensor=a temperature=2")
    assert c.wait_ok(1) == []
    t0 = time.monotonic()
    rest = recv_until_closed(s, timeout=10)
    assert rest == b""
    assert 0.5 <= time.monotonic() - t0 <= 5
    assert received(srv) == ["Sensor1 - Temperatura: 20°C"]


def test_partial_line_at_shutdown_is_not_stored(server):
    srv = server()
    c = LineConn(srv.connect())
    c.send("Sensor1 - Temperatura: 20C\nm,sensor=a temperature=2")
    assert c.wait_ok(1) == []
    srv.signal(signal.SIGTERM)
    assert srv.wait(20) == 0
    assert received(srv) == ["Sensor1 - Temperatura: 20°C"]
