#!/usr/bin/env python3
"""Writes Hermes sessions as fast as it can for a while, with the real SessionDB.

Usage: HERMES_HOME=DIR python hermes_burst.py WRITE_SESSION_PY SECONDS MAX_SESSIONS

Loads ../shared/data/hermes/write_session.py unchanged (as a module, not as __main__) and calls
its write_session() on one real SessionDB in a loop, each session ended, until SECONDS have
passed or MAX_SESSIONS are written. Session ids come from write_session_unique.py, so titles
never repeat. Prints {"session_ids": [...], "seconds": <time spent writing>}.
"""
import json
import os
import runpy
import sys
import time

if len(sys.argv) != 4:
    sys.exit("usage: hermes_burst.py WRITE_SESSION_PY SECONDS MAX_SESSIONS")
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
print(json.dumps({"session_ids": ids, "seconds": spent}))
