#!/usr/bin/env python3
"""An agent for the end-to-end tests, built on the reference agent's client
(examples/agents/agent.py): each step's literal inputs say what to do, and every task
it starts and finishes is appended to $JOURNAL as a JSON line, for the tests to read.

Inputs a step may give (all optional):
  fail_attempts   fail attempts 1..N (retryable), succeed after
  crash_attempts  on attempts 1..N, the process exits (status 1) in the middle of the step
  sleep           work this many seconds first (heart-beating meanwhile)
  call_tool       call this tool (the answer, or the refusal, goes in the output)
  chat_calls      call the model through the gateway this many times first
  barrier         comma-separated steps of the same run: wait (up to a minute) until
                  each has started, which only steps running in parallel can do
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "examples", "agents"))

import agent  # noqa: E402


def journal(event, task, **extra):
    line = {"event": event, "task": task["task"], "step": task["step"], "attempt": task["attempt"], "key": task["idempotencyKey"]}
    # The node whose controller started this process (nodes only): which node's failure
    # an attempt given up died with.
    if os.environ.get("ORL_NODE"):
        line["node"] = os.environ["ORL_NODE"]
    line.update(extra)
    with open(os.environ["JOURNAL"], "a") as out:
        out.write(json.dumps(line) + "\n")


def started_steps(run):
    with open(os.environ["JOURNAL"]) as journal_file:
        lines = [json.loads(line) for line in journal_file if line.strip()]
    return {line["step"] for line in lines if line["event"] == "start" and line["task"].startswith(run + "/")}


def handle(task, context):
    inputs = task.get("inputs") or {}
    journal("start", task)
    output = {"step": task["step"], "attempt": task["attempt"], "dependencies": sorted((task.get("dependencies") or {}).keys())}
    output["tokens"] = 0
    for _ in range(int(inputs.get("chat_calls", 0))):
        try:
            reply = context.chat([{"role": "user", "content": f"step {task['step']}"}])
        except agent.OrlError as error:
            if error.code == "budget_exceeded":
                raise agent.TaskFailed(f"model budget exceeded: {error.message}") from None
            raise
        output["tokens"] += reply["usage"]["total_tokens"]
    if inputs.get("barrier"):
        waiting_for = set(inputs["barrier"].split(","))
        deadline = time.monotonic() + 60
        while not waiting_for <= started_steps(task["run"]):
            if time.monotonic() > deadline:
                raise agent.TaskFailed(f"the steps {sorted(waiting_for)} did not all start within a minute", retry=False)
            time.sleep(0.05)
    deadline = time.monotonic() + float(inputs.get("sleep", 0))
    while time.monotonic() < deadline and not context.lost.is_set():
        time.sleep(0.05)
    if task["attempt"] <= int(inputs.get("crash_attempts", 0)):
        journal("crash", task)
        os._exit(1)
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
