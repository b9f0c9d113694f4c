"""The dev-only endpoint of the admin page: absent outside dev mode, tickets for demo users."""

from __future__ import annotations

import io
import json
import os
from dataclasses import replace
from typing import Any

import pytest

from router import demo, dev_web
from stores.jti import make_store
from tidings import tickets
from tidings.settings import Settings


def call(method: str, path: str, body: Any = None) -> tuple[str, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else b""
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "CONTENT_LENGTH": str(len(data)),
        "CONTENT_TYPE": "application/json",  # as the page sends it
        "HTTP_HOST": "127.0.0.1:8080",
        "wsgi.input": io.BytesIO(data),
    }
    status: list[str] = []
    chunks = dev_web.app(environ, lambda s, headers: status.append(s))
    return status[0], json.loads(b"".join(chunks))


@pytest.fixture
def dev_mode(monkeypatch: pytest.MonkeyPatch):
    def set_dev(on: bool) -> None:
        config = replace(Settings.from_environ(os.environ), dev=on)
        monkeypatch.setattr(dev_web, "settings", lambda: config)

    return set_dev


def test_outside_dev_mode_every_path_is_404(dev_mode):
    dev_mode(False)
    for method, path in (("GET", "/users"), ("POST", "/ticket"), ("GET", "/records/order/42")):
        status, body = call(method, path, {"user": "1"} if method == "POST" else None)
        assert status.startswith("404"), (method, path)
        assert "ticket" not in body


def test_dev_tickets_name_the_user_and_allow_every_demo_entity(dev_mode):
    dev_mode(True)
    status, body = call("POST", "/ticket", {"user": "2"})
    assert status.startswith("200")
    assert body["name"] == "Bob"
    secret = Settings.from_environ(os.environ).require_secret()
    claims = tickets.verify(body["ticket"], secret, make_store(None))
    assert claims.user == "2"
    assert set(claims.perms) == set(demo.perms_of(claims.user))
    assert {"entity:order:view", "chat:lobby:join", "chat:ops:join"} <= set(claims.perms)
    assert "chat:ops:join" not in demo.perms_of("3")  # Carol


def test_dev_endpoint_refuses_bad_input_with_a_reason(dev_mode):
    dev_mode(True)
    status, body = call("POST", "/ticket", {"user": "a.b"})
    assert status.startswith("400") and "user" in body["error"]
    status, body = call("POST", "/records/order/42", {"user": "1", "values": {"price": "1"}})
    assert status.startswith("400") and "unknown field" in body["error"]
    status, _ = call("GET", "/ticket")
    assert status.startswith("405")


def test_saving_unchanged_values_changes_no_field(dev_mode):
    dev_mode(True)
    _, record = call("GET", "/records/order/4601")
    status, body = call("POST", "/records/order/4601", {"user": "1", "values": record["values"]})
    assert status.startswith("200") and body["fields"] == []
