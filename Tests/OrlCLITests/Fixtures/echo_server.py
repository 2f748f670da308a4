#!/usr/bin/env python3
r"""An HTTP tool for the end-to-end tests: `echo_server.py PORT_FILE RECORD_FILE`.

Listens on a free loopback port (written to PORT_FILE), appends each request it gets
to RECORD_FILE as a JSON line (path, headers, body), and answers with the body it got
and, carelessly, the Authorization header, plainly and in the JSON escapes a parser
decodes back to it (`\u002d`, every character as `\uXXXX` in lower, upper and mixed
case): what orl must mask before the agent sees it.
"""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


class Echo(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        with open(sys.argv[2], "a") as record:
            record.write(json.dumps({"path": self.path, "headers": dict(self.headers), "body": body}) + "\n")
        auth = self.headers.get("Authorization") or ""
        escaped = {
            "dashed": auth.replace("-", "\\u002d"),
            "lower": "".join("\\u%04x" % ord(c) for c in auth),
            "upper": "".join("\\u%04X" % ord(c) for c in auth),
            "mixed": "".join(("\\u%04x" if i % 3 == 0 else "\\u%04X" if i % 3 == 1 else "%s") % (ord(c) if i % 3 < 2 else c) for i, c in enumerate(auth)),
        }
        members = ", ".join('"%s": "%s"' % item for item in escaped.items())
        answer = ('{"echo": %s, "authorization": %s, %s}' % (json.dumps(json.loads(body or "null")), json.dumps(auth), members)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *arguments):
        pass


server = HTTPServer(("127.0.0.1", 0), Echo)
with open(sys.argv[1] + ".tmp", "w") as port:
    port.write(str(server.server_address[1]))
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
server.serve_forever()
