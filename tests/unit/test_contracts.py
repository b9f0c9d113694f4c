"""The internals of autobahn, crossbar, celery and kombu that tidings relies on, one test each.

pyproject.toml bounds these packages at the minor tested; when an upgrade
moves one of these, the test that names it fails, not production.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
from pathlib import Path

from autobahn.asyncio.rawsocket import WampRawSocketClientProtocol
from autobahn.asyncio.wamp import ApplicationSession
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import ComponentConfig


def _source(thing: object) -> str:
    return inspect.getsource(thing)  # type: ignore[arg-type]


def _module_text(name: str) -> str:
    """A module's source, read without importing it (crossbar would select Twisted here)."""
    top, *rest = name.split(".")
    spec = importlib.util.find_spec(top)  # finds the package without running its __init__
    assert spec is not None and spec.submodule_search_locations, f"{top} is not installed"
    path = Path(spec.submodule_search_locations[0]).joinpath(*rest).with_suffix(".py")
    assert path.is_file(), f"{name} is gone"
    return path.read_text(encoding="utf-8")


def test_autobahn_session_keeps_its_transport_and_request_ids_where_rawsocket_looks():
    # publisher.rawsocket.publish_quick: session._transport, session._request_id_gen.next()
    session = ApplicationSession(ComponentConfig(realm="tidings"))
    assert hasattr(session, "_transport")
    first, second = session._request_id_gen.next(), session._request_id_gen.next()
    assert isinstance(first, int) and second == first + 1
    assert "self._transport = transport" in _source(type(session).onOpen)


def test_autobahn_rawsocket_protocol_has_the_hooks_rawsocket_overrides():
    # publisher.rawsocket.RawSocket: sendString, stringReceived, send, the length prefix.
    for name in ("sendString", "stringReceived", "send", "isOpen"):
        assert callable(getattr(WampRawSocketClientProtocol, name)), name
    assert WampRawSocketClientProtocol.prefix_format == "!L"
    assert isinstance(WampRawSocketClientProtocol.max_length_send, int)
    serializer_id = WampRawSocketClientProtocol.serializer_id
    assert "self._serializer" in _source(serializer_id.fget)
    assert "self._session.onMessage(msg)" in _source(WampRawSocketClientProtocol.stringReceived)


def test_crossbar_reads_the_denial_uris_at_call_time():
    # router.uris.install() replaces these class attributes; crossbar must read them late.
    assert isinstance(ApplicationError.NOT_AUTHORIZED, str)
    assert isinstance(ApplicationError.AUTHORIZATION_FAILED, str)
    for module in ("crossbar.router.broker", "crossbar.router.dealer"):
        text = _module_text(module)
        assert "ApplicationError.NOT_AUTHORIZED" in text
        assert "ApplicationError.AUTHORIZATION_FAILED" in text


