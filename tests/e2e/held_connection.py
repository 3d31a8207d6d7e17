#!/usr/bin/env python3
"""A pod that holds one keep-alive connection to the metadata address.

Usage: held_connection.py MARKER_FILE DEADLINE_SECONDS

Takes an IMDSv2 token, then asks GET /latest/meta-data/iam/security-credentials/
on the same connection every 50 ms and prints, per request, a line
`held <after> <port> <answer>` where <after> is 1 once MARKER_FILE exists (the
test creates it when it sees the startup taint gone), <port> the connection's
local port (the same on every line: one connection) and <answer> the body, or
`held <after> error <what>` when the connection fails. After the first
failure it asks once on a new connection (`new <answer>`) and exits; it also
exits at the deadline, or two seconds after MARKER_FILE appeared.
"""

import http.client
import os
import sys
import time

PATH = "/latest/meta-data/iam/security-credentials/"


def token(connection):
    connection.request("PUT", "/latest/api/token",
                       headers={"x-aws-ec2-metadata-token-ttl-seconds": "300"})
    response = connection.getresponse()
    return response.read().decode()


def ask(connection, value):
    connection.request("GET", PATH, headers={"x-aws-ec2-metadata-token": value})
    response = connection.getresponse()
    return response.read().decode(errors="replace").strip()


def main():
    marker, deadline = sys.argv[1], time.time() + float(sys.argv[2])
    held = http.client.HTTPConnection("169.254.169.254", 80, timeout=2)
    held.connect()
    port = held.sock.getsockname()[1]
    value = token(held)
    marked = None
    while time.time() < deadline:
        after = 1 if os.path.exists(marker) else 0
        if after:
            # Two seconds past the taint's removal is long enough to see
            # the connection still getting through.
            marked = marked or time.time()
            if time.time() - marked > 2:
                print("deadline", flush=True)
                return
        try:
            answer = ask(held, value)
            port = held.sock.getsockname()[1]
        except Exception as error:  # the reset is what the test waits for
            print(f"held {after} error {type(error).__name__}", flush=True)
            break
        print(f"held {after} {port} {answer}", flush=True)
        time.sleep(0.05)
    else:
        print("deadline", flush=True)
        return
    fresh = http.client.HTTPConnection("169.254.169.254", 80, timeout=2)
    try:
        print(f"new {ask(fresh, token(fresh))}", flush=True)
    except Exception as error:
        print(f"new error {type(error).__name__}", flush=True)


if __name__ == "__main__":
    main()
