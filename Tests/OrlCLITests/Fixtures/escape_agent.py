#!/usr/bin/env python3
"""An agent for the sandbox tests (SandboxTests): on its task it tries each way out of
its sandbox a hostile program would try, then uses the ways orl offers (the model
through the gateway, a tool through the controller), and returns what it could do.

The targets come in the step's inputs: remote (host:port of a listener in another
network namespace), loopback (a port on the host's loopback), state (the state
directory), victim (a marker only another agent's environment holds).
"""

import ctypes
import json
import os
import socket
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "examples", "agents"))

import agent  # noqa: E402


def attempt(action):
    try:
        result = action()
        return {"ok": True, "detail": str(result)[:200]}
    except Exception as error:  # the refusal is the answer
        return {"ok": False, "detail": f"{type(error).__name__}: {error}"[:200]}


def connect(host, port):
    with socket.create_connection((host, int(port)), timeout=3):
        return "connected"


def read(path):
    with open(path, "rb") as f:
        return f.read(64)


def write(path):
    with open(path, "w") as f:
        f.write("escaped")
    return path


def environ_with(marker):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    environ = f.read()
                if marker.encode() in environ:
                    found.append(entry)
            except OSError:
                pass
    if found:
        return found
    raise LookupError("no process with the marker is visible")


def ptrace_self_parent():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.ptrace(16, 1, 0, 0) != 0:  # PTRACE_ATTACH to PID 1
        raise OSError(ctypes.get_errno(), "ptrace refused")
    return "attached"


def new_user_namespace():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER
        raise OSError(ctypes.get_errno(), "unshare refused")
    return "unshared"


def handle(task, context):
    i = task.get("inputs") or {}
    state = i["state"]
    remote_host, remote_port = i["remote"].split(":")
    probes = {
        "remote": attempt(lambda: connect(remote_host, remote_port)),
        "loopback": attempt(lambda: connect("127.0.0.1", i["loopback"])),
        "masterKey": attempt(lambda: read(state + "/master.key")),
        "database": attempt(lambda: read(state + "/state.db")),
        "token": attempt(lambda: read(state + "/controller.token")),
        "otherEnviron": attempt(lambda: environ_with(i["victim"])),
        "writeState": attempt(lambda: write(state + "/escaped")),
        "writeUsr": attempt(lambda: write("/usr/escaped")),
        "writeParent": attempt(lambda: write(os.path.dirname(os.getcwd()) + "/escaped")),
        "writeWorkdir": attempt(lambda: write("own-file")),
        "writeTmp": attempt(lambda: write("/tmp/orl-sandbox-escaped")),
        "ptrace": attempt(ptrace_self_parent),
        "userns": attempt(new_user_namespace),
        "uid": {"ok": True, "detail": str(os.getuid())},
        "pids": {"ok": True, "detail": " ".join(sorted(e for e in os.listdir("/proc") if e.isdigit()))},
        "model": attempt(lambda: context.chat([{"role": "user", "content": "hello"}])["usage"]["total_tokens"]),
        "tool": attempt(lambda: context.invoke_tool(i["tool"], {"from": "escape"})),
        "apiURL": {"ok": True, "detail": os.environ.get("ORL_API_URL", "")},
    }
    return {"probes": probes}


if __name__ == "__main__":
    agent.serve(handle)
