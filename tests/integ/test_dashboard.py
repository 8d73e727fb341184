"""The dashboard in a real headless Chromium, against the real server fed by
real sensornet-client processes.

Debian's chromium is driven by npm's playwright-core, installed into
build/npm by scripts/deps.sh --test (tests/browser/dashboard.js does the
clicking and looking). Checked: the page loads with no console error and
nothing fetched from another host; the table lists the sensors the clients
feed, connected; their charts are drawn and update within 5 s; the time
range buttons redraw; the "no data" state; the lost-server state once the
server is stopped. Screenshots go to the test's tmp dir and are copied to
build/screenshots/.
"""
import json
import os
import shutil
import subprocess

import pytest

from conftest import BUILD, ROOT, get_port, skip_or_fail, wait_until

SCRIPT = os.path.join(ROOT, "tests", "browser", "dashboard.js")
NPM = os.environ.get("SENSORNET_NPM", os.path.join(ROOT, "build", "npm"))
CHROMIUM = os.environ.get("SENSORNET_CHROMIUM", "/usr/bin/chromium")
SHOTS = os.path.join(ROOT, "build", "screenshots")


def need_browser():
    node = shutil.which("node")
    if node is None:
        skip_or_fail("node is not installed (scripts/deps.sh --test)")
    if not os.access(CHROMIUM, os.X_OK):
        skip_or_fail("%s is missing (Debian package chromium; "
                     "scripts/deps.sh --test)" % CHROMIUM)
    if not os.path.isdir(os.path.join(NPM, "node_modules", "playwright-core")):
        skip_or_fail("playwright-core is not in %s (scripts/deps.sh --test "
                     "installs it)" % NPM)
    return node


def keep(path):
    """Copy a screenshot to build/screenshots/ for people to look at."""
    os.makedirs(SHOTS, exist_ok=True)
    shutil.copy(path, os.path.join(SHOTS, os.path.basename(path)))


def run_browser(node, args, on_stop=None, timeout=90):
    """Run dashboard.js; on_stop() is called when it asks for the server to
    be stopped. Returns its JSON result."""
    p = subprocess.Popen([node, SCRIPT] + args, cwd=ROOT,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        result = None
        for line in p.stdout:
            line = line.strip()
            if line == "STOP-SERVER":
                on_stop()
                p.stdin.write("stopped\n")
                p.stdin.flush()
            elif line.startswith("{"):
                result = json.loads(line)
        p.wait(timeout)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    err = p.stderr.read()
    assert result is not None, "no result from the browser: %s" % err
    assert result["ok"], json.dumps(result, indent=1) + err
    return result


def start_server(server):
    port = get_port()
    srv = server("--http", "127.0.0.1:%d" % port)
    srv.http_port = port
    return srv, "http://127.0.0.1:%d/" % port


def test_dashboard_live_sensors_in_chromium(server, client, tmp_path):
    node = need_browser()
    srv, url = start_server(server)
    c1 = client(srv, "--kind", "temperature", "--interval", "0.2",
                "--no-spool", "-q", "--drain-timeout", "0.5")
    c2 = client(srv, "--kind", "humidity", "--interval", "0.3",
                "--no-spool", "-q", "--drain-timeout", "0.5")

    def fed():
        c = srv.log_text()
        return "Sensor1 - Temperatura" in c and "Sensor2 - Umidade" in c
    wait_until(fed, timeout=15, what="both clients' readings logged")
    shot = str(tmp_path / "dashboard.png")
    lost = str(tmp_path / "dashboard-lost.png")

    def stop_server():
        assert srv.stop() == 0
    result = run_browser(node, [
        "--url", url, "--shot", shot, "--shot-lost", lost,
        "--expect", "Sensor1:temperature", "--expect", "Sensor2:humidity",
        "--lost"], on_stop=stop_server)
    names = [c["name"] for c in result["checks"]]
    for want in ("no console errors", "charts update within 5 s",
                 "table says connected Sensor1:temperature",
                 "table says connected Sensor2:humidity",
                 "lost-server banner shown", "range 1 h selected"):
        assert want in names, names
    assert result["update_ms"] < 5000
    cards = {(c["sensor"], c["quantity"]): c for c in result["cards"]}
    assert cards[("Sensor1", "temperature")]["readings"] > 0
    assert cards[("Sensor2", "humidity")]["last"].endswith("%")
    for path in (shot, lost):
        assert os.path.getsize(path) > 10000
        keep(path)
    for c in (c1, c2):
        assert c.alive()


def test_dashboard_empty_state_in_chromium(server, tmp_path):
    node = need_browser()
    srv, url = start_server(server)
    shot = str(tmp_path / "dashboard-empty.png")
    result = run_browser(node, ["--url", url, "--shot", shot, "--empty",
                                "--width", "1000", "--height", "600"])
    assert "empty state shown" in [c["name"] for c in result["checks"]]
    keep(shot)
