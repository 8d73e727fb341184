#!/usr/bin/env python3
"""Make docs/dashboard.png: a server with ten minutes of history for a few
sensors (written through POST /write) and live readings coming in over
sensor connections, photographed by tests/browser/dashboard.js.

    SENSORNET_BUILD=build python3 tests/browser/readme_screenshot.py [OUT.png]

Needs what tests/integ/test_dashboard.py needs (chromium, node,
playwright-core in build/npm). SPDX-License-Identifier: MIT
"""
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
BUILD = os.environ.get("SENSORNET_BUILD", os.path.join(ROOT, "build"))
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "docs",
                                                         "dashboard.png")
SERIES = [  # sensor, field, unit, base, swing, noise
    ("greenhouse", "temperature", "°C", 24.0, 1.6, 0.08),
    ("greenhouse", "humidity", "%", 62.0, 5.0, 0.4),
    ("lab-3", "co2", "ppm", 540.0, 60.0, 6.0),
    ("roof", "pressure", "hPa", 1013.2, 0.8, 0.03),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def value(i, t):
    _, _, _, base, swing, noise = SERIES[i]
    return round(base + swing * math.sin(t / 170.0 + i) +
                 random.gauss(0, noise), 2)


def line(i, t_s):
    sensor, field, unit, *_ = SERIES[i]
    return "env,sensor=%s,unit=%s %s=%s %d\n" % (
        sensor, unit, field, value(i, t_s), t_s * 10**9)


def main():
    random.seed(7)
    d = tempfile.mkdtemp(prefix="sn-shot-")
    port, http = free_port(), free_port()
    srv = subprocess.Popen([os.path.join(BUILD, "sensornet-server"),
                            "--listen", "127.0.0.1:%d" % port,
                            "--http", "127.0.0.1:%d" % http,
                            "--db", os.path.join(d, "s.db"),
                            "--log", os.path.join(d, "log.txt")])
    base = "http://127.0.0.1:%d" % http
    for _ in range(100):
        try:
            urllib.request.urlopen(base + "/healthz", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    now = int(time.time())
    body = "".join(line(i, t) for t in range(now - 600, now)
                   for i in range(len(SERIES)))
    urllib.request.urlopen(urllib.request.Request(
        base + "/write?precision=ns", data=body.encode(), method="POST"))
    stop = threading.Event()

    def feed(i):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.settimeout(0.5)
            while not stop.is_set():
                s.sendall(line(i, int(time.time())).encode())
                try:
                    s.recv(4096)
                except socket.timeout:
                    pass
                stop.wait(1.0)
    threads = [threading.Thread(target=feed, args=(i,)) for i in (0, 1, 2)]
    for t in threads:
        t.start()
    time.sleep(3)
    r = subprocess.run(["node", os.path.join(ROOT, "tests", "browser",
                                             "dashboard.js"),
                        "--url", base + "/", "--shot", OUT,
                        "--width", "1280", "--height", "900",
                        "--expect", "greenhouse:temperature"])
    stop.set()
    for t in threads:
        t.join()
    srv.send_signal(signal.SIGTERM)
    srv.wait(30)
    shutil.rmtree(d, ignore_errors=True)
    sys.exit(r.returncode)


if __name__ == "__main__":
    main()
