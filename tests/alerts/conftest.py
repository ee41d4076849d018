"""Real local receivers for notifier tests: an HTTP server in a thread that records requests (and can be
told to fail or be shut down), and an aiosmtpd SMTP server that records messages."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from storage.db import make_engine


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpRecorder:
    """A real HTTP server on 127.0.0.1; ``status`` is what it answers (e.g. 500 to simulate an outage)."""

    port: int = 0
    status: int = 200
    requests: list[Recorded] = field(default_factory=list)
    attempts: int = 0
    # When set, the request with this 1-based number is recorded on arrival and then held (no answer) until
    # ``release`` is set: the "notifier hangs mid-send" moment at which a crash test kills the sender.
    block_on: int | None = None
    blocked: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    _server: ThreadingHTTPServer | None = None

    def start(self) -> HttpRecorder:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                recorder.attempts += 1
                if recorder.block_on == recorder.attempts:
                    recorder.requests.append(Recorded(self.path, {k: v for k, v in self.headers.items()}, body))
                    recorder.blocked.set()
                    recorder.release.wait(60)
                    return  # the client is gone by now: close without an answer
                status = recorder.status
                if 200 <= status < 300:
                    recorder.requests.append(Recorded(self.path, {k: v for k, v in self.headers.items()}, body))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"status":"success"}' if status < 300 else b'{"error":"boom"}')

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.allow_reuse_address = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Take the receiver down: connections are refused until ``start()`` again (same port)."""
        self.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def http_recorder() -> Iterator[HttpRecorder]:
    rec = HttpRecorder().start()
    yield rec
    rec.stop()


class _SmtpHandler:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.refuse: set[str] = set()  # recipients answered "550 no such user"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,  # noqa: N802
                          rcpt_options: list[str]) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(message_from_bytes(envelope.original_content or envelope.content, policy=policy.default))
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 Message accepted for delivery"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SmtpRecorder:
    port: int
    handler: _SmtpHandler
    controller: Controller

    @property
    def messages(self) -> list[Message]:
        return self.handler.messages


@pytest.fixture
def smtp_recorder() -> Iterator[SmtpRecorder]:
    handler = _SmtpHandler()
    port = _free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield SmtpRecorder(port, handler, controller)
    controller.stop()


def wait_for(predicate: Any, timeout_s: float = 10.0, interval_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()


@pytest.fixture
def engine(db_url):
    """A pooled engine on the test database (the ``db_url`` fixture of tests/conftest.py)."""
    eng = make_engine(db_url)
    yield eng
    eng.dispose()
