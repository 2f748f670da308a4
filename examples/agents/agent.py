#!/usr/bin/env python3
"""orl's reference agent: Python's standard library only.

It pulls workflow tasks from the orl controller with its own token, calls the model
through orl's OpenAI-compatible gateway, calls the tools its step lists (those it is
told to) through the controller, heartbeats while it works, and returns a result. It
logs one line per task and stops cleanly on SIGTERM. See README.md for the protocol.

The controller starts it with ORL_API_URL, ORL_TOKEN, ORL_AGENT, ORL_MODEL,
OPENAI_BASE_URL and OPENAI_API_KEY in its environment. Its own settings:

  AGENT_TOOLS   the step's tools it calls, comma-separated, in the step's order;
                "*" for all of them; none by default
  AGENT_FAIL    when set, every task fails with this message (a stand-in for an
                agent that is down, to exercise retries and fallbacks)

A step can script the answer with an input named `reply`: an object is merged into
the output (how a router's `category` or a reviewer's `approved` is given in demos
and tests), a list gives one object per loop round (the last one from then on), and
a string is read as JSON; {"byAgent": {NAME: {...}}} scripts each agent. An input named `publish` (an object, topic -> value) is
written on those blackboard topics of the run before the task completes, and the latest
value of each topic the step subscribes to is added to the output under `topics`.
  LOG_LEVEL     "debug" logs every call, "info" (default) one line per task

Import it to write another agent: `serve(handler)` runs the loop, and `handler(task,
ctx)` returns the task's output (a JSON value) or raises `TaskFailed`.
"""

import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request

LONG_POLL_SECONDS = 25


class OrlError(Exception):
    """An error answer from the controller: its HTTP status and OpenAI-style code."""

    def __init__(self, status, code, message):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class TaskFailed(Exception):
    """Raised by a handler: the task failed; `retry=False` when another attempt cannot help."""

    def __init__(self, message, retry=True):
        super().__init__(message)
        self.retry = retry


class Stopping(Exception):
    """SIGTERM arrived while the agent waited for work."""


def log(message):
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(f"{stamp} {os.environ.get('ORL_AGENT', 'agent')}: {message}", flush=True)


def debug(message):
    if os.environ.get("LOG_LEVEL", "info") == "debug":
        log(message)


