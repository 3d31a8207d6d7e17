"""Paced requests, one new connection each (as an SDK's credential fetch):
sends COUNT GETs to URL, one every INTERVAL_MS, and prints one line per
request: "EPOCH_SECONDS LATENCY_MS STATUS CONNECT_MS" (status 0: the
connection failed, was reset or timed out). Latency: from the start of the
connect to the end of the body; CONNECT_MS: the TCP handshake alone (a
dropped SYN shows as about 1,000 ms there).

Usage: python probe.py URL COUNT INTERVAL_MS
"""

import http.client
import sys
import time
import urllib.parse

TIMEOUT = 5.0


def one(host, port, path):
    """(status, connect seconds)"""
    connection = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
    started = time.perf_counter()
    connected = None
    try:
        connection.connect()
        connected = time.perf_counter() - started
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status, connected
    except (OSError, http.client.HTTPException):
        return 0, connected if connected is not None else time.perf_counter() - started
    finally:
        connection.close()


def main(url, count, interval):
    parts = urllib.parse.urlsplit(url)
    host, port, path = parts.hostname, parts.port or 80, parts.path or "/"
    lines = []
    next_at = time.monotonic()
    for _ in range(count):
        now = time.monotonic()
        if now < next_at:
            time.sleep(next_at - now)
        next_at = max(next_at, now) + interval  # no catching up after a slow one
        started, wall = time.perf_counter(), time.time()
        status, connect = one(host, port, path)
        lines.append(f"{wall:.6f} {(time.perf_counter() - started) * 1000:.3f} {status} {connect * 1000:.3f}")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]) / 1000)
