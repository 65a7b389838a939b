"""Fixtures of the evaluation tests: a scripted OpenAI-compatible endpoint on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class Endpoint:
    """A scripted OpenAI-compatible server on 127.0.0.1: each request pops the next (status, reply)
    of ``script``, or (once it is empty) gets ``respond(question_text)`` with status 200."""

    def __init__(self, script: list[tuple[int, str]], respond: Callable[[str], str] | None = None) -> None:
        self.script = list(script)
        self.respond = respond or (lambda question: "yes")
        self.requests: list[tuple[str, dict, dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((self.path, dict(self.headers), body))
                if outer.script:
                    status, reply = outer.script.pop(0)
                else:
                    status, reply = 200, outer.respond(body["messages"][0]["content"][0]["text"])
                payload = {"choices": [{"message": {"role": "assistant", "content": reply}}]}
                data = json.dumps(payload if status == 200 else {"error": reply}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint():
    servers: list[Endpoint] = []

    def start(script: list[tuple[int, str]], respond: Callable[[str], str] | None = None) -> Endpoint:
        servers.append(Endpoint(script, respond))
        return servers[-1]

    yield start
    for server in servers:
        server.close()
