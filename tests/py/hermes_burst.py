#!/usr/bin/env python3
"""Writes Hermes sessions as fast as it can for a while, with the real SessionDB.

Usage: HERMES_HOME=DIR python hermes_burst.py WRITE_SESSION_PY SECONDS MAX_SESSIONS OUT_JSON

Loads ../shared/data/hermes/write_session.py unchanged (as a module, not as __main__) and calls
its write_session() on one real SessionDB in a loop, each session ended, until SECONDS have
passed or MAX_SESSIONS are written. Session ids come from write_session_unique.py, so titles
never repeat. Writes {"session_ids": [...], "seconds": <time spent writing>} to OUT_JSON (a file:
thousands of ids would fill a pipe nobody reads while the caller waits for the exit).
"""
import json
import os
import runpy
import sys
import time

if len(sys.argv) != 5:
    sys.exit("usage: hermes_burst.py WRITE_SESSION_PY SECONDS MAX_SESSIONS OUT_JSON")
if not os.environ.get("HERMES_HOME"):
    sys.exit("set HERMES_HOME to the Hermes home directory to write into")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import write_session_unique  # noqa: E402

write_session_unique.patch_uuid()
ws = runpy.run_path(sys.argv[1], run_name="write_session")
seconds, most = float(sys.argv[2]), int(sys.argv[3])

db = ws["SessionDB"](db_path=ws["get_hermes_home"]() / "state.db")
ids = []
start = time.monotonic()
try:
    while len(ids) < most and time.monotonic() - start < seconds:
        ids.append(ws["write_session"](db, end=True, n=len(ids)))
finally:
    spent = time.monotonic() - start
    db.close()
with open(sys.argv[4] + ".tmp", "w") as f:
    json.dump({"session_ids": ids, "seconds": spent}, f)
os.replace(sys.argv[4] + ".tmp", sys.argv[4])
