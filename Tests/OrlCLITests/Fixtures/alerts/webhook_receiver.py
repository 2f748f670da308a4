"""A webhook receiver for the alert tests: verifies X-Orl-Signature on its own (Python's
hmac, not orl's code), journals every request, deduplicates by X-Orl-Event-Id per endpoint
(path) as a real receiver would, and can hold its first answer (while <dir>/hold exists) so that a test
can kill the controller mid-delivery.

usage: webhook_receiver.py DIR SIGNING_KEY   (writes DIR/port, appends DIR/journal.jsonl)
"""
import hashlib, hmac, json, os, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

directory, key = sys.argv[1], sys.argv[2].encode()
lock = threading.Lock()
acked = set()
count = 0


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        global count
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        event_id = self.headers.get("X-Orl-Event-Id", "")
        timestamp = self.headers.get("X-Orl-Timestamp", "")
        given = self.headers.get("X-Orl-Signature")
        expected = "v1=" + hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        with lock:
            count += 1
            first = count == 1
            entry = {
                "path": self.path, "id": event_id, "type": self.headers.get("X-Orl-Event-Type"),
                "attempt": self.headers.get("X-Orl-Delivery-Attempt"), "signed": given is not None,
                "valid": given is not None and hmac.compare_digest(given, expected),
                "fresh": timestamp.isdigit() and abs(time.time() - int(timestamp)) < 300,
                "duplicate": (self.path, event_id) in acked, "body": json.loads(body),
            }
            with open(os.path.join(directory, "journal.jsonl"), "a") as journal:
                journal.write(json.dumps(entry) + "\n")
        if self.path == "/broken":
            self.send_response(500)
            self.end_headers()
            return
        # Held: the test kills the controller while this answer waits.
        hold = os.path.join(directory, "hold")
        while first and os.path.exists(hold):
            time.sleep(0.05)
        with lock:
            acked.add((self.path, event_id))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
with open(os.path.join(directory, "port.tmp"), "w") as f:
    f.write(str(server.server_address[1]))
os.rename(os.path.join(directory, "port.tmp"), os.path.join(directory, "port"))
server.serve_forever()
