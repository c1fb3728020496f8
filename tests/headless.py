"""Headless Chromium for the tests, driven over the DevTools protocol on a pipe.

``chromium --remote-debugging-pipe`` reads commands on its file descriptor 3
and writes answers and events on 4, each a JSON object ended by a NUL byte:
no WebSocket client is needed. :class:`Browser` opens a page, evaluates
JavaScript in it (to read what the page shows, after its scripts ran) and
takes screenshots. Tests that need it skip, saying why, where Debian's
``chromium`` package is not installed (``.ci/run`` installs it when it can).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time

import pytest

#: Where Debian's ``chromium`` package puts the browser.
CANDIDATES = ("chromium", "chromium-browser")


def chromium_or_skip() -> str:
    """The Chromium binary, or skip the test with what to install."""
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip(
        "headless Chromium is not installed: `apt-get install chromium` (Debian's package; "
        ".ci/run installs it when it runs as root with apt-get)"
    )


class BrowserError(Exception):
    """Chromium answered a command with an error, or went away."""


class Browser:
    """One headless Chromium with one page, closed (process, profile directory) by
    :meth:`close` or at the end of a ``with`` block."""

    def __init__(self, width: int = 1280, height: int = 900, timeout: float = 30.0) -> None:
        binary = chromium_or_skip()
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="zactor-chromium-")
        to_browser, self._send_fd = os.pipe()
        self._read_fd, from_browser = os.pipe()
        # The browser reads fd 3 and writes fd 4: put the pipe ends there in the child,
        # from copies numbered 10 and up, so that neither dup2 overwrites the other end.
        high_in = fcntl.fcntl(to_browser, fcntl.F_DUPFD, 10)
        high_out = fcntl.fcntl(from_browser, fcntl.F_DUPFD, 10)

        def plumb() -> None:
            os.dup2(high_in, 3)
            os.dup2(high_out, 4)

        try:
            self.proc = subprocess.Popen(
                [
                    binary,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--remote-debugging-pipe",
                    f"--user-data-dir={self.profile}",
                    f"--window-size={width},{height}",
                    "about:blank",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=(3, 4),
                preexec_fn=plumb,
            )
        finally:
            for fd in {to_browser, from_browser, high_in, high_out}:
                os.close(fd)
        self._buffer = b""
        self._next_id = 0
        self._session = None
        try:
            targets = self.command("Target.getTargets")["targetInfos"]
            page = next(t for t in targets if t["type"] == "page")
            attached = self.command(
                "Target.attachToTarget", targetId=page["targetId"], flatten=True
            )
            self._session = attached["sessionId"]
            self.command("Page.enable")
            self.command("Runtime.enable")
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def command(self, method: str, **params):
        """Send one DevTools command (to the page once attached); its result."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if self._session is not None and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self._session
        os.write(self._send_fd, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            for reply in self._messages(deadline, method):
                if reply.get("id") == self._next_id:
                    if "error" in reply:
                        raise BrowserError(f"{method}: {reply['error']}")
                    return reply.get("result", {})

    def _messages(self, deadline: float, method: str):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([self._read_fd], [], [], remaining)[0]:
            raise BrowserError(f"Chromium did not answer {method} within {self.timeout} s")
        chunk = os.read(self._read_fd, 1 << 20)
        if not chunk:
            raise BrowserError(f"Chromium exited (code {self.proc.poll()}) during {method}")
        self._buffer += chunk
        *whole, self._buffer = self._buffer.split(b"\0")
        return [json.loads(m) for m in whole]

    def open(self, url: str) -> None:
        """Load ``url`` in the page (returns once the navigation is under way)."""
        result = self.command("Page.navigate", url=url)
        if result.get("errorText"):
            raise BrowserError(f"could not open {url}: {result['errorText']}")

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page."""
        result = self.command("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r} raised: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: str) -> None:
        """Write the whole page as it shows now to ``path`` (PNG), below the fold too."""
        size = self.command("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        data = self.command(
            "Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True
        )["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def close(self) -> None:
        """End Chromium and remove its profile."""
        proc = getattr(self, "proc", None)
        if proc is not None and proc.poll() is None:
            try:
                self._session = None
                farewell = {"id": 0, "method": "Browser.close"}
                os.write(self._send_fd, json.dumps(farewell).encode() + b"\0")
                proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
        for fd in (getattr(self, "_send_fd", None), getattr(self, "_read_fd", None)):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._send_fd = self._read_fd = None
        shutil.rmtree(self.profile, ignore_errors=True)
