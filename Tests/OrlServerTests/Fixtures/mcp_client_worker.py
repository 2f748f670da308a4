#!/usr/bin/env python3
"""examples/mcp/client.py's commands, one per line of standard input, in one process.

The tests make dozens of client calls, and a new interpreter spent about a second of CPU
importing the SDK (pydantic building its models) before its first request: most of what
the MCP suites cost. Each call is still the example's own main(): a new HTTP client, a new
MCP session, a new event loop, the mode read from MCP_MODE.

Input, a line per call: a JSON array [MODE, URL, TOKEN, COMMAND, ARGS...]. Output, a line per
call: {"out": what main() printed} or {"failed": the traceback}.
"""
import asyncio
import contextlib
import io
import json
import os
import sys
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "examples", "mcp"))
import client  # noqa: E402

for line in sys.stdin:
    mode, url, token, *command = json.loads(line)
    os.environ["MCP_MODE"] = mode
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            asyncio.run(client.main(url, token, *command))
        answer = {"out": printed.getvalue()}
    except BaseException:  # a failed call is reported, and the next one still served
        answer = {"failed": traceback.format_exc()}
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()
