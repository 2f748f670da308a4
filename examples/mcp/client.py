#!/usr/bin/env python3
"""orl's /mcp from the official MCP Python client (`mcp` on PyPI), as an agent sees it.

    python3 client.py URL TOKEN list
    python3 client.py URL TOKEN version
    python3 client.py URL TOKEN call NAME '{"title": "..."}'

URL is the controller's API plus /mcp; TOKEN the agent's ORL_TOKEN. MCP_MODE picks how
the client connects: auto (the default: the stateless 2026-07-28 revision, which orl
speaks, after a server/discover probe), legacy (the initialize handshake of 2025-11-25). Prints one JSON
line: [the protocol revision agreed] for version; the tool names for list; for call {"isError": ..., "text": ..., "structured": ...},
or {"error": CODE, "message": ...} when orl refuses the call.
"""
import asyncio
import json
import os
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError


async def main(url, token, command, *rest):
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
    async with http, Client(streamable_http_client(url, http_client=http), mode=os.environ.get("MCP_MODE", "auto")) as client:
        if command == "version":
            print(json.dumps([client.protocol_version]))
            return
        if command == "list":
            tools = await client.list_tools()
            print(json.dumps(sorted(t.name for t in tools.tools)))
            return
        name, arguments = rest[0], json.loads(rest[1]) if len(rest) > 1 else {}
        try:
            result = await client.call_tool(name, arguments)
        except MCPError as e:
            print(json.dumps({"error": e.error.code, "message": e.error.message}))
            return
        text = "".join(c.text for c in result.content if getattr(c, "type", "") == "text")
        print(json.dumps({"isError": bool(result.is_error), "text": text, "structured": result.structured_content}))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
