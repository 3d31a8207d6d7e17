"""A pod over its request budget that pipelines 2,000 requests per
connection and reconnects as soon as the agent closes: the cheapest way
for one pod to make the agent work. Prints how many connections it made
and how many were reset at once.

    python3 benches/pipeline_flood.py SOURCE_IP AGENT_PORT SECONDS
"""
import socket, sys, time
src, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
req = b"GET /latest/meta-data/iam/security-credentials/ HTTP/1.1\r\nhost: x\r\n\r\n" * 2000
end = time.time() + secs
conns = resets = 0
while time.time() < end:
    s = socket.socket()
    s.bind((src, 0))
    try:
        s.connect(("127.0.0.1", port)); conns += 1
        s.sendall(req)
        while s.recv(65536):
            pass
    except OSError:
        resets += 1
    finally:
        s.close()
print(f"connections {conns} resets {resets}")
