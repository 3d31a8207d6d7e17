#!/usr/bin/env python3
"""A kube2iam stand-in for the cut-over test: like kube2iam, it binds
PORT on every interface of the node and answers the role listing for every
pod (here with the fixed name "from-kube2iam", so a prober can tell who
answered). Its DNAT rule is installed by the test, shaped as kube2iam's.

usage: kube2iam_standin.py PORT
"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.rstrip("/").endswith("/meta-data/iam/security-credentials"):
            body = b"from-kube2iam"
            self.send_response(200)
        else:
            body = b"not found"
            self.send_response(404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer.allow_reuse_address = True
ThreadingHTTPServer(("", int(sys.argv[1])), Handler).serve_forever()
