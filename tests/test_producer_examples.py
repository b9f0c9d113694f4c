"""The producer examples of docs/producers.md, run as the page shows them, on real parts.

Each raw-event example (Python/kombu, Node/amqplib, PHP/amqp) publishes to a real
RabbitMQ; a real worker hands the event to a real router and a real WAMP subscriber
must get it with the `event_id` the example printed. On a vhost where only the
exchange exists, each must report the event as unroutable and exit non-zero, and
succeed once `tidings setup` has declared the queues. The PHP ticket must open a
session on the router, and a tampered one must be refused.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from autobahn.wamp.types import SubscribeOptions
from kombu import Connection, Exchange

from harness.clients import Subscriber, attempt, refusal
from harness.processes import BIN, ROOT, TEST_SECRET, base_env
from harness.rabbit import queue_depths
from harness.vhost import isolated_vhost
from publisher.connection import WampConnection
from publisher.credentials import Credentials
from stores.jti import MemoryJtiStore
from tidings import tickets
from tidings.names import REALM

EXAMPLES = ROOT / "docs" / "examples"
DOC = (ROOT / "docs" / "producers.md").read_text(encoding="utf-8")
NODE_MODULES = EXAMPLES / "node" / "node_modules"
ORDER_TOPIC = "tidings.entity.order.42"
PUBLISHED = re.compile(r"^published (\S+) event_id=([0-9a-f-]{36})$")


def _php(with_amqp: bool) -> list[str]:
    if shutil.which("php") is None:
        pytest.skip("PHP is not installed (Debian: apt-get install php-cli php-amqp)")
    if with_amqp:
        modules = subprocess.run(["php", "-m"], capture_output=True, text=True, check=False)
        if "amqp" not in modules.stdout.split():
            pytest.skip("PHP has no amqp extension (Debian: apt-get install php-amqp)")
    return ["php"]


def _node() -> list[str]:
    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed")
    if not (NODE_MODULES / "amqplib").is_dir():
        pytest.skip("amqplib is not installed: make install runs npm install in docs/examples/node")
    return ["node"]


def documented(script: str) -> list[str]:
    """The command docs/producers.md shows for `script`, as run from the project root:
    `TIDINGS_BROKER_URL=… <program> <script>` (the URL is the test's)."""
    found = re.search(
        rf"^TIDINGS_BROKER_URL=\S+ (\.venv/bin/python|node|php) ({re.escape(script)})$", DOC, re.M
    )
    assert found, f"docs/producers.md shows no command for {script}"
    program = found.group(1)
    # `python`: the venv's, which has kombu as the page asks.
    return [sys.executable if program.endswith("python") else program, found.group(2)]


def raw_event_command(language: str) -> list[str]:
    if language == "node":
        _node()
    elif language == "php":
        _php(with_amqp=True)
    extension = {"python": "py", "node": "js", "php": "php"}[language]
    return documented(f"docs/examples/{language}/raw_event.{extension}")


def run(command: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=ROOT,
        env=base_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def published_id(result: subprocess.CompletedProcess[str]) -> str:
    """The event_id of the example's `published <type> event_id=<id>` line."""
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    found = PUBLISHED.match(lines[0])
    assert found, result.stdout
    uuid.UUID(found.group(2))
    return found.group(2)


LANGUAGES = ["python", "node", "php"]


@pytest.fixture
def order_watcher(router) -> Iterator[Subscriber]:
    watcher = Subscriber(router.ws_url, "1", [ORDER_TOPIC], perms=["entity:order:view"]).start()
    yield watcher
    watcher.close()


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_raw_event_example_reaches_a_browser(language, router, worker, broker_url, order_watcher):
    command = raw_event_command(language)
    event_id = published_id(run(command, TIDINGS_BROKER_URL=broker_url))
    events = order_watcher.wait_for(lambda got: any(e["event_id"] == event_id for e in got))
    (event,) = [e for e in events if e["event_id"] == event_id]
    assert {k: event[k] for k in ("action", "entity", "id", "changed_by", "fields")} == {
        "action": "updated",
        "entity": "order",
        "id": 42,
        "changed_by": 1,
        "fields": ["status"],
    }
    assert event["at"].endswith("Z")


@pytest.mark.parametrize("language", LANGUAGES)
def test_an_unroutable_event_is_reported_until_tidings_setup(language, broker_url):
    command = raw_event_command(language)
    with isolated_vhost(broker_url, prefix="tidings-test-producers") as vhost:
        # No exchange at all: the broker refuses the publish.
        refused = run(command, TIDINGS_BROKER_URL=vhost)
        assert refused.returncode != 0, refused.stdout
        assert "not sent, refused by the broker" in refused.stderr, refused.stderr
        assert "tidings setup" in refused.stderr

        with Connection(vhost) as conn:
            Exchange("tidings.events", type="topic", durable=True)(conn.default_channel).declare()
        # The exchange but no queue: without `mandatory` RabbitMQ would drop it silently.
        returned = run(command, TIDINGS_BROKER_URL=vhost)
        assert returned.returncode != 0, returned.stdout
        assert returned.stdout == ""
        message = returned.stderr.strip()
        assert "\n" not in message, message
        assert re.fullmatch(
            r"event [0-9a-f-]{36} not sent, returned as unroutable \(312 NO_ROUTE\): "
            r"no queue is bound; run `tidings setup`",
            message,
        ), message
        assert queue_depths(vhost) == {}

        setup = run([str(BIN / "tidings"), "setup"], TIDINGS_BROKER_URL=vhost)
        assert setup.returncode == 0, setup.stderr
        event_id = published_id(run(command, TIDINGS_BROKER_URL=vhost))
        assert queue_depths(vhost)["tidings.events"] == (1, 0)

        with Connection(vhost) as conn:
            queued = conn.default_channel.basic_get("tidings.events", no_ack=True)
        assert queued.delivery_info["routing_key"] == "entity.updated"
        assert queued.properties["content_type"] == "application/json"
        assert queued.properties["delivery_mode"] == 2
        body = json.loads(queued.body)
        assert body["event_id"] == event_id
        assert body["type"] == "entity.updated"


# -- the PHP ticket ----------------------------------------------------------------


TICKET_SCRIPT = "docs/examples/php/ticket.php"


def php_ticket(user: str, *perms: str, secret: str = TEST_SECRET) -> str:
    """`php docs/examples/php/ticket.php USER PERM…` as the page shows it."""
    assert f"TIDINGS_SECRET=... php {TICKET_SCRIPT} 1 entity:order:view" in DOC
    result = run([*_php(with_amqp=False), TICKET_SCRIPT, user, *perms], TIDINGS_SECRET=secret)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def _b64url_json(part: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def test_the_php_ticket_is_the_jwt_tidings_expects():
    ticket = php_ticket("1", "entity:order:view")
    header, _, signature = ticket.split(".")
    assert "=" not in ticket and "+" not in ticket and "/" not in ticket
    assert len(base64.urlsafe_b64decode(signature + "=")) == 32  # HMAC-SHA256
    assert _b64url_json(header) == {"alg": "HS256", "typ": "JWT"}
    decoded = jwt.decode(ticket, TEST_SECRET, algorithms=["HS256"])
    assert set(decoded) == {"sub", "perms", "iat", "exp", "jti"}
    assert decoded["exp"] - decoded["iat"] == tickets.DEFAULT_TTL
    verified = tickets.verify(ticket, TEST_SECRET, MemoryJtiStore())
    assert (verified.user, verified.perms) == ("1", ("entity:order:view",))


def test_a_php_ticket_opens_a_session_that_receives_its_events(router, worker, broker_url):
    ticket = php_ticket("1", "entity:order:view")
    received: list[Any] = []
    arrived = threading.Condition()

    def on_event(event: Any, details: Any = None) -> None:
        with arrived:
            received.append(event)
            arrived.notify_all()

    async def subscribe(session: Any) -> None:
        await session.subscribe(on_event, ORDER_TOPIC, options=SubscribeOptions(details=True))

    conn = WampConnection(
        router.ws_url, REALM, Credentials(None, "ticket", ticket), on_join=subscribe
    ).start()
    try:
        session = conn.wait_joined(10)
        assert session._authid == "1"
        # The ticket's perms hold: another user's topic stays closed.
        refused = attempt(conn, lambda s: s.subscribe(on_event, "tidings.user.2"))
        assert refused == "tidings.error.not_authorized", refused
        event_id = str(uuid.uuid4())
        event = {"event_id": event_id, "type": "entity.updated", "entity": "order", "id": 42}
        sent = run(
            [sys.executable, "docs/examples/python/raw_event.py", json.dumps(event)],
            TIDINGS_BROKER_URL=broker_url,
        )
        assert published_id(sent) == event_id
        with arrived:
            assert arrived.wait_for(
                lambda: any(e["event_id"] == event_id for e in received), timeout=10
            ), received
    finally:
        conn.close()


def _with_claims(ticket: str, **changes: Any) -> str:
    header, claims, signature = ticket.split(".")
    forged = json.dumps({**_b64url_json(claims), **changes}, separators=(",", ":"))
    payload = base64.urlsafe_b64encode(forged.encode()).decode().rstrip("=")
    return f"{header}.{payload}.{signature}"


def _with_signature_changed(ticket: str) -> str:
    head, _, signature = ticket.rpartition(".")
    # The first character: the last one's low bits are padding, which decoders ignore.
    return f"{head}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}"


def test_a_tampered_php_ticket_is_refused(router):
    ticket = php_ticket("1", "entity:order:view")
    for forged in (
        _with_claims(ticket, perms=["entity:order:view", "entity:invoice:view"]),
        _with_claims(ticket, sub="2"),
        _with_signature_changed(ticket),
        php_ticket("1", "entity:order:view", secret="not-the-router-secret-0123456789abcdef"),
    ):
        error = refusal(router.ws_url, Credentials(None, "ticket", forged))
        assert error.startswith("tidings.error.invalid_ticket:"), error
    # The untouched ticket, not used by any attempt above, still works.
    conn = WampConnection(router.ws_url, REALM, Credentials(None, "ticket", ticket)).start()
    try:
        assert conn.wait_joined(10)._authid == "1"
    finally:
        conn.close()


# -- the page itself -----------------------------------------------------------------


def test_the_code_on_the_page_is_the_code_of_the_examples():
    """Each excerpt on docs/producers.md: its lines, in order, in the file it names."""
    excerpts = re.findall(r"<!-- excerpt: (\S+) -->\n```\w+\n(.*?)\n```", DOC, re.S)
    assert {path for path, _ in excerpts} == {
        "examples/python/raw_event.py",
        "examples/node/raw_event.js",
        "examples/php/raw_event.php",
        "examples/php/ticket.php",
    }
    for path, excerpt in excerpts:
        lines = iter(
            line.strip() for line in (ROOT / "docs" / path).read_text(encoding="utf-8").splitlines()
        )
        # `in` consumes the iterator up to the match: the next line is looked for after it.
        for wanted in filter(None, (line.strip() for line in excerpt.splitlines())):
            assert wanted in lines, f"docs/producers.md shows a line {path} lacks: {wanted}"
        assert f"]({path})" in DOC, f"docs/producers.md does not link {path}"
