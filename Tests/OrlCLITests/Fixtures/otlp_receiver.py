#!/usr/bin/env python3
"""An OpenTelemetry collector for the tests: `otlp_receiver.py PORT_FILE SPANS_FILE`.

Serves OTLP/HTTP `POST /v1/traces` on a free loopback port (written to PORT_FILE),
decodes each protobuf ExportTraceServiceRequest with the official bindings
(opentelemetry-proto, installed by `scripts/install-deps --test`) and appends every
span to SPANS_FILE as a JSON line: ids in hex, the parent, name, kind, times, status,
attributes, and the resource's service.name. A body that does not decode is answered
400 and recorded as {"error": ...}.
"""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest, ExportTraceServiceResponse


def value(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        lines = []
        status = 200
        try:
            if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
                raise ValueError(f"unexpected {self.path} {self.headers.get('Content-Type')}")
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            for resource_spans in request.resource_spans:
                resource = {kv.key: value(kv.value) for kv in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        lines.append({
                            "trace": span.trace_id.hex(), "span": span.span_id.hex(), "parent": span.parent_span_id.hex(),
                            "name": span.name, "kind": span.kind, "start": span.start_time_unix_nano,
                            "end": span.end_time_unix_nano, "status": span.status.code, "message": span.status.message,
                            "attributes": {kv.key: value(kv.value) for kv in span.attributes},
                            "service": resource.get("service.name"), "scope": scope_spans.scope.name,
                        })
        except Exception as error:  # noqa: BLE001 - any decoding failure is the finding
            lines = [{"error": str(error)}]
            status = 400
        with open(sys.argv[2], "a") as out:
            for line in lines:
                out.write(json.dumps(line) + "\n")
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *arguments):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
with open(sys.argv[1] + ".tmp", "w") as port:
    port.write(str(server.server_address[1]))
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
server.serve_forever()
