"""The access rule alone (no router): the topic table of the contract, case by case."""

from __future__ import annotations

import json

import pytest

from tidings import access
from tidings.names import PUBLIC_PROCEDURES

ORDER = ["entity:order:view"]

SUBSCRIBE = [
    ("tidings.maintenance", [], True),
    ("tidings.entity.order.42", ORDER, True),
    ("tidings.entity.order", ORDER, True),
    ("tidings.presence.order.42", ORDER, True),
    ("tidings.entity.order.42", [], False),
    ("tidings.entity.invoice.42", ORDER, False),
    ("tidings.user.7", [], True),
    ("tidings.user.8", ORDER, False),
    ("tidings.user.7.extra", [], False),
    ("tidings.secret", [], False),
    ("wamp.session.on_join", [], False),
    ("tidings.entity.order.42.x", ORDER, False),
]


@pytest.mark.parametrize(("uri", "perms", "allowed"), SUBSCRIBE)
def test_exact_subscriptions(uri, perms, allowed):
    assert access.may_subscribe("7", perms, uri) is allowed


@pytest.mark.parametrize(
    ("prefix", "allowed"),
    [
        ("tidings.", False),
        ("tidings.user.", False),
        ("tidings.user.7", False),
        ("tidings.entity.", False),
        ("tidings.entity.order", False),
        ("tidings.entity.order.", True),
        ("tidings.presence.order.4", True),
        ("tidings.entity.invoice.", False),
        # Every topic it could match is tidings.maintenance, for everyone.
        ("tidings.maintenance", True),
        ("tidings.chat.", False),
        ("tidings.chat.gen", False),
    ],
)
def test_prefix_subscriptions(prefix, allowed):
    assert access.may_subscribe_prefix("7", ORDER, prefix) is allowed


@pytest.mark.parametrize(
    ("pattern", "allowed"),
    [
        ("tidings.entity.order.", True),
        ("tidings.presence.order.", True),
        ("tidings.entity..42", False),
        # Matches tidings.entity.order.42 and tidings.presence.order.42 only: both allowed.
        ("tidings..order.42", True),
        ("tidings...42", False),
        ("tidings.chat.", False),
        ("tidings.user.", False),
        ("tidings.entity.invoice.", False),
        (".entity.order.42", False),
    ],
)
def test_wildcard_subscriptions(pattern, allowed):
    assert access.may_subscribe_wildcard("7", ORDER, pattern) is allowed


def test_only_the_public_procedures_may_be_called():
    for procedure in PUBLIC_PROCEDURES:
        assert access.may_call("7", [], procedure), procedure
    for procedure in (
        "tidings.authorize",
        "tidings.authenticate",
        "wamp.session.list",
        "wamp.subscription.get_events",
        "tidings.history",
        "tidings.history.since.x",
        "tidings.history.sinc",
        "x.tidings.history.since",
    ):
        assert not access.may_call("7", ORDER, procedure), procedure


def test_no_prefix_reaches_the_routers_own_topics_whatever_the_catalogue():
    # Before: with a family `wares.…` for everyone, a prefix `w` or `wa` also
    # received `wamp.session.on_join` (every session's details, cookies included).
    from tidings import catalogue

    data = json.loads(catalogue.DEFAULT_PATH.read_text(encoding="utf-8"))
    data["topics"].append({"pattern": "wares.stock.{sku}", "audience": "authenticated"})
    catalogue.use(catalogue.parse(data))
    try:
        for prefix in ("w", "wa", "wam", "wamp", "wamp.", "c", "crossbar."):
            assert not access.may_subscribe_prefix("7", [], prefix), prefix
        assert access.may_subscribe_prefix("7", [], "wares.stock.")
        assert access.may_subscribe_prefix("7", [], "wares.")
        assert not access.may_subscribe_wildcard("7", [], "wamp..on_join")
    finally:
        catalogue.use(None)


def test_a_family_reads_presence_only_on_its_own_presence_topic():
    # Before: a reader of `tidings.entity.chat.lobby` (entity `chat`) was announced
    # in the chat room `lobby`, whose presence topic has the same name.
    from tidings.catalogue import presence_of

    assert presence_of("tidings.entity.order.42") == "tidings.presence.order.42"
    assert presence_of("tidings.chat.lobby") == "tidings.presence.chat.lobby"
    assert presence_of("tidings.entity.chat.lobby") is None