class Client:
    """The controller's API: tasks, tools and the model gateway, with the agent's token."""

    def __init__(self, api_url=None, token=None):
        self.api_url = (api_url or os.environ["ORL_API_URL"]).rstrip("/")
        self.token = token or os.environ["ORL_TOKEN"]
        self.gateway = os.environ.get("OPENAI_BASE_URL", self.api_url + "/v1").rstrip("/")
        self.last_traceparent = None

    def request(self, path, body=None, headers=None, timeout=30, base=None):
        url = (base or self.api_url) + path
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method="POST")
        request.add_header("Authorization", "Bearer " + self.token)
        request.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        debug(f"POST {path}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                payload = response.read()
                self.last_traceparent = response.headers.get("traceparent")
                return response.status, (json.loads(payload) if payload else None)
        except urllib.error.HTTPError as error:
            payload = error.read()
            try:
                detail = json.loads(payload)["error"]
                raise OrlError(error.code, detail.get("code"), detail.get("message")) from None
            except (ValueError, KeyError, TypeError):
                raise OrlError(error.code, "http_error", payload.decode(errors="replace")[:500]) from None

    # The task protocol.

    def next_task(self, wait=LONG_POLL_SECONDS):
        """The agent's next task, or None when none came within `wait` seconds."""
        status, task = self.request(f"/v1/tasks/next?wait={wait}", timeout=wait + 15)
        if status != 200:
            return None
        # The task's span (W3C trace context): the calls made for it continue it.
        if self.last_traceparent:
            task["_traceparent"] = self.last_traceparent
        return task

    def heartbeat(self, task):
        return self.request(f"/v1/tasks/{task['task']}/heartbeat")[1]

    def complete(self, task, output, next_wait=None):
        """Completes the task. With `next_wait` (seconds) the answer's "next" is the agent's
        next task, already claimed (waited for up to that long; None when none came): a
        chain costs one call per step instead of a completion and a poll."""
        path = f"/v1/tasks/{task['task']}/complete"
        if next_wait is not None:
            path += f"?next={next_wait}"
        answer = self.request(path, {"output": output}, timeout=(next_wait or 0) + 30)[1]
        if answer and answer.get("next") and self.last_traceparent:
            answer["next"]["_traceparent"] = self.last_traceparent
        return answer

    def fail(self, task, error, retry=True):
        return self.request(f"/v1/tasks/{task['task']}/fail", {"error": error, "retry": retry})[1]

    # The run's blackboard topics the task's step declares (publish / subscribe).

    def publish(self, task, topic, value):
        return self.request(f"/v1/tasks/{task['task']}/publish", {"topic": topic, "value": value})[1]

    def read_topic(self, task, topic):
        """{"topic", "version", "value", ...}: the latest value (null before any)."""
        return self.request(f"/v1/tasks/{task['task']}/read", {"topic": topic})[1]

    # What a task may call; each names the task it serves.

    @staticmethod
    def serving(task):
        headers = {"x-orl-run": task["run"], "x-orl-step": task["step"]}
        if task.get("_traceparent"):
            headers["traceparent"] = task["_traceparent"]
        return headers

    def invoke_tool(self, task, name, tool_input):
        """The tool's answer: {"tool", "task", "status", "output"}."""
        return self.request(f"/v1/tools/{name}/invoke", {"input": tool_input}, headers=self.serving(task), timeout=120)[1]

    def chat(self, task, messages, model=None, **options):
        """An OpenAI chat completion through the gateway, recorded against the task."""
        body = {"model": model or os.environ.get("ORL_MODEL", ""), "messages": messages, **options}
        return self.request("/chat/completions", body, headers=self.serving(task), timeout=300, base=self.gateway)[1]


def transient(error):
    """Worth trying again: the controller restarting, or not answering for a moment."""
    if isinstance(error, OrlError):
        return error.status in (502, 503, 504)
    return isinstance(error, (urllib.error.URLError, ConnectionError, TimeoutError, OSError))


def persist(call, until):
    """Calls `call` until it is answered (an error answer is raised) or `until` passes."""
    delay = 0.2
    while True:
        try:
            return call()
        except Exception as error:  # noqa: BLE001 - classified below
            if not transient(error) or time.monotonic() >= until:
                raise
            debug(f"controller unreachable ({error}); retrying in {delay:.1f}s")
            time.sleep(delay)
            delay = min(delay * 2, 5)


class Context:
    """What a handler gets besides the task: the client, and whether to give up."""

    def __init__(self, client, task):
        self.client = client
        self.task = task
        # Set when the controller says the task is no longer ours (cancelled, given up).
        self.lost = threading.Event()
        self.tokens = 0
        self.tools = []

    def chat(self, messages, **options):
        reply = self.client.chat(self.task, messages, **options)
        self.tokens += (reply.get("usage") or {}).get("total_tokens", 0)
        return reply

    def invoke_tool(self, name, tool_input):
        answer = self.client.invoke_tool(self.task, name, tool_input)
        self.tools.append(name)
        return answer


class Heartbeat(threading.Thread):
    """Renews the task's lease while the handler works (three times per timeout)."""

    def __init__(self, context):
        super().__init__(daemon=True)
        self.context = context
        self.done = threading.Event()
        self.interval = max(0.1, context.task.get("heartbeatTimeoutMs", 60000) / 3000)

    def run(self):
        while not self.done.wait(self.interval):
            try:
                self.context.client.heartbeat(self.context.task)
            except OrlError as error:
                if error.status in (403, 404, 409):
                    log(f"task {self.context.task['task']}: {error.message}")
                    self.context.lost.set()
                    return
            except Exception as error:  # noqa: BLE001 - the controller may be restarting
                debug(f"heartbeat failed ({error}); trying again")

    def stop(self):
        self.done.set()


def serve(handler, client=None):
    """Takes tasks until SIGTERM: each is handled, heartbeated, and answered once."""
    client = client or Client()
    state = {"busy": False, "stop": False}

    def on_term(signum, frame):
        state["stop"] = True
        # Waiting for work: stop now. Working: finish the task first (the grace period).
        if not state["busy"]:
            raise Stopping()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    log(f"started; serving {client.api_url} as agent {os.environ.get('ORL_AGENT', '?')}")
    backoff = 0.5
    task = None
    try:
        # A task that came with the last completion is claimed: it is worked on even
        # when SIGTERM came meanwhile (the grace period is for finishing work).
        while task is not None or not state["stop"]:
            if task is None:
                try:
                    task = client.next_task()
                except Stopping:
                    raise
                except Exception as error:  # noqa: BLE001 - the controller may be restarting
                    log(f"cannot reach the controller ({error}); retrying in {backoff:.1f}s")
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 10)
                    continue
                backoff = 0.5
                if task is None:
                    continue
            state["busy"] = True
            try:
                task = handle(client, handler, task, wants_next=lambda: not state["stop"])
            finally:
                state["busy"] = task is not None
    except Stopping:
        pass
    log("stopped (SIGTERM)")


