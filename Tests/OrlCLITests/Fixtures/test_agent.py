#!/usr/bin/env python3
"""An agent for the end-to-end tests, built on the reference agent's client
(examples/agents/agent.py): each step's literal inputs say what to do, and every task
it starts and finishes is appended to $JOURNAL as a JSON line, for the tests to read.

Inputs a step may give (all optional):
  fail_attempts   fail attempts 1..N (retryable), succeed after
  sleep           work this many seconds first (heart-beating meanwhile)
  call_tool       call this tool (the answer, or the refusal, goes in the output)
  chat            "yes": call the model through the gateway first
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.environ["ORL_REPOSITORY"], "examples", "agents"))

import agent  # noqa: E402


def journal(event, task, **extra):
    line = {"event": event, "task": task["task"], "step": task["step"], "attempt": task["attempt"], "key": task["idempotencyKey"]}
    line.update(extra)
    with open(os.environ["JOURNAL"], "a") as out:
        out.write(json.dumps(line) + "\n")


def handle(task, context):
    inputs = task.get("inputs") or {}
    journal("start", task)
    output = {"step": task["step"], "attempt": task["attempt"], "dependencies": sorted((task.get("dependencies") or {}).keys())}
    if inputs.get("chat") == "yes":
        reply = context.chat([{"role": "user", "content": f"step {task['step']}"}])
        output["tokens"] = reply["usage"]["total_tokens"]
    deadline = time.monotonic() + float(inputs.get("sleep", 0))
    while time.monotonic() < deadline and not context.lost.is_set():
        time.sleep(0.05)
    if task["attempt"] <= int(inputs.get("fail_attempts", 0)):
        journal("fail", task)
        raise agent.TaskFailed(f"planned failure of attempt {task['attempt']}")
    if inputs.get("call_tool"):
        try:
            answer = context.invoke_tool(inputs["call_tool"], {"from": task["step"]})
            output["tool"] = {"status": 200, "answer": answer}
        except agent.OrlError as error:
            output["tool"] = {"status": error.status, "code": error.code, "message": error.message}
    journal("done", task)
    return output


if __name__ == "__main__":
    agent.serve(handle)
