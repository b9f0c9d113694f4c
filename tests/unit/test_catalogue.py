"""The catalogue from configuration: what it declares is what access allows, and a wrong
entry is one line naming it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tidings import access, catalogue
from tidings.errors import ConfigError, UnknownTopic

SHIPPED = json.loads(catalogue.DEFAULT_PATH.read_text())


@pytest.fixture
def declared() -> Iterator[None]:
    """The shipped catalogue plus an application's family and procedure."""
    data = json.loads(json.dumps(SHIPPED))
    data["topics"].append(
        {"pattern": "acme.prices.{symbol}", "audience": "prices:{symbol}:view", "history": False}
    )
    data["procedures"].append({"name": "acme.orders.reserve", "permission": "order:reserve"})
    catalogue.use(catalogue.parse(data))
    yield
    catalogue.use(None)


def test_a_declared_family_and_procedure_are_allowed_by_their_permission(declared):
    assert access.may_subscribe("7", ["prices:ACME:view"], "acme.prices.ACME")
    assert not access.may_subscribe("7", ["prices:ACME:view"], "acme.prices.INIT")
    assert access.may_subscribe_prefix("7", ["prices:ACME:view"], "acme.prices.ACME") is False
    assert access.may_subscribe_wildcard("7", ["prices:ACME:view"], "acme.prices.") is False
    assert catalogue.require("acme.prices.ACME")[0].history is False
    assert access.may_call("7", ["order:reserve"], "acme.orders.reserve")
    assert not access.may_call("7", [], "acme.orders.reserve")
    assert not access.may_call("7", ["order:reserve"], "acme.orders.cancel")
    with pytest.raises(UnknownTopic, match="not in the catalogue"):
        catalogue.require("acme.stock.ACME")


def test_chat_rooms_take_their_own_permission():
    assert access.may_subscribe("1", ["chat:general:join"], "tidings.chat.general")
    assert not access.may_subscribe("1", ["chat:general:join"], "tidings.chat.board")
    assert access.may_subscribe("1", ["chat:general:join"], "tidings.presence.chat.general")
    topic, parts = catalogue.require("tidings.chat.general")
    assert topic.history_size == 50
    assert topic.presence_topic(parts) == "tidings.presence.chat.general"


def _with(topic: dict | None = None, procedure: dict | None = None) -> dict:
    data = json.loads(json.dumps(SHIPPED))
    if topic is not None:
        data["topics"].append(topic)
    if procedure is not None:
        data["procedures"].append(procedure)
    return data


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (_with({"pattern": "acme.x.{a}", "audience": "x:{b}:view"}), "names {b}"),
        (_with({"pattern": "acme.X", "audience": "authenticated"}), "not 'X'"),
        (_with({"pattern": "acme.{user}", "audience": "self", "histroy": False}), "'histroy'"),
        (_with({"pattern": "acme.x", "audience": "self"}), "needs a {user}"),
        (_with({"pattern": "acme.{a}.{a}", "audience": "authenticated"}), "twice"),
        (_with({"pattern": "tidings.maintenance", "audience": "authenticated"}), "declared twice"),
        (_with({"pattern": "wamp.x", "audience": "authenticated"}), "wamp."),
        (_with({"pattern": "acme.x", "audience": "a", "history_size": 0}), "1 to 10000"),
        (_with({"pattern": "acme.x", "audience": "a", "presence": "acme.y"}), "not declared"),
        (_with(procedure={"name": "Reserve", "permission": "a"}), "dotted lowercase"),
        (_with(procedure={"name": "acme.r", "permission": "a:{id}"}), "no {variables}"),
        (_with(procedure={"name": "tidings.chat.send"}), "declared twice"),
        ({"topics": [], "extra": []}, "'topics' and 'procedures'"),
    ],
)
def test_a_wrong_entry_is_one_line_naming_it(data, says):
    with pytest.raises(ConfigError) as raised:
        catalogue.parse(data, "catalogue.json")
    message = str(raised.value)
    assert says in message and "\n" not in message
    assert message.startswith("catalogue.json")


def test_the_file_is_read_from_the_variable(tmp_path, monkeypatch):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(_with({"pattern": "acme.news", "audience": "authenticated"})))
    monkeypatch.setenv(catalogue.PATH_VARIABLE, str(path))
    catalogue.use(None)
    try:
        assert catalogue.lookup("acme.news") is not None
        path.write_text("{not json")
        catalogue.use(None)
        with pytest.raises(ConfigError, match=r"mine\.json: not JSON"):
            catalogue.current()
    finally:
        monkeypatch.delenv(catalogue.PATH_VARIABLE)
        catalogue.use(None)
