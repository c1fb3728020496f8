"""Running ``examples/*.py`` in subprocesses, for the tests that check them.

Each example starts and stops its own embedded cluster, so it runs in its own
process, apart from the test session's cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
RESULT_MARK = "ZACTOR-EXAMPLE-RESULT "
TIMEOUT_S = 150


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=TIMEOUT_S, env=_env(), cwd=str(REPO)
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def run_script(name: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``examples/<name>.py`` as a script (what a user types); fail with its output."""
    return _run([sys.executable, str(EXAMPLES / f"{name}.py"), *args])


def script_lines(name: str, *args: str) -> list[str]:
    """The stripped stdout lines of :func:`run_script`."""
    return [ln.strip() for ln in run_script(name, *args).stdout.splitlines()]


def run_main(name: str, call: str = "main()") -> dict:
    """Import ``examples/<name>.py`` in a subprocess; return the JSON of ``call``."""
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(EXAMPLES)!r})\n"
        f"import {name}\n"
        f"print({RESULT_MARK!r} + json.dumps({name}.{call}))\n"
    )
    proc = _run([sys.executable, "-c", code])
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_MARK)]
    assert len(lines) == 1, proc.stdout
    return json.loads(lines[0][len(RESULT_MARK) :])
