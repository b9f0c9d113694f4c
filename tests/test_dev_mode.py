"""Production never runs in development mode, and development mode serves only its demo."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from harness.processes import BIN, ROOT, TEST_BACKEND_SECRET, TEST_SECRET, Router


def production_env(**extra: str) -> dict[str, str]:
    """This environment without any TIDINGS_ variable (no development mode), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    return {**env, **extra}


def post(url: str, body: object, **headers: str) -> tuple[int, dict]:
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST")
    request.add_header("Content-Type", headers.pop("content_type", "application/json"))
    for name, value in headers.items():
        request.add_header(name.replace("_", "-"), value)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def test_make_run_router_is_production():
    # Before: the Makefile set TIDINGS_DEV=1 for every target.
    result = subprocess.run(
        ["make", "-s", "-o", "install", "run-router"],  # installed already: not again
        cwd=ROOT,
        env=production_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode != 0
    assert "tidings router: TIDINGS_SECRET is not set" in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("command", "variable"), [("router", "TIDINGS_SECRET"), ("worker", "TIDINGS_BACKEND_SECRET")]
)
def test_a_short_secret_stops_the_process_with_one_line(command: str, variable: str):
    env = production_env(TIDINGS_SECRET=TEST_SECRET, TIDINGS_BACKEND_SECRET=TEST_BACKEND_SECRET)
    env[variable] = "short"
    result = subprocess.run(
        [str(BIN / "tidings"), command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"tidings {command}: {variable} is 5 bytes; it must be at least 32 (make one with: "
        "python3 -c 'import secrets; print(secrets.token_urlsafe(48))')"
    ]


def test_outside_development_dev_answers_404(tmp_path: Path):
    env = production_env(TIDINGS_SECRET=TEST_SECRET, TIDINGS_BACKEND_SECRET=TEST_BACKEND_SECRET)
    router = Router(tmp_path, env={**env, "PYTHONUNBUFFERED": "1"}).start()
    try:
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(f"{router.http_url}dev/users", timeout=10)
        assert answer.value.code == 404
        status, body = post(f"{router.http_url}dev/ticket", {"user": "1"})
        assert status == 404 and "ticket" not in body
    finally:
        router.stop()


def test_in_development_dev_serves_the_demo_users_to_the_page_only(router):
    url = f"{router.http_url}dev/ticket"
    own = router.http_url.rstrip("/")
    status, body = post(url, {"user": "1"}, Origin=own, Sec_Fetch_Site="same-origin")
    assert status == 200 and body["ticket"]
    # Another site: refused, whether it says so with Origin or with Sec-Fetch-Site.
    assert post(url, {"user": "1"}, Origin="http://evil.example")[0] == 403
    assert post(url, {"user": "1"}, Sec_Fetch_Site="cross-site")[0] == 403
    # A text/plain POST is what another site can send without asking first.
    assert post(url, {"user": "1"}, content_type="text/plain")[0] == 415
    # Only the demo users.
    status, body = post(url, {"user": "7"})
    assert status == 403 and "demo users" in body["error"]


def test_the_dev_endpoint_answers_only_under_a_loopback_name(router):
    # Before: a page of another site that made its name point to 127.0.0.1 (DNS
    # rebinding) sent Host and Origin of its own, which matched each other.
    evil = "rebind.evil.example"
    port = router.web_port
    status, body = post(
        f"{router.http_url}dev/ticket",
        {"user": "1"},
        Host=f"{evil}:{port}",
        Origin=f"http://{evil}:{port}",
    )
    assert status == 403 and "127.0.0.1 or localhost" in body["error"]
    status, _ = post(f"{router.http_url}dev/feed", {"interval": float("nan")})
    assert status == 400
