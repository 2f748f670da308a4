#!/usr/bin/env python3
"""orl's /mcp from the official MCP Python client (`mcp` on PyPI), as an agent sees it.

    python3 client.py URL TOKEN list
    python3 client.py URL TOKEN call NAME '{"title": "..."}'

URL is the controller's API plus /mcp; TOKEN the agent's ORL_TOKEN. Prints one JSON
line: the tool names for list; for call {"isError": ..., "text": ..., "structured": ...},
or {"error": CODE, "message": ...} when orl refuses the call.
"""
import asyncio
import json
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError


async def main(url, token, command, *rest):
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
    async with http, Client(streamable_http_client(url, http_client=http)) as client:
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
