"""Running a test scenario in a process of its own, with a cluster of its own.

Tests that kill workers or need whole workers to themselves must not disturb the
session's shared cluster, so they run a script that starts its own embedded cluster
and prints one ``RESULT {json}`` line, which :func:`run_scenario` returns parsed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from zactor.control.spawn import child_environment

MARK = "RESULT "


def run_scenario(script: str, timeout: float = 110) -> dict:
    """Run ``script`` (dedented) in a fresh interpreter; return its last ``RESULT`` value.

    The script reports with ``print("RESULT " + json.dumps(value))``; a script that
    fails or reports nothing fails the test with its stderr.
    """
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_environment(),
        stdin=subprocess.DEVNULL,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
    assert proc.returncode == 0 and lines, (
        f"scenario exited with {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}"
        f"\n--- stderr\n{proc.stderr[-5000:]}"
    )
    return json.loads(lines[-1][len(MARK) :])
