#!/usr/bin/env python3
"""Slow-loris load for the sensor port: open N connections and send one byte
per connection per second, spread evenly over the second, never a line end
(so no line ever completes and nothing is stored).

    python3 tests/trickle.py --connect 10.0.1.10:5000 --conns 2000 \\
        --duration 30

Prints "ready connected=N" once every connection is open, then at exit (end
of --duration, SIGTERM or SIGINT) one summary line:

    trickle: connected=N sent=BYTES closed_by_peer=N errors=N

One thread, non-blocking sockets, selectors to notice connections the server
closes. Used by tests/integ/test_reliability.py; also a manual tool.
"""
import argparse
import resource
import selectors
import signal
import socket
import sys
import time

# The bytes each connection trickles: the start of a line-protocol line
# that never ends (far below the server's 4096-byte line limit at 1 B/s).
BODY = b"sensornet,sensor=trickle temperature=1" + b"0" * 4000

stop = [False]


def on_signal(signo, frame):
    stop[0] = True


def raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n + 64
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE,
                           (min(want, hard) if hard != resource.RLIM_INFINITY
                            else want, hard))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--connect", required=True, help="HOST:PORT")
    ap.add_argument("--conns", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=1.0,
                    help="bytes per second per connection (default 1)")
    ap.add_argument("--duration", type=float, default=60.0)
    a = ap.parse_args(argv)
    host, port = a.connect.rsplit(":", 1)
    addr = (host, int(port))
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    raise_nofile(a.conns)

    sel = selectors.DefaultSelector()
    socks = []
    errors = 0
    for _ in range(a.conns):
        if stop[0]:
            break
        try:
            s = socket.create_connection(addr, timeout=10)
        except OSError as e:
            errors += 1
            print("trickle: connect: %s" % e, file=sys.stderr)
            continue
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, len(socks))
        socks.append(s)
    print("ready connected=%d" % len(socks), flush=True)

    alive = [True] * len(socks)
    pos = [0] * len(socks)
    sent = closed = 0
    start = time.monotonic()
    end = start + a.duration
    # Connection i sends its k-th byte at start + (k + i / n) / rate.
    n = max(1, len(socks))
    step = 1.0 / (a.rate * n)
    nxt = 0  # index of the next byte overall
    while not stop[0] and time.monotonic() < end:
        now = time.monotonic()
        due = start + nxt * step
        timeout = max(0.0, min(due - now, 0.05))
        for key, _ in sel.select(timeout):
            i = key.data
            try:
                data = key.fileobj.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                sel.unregister(key.fileobj)
                key.fileobj.close()
                alive[i] = False
                closed += 1
        now = time.monotonic()
        while start + nxt * step <= now:
            i = nxt % n
            nxt += 1
            if i >= len(socks) or not alive[i]:
                continue
            try:
                socks[i].send(BODY[pos[i] % len(BODY):pos[i] % len(BODY) + 1])
                pos[i] += 1
                sent += 1
            except BlockingIOError:
                pass
            except OSError:
                errors += 1
                sel.unregister(socks[i])
                socks[i].close()
                alive[i] = False
    for i, s in enumerate(socks):
        if alive[i]:
            s.close()
    print("trickle: connected=%d sent=%d closed_by_peer=%d errors=%d"
          % (len(socks), sent, closed, errors), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
