#!/usr/bin/env python3
"""A TCP proxy that can be cut off: while CUT_FILE exists it forwards
nothing in either direction (connections stay open, bytes wait in the
kernel's buffers), as a network partition between the agent and the API
server would; when the file goes, forwarding resumes where it stopped.

usage: cuttable_proxy.py LISTEN_PORT TARGET_HOST TARGET_PORT CUT_FILE
"""
import os
import select
import socket
import sys
import threading

listen_port, host, port, cut_file = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]


def pump(source, sink):
    try:
        while True:
            if os.path.exists(cut_file):
                select.select([], [], [], 0.05)
                continue
            ready, _, _ = select.select([source], [], [], 0.05)
            if not ready:
                continue
            data = source.recv(65536)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    for s in (source, sink):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", listen_port))
server.listen(64)
while True:
    client, _ = server.accept()
    upstream = socket.create_connection((host, port))
    for a, b in ((client, upstream), (upstream, client)):
        threading.Thread(target=pump, args=(a, b), daemon=True).start()
