"""The HTTP API end to end (docs/api.md): the real sensornet-server with
--http on a free port, real stored data, and the real curl binary for
/write and /metrics (Telegraf-style --data-binary @file).

Every endpoint and its errors: /write (InfluxDB line protocol: precision,
partial writes, limits, chunked bodies split mid-line, backpressure through
many batches, waiting for a locked database), /api/sensors (with who is
connected now), /api/readings (JSON, CSV, the pagination cursor),
/api/series (database-side aggregates), /metrics, /healthz, /ping, the
embedded dashboard files, and the sensor port's redirect to them.
"""
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from conftest import SERVER, LineConn, get_port, wait_until

S = 1000000000
T0 = 1700000000 * S  # 2023-11-14T22:13:20Z


# ---- helpers -----------------------------------------------------------------

def start(server, *args):
    """A server with the HTTP API on a free port; returns (srv, base)."""
    port = get_port()
    srv = server("--http", "127.0.0.1:%d" % port, *args)
    srv.http_port = port
    base = "http://127.0.0.1:%d" % port
    wait_until(lambda: get(base, "/healthz")[0] in (200, 503),
               what="HTTP port up")
    return srv, base


def get(base, path, headers=None, method="GET"):
    """(status, headers, body bytes) of one request (no exception on 4xx)."""
    req = urllib.request.Request(base + path, headers=headers or {},
                                 method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()
    except (ConnectionError, urllib.error.URLError):
        return 0, {}, b""


def get_json(base, path, want=200):
    status, _, body = get(base, path)
    assert status == want, (path, status, body)
    return json.loads(body)


def q(**params):
    return "?" + urllib.parse.urlencode(params)


def curl(*args, data_file=None):
    """Run the real curl; returns (status, headers text, body text)."""
    argv = ["curl", "-sS", "-D", "-", "--max-time", "30"]
    if data_file is not None:
        argv += ["--data-binary", "@" + str(data_file)]
    r = subprocess.run(argv + list(args), capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode("utf-8", "replace")
    # Skip "100 Continue" heads.
    while out.startswith("HTTP/1.1 100"):
        out = out.split("\r\n\r\n", 1)[1]
    head, _, body = out.partition("\r\n\r\n")
    status = int(head.split(" ", 2)[1])
    return status, head, body


def write(base, tmp_path, body, query="", name="body.lp", extra=()):
    """POST /write with curl --data-binary @file, as Telegraf-like tools
    do."""
    f = tmp_path / name
    f.write_bytes(body.encode() if isinstance(body, str) else body)
    return curl(*extra, "%s/write%s" % (base, query), data_file=f)


def db_rows(srv, sql, args=()):
    con = sqlite3.connect("file:%s?mode=ro" % srv.db_path, uri=True)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def sensors(base):
    return {(s["sensor"], s["quantity"]): s
            for s in get_json(base, "/api/sensors")["sensors"]}


# ---- /write ------------------------------------------------------------------

def test_write_telegraf_style_then_every_read_endpoint(server, tmp_path):
    srv, base = start(server)
    body = "".join(
        "weather,sensor=roof,unit=°C temperature=%s,humidity=%di %d\n"
        % (20 + i / 10, 40 + i, 1700000000 + i) for i in range(30))
    status, head, text = write(base, tmp_path, body,
                               "?db=telegraf&rp=autogen&precision=s")
    assert status == 204, text
    assert text == ""
    # Stored once committed: readable at once, by the API and in the file.
    rows = db_rows(srv, "SELECT count(*) FROM readings")
    assert rows == [(60,)]
    ss = sensors(base)
    t = ss[("roof", "temperature")]
    assert t["unit"] == "°C" and t["count"] == 30
    assert t["last_value"] == pytest.approx(22.9)
    assert t["last_ts"] == (1700000000 + 29) * S
    assert t["last_time"] == "2023-11-14T22:13:49.000000000Z"
    assert t["connected"] is False and t["connections"] == 0
    assert re.fullmatch(r"127\.0\.0\.1:\d+", t["peer"]), t
    assert ss[("roof", "humidity")]["last_value"] == 69

    r = get_json(base, "/api/readings" + q(sensor="roof",
                                           quantity="temperature"))
    assert r["count"] == 30 and r["next"] is None and r["unit"] == "°C"
    assert [x["ts"] for x in r["readings"]] == [
        (1700000000 + i) * S for i in range(30)]
    assert r["readings"][0] == {"ts": T0, "value": 20.0,
                                "time": "2023-11-14T22:13:20.000000000Z"}
    assert r["readings"][5]["value"] == 20.5

    sr = get_json(base, "/api/series" + q(
        sensor="roof", quantity="temperature", step="10s",
        **{"from": "2023-11-14T22:13:20Z", "to": "2023-11-14T22:14:00Z"}))
    assert sr["step"] == 10 * S and sr["from"] == T0
    assert [(p["ts"], p["count"]) for p in sr["points"]] == [
        (T0, 10), (T0 + 10 * S, 10), (T0 + 20 * S, 10)]
    p0 = sr["points"][0]
    assert p0["min"] == 20.0 and p0["max"] == pytest.approx(20.9)
    assert p0["avg"] == pytest.approx(20.45)

    # log.txt has them, in the original's words, from the HTTP client.
    log = srv.log_text()
    assert re.search(r"Recebido de \('127\.0\.0\.1', \d+\): roof - "
                     r"Temperatura: 20\.5°C", log), log


@pytest.mark.parametrize("precision,ts", [
    ("", "1700000000000000000"), ("ns", "1700000000000000000"),
    ("u", "1700000000000000"), ("ms", "1700000000000"),
    ("s", "1700000000"), ("m", "28333333"), ("h", "472222")])
def test_write_precision(server, tmp_path, precision, ts):
    srv, base = start(server)
    query = "?precision=" + precision if precision else ""
    status, _, text = write(base, tmp_path, "m,sensor=p v=1 %s\n" % ts,
                            query)
    assert status == 204, text
    want = {"m": 28333333 * 60 * S, "h": 472222 * 3600 * S}.get(precision,
                                                                T0)
    assert db_rows(srv, "SELECT ts FROM readings") == [(want,)]


def test_write_partial_and_refused(server, tmp_path):
    srv, base = start(server)
    body = ("m,sensor=a v=1 1700000000000000000\n"
            "m,sensor=a v= 1700000001000000000\n"      # line 2: syntax
            "\n"                                       # blank line 3
            "# comment\n"
            "m,sensor=a v=3 1700000002000000000\r\n"   # CRLF is fine
            "m,sensor=a v=NaN\n")                      # line 6: range
    status, _, text = write(base, tmp_path, body)
    assert status == 400
    err = json.loads(text)
    assert err["line"] == 2 and err["reason"] == "syntax error", err
    assert err["refused"] == 2 and err["written"] == 2
    assert err["error"].startswith("partial write: line 2: syntax error")
    # The good lines are stored all the same (InfluxDB's partial write).
    assert db_rows(srv, "SELECT value FROM readings ORDER BY ts") == [
        (1.0,), (3.0,)]

    status, _, text = write(base, tmp_path, "nonsense\nalso nonsense\n")
    assert status == 400
    assert json.loads(text)["error"].startswith(
        "unable to parse: line 1: syntax error")

    status, _, text = write(base, tmp_path, "")
    assert status == 400 and "requires points" in text
    status, _, text = write(base, tmp_path, "\n# only a comment\n")
    assert status == 400 and "requires points" in text


def test_write_limits(server, tmp_path):
    srv, base = start(server, "--http-max-body", "2048", "--max-line", "100")
    # Over the body limit with a Content-Length: refused before reading.
    big = "".join("m,sensor=big v=%d %d\n" % (i, T0 + i) for i in range(200))
    status, _, text = write(base, tmp_path, big)
    assert status == 413 and "2048" in text, text
    assert db_rows(srv, "SELECT count(*) FROM readings") == [(0,)]
    # Without one (chunked): found while reading; the rest is discarded.
    status, _, text = write(base, tmp_path, big,
                            extra=("-H", "Transfer-Encoding: chunked"))
    assert status == 413, text
    # A line over --max-line is refused by number, the others go in.
    status, _, text = write(base, tmp_path,
                            "m,sensor=x v=1 %d\nm,sensor=x %s=1\n"
                            "m,sensor=x v=2 %d\n" % (T0, "f" * 120, T0 + 1))
    assert status == 400, text
    err = json.loads(text)
    assert err["line"] == 2 and err["reason"] == "line too long", err
    assert db_rows(srv, "SELECT count(*) FROM readings r JOIN series s ON "
                        "s.id = r.series_id WHERE sensor = 'x'") == [(2,)]
    # Compressed bodies are refused with what to do instead.
    status, _, text = write(base, tmp_path, b"\x1f\x8b...",
                            extra=("-H", "Content-Encoding: gzip"))
    assert status == 415 and "identity" in text, text


def test_write_methods_and_ping(server, tmp_path):
    srv, base = start(server)
    status, head, text = curl("-X", "GET", base + "/write")
    assert status == 405 and "Allow: POST" in head, head
    assert json.loads(text)["error"].startswith("method not allowed")
    status, head, _ = curl("-X", "POST", base + "/api/sensors")
    assert status == 405 and "Allow: GET, HEAD" in head
    status, head, text = curl("-i", base + "/ping")
    assert status == 204 and "X-Influxdb-Version" in head


def test_write_body_split_mid_line_across_chunks(server):
    """Lines cut anywhere by the transport are reassembled."""
    srv, base = start(server)
    body = "".join("chunky,sensor=c%d v=%d %d\n" % (i % 3, i, T0 + i * S)
                   for i in range(300)).encode()
    s = socket.create_connection(("127.0.0.1", srv.http_port), timeout=10)
    s.sendall(b"POST /write?precision=ns HTTP/1.1\r\nHost: x\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n")
    pos, sizes = 0, [1, 7, 13, 100, 3, 997, 2, 4096]
    i = 0
    while pos < len(body):
        n = sizes[i % len(sizes)]
        chunk = body[pos:pos + n]
        s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        pos += n
        i += 1
        if i % 50 == 0:
            time.sleep(0.01)   # let some arrive in separate reads
    s.sendall(b"0\r\n\r\n")
    resp = b""
    while b"\r\n\r\n" not in resp:
        resp += s.recv(4096)
    s.close()
    assert resp.startswith(b"HTTP/1.1 204"), resp
    assert db_rows(srv, "SELECT count(*), sum(value) FROM readings") == [
        (300, sum(range(300)))]


def test_write_through_many_batches_with_backpressure(server, tmp_path):
    """--batch-max 64: one line per batch, so the HTTP thread runs out of
    its four batches over and over; the request is suspended, resumed, and
    answered once everything is committed."""
    srv, base = start(server, "--batch-max", "64", "--fsync", "off")
    n = 600
    body = "".join("bp,sensor=b v=%d %d\n" % (i, T0 + i * S)
                   for i in range(n))
    results = []

    def one(k):
        results.append(write(base, tmp_path, body, "?db=x",
                             name="bp%d.lp" % k))
    threads = [threading.Thread(target=one, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert [r[0] for r in results] == [204, 204], results
    # Both carried the same points: stored once.
    assert db_rows(srv, "SELECT count(*), min(value), max(value) FROM "
                        "readings") == [(n, 0.0, n - 1.0)]
    metrics = curl(base + "/metrics")[2]
    assert "sensornet_lines_accepted_total{source=\"http\"} %d" % (2 * n) \
        in metrics


def test_write_waits_for_a_locked_database(server, tmp_path):
    """Nothing is acknowledged before it is committed: while another
    process holds the write lock, /write waits and /healthz says 503;
    reads go on (WAL)."""
    srv, base = start(server)
    status, _, _ = write(base, tmp_path, "lk,sensor=l v=0 %d\n" % T0)
    assert status == 204
    assert get_json(base, "/healthz") == {"status": "ok"}
    lock = sqlite3.connect(srv.db_path, timeout=1, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    result = []
    t = threading.Thread(target=lambda: result.append(
        write(base, tmp_path, "lk,sensor=l v=1 %d\n" % (T0 + S),
              name="b2.lp")))
    try:
        t.start()
        wait_until(lambda: get(base, "/healthz")[0] == 503, timeout=15,
                   what="healthz 503")
        body = json.loads(get(base, "/healthz")[2])
        assert "storage" in body["status"] and body["errors"] > 0
        time.sleep(0.5)
        assert result == [], "answered before the commit"
        # Reads are not blocked by the writer's lock.
        assert sensors(base)[("l", "v")]["count"] == 1
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    t.join(30)
    assert result and result[0][0] == 204, result
    wait_until(lambda: get(base, "/healthz")[0] == 200, what="healthy")
    assert sensors(base)[("l", "v")]["count"] == 2


def test_other_processes_see_commits_beside_the_read_handle(server,
                                                           tmp_path):
    """The API's read handle lives in the writer's process. Opening it must
    not drop the writer's file locks (POSIX drops them all when any
    descriptor of the file is closed), or another process's last
    connection may checkpoint and delete the WAL under the writer, whose
    later commits then vanish from every other process's view."""
    srv, base = start(server)
    assert get_json(base, "/api/sensors")["sensors"] == []  # handle open
    assert write(base, tmp_path, "ext,sensor=e v=1 %d\n" % T0)[0] == 204
    other = sqlite3.connect(srv.db_path, timeout=5, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    other.execute("ROLLBACK")
    other.close()                      # the last connection of its process
    assert write(base, tmp_path, "ext,sensor=e v=2 %d\n" % (T0 + S))[0] \
        == 204
    assert db_rows(srv, "SELECT count(*) FROM readings") == [(2,)]
    assert os.path.exists(srv.db_path + "-wal")


def test_sigterm_with_a_write_in_flight(server):
    """A request still sending its body when the server stops is closed;
    the server exits 0 with no leak (the procs fixture checks)."""
    srv, base = start(server)
    s = socket.create_connection(("127.0.0.1", srv.http_port), timeout=10)
    s.sendall(b"POST /write HTTP/1.1\r\nHost: x\r\nContent-Length: 100000"
              b"\r\n\r\nm,sensor=half v=1\nm,sensor=ha")
    time.sleep(0.3)
    t0 = time.monotonic()
    assert srv.stop() == 0
    assert time.monotonic() - t0 < 15
    s.close()


# ---- /api/sensors and who is connected ---------------------------------------

def test_sensors_connected_follows_connections(server):
    srv, base = start(server)
    a = LineConn(srv.connect())
    a.send("Sensor1 - Temperatura: 21.5°C\n")
    a.wait_ok(1)
    s = sensors(base)[("Sensor1", "temperature")]
    assert s["connected"] is True and s["connections"] == 1
    assert s["last_value"] == 21.5 and s["unit"] == "°C"
    b = LineConn(srv.connect())
    b.send("weather,sensor=Sensor1 temperature=22\n")
    b.wait_ok(1)
    assert sensors(base)[("Sensor1", "temperature")]["connections"] == 2
    # b moves on to another sensor: counted there, no longer for Sensor1.
    b.send("weather,sensor=Sensor9 humidity=50\n")
    b.wait_ok(2)
    ss = sensors(base)
    assert ss[("Sensor1", "temperature")]["connections"] == 1
    assert ss[("Sensor9", "humidity")]["connected"] is True
    a.close()
    b.close()
    wait_until(lambda: not any(x["connected"] for x in
                               sensors(base).values()),
               what="nobody connected")
    m = curl(base + "/metrics")[2]
    assert "sensornet_sensors_connected 0" in m


def test_sensors_filter_and_empty(server):
    srv, base = start(server)
    d = get_json(base, "/api/sensors")
    assert d["sensors"] == [] and d["truncated"] is False
    assert isinstance(d["now"], int) and d["now_time"].endswith("Z")
    c = LineConn(srv.connect())
    c.send("m,sensor=a v=1\nm,sensor=b v=2\n")
    c.wait_ok(2)
    assert [x["sensor"] for x in
            get_json(base, "/api/sensors?sensor=b")["sensors"]] == ["b"]
    assert get_json(base, "/api/sensors?sensor=zz")["sensors"] == []
    err = get_json(base, "/api/sensors?from=1", want=400)
    assert err["error"] == "unknown parameter 'from'"


# ---- /api/readings -----------------------------------------------------------

def test_readings_pagination_json_and_csv(server, tmp_path):
    srv, base = start(server)
    body = "".join("pg,sensor=p temperature=%d %d\n" % (i, T0 + i * S)
                   for i in range(25))
    assert write(base, tmp_path, body)[0] == 204
    seen, cursor, pages = [], None, 0
    while True:
        params = {"sensor": "p", "limit": 10}
        if cursor:
            params["from"] = cursor
        d = get_json(base, "/api/readings" + q(**params))
        pages += 1
        seen += [x["value"] for x in d["readings"]]
        cursor = d["next"]
        if cursor is None:
            break
        assert isinstance(cursor, str)  # exact in JavaScript too
    assert pages == 3 and seen == [float(i) for i in range(25)]

    status, head, text = curl(base + "/api/readings" + q(
        sensor="p", format="csv", limit=2, to=T0 + 10 * S))
    assert status == 200 and "text/csv" in head
    assert "X-Sensornet-Next: %d" % (T0 + 2 * S) in head
    assert text.splitlines() == [
        "time,ts,value",
        "2023-11-14T22:13:20.000000000Z,%d,0" % T0,
        "2023-11-14T22:13:21.000000000Z,%d,1" % (T0 + S)]
    # The last page has no cursor; a range in RFC 3339 and relative form.
    status, head, text = curl(base + "/api/readings" + q(
        sensor="p", format="csv", **{"from": "2023-11-14T22:13:43Z"}))
    assert "X-Sensornet-Next" not in head and len(text.splitlines()) == 3
    d = get_json(base, "/api/readings" + q(sensor="p", **{"from": "-1h"}))
    assert d["readings"] == []  # 2023 is long before the last hour


def test_readings_which_series(server, tmp_path):
    srv, base = start(server)
    assert write(base, tmp_path,
                 "w,sensor=one temperatura=20 %d\n"
                 "w,sensor=two temperature=1,humidity=2 %d\n"
                 % (T0, T0))[0] == 204
    # One quantity: may be left out. An alias names the same quantity.
    assert get_json(base, "/api/readings?sensor=one")["quantity"] == \
        "temperature"
    assert get_json(base, "/api/readings?sensor=one&quantity=Temp")[
        "count"] == 1
    err = get_json(base, "/api/readings?sensor=two", want=400)["error"]
    assert "several quantities (humidity, temperature)" in err
    err = get_json(base, "/api/series?sensor=nobody", want=404)["error"]
    assert err == "no sensor 'nobody'"
    err = get_json(base, "/api/readings?sensor=one&quantity=co2",
                   want=404)["error"]
    assert err == "no readings of co2 from sensor 'one'"


@pytest.mark.parametrize("path,msg", [
    ("/api/readings", "missing parameter 'sensor'"),
    ("/api/readings?sensor=", "sensor: 1 to 128 bytes"),
    ("/api/readings?sensor=%01", "sensor: 1 to 128 bytes"),
    ("/api/readings?sensor=s&sensor=t", "given twice"),
    ("/api/readings?sensor=s&limit=0", "limit: '0' is not a number"),
    ("/api/readings?sensor=s&limit=ten", "limit:"),
    ("/api/readings?sensor=s&format=xml", "format: 'xml'"),
    ("/api/readings?sensor=s&from=yesterday", "from: 'yesterday' is not a "
                                              "time"),
    ("/api/readings?sensor=s&to=2023-02-30T00:00:00Z", "to:"),
    ("/api/readings?sensor=s&from=now&to=-1h", "from must be before to"),
    ("/api/readings?sensor=s&step=1s", "unknown parameter 'step'"),
    ("/api/series?sensor=s&step=10", "step: '10' is not a duration"),
    ("/api/series?sensor=s&step=1ms", "more than 10000 buckets"),
    ("/api/series?sensor=s&limit=5", "unknown parameter 'limit'"),
    ("/api/series?sensor=s&from=99999999999999999999", "out of range"),
])
def test_bad_parameters(server, path, msg):
    srv, base = start(server)
    status, head, body = get(base, path)
    assert status == 400, (status, body)
    assert head["Content-Type"].startswith("application/json")
    assert msg in json.loads(body)["error"], body


def test_limit_is_capped(server, tmp_path):
    srv, base = start(server)
    body = "".join("cap,sensor=c v=%d %d\n" % (i, T0 + i) for i in range(12000))
    assert write(base, tmp_path, body)[0] == 204
    d = get_json(base, "/api/readings?sensor=c&limit=999999")
    assert d["count"] == 10000 and d["next"] == str(T0 + 10000)


# ---- /api/series ---------------------------------------------------------------

def test_series_default_range_and_live_data(server):
    srv, base = start(server)
    c = LineConn(srv.connect())
    for i in range(5):
        c.send("Sensor1 - Temperatura: %d°C\n" % (20 + i))
    c.wait_ok(5)
    d = get_json(base, "/api/series?sensor=Sensor1")
    assert d["to"] - d["from"] == 3600 * S and d["step"] == 15 * S
    assert sum(p["count"] for p in d["points"]) == 5
    assert min(p["min"] for p in d["points"]) == 20
    assert max(p["max"] for p in d["points"]) == 24
    d = get_json(base, "/api/series?sensor=Sensor1&from=-5m&to=now")
    assert d["step"] == S
    assert all(p["ts"] % S == 0 for p in d["points"])


# ---- /metrics and /healthz -----------------------------------------------------

METRIC_LINE = re.compile(
    r'^[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? [0-9.e+-]+$')


def test_metrics_with_curl(server, tmp_path):
    srv, base = start(server)
    c = LineConn(srv.connect())
    c.send("Sensor1 - Temperatura: 21°C\nnonsense\nm,sensor=s v=NaN\n"
           "m,sensor=s v=1\n")
    errs = c.wait_ok(2)
    assert len(errs) == 2
    assert write(base, tmp_path, "m,sensor=h v=1\nbad\n")[0] == 400
    status, head, text = curl(base + "/metrics")
    assert status == 200
    assert "Content-Type: text/plain; version=0.0.4" in head
    values = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) [a-z_]+ .+$", line), line
            continue
        assert METRIC_LINE.match(line), line
        name, value = line.rsplit(" ", 1)
        values[name] = float(value)
    assert values["sensornet_connections"] == 1
    assert values["sensornet_connections_total"] == 1
    assert values['sensornet_lines_accepted_total{source="tcp"}'] == 2
    assert values['sensornet_lines_accepted_total{source="http"}'] == 1
    assert values['sensornet_lines_refused_total{source="tcp",'
                  'reason="syntax_error"}'] == 1
    assert values['sensornet_lines_refused_total{source="tcp",'
                  'reason="number_out_of_range"}'] == 1
    assert values['sensornet_lines_refused_total{source="http",'
                  'reason="syntax_error"}'] == 1
    assert values["sensornet_received_bytes_total"] > 50
    assert values["sensornet_storage_healthy"] == 1
    assert values["sensornet_writer_queue_batches"] == 0
    assert values["sensornet_storage_errors_total"] == 0
    # Histograms: cumulative buckets ending in +Inf == _count.
    for h in ("sensornet_commit_duration_seconds",
              "sensornet_commit_readings"):
        buckets = [(k, v) for k, v in values.items()
                   if k.startswith(h + "_bucket")]
        counts = [v for _, v in buckets]
        assert counts == sorted(counts) and len(counts) == 12, buckets
        assert buckets[-1][0].endswith('le="+Inf"}')
        assert counts[-1] == values[h + "_count"] == values[
            "sensornet_commits_total"] > 0
    assert values["sensornet_commit_readings_sum"] == \
        values["sensornet_committed_readings_total"] == 3
    assert values['sensornet_http_requests_total{code="4xx"}'] >= 1
    c.close()


# ---- the dashboard's files and the sensor port -----------------------------------

def test_dashboard_files(server):
    srv, base = start(server)
    status, head, body = get(base, "/")
    assert status == 200 and head["Content-Type"] == "text/html; charset=utf-8"
    assert b"<title>sensornet</title>" in body
    assert "default-src 'self'" in head["Content-Security-Policy"]
    assert b"http://" not in body and b"https://" not in body  # no CDN
    for path, ctype in (("/app.js", "text/javascript"),
                        ("/style.css", "text/css"),
                        ("/favicon.svg", "image/svg+xml")):
        status, h, b = get(base, path)
        assert status == 200 and h["Content-Type"].startswith(ctype)
        assert len(b) > 100
    etag = get(base, "/app.js")[1]["ETag"]
    status, _, b = get(base, "/app.js", {"If-None-Match": etag})
    assert status == 304 and b == b""
    status, h, b = get(base, "/index.html", method="HEAD")
    assert status == 200 and b == b""
    status, h, b = get(base, "/nothing-here")
    assert status == 404 and json.loads(b) == {
        "error": "not found: /nothing-here"}


def test_sensor_port_sends_browsers_to_the_dashboard(server):
    srv, base = start(server)
    s = srv.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: localhost:%d\r\n\r\n" % srv.port)
    resp = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        resp += chunk
    assert resp.startswith(b"HTTP/1.0 302 Found"), resp
    assert (b"Location: http://localhost:%d/" % srv.http_port) in resp
    # And the dashboard is there.
    assert get("http://localhost:%d" % srv.http_port, "/")[0] == 200


def test_http_off(server):
    srv = server("--http", "off")
    s = srv.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    resp = s.recv(4096)
    assert resp.startswith(b"HTTP/1.0 400"), resp


def test_http_address_errors(tmp_path):
    r = subprocess.run([SERVER, "--http", "nonsense", "-t"],
                       capture_output=True, timeout=30)
    assert r.returncode == 2 and b"--http" in r.stderr, r.stderr
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        r = subprocess.run([SERVER, "--listen", "127.0.0.1:%d" % get_port(),
                            "--db", str(tmp_path / "x.db"), "--log", "off",
                            "--http", "127.0.0.1:%d" % port],
                           capture_output=True, timeout=30)
    finally:
        busy.close()
    assert r.returncode != 0
    assert b"--http" in r.stderr and b"in use" in r.stderr, r.stderr
    r = subprocess.run([SERVER, "--help"], capture_output=True, timeout=30)
    assert b"--http ADDR" in r.stdout and b"--http-max-body" in r.stdout
