"""The head's HTTP server: the status page, its data, and Prometheus metrics.

Started by the head process when asked (``zactor start --head --metrics-port P``,
``zactor.init(metrics_port=P)``); see docs/observability.md. Paths:

- ``/``: the status page, which shows ``/status.json`` and refreshes it every
  two seconds. Its HTML, CSS and script ship in the package
  (``zactor/control/static/``): the page fetches nothing from the internet.
- ``/status.json``: :meth:`ClusterMetrics.page`.
- ``/metrics``: the Prometheus exposition of :class:`ClusterMetrics`
  (text, or OpenMetrics when the scraper asks for it).

The server runs on threads of its own (one per request) and never touches the
registry the head's thread changes: :class:`ClusterMetrics` works from copies
and asks the workers itself.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

from prometheus_client.exposition import choose_encoder

from zactor.control.metrics import ClusterMetrics

log = logging.getLogger("zactor")

#: The page's files (package data, ``zactor/control/static/``), by the path they are served at.
STATIC_FILES = {
    "/": ("status.html", "text/html; charset=utf-8"),
    "/static/status.css": ("status.css", "text/css; charset=utf-8"),
    "/static/status.js": ("status.js", "text/javascript; charset=utf-8"),
}
#: What a 404 lists.
PATHS = ("/", "/status.json", "/metrics")


def _load_static() -> dict[str, tuple[bytes, str]]:
    folder = resources.files("zactor.control").joinpath("static")
    return {
        path: (folder.joinpath(name).read_bytes(), content_type)
        for path, (name, content_type) in STATIC_FILES.items()
    }


class _Server(ThreadingHTTPServer):
    # Requests are bounded (a collection waits STATS_TIMEOUT_S at most): close()
    # waits for those in flight, so no thread outlives the server.
    daemon_threads = False
    block_on_close = True

    def __init__(self, address: tuple, metrics: ClusterMetrics, static: dict, family: int):
        self.address_family = family
        self.metrics = metrics
        self.static = static
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "zactor"

    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        path = self.path.split("?", 1)[0]
        try:
            if path in self.server.static:
                body, content_type = self.server.static[path]
                self._send(200, body, content_type, cache=True)
            elif path == "/status.json":
                body = json.dumps(self.server.metrics.page(), default=str).encode()
                self._send(200, body, "application/json")
            elif path == "/metrics":
                encoder, content_type = choose_encoder(self.headers.get("Accept"))
                self._send(200, encoder(self.server.metrics.registry), content_type)
            else:
                message = f"no page at {path}: zactor's head serves {', '.join(PATHS)}\n"
                self._send(404, message.encode(), "text/plain; charset=utf-8")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client left
        except Exception as exc:  # the head is stopping, or a bug: say so, keep serving
            log.warning("zactor head: serving %s failed: %r", path, exc)
            message = (
                f"zactor's head could not collect the figures for {path}: {exc!r}; if the "
                "cluster is stopping this is expected, else see the head's log\n"
            )
            try:
                self._send(503, message.encode(), "text/plain; charset=utf-8")
            except OSError:
                pass

    def _send(self, code: int, body: bytes, content_type: str, cache: bool = False) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=60" if cache else "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's name)
        log.debug("zactor head http: " + format, *args)


class StatusServer:
    """The HTTP server of :mod:`zactor.control.status_page`, on ``host:port`` (port 0:
    any free port; :attr:`url` says which). Raises ``OSError`` if it cannot listen
    there. :meth:`start` serves on a thread; :meth:`close` stops and joins it."""

    def __init__(self, metrics: ClusterMetrics, host: str = "127.0.0.1", port: int = 0) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.metrics = metrics
        self._server = _Server((host, port), metrics, _load_static(), family)
        self._thread: threading.Thread | None = None
        bound_port = self._server.server_address[1]
        self.url = (
            f"http://[{host}]:{bound_port}/" if ":" in host else f"http://{host}:{bound_port}/"
        )

    def start(self) -> None:
        """Serve on a thread of its own (``zactor-http``)."""
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="zactor-http",
            daemon=True,
        )
        self._thread.start()

    def close(self) -> None:
        """Stop serving: wait for the requests in flight, close the socket, join the thread."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
