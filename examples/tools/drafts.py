#!/usr/bin/env python3
"""The drafts store of the quickstart fleet: Markdown files under a directory.

A `command` Tool: orl runs it for an agent, in the agent's working directory, with the
call's input as JSON on standard input; what it prints (JSON) is the tool's output.
orl also sets ORL_RUN, ORL_STEP, ORL_IDEMPOTENCY_KEY and ORL_AGENT.

  drafts.py write --root DIR   saves a new revision of the run's draft; input: the
                               reference agent's {"text": ..., "inputs": ...}
  drafts.py read --root DIR    returns a draft; input: {"inputs": {"draft_id": ...}}

One draft per run (its id is the run's), so a retried step writes a new revision of the
same draft instead of a second draft: the idempotency orl asks of side effects.
"""

import argparse
import json
import os
import re
import sys


def first_sentence(text, limit):
    sentence = re.split(r"(?<=[.!?])\s", text.strip(), maxsplit=1)[0]
    return sentence[:limit]


def write(root, given):
    text = given.get("text") or ""
    draft_id = os.environ.get("ORL_RUN") or "draft"
    directory = os.path.join(root, draft_id)
    os.makedirs(directory, exist_ok=True)
    revision = 1 + sum(1 for name in os.listdir(directory) if name.startswith("rev-"))
    title = first_sentence(text, 80) or f"Draft {draft_id}"
    summary = first_sentence(text, 200)
    front = {"id": draft_id, "revision": revision, "title": title, "summary": summary, "by": os.environ.get("ORL_AGENT")}
    path = os.path.join(directory, f"rev-{revision}.md")
    with open(path + ".tmp", "w") as out:
        out.write("---\n" + json.dumps(front, indent=2) + "\n---\n\n" + text + "\n")
    os.replace(path + ".tmp", path)
    return {"draft_id": draft_id, "revision": revision, "title": title, "summary": summary}


def read(root, given):
    inputs = given.get("inputs") or {}
    draft_id = inputs.get("draft_id") or (given.get("output") or {}).get("draft_id")
    if not draft_id or not re.fullmatch(r"[A-Za-z0-9_-]+", draft_id):
        sys.exit(f"drafts.py read: no valid draft_id in the input (got {draft_id!r})")
    directory = os.path.join(root, draft_id)
    revisions = sorted((name for name in os.listdir(directory) if name.startswith("rev-")), key=lambda n: int(n[4:-3]))
    if not revisions:
        sys.exit(f"drafts.py read: draft {draft_id} has no revision")
    with open(os.path.join(directory, revisions[-1])) as source:
        _, front, body = source.read().split("---\n", 2)
    meta = json.loads(front)
    return {"draft_id": draft_id, "revision": meta["revision"], "title": meta["title"], "body": body.strip()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["read", "write"])
    parser.add_argument("--root", default="drafts")
    arguments = parser.parse_args()
    given = json.load(sys.stdin) or {}
    result = (write if arguments.action == "write" else read)(arguments.root, given)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
