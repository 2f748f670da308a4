#!/usr/bin/env python3
"""A small MCP server (the official `mcp` Python SDK) that the MCP example and orl's
tests run: an in-memory issue tracker over streamable HTTP.

    python3 issues_server.py --port 8931 [--token SECRET] [--json]

--token makes it refuse requests without `Authorization: Bearer SECRET` (orl injects the
credential; agents never hold it). ISSUES_CREATE_DESCRIPTION replaces the description of
create_issue: how a test plays a server whose tool changes after it was pinned. The
first line on standard output is `listening on PORT` once it accepts connections.
"""
import argparse
import os
import sys

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, default=0)
parser.add_argument("--token")
parser.add_argument("--json", action="store_true", help="answer with JSON bodies instead of event streams")
args = parser.parse_args()

server = MCPServer("issues")
issues: list[dict] = []


@server.tool(annotations=ToolAnnotations(readOnlyHint=True, openWorldHint=False))
def list_issues() -> list[dict]:
    """List the open issues."""
    return issues


@server.tool(
    description=os.environ.get("ISSUES_CREATE_DESCRIPTION", "Open an issue with a title and a body."),
    annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False, openWorldHint=False),
)
def create_issue(title: str, body: str = "") -> dict:
    issue = {"id": len(issues) + 1, "title": title, "body": body}
    issues.append(issue)
    return issue


@server.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=True, openWorldHint=False))
def delete_issue(id: int) -> str:
    """Delete an issue for good."""
    issues[:] = [i for i in issues if i["id"] != id]
    return f"deleted {id}"


app = server.streamable_http_app(json_response=args.json)


async def guarded(scope, receive, send):
    if args.token and scope["type"] == "http":
        headers = dict(scope.get("headers") or [])
        if headers.get(b"authorization") != f"Bearer {args.token}".encode():
            await send({"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"missing or wrong bearer token"})
            return
    await app(scope, receive, send)


class Announcing(uvicorn.Server):
    async def startup(self, sockets=None):
        await super().startup(sockets)
        port = self.servers[0].sockets[0].getsockname()[1]
        print(f"listening on {port}", flush=True)


config = uvicorn.Config(guarded, host="127.0.0.1", port=args.port, log_level="warning", lifespan="on")
# The app's lifespan starts the session manager; uvicorn runs it for the wrapper too.
config.app = guarded
Announcing(config).run()
