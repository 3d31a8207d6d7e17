"""Paced requests, one new connection each (as an SDK's credential fetch):
sends COUNT GETs to URL, one every INTERVAL_MS, and prints one line per
request: "EPOCH_SECONDS LATENCY_MS STATUS" (status 0: the connection failed,
was reset or timed out). Latency: connect to the end of the body.

Usage: python probe.py URL COUNT INTERVAL_MS
"""

import http.client
import sys
import time
import urllib.parse

TIMEOUT = 5.0


def one(host, port, path):
    connection = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return 0
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
        status = one(host, port, path)
        lines.append(f"{wall:.6f} {(time.perf_counter() - started) * 1000:.3f} {status}")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]) / 1000)
