#!/usr/bin/env python3
"""For the sandbox tests: forks until its pids limit refuses, says how far it got, then
allocates memory until its memory limit stops it."""

import os
import sys
import time

children = []
refused = None
for n in range(10000):
    try:
        pid = os.fork()
    except OSError as error:
        refused = f"fork refused after {n} children: {error}"
        break
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    children.append(pid)
print(refused or "fork never refused", flush=True)
for pid in children:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
hoard = []
while True:
    hoard.append(bytearray(16 << 20))
    if len(hoard) % 4 == 0:
        print(f"holding {len(hoard) * 16} MiB", flush=True)
