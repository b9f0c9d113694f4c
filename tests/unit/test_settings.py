"""Settings from an environment mapping: defaults, casts, and one clear error per wrong value."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tidings.errors import ConfigError
from tidings.settings import DEV_SECRET, Settings


def test_defaults_without_any_variable():
    settings = Settings.from_environ({})
    assert settings.broker_url == "amqp://guest:guest@127.0.0.1:5672//"
    assert settings.router_url == "rs://127.0.0.1:8081"
    assert settings.publish_timeout == 10.0 and settings.max_redeliveries == 10
    assert settings.secret is None and settings.backend_secret is None and not settings.dev
    assert settings.cbdir.name == ".crossbar"
    assert (settings.router_metrics_port, settings.worker_metrics_port) == (9464, 9465)
    assert settings.log_format == "plain"


def test_values_are_cast_and_dev_mode_fills_in_the_secrets():
    settings = Settings.from_environ(
        {
            "TIDINGS_DEV": "yes",
            "TIDINGS_PUBLISH_TIMEOUT": "2.5",
            "TIDINGS_HISTORY_SIZE": "7",
            "TIDINGS_CBDIR": "/srv/router",
            "TIDINGS_REDIS_URL": "redis://127.0.0.1:6390/0",
            "TIDINGS_ROUTER_METRICS_PORT": "0",
            "TIDINGS_WORKER_METRICS_PORT": "19465",
            "TIDINGS_LOG_FORMAT": "JSON",
        }
    )
    assert (settings.router_metrics_port, settings.worker_metrics_port) == (0, 19465)
    assert settings.log_format == "json"
    assert settings.dev and settings.secret == DEV_SECRET
    assert settings.publish_timeout == 2.5 and settings.history_size == 7
    assert settings.cbdir == Path("/srv/router")
    assert settings.redis_url == "redis://127.0.0.1:6390/0"


def test_an_exported_secret_takes_the_place_of_the_development_one():
    # The README: export TIDINGS_SECRET and start `make run` with it (development mode).
    settings = Settings.from_environ({"TIDINGS_DEV": "1", "TIDINGS_SECRET": "short-is-fine-in-dev"})
    assert settings.dev and settings.secret == "short-is-fine-in-dev"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TIDINGS_PUBLISH_TIMEOUT", "-1"),
        ("TIDINGS_PUBLISH_TIMEOUT", "soon"),
        ("TIDINGS_PUBLISH_TIMEOUT", "nan"),
        ("TIDINGS_PUBLISH_TIMEOUT", "inf"),
        ("TIDINGS_HISTORY_SIZE", "0"),
        ("TIDINGS_HISTORY_SIZE", "1.5"),
        ("TIDINGS_MAX_REDELIVERIES", "many"),
        ("TIDINGS_DEV", "maybe"),
        ("TIDINGS_BROKER_URL", "http://127.0.0.1:5672"),
        ("TIDINGS_ROUTER_URL", "127.0.0.1:8081"),
        ("TIDINGS_REDIS_URL", "localhost:6379"),
        ("TIDINGS_WORKER_METRICS_PORT", "70000"),
        ("TIDINGS_LOG_FORMAT", "xml"),
    ],
)
def test_a_wrong_value_is_one_error_naming_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        Settings.from_environ({name: value})


def test_a_missing_secret_is_an_error_saying_what_to_set():
    with pytest.raises(ConfigError, match="TIDINGS_SECRET is not set"):
        Settings.from_environ({}).require_secret()
    with pytest.raises(ConfigError, match="TIDINGS_BACKEND_SECRET is not set"):
        Settings.from_environ({}).require_backend_secret()


def test_the_cli_prints_one_line_for_a_wrong_value():
    env = {**os.environ, "TIDINGS_PUBLISH_TIMEOUT": "-3", "TIDINGS_DEV": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "cli", "ticket", "--user", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "tidings ticket: TIDINGS_PUBLISH_TIMEOUT='-3' is not a positive number (seconds); "
        "fix or unset it"
    ]
