#!/usr/bin/env python3
"""A stdio MCP server (the official `mcp` Python SDK's MCPServer, formerly FastMCP, on
its stdio transport) that orl's tests run as a Tool of type mcp with spec.mcp.command.

Its tools report what the server can see and do from where orl runs it: its uid and
whether its credential arrived (NOTES_TOKEN), a TCP connection to a port on the host's
loopback, a file it tries to read; `crash` ends it; `spawn` and `hog` push against its
pids and memory limits. NOTES_WHOAMI_DESCRIPTION replaces
the description of whoami (a server whose tool changes after it was pinned).
"""
import os
import signal
import socket
import sys
import time

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

server = MCPServer("notes")
quiet = ToolAnnotations(readOnlyHint=True, openWorldHint=False)


@server.tool(description=os.environ.get("NOTES_WHOAMI_DESCRIPTION", "Who the server runs as."), annotations=quiet)
def whoami() -> dict:
    return {"uid": os.getuid(), "pid": os.getpid(), "cwd": os.getcwd(), "credential": "NOTES_TOKEN" in os.environ}


@server.tool(annotations=quiet)
def echo_credential() -> str:
    """Says its credential out loud (orl masks it)."""
    return "my credential is " + os.environ.get("NOTES_TOKEN", "")


@server.tool(annotations=ToolAnnotations(readOnlyHint=True, openWorldHint=True))
def connect(port: int) -> str:
    """Opens a TCP connection to 127.0.0.1:PORT."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return "connected"
    except OSError as e:
        return f"failed: {e}"


@server.tool(annotations=quiet)
def read(path: str) -> str:
    """Reads a file."""
    try:
        with open(path) as f:
            return "read: " + f.read(200)
    except OSError as e:
        return f"failed: {e}"


@server.tool(annotations=quiet)
def crash() -> str:
    """Ends the server."""
    print("crashing on purpose", file=sys.stderr, flush=True)
    os._exit(3)


@server.tool(annotations=quiet)
def spawn(count: int) -> dict:
    """Starts COUNT processes at once (then ends them): how many the pids limit let it."""
    children, error = [], None
    for _ in range(count):
        try:
            pid = os.fork()
        except OSError as e:
            error = str(e)
            break
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return {"started": len(children), "error": error}


@server.tool(annotations=quiet)
def hog(megabytes: int) -> str:
    """Fills MEGABYTES of memory, touching every page."""
    blocks = []
    for _ in range(megabytes):
        blocks.append(bytearray(1 << 20))
    return f"held {len(blocks)} MiB"


@server.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=True, openWorldHint=False))
def forget() -> str:
    """Forgets everything (a Policy denies it)."""
    return "forgotten"


if __name__ == "__main__":
    print("notes server starting", file=sys.stderr, flush=True)
    server.run("stdio")
