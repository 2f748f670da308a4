#!/usr/bin/env python3
"""An orl agent whose tools are MCP tools, reached through orl's /mcp (Python's standard
library only; orl's /mcp answers plain JSON, so no SDK is needed).

For each task it asks the model through the gateway, then lists the MCP tools orl
offers it for the step (tools/list) and calls each of them that its step lists and
AGENT_TOOLS names (tools/call), with the step's inputs as arguments. orl checks every
call against the agent's policies, injects the server's credential and refuses a tool
whose definition changed since it was pinned; a refusal fails the task without retry.

It reuses agent.py's task loop (serve, Context, OrlError, TaskFailed).
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from agent import Client, OrlError, TaskFailed, log, run_step, serve, tools_to_call  # noqa: E402


class Mcp:
    """JSON-RPC to orl's /mcp, for the task a call serves."""

    def __init__(self, client):
        self.client = client
        self.ids = 0

    def call(self, task, method, params):
        self.ids += 1
        message = {"jsonrpc": "2.0", "id": self.ids, "method": method, "params": params}
        headers = {**Client.serving(task), "Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-11-25"}
        _, reply = self.client.request("/mcp", message, headers=headers, timeout=120)
        if "error" in reply:
            raise TaskFailed(f"{method}: {reply['error']['message']}", retry=False)
        return reply["result"]


def mcp_step(task, context):
    """The reference agent's step without its tools, then the step's MCP tools."""
    wanted = tools_to_call(task)
    task_without_tools = {**task, "tools": []}
    output = run_step(task_without_tools, context)
    mcp = Mcp(context.client)
    offered = {tool["name"] for tool in mcp.call(task, "tools/list", {})["tools"]}
    log(f"offered for this step: {', '.join(sorted(offered)) or 'nothing'}")
    for tool in wanted:
        wire = tool.replace("/", "__", 1)
        if wire not in offered:
            raise TaskFailed(f"orl's /mcp does not offer {tool} for this step", retry=False)
        arguments = task.get("inputs") if isinstance(task.get("inputs"), dict) else {}
        result = mcp.call(task, "tools/call", {"name": wire, "arguments": arguments})
        text = "".join(part.get("text", "") for part in result.get("content", []) if part.get("type") == "text")
        if result.get("isError"):
            raise TaskFailed(f"tool {tool}: {text}")
        output[tool] = result.get("structuredContent") or text
        log(f"called {tool}")
    return output


if __name__ == "__main__":
    try:
        serve(mcp_step)
    except KeyError as missing:
        sys.exit(f"mcp_agent.py: {missing} is not set; the orl controller sets it when it starts the agent")
    except OrlError as error:
        sys.exit(f"mcp_agent.py: {error}")
