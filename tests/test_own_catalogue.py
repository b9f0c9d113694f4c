"""A topic family and a procedure added only in the catalogue file (no Python edited) work end
to end, with their permission enforced; the cookbook's entries and examples run as written."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from autobahn.wamp.exception import ApplicationError

from harness.processes import BIN, ROOT, TEST_BACKEND_SECRET, Child, Router, Worker, base_env
from harness.producers import app_client
from harness.vhost import isolated_vhost
from tests.support.browser import Browser

COOKBOOK = (ROOT / "docs" / "cookbook.md").read_text(encoding="utf-8")
SHIPPED = ROOT / ".crossbar" / "catalogue.json"
EXAMPLES = ROOT / "docs" / "examples"
RESERVE = "shop.orders.reserve"


def cookbook_additions() -> dict[str, Any]:
    found = re.search(r"<!-- test: catalogue-additions -->\n```json\n(.*?)\n```", COOKBOOK, re.S)
    assert found, "the cookbook has no block marked catalogue-additions"
    return dict(json.loads(found.group(1)))


def with_additions(path: Path) -> Path:
    """The shipped catalogue with the cookbook's entries added, as an operator would."""
    data = json.loads(SHIPPED.read_text(encoding="utf-8"))
    additions = cookbook_additions()
    data["topics"] += additions["topics"]
    data["procedures"] += additions["procedures"]
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


class Example(Child):
    """One of the docs' example backends, run as the docs say."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.argv, self.env, self.log_path = argv, env, log

    def start(self, timeout: float = 30) -> Example:
        self._spawn(self.argv, self.env, self.log_path, ROOT)
        assert self.log is not None
        self.log.wait_for(f"registered {RESERVE}", timeout, self.alive)
        return self


@pytest.fixture(scope="module")
def vhost(broker_url: str) -> Iterator[str]:
    """Its own: the suite's worker, on the shipped catalogue, would dead-letter shop events."""
    with isolated_vhost(broker_url) as url:
        yield url


@pytest.fixture(scope="module")
def shop(vhost: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Router]:
    """Router and worker both reading the extended catalogue."""
    workdir = tmp_path_factory.mktemp("shop")
    env = {"TIDINGS_CATALOGUE": str(with_additions(workdir / "catalogue.json"))}
    router = Router(workdir / "router", TIDINGS_BROKER_URL=vhost, **env).start()
    worker = Worker(router, vhost, workdir, **env).start()
    try:
        yield router
    finally:
        worker.stop()
        router.stop()


def refusal(call: Callable[[], Any]) -> str:
    with pytest.raises(ApplicationError) as refused:
        call()
    return str(refused.value.error)


def test_a_declared_topic_reaches_those_with_its_permission_only(shop: Router, vhost: str):
    topic = "shop.stock.A-100"
    clerk = Browser(shop.ws_url, "1", [topic], ["stock:view"]).start()
    watcher = Browser(shop.ws_url, "3", [], ["stock:view"]).start()
    outsider = Browser(shop.ws_url, "2", [], []).start()
    try:
        # Every topic `shop.stock.` could match needs stock:view: the prefix follows.
        watcher.subscribe("shop.stock.", match="prefix")
        for match in (None, "prefix"):
            assert refusal(lambda m=match: outsider.subscribe(topic, m)) == (
                "tidings.error.not_authorized"
            )
        app_client(vhost).send_task("tidings.publish", [topic, {"level": 3}], queue="tidings")
        (event,) = clerk.wait_on(topic, 1)
        assert event["level"] == 3
        assert watcher.wait_on(topic, 1) == [event]
        # Kept for recovery as the entry says; refused to those without the permission.
        assert [e["event_id"] for e in clerk.call("tidings.history.since", topic, None)] == [
            event["event_id"]
        ]
        assert refusal(lambda: outsider.call("tidings.history.since", topic, None)) == (
            "tidings.error.not_authorized"
        )
    finally:
        for browser in (clerk, watcher, outsider):
            browser.close()


def _python_example(router: Router, log: Path) -> Example:
    return Example(
        [sys.executable, str(EXAMPLES / "python" / "reserve_procedure.py")],
        base_env(TIDINGS_ROUTER_URL=router.rs_url, TIDINGS_BACKEND_SECRET=TEST_BACKEND_SECRET),
        log,
    )


def _node_example(router: Router, log: Path) -> Example:
    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed")
    modules = EXAMPLES / "node" / "node_modules"
    if not modules.is_dir():
        pytest.skip("make install puts autobahn-js in docs/examples/node")
    return Example(
        ["node", str(EXAMPLES / "node" / "reserve_procedure.js")],
        base_env(
            TIDINGS_ROUTER_URL=router.rs_url,
            TIDINGS_BACKEND_SECRET=TEST_BACKEND_SECRET,
            NODE_PATH=str(modules),
        ),
        log,
    )


@pytest.mark.parametrize("make", [_python_example, _node_example], ids=["python", "node"])
def test_a_declared_procedure_is_called_with_its_permission_and_told_who_calls(
    shop: Router, tmp_path: Path, make: Callable[[Router, Path], Example]
):
    backend = make(shop, tmp_path / "example.log").start()
    buyer = Browser(shop.ws_url, "1", [], ["order:reserve"]).start()
    rusher = Browser(shop.ws_url, "4", [], ["order:reserve", "order:rush"]).start()
    outsider = Browser(shop.ws_url, "2", [], ["stock:view"]).start()
    try:
        assert buyer.call(RESERVE, 42, 2) == {
            "order_id": 42,
            "quantity": 2,
            "reserved_by": "1",
            "rush": False,
        }
        assert rusher.call(RESERVE, 7)["rush"] is True
        assert refusal(lambda: outsider.call(RESERVE, 42)) == "tidings.error.not_authorized"
        # Undeclared procedures stay closed, even when a backend registers them.
        assert refusal(lambda: buyer.call("shop.orders.cancel", 42)) == (
            "tidings.error.not_authorized"
        )
    finally:
        for browser in (buyer, rusher, outsider):
            browser.close()
        backend.stop()


@pytest.mark.parametrize("command", ["router", "worker"])
def test_a_wrong_entry_stops_router_and_worker_with_one_line(tmp_path: Path, command: str):
    data = json.loads(SHIPPED.read_text(encoding="utf-8"))
    data["topics"].append({"pattern": "shop.stock.{sku}", "audience": "stock:{store}:view"})
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    result = subprocess.run(
        [str(BIN / "tidings"), command],
        env=base_env(TIDINGS_CATALOGUE=str(path), TIDINGS_CBDIR=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    n = len(data["topics"]) - 1
    assert result.stderr == (
        f"tidings {command}: catalogue.json: topics[{n}] (shop.stock.{{sku}}): audience "
        "'stock:{store}:view' names {store}, which the pattern does not have\n"
    )
