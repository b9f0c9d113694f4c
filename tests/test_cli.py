"""The `tidings` command: user mistakes give one clear line and a non-zero status."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jwt

from harness.ports import free_port
from harness.processes import TEST_SECRET, base_env

TIDINGS = str(Path(sys.executable).parent / "tidings")


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = base_env(**env)
    for name in [k for k, v in env.items() if v == ""]:
        full_env.pop(name, None)
    return subprocess.run(
        [TIDINGS, *args], capture_output=True, text=True, env=full_env, timeout=60, check=False
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], text: str) -> None:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert text in result.stderr, result.stderr


def test_ticket_prints_a_verifiable_jwt():
    result = run("ticket", "--user", "7", "--perm", "entity:order:view", "--ttl", "60")
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), TEST_SECRET, algorithms=["HS256"])
    assert claims["sub"] == "7" and claims["perms"] == ["entity:order:view"]
    assert claims["exp"] - claims["iat"] == 60


def test_missing_secret_outside_dev_mode():
    result = run("ticket", "--user", "7", TIDINGS_DEV="0", TIDINGS_SECRET="")
    assert_one_line_error(result, "TIDINGS_SECRET is not set")


def test_router_refuses_to_start_without_secrets():
    result = run("router", TIDINGS_DEV="0", TIDINGS_SECRET="", TIDINGS_BACKEND_SECRET="")
    assert_one_line_error(result, "is not set")


def test_bad_json():
    assert_one_line_error(run("publish", "tidings.user.7", "{nope"), "not valid JSON")


def test_unknown_topic():
    assert_one_line_error(run("publish", "elsewhere.topic", "{}"), "not in the catalogue")


def test_broker_down():
    url = f"amqp://guest:guest@127.0.0.1:{free_port()}//"
    result = run("publish", "tidings.user.7", "{}", TIDINGS_BROKER_URL=url)
    assert_one_line_error(result, "cannot reach the broker")
    assert "guest:guest" not in result.stderr  # the password is not printed


def test_publish_enqueues_a_task(broker_url):
    result = run("publish", "tidings.user.7", '{"text": "hi"}', TIDINGS_BROKER_URL=broker_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("queued tidings.publish ")
