"""The HTTP API's read side on PostgreSQL, against a throwaway server
(tests/pg.py): the store query suite (tests/unit/test_store_query.c) with
SENSORNET_TEST_PG set, and sensornet-server --postgres answering the API
from its own read connection, also across a PostgreSQL restart.
"""
import json
import os
import subprocess
import urllib.error
import urllib.request

from conftest import BUILD, ROOT, get_port, skip_or_fail, wait_until
from pg import pg  # noqa: F401 (the fixture)

S = 1000000000
T0 = 1700000000 * S


def get(base, path):
    try:
        with urllib.request.urlopen(base + path, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_store_query_suite_on_postgresql(pg, tmp_path):
    exe = os.path.join(BUILD, "tests", "test_store_query")
    if not os.path.exists(exe):
        skip_or_fail("%s not built (make unit)" % exe)
    env = dict(os.environ, TMPDIR=str(tmp_path), SENSORNET_TEST_PG=pg.conninfo)
    r = subprocess.run([exe], cwd=ROOT, env=env, capture_output=True,
                       timeout=600)
    out = r.stdout.decode("utf-8", "replace") + r.stderr.decode(
        "utf-8", "replace")
    assert r.returncode == 0, out
    assert "group: store query (postgresql)" in out, out
    assert "PostgreSQL query tests not run" not in out, out
    for bad in ("[  FAILED  ]", "ERROR: AddressSanitizer",
                "ERROR: LeakSanitizer", "runtime error:"):
        assert bad not in out, out


def test_http_api_on_postgresql(pg, server, tmp_path):
    port = get_port()
    srv = server("--postgres", pg.conninfo, "--http", "127.0.0.1:%d" % port)
    base = "http://127.0.0.1:%d" % port
    body = tmp_path / "points.lp"
    body.write_text("".join("pg,sensor=p temperature=%d,humidity=%d %d\n"
                            % (20 + i, 50 + i, T0 + i * S)
                            for i in range(40)))
    r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w",
                        "%{http_code}", "--data-binary", "@%s" % body,
                        base + "/write?db=x"], capture_output=True,
                       timeout=60)
    assert r.stdout == b"204", r
    assert pg.sql("SELECT count(*) FROM readings") == "80"

    status, d = get(base, "/api/sensors")
    assert status == 200
    got = {(s["sensor"], s["quantity"]): s for s in d["sensors"]}
    t = got[("p", "temperature")]
    assert t["count"] == 40 and t["last_value"] == 59 and t["unit"] == "°C"
    assert t["last_ts"] == T0 + 39 * S and t["peer"].startswith("127.0.0.1:")

    status, d = get(base, "/api/readings?sensor=p&quantity=humidity&limit=15")
    assert status == 200 and d["count"] == 15 and d["next"] == str(T0 + 15 * S)
    assert [x["value"] for x in d["readings"]] == list(range(50, 65))

    status, d = get(base, "/api/series?sensor=p&quantity=temperature"
                          "&from=%d&to=%d&step=10s" % (T0, T0 + 40 * S))
    assert status == 200
    assert [(p["count"], p["min"], p["max"], p["avg"]) for p in
            d["points"]] == [(10, 20, 29, 24.5), (10, 30, 39, 34.5),
                             (10, 40, 49, 44.5), (10, 50, 59, 54.5)]

    # PostgreSQL goes away: the API says so (503), then recovers by itself.
    pg.stop()
    status, d = get(base, "/api/sensors")
    assert status == 503 and "database" in d["error"], d
    pg.start()
    wait_until(lambda: get(base, "/api/sensors")[0] == 200, timeout=30,
               what="API back after PostgreSQL restart")
    wait_until(lambda: get(base, "/healthz")[0] == 200, timeout=30,
               what="storage healthy")
