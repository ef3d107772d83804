#!/usr/bin/env python3
"""Runs ../shared/data/hermes/write_session.py unchanged, with session ids that cannot collide.

Usage: HERMES_HOME=DIR python write_session_unique.py PATH/TO/write_session.py [its arguments]

write_session.py titles every session after the last six hex digits of its id, which come from
uuid4, and Hermes' SessionDB refuses a title already in use. Over the 1450 sessions of the
zero-loss tests two ids share those six digits in about 6% of runs (the birthday bound), and the
writer then dies with "Title ... is already in use". Here uuid.uuid4 is replaced by one whose
first 24 bits count up from a random start (the other bits stay random), so the same real
SessionDB code writes the same rows, with titles that never repeat within a run.
"""
import itertools
import os
import runpy
import sys
import uuid

_counter = itertools.count(int.from_bytes(os.urandom(3), "big"))


def _uuid4() -> uuid.UUID:
    head = next(_counter) % (1 << 24)
    return uuid.UUID(int=(head << 104) | int.from_bytes(os.urandom(13), "big"), version=4)


def patch_uuid() -> None:
    """Makes every later uuid.uuid4() one of the ids above (hermes_burst.py imports this)."""
    uuid.uuid4 = _uuid4


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: write_session_unique.py WRITE_SESSION_PY [ARGS...]")
    patch_uuid()
    script = sys.argv[1]
    sys.argv = [script] + sys.argv[2:]
    runpy.run_path(script, run_name="__main__")
