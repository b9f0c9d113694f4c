"""`tidings check`: a good environment passes with one "ok" line; each bad one is named by
exactly its line, with exit status 1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from cli import check
from harness.ports import free_port
from harness.processes import ROOT
from harness.redis_server import RedisServer, redis_server

TIDINGS = str(Path(sys.executable).parent / "tidings")
SECRET = "s" * 40
BACKEND_SECRET = "b" * 40
MAKE_ONE = "(make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(48))')"


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture
def env(broker_url: str, redis: RedisServer, tmp_path: Path) -> dict[str, str]:
    """A production environment (no TIDINGS_DEV) in which everything is in order."""
    cbdir = tmp_path / "crossbar"
    cbdir.mkdir()
    (cbdir / "config.json").write_text((ROOT / ".crossbar" / "config.json").read_text())
    return {
        "TIDINGS_SECRET": SECRET,
        "TIDINGS_BACKEND_SECRET": BACKEND_SECRET,
        "TIDINGS_BROKER_URL": broker_url,
        "TIDINGS_REDIS_URL": redis.url,
        "TIDINGS_CBDIR": str(cbdir),
        "TIDINGS_HTTP_PORT": str(free_port()),
        "TIDINGS_BACKEND_PORT": str(free_port()),
        "TIDINGS_ROUTER_METRICS_PORT": str(free_port()),
        "TIDINGS_WORKER_METRICS_PORT": str(free_port()),
    }


def tidings_check(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`tidings check` with `env` as its only TIDINGS_* variables."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    return subprocess.run(
        [TIDINGS, "check", *args],
        env={**full, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def taken(stack: ExitStack, port: int) -> None:
    """Something else listens on `port` for as long as `stack` is open."""
    sock = stack.enter_context(socket.socket())
    sock.bind(("127.0.0.1", port))
    sock.listen()


# Each kind of bad environment: spoil(env, stack, tmp_path) changes a good one and
# returns the lines `tidings check --router --worker` must print, exactly.
Spoil = Callable[[dict[str, str], ExitStack, Path], list[str]]


def missing_secret(env: dict[str, str], stack: ExitStack, tmp: Path) -> list[str]:
    del env["TIDINGS_SECRET"]
    return [
        "TIDINGS_SECRET is not set: set it to the ticket signing key "
        "(or TIDINGS_DEV=1 for development)"
    ]


def short_secret(env: dict[str, str], stack: ExitStack, tmp: Path) -> list[str]:
    env["TIDINGS_BACKEND_SECRET"] = "too-short"
    return [f"TIDINGS_BACKEND_SECRET is 9 bytes; it must be at least 32 {MAKE_ONE}"]


def bad_publish_timeout(env: dict[str, str], stack: ExitStack, tmp: Path) -> list[str]:
    env["TIDINGS_PUBLISH_TIMEOUT"] = "-1"
    return ["TIDINGS_PUBLISH_TIMEOUT='-1' is not a positive number (seconds); fix or unset it"]


def broker_unreachable(env: dict[str, str], stack: ExitStack, tmp: Path) -> list[str]:
    port = free_port()
    env["TIDINGS_BROKER_URL"] = f"amqp://guest:guest@127.0.0.1:{port}//"
    # Without its password.
    return [
        f"broker: cannot reach amqp://guest:**@127.0.0.1:{port}//: [Errno 111] Connection refused"
    ]


def redis_unreachable(env: dict[str, str], stack: ExitStack, tmp: Path) -> list[str]:
    port = free_port()
    env["TIDINGS_REDIS_URL"] = f"redis://:hunter2@127.0.0.1:{port}/0"
    return [
        f"Redis: cannot reach redis://:**@127.0.0.1:{port}/0: "
        f"Error 111 connecting to 127.0.0.1:{port}. Connection refused."
    ]


def ports_taken(env: dict[str, str], stack: ExitStack, tmp: Path) -> list[str]:
    web, worker = int(env["TIDINGS_HTTP_PORT"]), int(env["TIDINGS_WORKER_METRICS_PORT"])
    taken(stack, web)
    taken(stack, worker)
    return [
        f"TIDINGS_HTTP_PORT: 127.0.0.1:{web} is taken (Address already in use)",
        f"TIDINGS_WORKER_METRICS_PORT: 127.0.0.1:{worker} is taken (Address already in use)",
    ]


def bad_catalogue(env: dict[str, str], stack: ExitStack, tmp: Path) -> list[str]:
    entries = json.loads((ROOT / ".crossbar" / "catalogue.json").read_text())
    entries["topics"][4]["history_size"] = 0
    (tmp / "catalogue.json").write_text(json.dumps(entries))
    env["TIDINGS_CATALOGUE"] = str(tmp / "catalogue.json")
    return [
        "catalogue.json: topics[4] (tidings.user.{user}): "
        "'history_size' must be a whole number from 1 to 10000"
    ]


def no_router_configuration(env: dict[str, str], stack: ExitStack, tmp: Path) -> list[str]:
    env["TIDINGS_CBDIR"] = str(tmp / "elsewhere")
    return [f"no router configuration at {tmp / 'elsewhere' / 'config.json'} (TIDINGS_CBDIR)"]


def several_at_once(env: dict[str, str], stack: ExitStack, tmp: Path) -> list[str]:
    """Every wrong value is named, not only the first; and nothing twice."""
    return (
        short_secret(env, stack, tmp)
        + bad_publish_timeout(env, stack, tmp)
        + missing_secret(env, stack, tmp)
        + broker_unreachable(env, stack, tmp)
    )


CASES: list[Spoil] = [
    missing_secret,
    short_secret,
    bad_publish_timeout,
    broker_unreachable,
    redis_unreachable,
    ports_taken,
    bad_catalogue,
    no_router_configuration,
    several_at_once,
]


def test_a_good_environment_passes_with_one_line(env: dict[str, str]):
    result = tidings_check(env, "--router", "--worker")
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        "ok: ready to start the router and worker\n",
        "",
    )
    assert tidings_check(env).stdout == "ok: ready to start\n"


@pytest.mark.parametrize("spoil", [pytest.param(spoil, id=spoil.__name__) for spoil in CASES])
def test_a_bad_environment_is_exactly_its_lines_and_status_1(
    spoil: Spoil, env: dict[str, str], tmp_path: Path
):
    with ExitStack() as stack:
        expected = spoil(env, stack, tmp_path)
        result = tidings_check(env, "--router", "--worker")
    assert (result.returncode, result.stdout.splitlines(), result.stderr) == (1, expected, "")


@pytest.mark.parametrize("spoil", CASES, ids=[spoil.__name__ for spoil in CASES])
def test_each_problem_is_one_line_in_process(spoil: Spoil, env: dict[str, str], tmp_path: Path):
    with ExitStack() as stack:
        expected = spoil(env, stack, tmp_path)
        assert check.check(env, router=True, worker=True) == expected


def test_ports_are_checked_only_for_the_process_about_to_start(env: dict[str, str]):
    with ExitStack() as stack:
        for name in ("TIDINGS_HTTP_PORT", "TIDINGS_BACKEND_PORT", "TIDINGS_ROUTER_METRICS_PORT"):
            taken(stack, int(env[name]))
        assert check.check(env, worker=True) == []
        assert len(check.check(env, router=True)) == 3
    # A port given twice is named once.
    env["TIDINGS_ROUTER_METRICS_PORT"] = env["TIDINGS_HTTP_PORT"]
    port = env["TIDINGS_HTTP_PORT"]
    assert check.check(env, router=True) == [
        f"TIDINGS_HTTP_PORT and TIDINGS_ROUTER_METRICS_PORT are both port {port}"
    ]


def test_a_wrong_yes_no_value_is_its_own_line_and_the_others_are_judged_without_it(
    env: dict[str, str],
):
    env["TIDINGS_DEV"] = "maybe"
    env["TIDINGS_CHAT_RATE"] = "3"  # sorted before TIDINGS_DEV, and fine
    assert check.check(env) == ["TIDINGS_DEV='maybe' is not a yes/no value; use 1 or 0"]


def test_development_mode_needs_no_secrets(env: dict[str, str]):
    del env["TIDINGS_SECRET"], env["TIDINGS_BACKEND_SECRET"]
    env["TIDINGS_DEV"] = "1"
    assert check.check(env) == []