def handle(client, handler, task, wants_next=lambda: False):
    """Works on the task and answers it; returns the next task when the completion
    brought one (asked for while `wants_next()`), else None."""
    started = time.monotonic()
    context = Context(client, task)
    beat = Heartbeat(context)
    beat.start()
    name = f"task {task['task']} ({task['workflow']}/{task['step']}, attempt {task['attempt']} of {task['attempts']})"
    # An answer is retried while the controller is away (restarting, say) for a minute
    # or a lease, whichever is longer.
    patience = max(60, task.get("heartbeatTimeoutMs", 60000) / 1000)
    try:
        try:
            output = handler(task, context)
        except TaskFailed as failure:
            beat.stop()
            persist(lambda: client.fail(task, str(failure), retry=failure.retry), time.monotonic() + patience)
            log(f"{name}: failed{'' if failure.retry else ' (not retryable)'}: {failure}")
            return
        except Exception as error:  # noqa: BLE001 - reported as the task's failure
            beat.stop()
            persist(lambda: client.fail(task, f"{type(error).__name__}: {error}"), time.monotonic() + patience)
            log(f"{name}: failed: {type(error).__name__}: {error}")
            return
        beat.stop()
        if context.lost.is_set():
            log(f"{name}: dropped, the controller gave it up")
            return
        # The next task comes with the answer when one is Ready at once (a chain's
        # next step); otherwise the loop polls for it.
        next_wait = 0 if wants_next() else None
        answer = persist(lambda: client.complete(task, output, next_wait=next_wait), time.monotonic() + patience)
        spent = f"; {context.tokens} tokens" if context.tokens else ""
        tools = f"; tools: {', '.join(context.tools)}" if context.tools else ""
        log(f"{name}: succeeded in {time.monotonic() - started:.2f}s{spent}{tools}")
        return (answer or {}).get("next")
    except OrlError as error:
        # 409: the task was given up (its lease expired, the run was cancelled); let it go.
        log(f"{name}: the controller refused the answer: {error}")
    finally:
        beat.stop()


# The reference handler: one model call, then the tools it is told to call.


def tools_to_call(task):
    wanted = [name.strip() for name in os.environ.get("AGENT_TOOLS", "").split(",") if name.strip()]
    return [tool for tool in task.get("tools", []) if "*" in wanted or tool in wanted]


def scripted_reply(task):
    """The step's `reply` input, for this round: an object to merge into the output."""
    reply = (task.get("inputs") or {}).get("reply")
    if isinstance(reply, str):
        try:
            reply = json.loads(reply)
        except ValueError:
            return {"reply": reply}
    if isinstance(reply, list) and reply:
        reply = reply[min(len(reply), task.get("round") or 1) - 1]
    # {"byAgent": {NAME: {...}}}: what each agent answers (the turns of a hand-off chain).
    if isinstance(reply, dict) and isinstance(reply.get("byAgent"), dict):
        reply = reply["byAgent"].get(task.get("agent"), {})
    return reply if isinstance(reply, dict) else {}


def run_step(task, context):
    """Asks the model to do the step, then calls the tools; the output is the reply
    (a JSON object when the model answered with one, else {"text": ...}) plus what
    each tool returned, and what the step's `reply` input scripts."""
    if os.environ.get("AGENT_FAIL"):
        raise TaskFailed(os.environ["AGENT_FAIL"])
    given = {"input": task.get("input"), "inputs": task.get("inputs"), "dependencies": task.get("dependencies")}
    messages = [
        {"role": "system", "content": task.get("prompt") or f"You run step {task['step']} of workflow {task['workflow']}."},
        {"role": "user", "content": json.dumps(given, sort_keys=True)},
    ]
    try:
        reply = context.chat(messages)
    except OrlError as error:
        if error.code == "budget_exceeded":
            # The agent is about to be halted; the step is retried once the budget allows.
            raise TaskFailed(f"model budget exceeded: {error.message}") from None
        if error.status in (400, 403, 404):
            raise TaskFailed(f"the gateway refused the model call: {error.message}", retry=False) from None
        raise
    text = reply["choices"][0]["message"].get("content") or ""
    try:
        output = json.loads(text)
        if not isinstance(output, dict):
            output = {"text": text}
    except ValueError:
        output = {"text": text}
    for tool in tools_to_call(task):
        if context.lost.is_set():
            break
        tool_input = {"inputs": task.get("inputs"), "text": text, "output": output}
        try:
            answer = context.invoke_tool(tool, tool_input)
        except OrlError as error:
            retry = error.status not in (400, 403, 404)
            raise TaskFailed(f"tool {tool}: {error.message}", retry=retry) from None
        result = answer.get("output")
        if isinstance(result, dict):
            output.update(result)
        else:
            output[tool] = result
    output.update(scripted_reply(task))
    try:
        for topic in task.get("subscribe") or []:
            output.setdefault("topics", {})[topic] = context.client.read_topic(task, topic).get("value")
        publish = (task.get("inputs") or {}).get("publish")
        if isinstance(publish, str):
            publish = json.loads(publish)
        for topic, value in (publish.items() if isinstance(publish, dict) else []):
            context.client.publish(task, topic, value)
    except OrlError as error:
        # A topic the step does not declare is refused (403): another attempt cannot help.
        raise TaskFailed(f"blackboard: {error.message}", retry=error.status not in (400, 403, 404)) from None
    return output


if __name__ == "__main__":
    try:
        serve(run_step)
        # Stopped cleanly (every task answered, the log written): the interpreter's
        # teardown is skipped. It costs milliseconds of CPU per agent, which a fleet
        # stopped at once pays a hundred times over (24-125 ms from SIGTERM to exit
        # on a loaded 2-core machine, 3-7 ms without it). An agent that registers
        # atexit handlers must call them here, or return normally.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    except KeyError as missing:
        sys.exit(f"agent.py: {missing} is not set; the orl controller sets it when it starts the agent")
