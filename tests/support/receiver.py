"""A loopback HTTP receiver for the callbacks sandboxes send (Relay's routes stand here).

    with Receiver.running(fail_first=1) as receiver:
        ...                                    # point a sandbox at receiver.base + path
        posts = receiver.wait_until(lambda posts: len(posts) == 2)

Every POST is kept with the full URL it was sent to, its headers and its raw body (signatures
are over the exact bytes); `fail_first` POSTs are answered 500 first and counted in
`refused`, not kept, so a sandbox's retries can be tested.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

WAIT_SECONDS = 15.0


@dataclass
class Post:
    url: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    @property
    def query(self) -> str:
        """The raw query string (signatures cover it as sent)."""
        return urlsplit(self.url).query

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)

    @property
    def params(self) -> dict[str, str]:
        """A form-encoded body's fields."""
        return dict(parse_qsl(self.body.decode("utf-8"), keep_blank_values=True))

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    posts: list[Post] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)
    base: str = ""
    fail_first: int = 0
    refused: int = 0

    def wait_until(
        self, done: Callable[[list[Post]], bool], timeout: float = WAIT_SECONDS
    ) -> list[Post]:
        with self.changed:
            if not self.changed.wait_for(lambda: done(self.posts), timeout=timeout):
                raise AssertionError(f"callbacks never arrived; got {self.posts}")
            return list(self.posts)

    def wait_for(self, count: int, timeout: float = WAIT_SECONDS) -> list[Post]:
        return self.wait_until(lambda posts: len(posts) >= count, timeout)

    @classmethod
    @contextmanager
    def running(cls, *, fail_first: int = 0) -> Iterator[Receiver]:
        receiver = cls(fail_first=fail_first)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                post = Post(receiver.base + self.path, dict(self.headers.items()), body)
                with receiver.changed:
                    refuse = receiver.refused < receiver.fail_first
                    if refuse:
                        receiver.refused += 1
                    else:
                        receiver.posts.append(post)
                    receiver.changed.notify_all()
                self.send_response(500 if refuse else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        receiver.base = f"http://127.0.0.1:{server.server_address[1]}"
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        try:
            yield receiver
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
