#!/usr/bin/env python3
"""Starts or discards an empty Hermes CLI session with the real SessionDB (no model needed).

Usage: HERMES_HOME=DIR python hermes_empty_session.py start|discard SESSION_ID

`start` creates the session row as the CLI does when it starts (`SessionDB.create_session`);
`discard` drops it as the CLI does when it is quit unused (`cli.py` `_discard_session_if_empty`
-> `SessionDB.delete_session_if_empty`). `sessions` has no AUTOINCREMENT, so after a discard of
the newest session the next session Hermes starts takes its rowid.
"""
import json
import os
import sys

if not os.environ.get("HERMES_HOME") or len(sys.argv) != 3 or sys.argv[1] not in ("start", "discard"):
    sys.exit("usage: HERMES_HOME=DIR hermes_empty_session.py start|discard SESSION_ID")

from hermes_constants import get_hermes_home  # noqa: E402
from hermes_state import SessionDB  # noqa: E402

db = SessionDB(db_path=get_hermes_home() / "state.db")
try:
    sid = sys.argv[2]
    if sys.argv[1] == "start":
        db.create_session(session_id=sid, source="cli", model="anthropic/claude-sonnet-4", cwd="/srv/work")
        done = True
    else:
        done = db.delete_session_if_empty(sid, sessions_dir=get_hermes_home() / "sessions")
    rowid = db._conn.execute("SELECT max(rowid) FROM sessions").fetchone()[0]
finally:
    db.close()
print(json.dumps({"ok": bool(done), "max_rowid": rowid}))
