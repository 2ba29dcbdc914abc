"""The Temporal UI of `relay dev`, with its codec calls carrying the operator's cookie.

`temporal server start-dev` builds its Web UI's configuration in code: the codec
endpoint can be set (`--ui-codec-endpoint`), but `codec.includeCredentials` cannot (no
flag, no config file, no environment variable), and the UI offers no switch for it at
the cluster level. Without it the browser calls /codec without the codec session's
cookie, so every payload stays ciphertext behind "Codec Server could not connect".

So `relay dev` runs the dev server's UI on a private loopback port and serves
TEMPORAL_UI_PORT itself with this small reverse proxy, which passes every request through
unchanged except the UI's settings (`GET /api/v1/settings`), where it turns
`Codec.IncludeCredentials` on: what `TEMPORAL_CODEC_INCLUDE_CREDENTIALS=true` does for a
self-hosted UI server (docker compose). Development only: it listens on 127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

SETTINGS_PATH = "/api/v1/settings"
# RFC 9110 section 7.6.1: meaningful for one connection only, never forwarded.
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}
_UPSTREAM_TIMEOUT = 60


def with_credentials(body: bytes) -> bytes:
    """The UI's settings with the codec's `IncludeCredentials` on (when a codec is set)."""
    try:
        settings = json.loads(body)
    except ValueError:
        return body
    codec = settings.get("Codec") if isinstance(settings, dict) else None
    if not isinstance(codec, dict) or not codec.get("Endpoint"):
        return body
    codec["IncludeCredentials"] = True
    return json.dumps(settings).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        is_settings = urlsplit(self.path).path.rstrip("/") == SETTINGS_PATH
        headers = {
            name: value
            for name, value in self.headers.items()
            if name.lower() not in _HOP_BY_HOP
            # The settings are rewritten, so ask for them uncompressed.
            and not (is_settings and name.lower() == "accept-encoding")
        }
        upstream = http.client.HTTPConnection(
            "127.0.0.1", self.server.upstream_port, timeout=_UPSTREAM_TIMEOUT
        )
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            data = response.read()
        except OSError:
            self._unavailable()
            return
        finally:
            upstream.close()
        if is_settings and response.status == 200:
            data = with_credentials(data)
        self.send_response(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _unavailable(self) -> None:
        # The dev server is starting or being restarted by the supervisor.
        message = b"the Temporal UI is not reachable yet; reload in a few seconds\n"
        self.send_response(502)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(message)))
        self.send_header("Retry-After", "2")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(message)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _forward

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # the UI's requests are not news; failures answer 502


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    upstream_port: int


class UiFront:
    """Serves `port` on 127.0.0.1, forwarding to the dev server's UI on `upstream_port`."""

    def __init__(self, port: int, upstream_port: int) -> None:
        self.server = _Server(("127.0.0.1", port), _Handler)
        self.server.upstream_port = upstream_port
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="temporal-ui-front", daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