def test_crossbar_router_sends_each_message_through_router_send():
    # router.dispatch_guard wraps Router.send(self, session, msg).
    tree = ast.parse(_module_text("crossbar.router.router"))
    (router,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Router"]
    (send,) = [n for n in router.body if isinstance(n, ast.FunctionDef) and n.name == "send"]
    assert [a.arg for a in send.args.args] == ["self", "session", "msg"]
    assert "self._router.send(session, " in _module_text("crossbar.router.broker")


def test_celery_strategy_hook_and_handler_signature():
    # workers.inline.strategy stands in for celery.worker.strategy.default.
    from celery.worker import strategy
    from celery.worker.consumer.consumer import Consumer

    params = list(inspect.signature(strategy.default).parameters)
    assert params[:3] == ["task", "app", "consumer"]
    assert "def task_message_handler(message, body, ack, reject, callbacks," in (
        " ".join(_source(strategy.default).split())
    )
    handler = " ".join(_source(Consumer.create_task_handler).split())
    assert "strategy( message, payload, ack_log_error_promise, reject_log_error_promise," in handler
    for name in ("call_soon", "call_soon_ack", "apply_eta_task"):
        assert callable(getattr(Consumer, name)), name


def test_celery_consumer_state_the_gate_reads():
    # workers.inline.Gate: event_dispatcher, controller.state.revoked, task_buckets,
    # disable_rate_limits; set up by Consumer.__init__.
    from celery.worker import state
    from celery.worker.consumer import events
    from celery.worker.consumer.consumer import Consumer

    init = _source(Consumer.__init__)
    for name in ("self.task_buckets", "self.disable_rate_limits", "self.hub"):
        assert name in init, name
    assert "c.event_dispatcher = " in _source(events)
    assert hasattr(state, "revoked")


def test_celery_request_acks_through_on_ack_and_a_flag():
    # workers.tasks.AckAfterPublish overrides acknowledge() and sets `acknowledged`.
    from celery.worker.request import Request

    text = _source(Request.acknowledge)
    assert "self._on_ack(" in text and "self.acknowledged = True" in text
    assert "self._on_reject(" in _source(Request.reject)


def test_kombu_hub_calls_soon_from_any_thread_and_repeats():
    # workers.ledger: acks are scheduled on the consumer's hub from the publisher's thread.
    from kombu.asynchronous.hub import Hub
    from kombu.message import Message

    assert "_ready_lock" in _source(Hub.call_soon)
    assert callable(Hub.call_repeatedly)
    assert "multiple" in inspect.signature(Message.ack).parameters


def _method_args(module: str, cls: str, method: str) -> list[str]:
    tree = ast.parse(_module_text(module))
    (klass,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls]
    (found,) = [n for n in klass.body if isinstance(n, ast.FunctionDef) and n.name == method]
    return [a.arg for a in found.args.args]


def test_crossbar_message_paths_the_guards_wrap():
    # router.guards wraps Router.process/send and RouterSession.onOpen/onClose.
    assert _method_args("crossbar.router.router", "Router", "process") == ["self", "session", "msg"]
    assert _method_args("crossbar.router.session", "RouterSession", "onOpen") == [
        "self",
        "transport",
    ]
    assert _method_args("crossbar.router.session", "RouterSession", "onClose") == [
        "self",
        "wasClean",
    ]
    session = _module_text("crossbar.router.session")
    assert "self._router.process(self, msg)" in session
    for name in ("self._session_id = None", "self._authrole = None", "self._transport = None"):
        assert name in session, name
    # The subscriptions a session holds, counted against its limit.
    assert "self._session_to_subscriptions[session].add(subscription)" in _module_text(
        "crossbar.router.broker"
    )


def test_twisted_tcp_buffers_what_it_cannot_send_where_the_guards_look():
    # router.guards: unsent = len(dataBuffer) - offset + _tempDataLen
    from twisted.internet.abstract import FileDescriptor

    text = _source(FileDescriptor)
    for name in ("dataBuffer", "self.offset", "self._tempDataLen"):
        assert name in text, name


def test_autobahn_websocket_server_keeps_headers_and_closes_with_a_code():
    from autobahn.websocket.protocol import WebSocketServerProtocol

    assert "self.http_headers" in _source(WebSocketServerProtocol.processHandshake)
    assert "code" in inspect.signature(WebSocketServerProtocol.sendClose).parameters


def test_py_amqp_decodes_header_timestamps_through_its_module_datetime():
    # workers.amqp_tolerance replaces `amqp.serialization.datetime`.
    import amqp.serialization

    text = inspect.getsource(amqp.serialization)
    assert "from datetime import datetime" in text
    assert text.count("datetime.fromtimestamp(") == 2
    assert "isinstance(v, datetime)" in text


def test_crossbar_websocket_server_sends_each_wamp_message_through_send():
    # router.outgoing is wired in on WampWebSocketServerProtocol.send(self, msg),
    # which crossbar inherits from autobahn's WampWebSocketProtocol.
    tree = ast.parse(_module_text("crossbar.router.protocol"))
    name = "WampWebSocketServerProtocol"
    (server,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name]
    assert [ast.unparse(b) for b in server.bases] == ["websocket.WampWebSocketServerProtocol"]
    assert "send" not in [n.name for n in server.body if isinstance(n, ast.FunctionDef)]
    assert _method_args("autobahn.wamp.websocket", "WampWebSocketProtocol", "send") == [
        "self",
        "msg",
    ]


def test_twisted_http_channel_hooks_the_request_deadline_uses():
    # router.connection_limits: connectionMade, allHeadersReceived, requestDone, persistent.
    from twisted.web.http import HTTPChannel

    for name in ("connectionMade", "allHeadersReceived", "requestDone"):
        assert callable(getattr(HTTPChannel, name)), name
    assert "self.persistent = " in _source(HTTPChannel.allHeadersReceived)
    assert list(inspect.signature(HTTPChannel.requestDone).parameters) == ["self", "request"]


def test_autobahn_drop_stops_parsing_frames_already_read():
    # router.session_limits.drop: dropConnection(abort=True) sets STATE_CLOSED,
    # which ends consumeData's loop; `data` holds what was read and not parsed.
    from autobahn.websocket.protocol import WebSocketProtocol

    drop = _source(WebSocketProtocol.dropConnection)
    assert "self.state = WebSocketProtocol.STATE_CLOSED" in drop
    assert "self.wasNotCleanReason" in _source(WebSocketProtocol)
    consume = " ".join(_source(WebSocketProtocol.consumeData).split())
    assert "while self.processData() and self.state != WebSocketProtocol.STATE_CLOSED" in consume
    assert "self.data += data" in _source(WebSocketProtocol._dataReceived)


def test_py_amqp_decodes_short_strings_through_its_module_pstr_t():
    # workers.amqp_tolerance replaces `amqp.serialization.pstr_t`.
    import amqp.serialization

    text = inspect.getsource(amqp.serialization)
    assert "def _read_item(" in text and "pstr_t(" in text
    assert text.count("pstr_t(") >= 3


def test_crossbar_internals_the_router_meters_read():
    # router.meters: an embedded component's transport holds the router
    # (RouterApplicationSession._router); sessions by id, subscriptions by session.
    session = _module_text("crossbar.router.session")
    assert "self._router: Router = router" in session
    assert "self._session._transport = self" in session
    router = _module_text("crossbar.router.router")
    assert "self._session_id_to_session[session._session_id] = session" in router
    assert "self._session_to_subscriptions = {}" in _module_text("crossbar.router.broker")


def test_crossbar_builds_a_resource_path_and_picks_its_log_observers_by_name():
    # .crossbar/config.json "health": {"type": "resource", "classname": ...} -> make(extra);
    # router.launch replaces make_stdout_observer/make_stderr_observer in crossbar.node.main.
    assert 'resource = make(config.get("extra", {}))' in _module_text("crossbar.webservice.base")
    main = _module_text("crossbar.node.main")
    assert "from crossbar._logging import LogLevel, make_logfile_observer" in main
    assert main.count("make_stdout_observer(") >= 3 and "make_stderr_observer(" in main


def test_celery_says_shutdown_through_safe_say_after_celeryd_init():
    # workers.logs: celeryd_init comes before Celery's first warning, and its
    # signal handlers write through celery.apps.worker.safe_say.
    text = _module_text("celery.apps.worker")
    init = text.index("signals.celeryd_init.send(")
    assert init < text.index("check_privileges(self.app.conf.accept_content)")
    assert "def safe_say(msg, f=sys.__stderr__):" in text
    assert "safe_say(f'worker: {how} shutdown (MainProcess)', sys.__stdout__)" in text
