"""The README's commands and snippets, run as written against a running stack.

Each snippet the README marks `<!-- test: NAME -->` runs here with two changes
only: the broker and router addresses point at this test's vhost and router
instead of the defaults of `make run`. Each test then waits for the event the
snippet produced to reach a real subscriber.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from harness.clients import Subscriber
from harness.ports import free_port
from harness.processes import ROOT, TEST_SECRET, base_env
from tidings import tickets
from tidings.errors import TicketError

README = (ROOT / "README.md").read_text(encoding="utf-8")
NODE_MODULES = ROOT / "docs" / "examples" / "node" / "node_modules"
DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672//"
DEFAULT_WS = "ws://127.0.0.1:8080/ws"


def snippet(name: str) -> str:
    """The code block that follows `<!-- test: name -->` in the README."""
    found = re.search(rf"<!-- test: {name} -->\n```\w+\n(.*?)\n```", README, re.S)
    assert found, f"the README has no snippet marked {name!r}"
    return found.group(1)


def following(code: str) -> str:
    """The first code block after `code` in the README."""
    at = README.index(code) + len(code)
    found = re.search(r"```\w+\n(.*?)\n```", README[at:], re.S)
    assert found
    return found.group(1)


def on_stack(code: str, broker_url: str, ws_url: str = DEFAULT_WS) -> str:
    assert DEFAULT_BROKER in code or DEFAULT_WS in code or "tidings" in code
    return code.replace(DEFAULT_BROKER, broker_url).replace(DEFAULT_WS, ws_url)


def run_python(code: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture
def alice(router) -> Iterator[Subscriber]:
    """User 1 (Alice of the demo) on her private topic and on order 42."""
    user = Subscriber(
        router.ws_url,
        "1",
        ["tidings.user.1", "tidings.entity.order.42"],
        perms=["entity:order:view"],
    ).start()
    yield user
    user.close()


def test_the_quick_start_commands(router, worker, broker_url, alice):
    env = base_env(TIDINGS_BROKER_URL=broker_url, TIDINGS_ROUTER_URL=router.rs_url)
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if ".venv" not in p)
    result = subprocess.run(
        ["bash", "-e", "-c", snippet("shell")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "status           ok" in result.stdout
    alice.wait_for(
        lambda got: {"title": "Hello", "text": "from the shell"}.items() <= _last(got).items()
    )


def test_sending_with_celery(router, worker, broker_url, alice):
    run_python(on_stack(snippet("celery"), broker_url))
    event = alice.wait_for(lambda got: _last(got).get("text") == "Your export is ready")[-1]
    assert event["event_id"] and event["at"].endswith("Z")


def test_sending_a_raw_event(router, worker, broker_url, alice):
    run_python(on_stack(snippet("raw"), broker_url))
    event = alice.wait_for(lambda got: _last(got).get("entity") == "order")[-1]
    assert event["action"] == "updated" and event["id"] == 42 and event["fields"] == ["status"]
    assert event["changed_by"] == 1 and event["at"].endswith("Z")


@pytest.fixture
def ticket_app() -> Iterator[tuple[Any, str]]:
    """The README's Flask ticket endpoint, served on a free port."""
    os.environ.setdefault("FLASK_SECRET_KEY", "readme-test-session-key")
    namespace: dict[str, Any] = {"__name__": "tickets"}
    exec(compile(snippet("flask"), "README.md (flask)", "exec"), namespace)
    app = namespace["app"]
    server = make_server("127.0.0.1", free_port(), app)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield app, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def session_cookie(app: Any, user_id: int) -> str:
    """What the application's login would have set: a signed Flask session."""
    value = app.session_interface.get_signing_serializer(app).dumps({"user_id": user_id})
    return f"session={value}"


def test_the_flask_ticket_endpoint(ticket_app):
    app, _ = ticket_app
    client = app.test_client()
    assert client.post("/tidings/ticket").status_code == 401  # not signed in
    with client.session_transaction() as session:
        session["user_id"] = 1
    ticket = client.post("/tidings/ticket").get_json()["ticket"]
    claims = tickets.verify(ticket, TEST_SECRET, _NeverUsed())
    assert claims.user == "1" and claims.perms == ("entity:order:view",)
    with pytest.raises(TicketError):
        tickets.verify(ticket, "another key that is long enough to sign with", _NeverUsed())


@pytest.mark.skipif(not NODE_MODULES.is_dir(), reason="make install puts autobahn-js there")
def test_the_browser_snippet_under_node(router, worker, broker_url, ticket_app, tmp_path: Path):
    app, base = ticket_app
    browser = snippet("browser")
    script = tmp_path / "snippet.cjs"
    # What a page of the application has that Node lacks: autobahn-js loaded,
    # and fetch() on the page's own origin with the user's session cookie.
    script.write_text(
        f"""
const autobahn = require("autobahn");
const realFetch = globalThis.fetch;
globalThis.fetch = (url, init = {{}}) =>
  realFetch(new URL(url, {json.dumps(base)}), {{
    ...init, headers: {{ ...(init.headers || {{}}), Cookie: {json.dumps(session_cookie(app, 1))} }},
  }});
{following(browser)}
{on_stack(browser, broker_url, router.ws_url)}
setTimeout(() => process.exit(3), 30000);
""",
        encoding="utf-8",
    )
    node = subprocess.Popen(
        ["node", str(script)],
        env={**os.environ, "NODE_PATH": str(NODE_MODULES)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(node.stdout or []), daemon=True)
    reader.start()
    try:
        sent: set[str] = set()
        # Until the snippet's session has subscribed, what is sent is not seen:
        # send again until one arrives (bounded), then check it is one of ours.
        deadline = time.monotonic() + 30
        while not any(text in line for line in lines for text in sent):
            assert time.monotonic() < deadline and node.poll() is None, lines
            text = f"from the README {len(sent)}"
            sent.add(text)
            run_python(
                "from celery import Celery\n"
                f"Celery(broker={broker_url!r}).send_task('tidings.publish', "
                f"['tidings.user.1', {{'text': {text!r}}}], queue='tidings')"
            )
            time.sleep(0.3)
    finally:
        node.kill()
        node.wait(5)
    (line,) = [line for line in lines if "from the README" in line][:1]
    event_id, _ = line.split(" ", 1)
    assert re.fullmatch(r"[0-9a-f-]{36}", event_id), line


class _NeverUsed:
    def claim(self, jti: str, ttl: float) -> bool:
        return True


def _last(events: list[Any]) -> dict[str, Any]:
    return events[-1] if events else {}
