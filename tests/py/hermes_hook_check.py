#!/usr/bin/env python3
"""Fire a tool call through Hermes' real shell-hook runner (agent.shell_hooks +
model_tools.handle_function_call, as ../shared/data/hermes/shell_hook_demo.py does) with
`uni-wizard hermes-hook` configured for pre_tool_call and post_tool_call.

Usage: HERMES_HOME=DIR python hermes_hook_check.py 'HOOK COMMAND' TOOL
Prints one JSON line: {"result": <what handle_function_call returned>, "ms": <duration>}."""
import json, os, sys, time

command, tool = sys.argv[1], sys.argv[2]
cfg = {"hooks": {"pre_tool_call": [{"command": command, "timeout": 5}],
                 "post_tool_call": [{"command": command, "timeout": 5}]}}
from agent import shell_hooks  # noqa: E402
shell_hooks.register_from_config(cfg, accept_hooks=True)
import model_tools  # noqa: E402
sample = os.path.join(os.environ["HERMES_HOME"], "x.txt")
open(sample, "w").write("x\n")
t = time.time()
result = model_tools.handle_function_call(tool, {"path": sample}, task_id="t1",
                                          session_id="20260101_000000_hookck", tool_call_id="call_hook1")
print(json.dumps({"result": result, "ms": round(1000 * (time.time() - t))}))
