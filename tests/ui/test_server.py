"""The server `dreamrelation ui` starts: a password guards every route but the login page, and only the
folders it was given are served."""

from __future__ import annotations

import socket
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("gradio", reason="the web UI needs the ui extra: pip install -e '.[ui]'")


def _status(url: str, data: dict[str, str] | None = None) -> int:
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_a_password_guards_the_page_and_no_outside_file_is_served(tmp_path: Path) -> None:
    from dreamrelation.ui.app import launch

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (tmp_path / "inside.txt").write_text("inside")
    page = launch([tmp_path], port=port, password="secret", block=False)
    url = f"http://127.0.0.1:{port}"
    try:
        assert _status(f"{url}/config") == 401  # the page's definition and its API need the login
        assert _status(f"{url}/gradio_api/info") == 401
        assert _status(f"{url}/login", {"username": "dreamrelation", "password": "wrong"}) == 400
        assert _status(f"{url}/login", {"username": "dreamrelation", "password": "secret"}) == 200
    finally:
        page.close()
    page = launch([tmp_path], port=port, block=False)
    try:
        assert _status(f"{url}/config") == 200
        assert _status(f"{url}/gradio_api/file={tmp_path / 'inside.txt'}") == 200
        assert _status(f"{url}/gradio_api/file=/etc/passwd") == 403
    finally:
        page.close()
