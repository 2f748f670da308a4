#!/usr/bin/env python3
"""A stdio MCP server (the official `mcp` Python SDK's MCPServer, formerly FastMCP, on
its stdio transport) that orl's tests run as a Tool of type mcp with spec.mcp.command.

Its tools report what the server can see and do from where orl runs it: its uid and
whether its credential arrived (NOTES_TOKEN), a TCP connection to a port on the host's
loopback, a file it tries to read; `crash` ends it. NOTES_WHOAMI_DESCRIPTION replaces
the description of whoami (a server whose tool changes after it was pinned).
"""
import os
import socket
import sys

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


@server.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=True, openWorldHint=False))
def forget() -> str:
    """Forgets everything (a Policy denies it)."""
    return "forgotten"


if __name__ == "__main__":
    print("notes server starting", file=sys.stderr, flush=True)
    server.run("stdio")
