#!/usr/bin/env python3
"""A stand-in for a Mastodon server / Bluesky PDS that refuses every request: it records
what it was sent (method, path, Authorization header, body) in a root-only file and answers
401, so the test can tell whether presenced sent the token it got from LoadCredential.
It logs nothing itself (the token must not reach the journal through the test either).
usage: fake-network.py PORT LOGFILE"""
import http.server
import json
import os
import sys

PORT, LOG = int(sys.argv[1]), sys.argv[2]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def record(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as f:
            f.write(json.dumps({"method": self.command, "path": self.path,
                                "authorization": self.headers.get("Authorization"),
                                "body": body}) + "\n")
        reply = json.dumps({"error": "The access token is invalid"}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_GET = do_POST = do_PUT = do_DELETE = record

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
