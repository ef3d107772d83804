#!/usr/bin/env python3
"""Append Hermes tool-result rows one at a time with the real SessionDB, on request.

Usage: HERMES_HOME=DIR python hermes_lag_driver.py
Reads one line per append on stdin; after each append_message returns (the row is committed
and visible to readers) prints "<before_us> <after_us> <message_id>" (wall clock, microseconds; Hermes' messages.id)."""
import sys, time, json, os

from hermes_state import SessionDB  # noqa: E402

db = SessionDB()
sid = "20260101_000000_lagbch"
db.create_session(session_id=sid, source="cli", model="anthropic/claude-sonnet-4")
print("ready", flush=True)
i = 0
for _ in sys.stdin:
    i += 1
    before = time.time_ns() // 1000
    msg_id = db.append_message(sid, role="tool", tool_call_id=f"call_lag_{i}", tool_name="terminal",
                      content=json.dumps({"output": f"line {i}", "exit_code": 0, "error": None}))
    after = time.time_ns() // 1000
    print(before, after, msg_id, flush=True)
db.close()
