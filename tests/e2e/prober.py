#!/usr/bin/env python3
"""A pod that asks the metadata address for its role name every few
milliseconds as SDKs do (an IMDSv2 token first, then the listing with it,
each on a new connection), until STOP_FILE exists, then
prints one JSON summary: answers by source, the longest stretch without an
answer from an agent, and when the real metadata service answered.

usage: prober.py STOP_FILE AGENT_ANSWER[,AGENT_ANSWER...] REAL_ANSWER [INTERVAL_MS]
An answer equal to one of AGENT_ANSWER counts as an agent's (iamlet or a
kube2iam stand-in, named by their answers); REAL_ANSWER is the node's role
name as the real metadata service lists it.
"""
import http.client
import json
import os
import sys
import time

stop_file, agents, real = sys.argv[1], sys.argv[2].split(","), sys.argv[3]
interval = float(sys.argv[4]) / 1000 if len(sys.argv) > 4 else 0.005
path = "/latest/meta-data/iam/security-credentials/"

counts = {name: 0 for name in agents}
counts.update({"real": 0, "failed": 0})
real_at = []
failing_since = None
longest_gap = 0.0
gaps = []
start = time.monotonic()
while not os.path.exists(stop_file):
    now = time.monotonic()
    try:
        headers = {"Connection": "close"}
        # The real service refuses tokenless requests on IMDSv2-only nodes
        # (as the fake one does): ask for a token first, so that an answer
        # from the real service is seen as one.
        conn = http.client.HTTPConnection("169.254.169.254", 80, timeout=0.5)
        conn.request("PUT", "/latest/api/token",
                     headers={"Connection": "close", "x-aws-ec2-metadata-token-ttl-seconds": "60"})
        response = conn.getresponse()
        token = response.read().decode(errors="replace").strip()
        conn.close()
        if response.status == 200:
            headers["x-aws-ec2-metadata-token"] = token
        conn = http.client.HTTPConnection("169.254.169.254", 80, timeout=0.5)
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        body = response.read().decode(errors="replace").strip()
        conn.close()
        answer = body if response.status == 200 else None
    except Exception:
        answer = None
    if answer in agents:
        counts[answer] += 1
        if failing_since is not None:
            gap = now - failing_since
            gaps.append(round(gap * 1000, 1))
            longest_gap = max(longest_gap, gap)
            failing_since = None
    else:
        if answer == real:
            counts["real"] += 1
            real_at.append(round((now - start) * 1000))
        else:
            counts["failed"] += 1
        if failing_since is None:
            failing_since = now
    time.sleep(interval)
if failing_since is not None:
    longest_gap = max(longest_gap, time.monotonic() - failing_since)
    gaps.append(round((time.monotonic() - failing_since) * 1000, 1))
print(json.dumps({
    "counts": counts,
    "real_at_ms": real_at[:20],
    "gaps_ms": gaps,
    "longest_gap_ms": round(longest_gap * 1000, 1),
    "seconds": round(time.monotonic() - start, 2),
}))
