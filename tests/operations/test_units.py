"""The systemd units in deploy/systemd/: what they run is real, the env file is what tidings
reads, the stop timeout outlasts a publish, and systemd itself accepts them."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from cli import COMMANDS, build_parser
from harness.processes import ROOT
from tidings import catalogue
from tidings.settings import Settings

UNITS = ROOT / "deploy" / "systemd"
ROUTER_UNIT = UNITS / "tidings-router.service"
WORKER_UNIT = UNITS / "tidings-worker@.service"
ENV_FILE = UNITS / "tidings.env.example"
# Where the units expect the release; the checkout stands in for it below.
INSTALLED = "/opt/tidings/.venv/bin/tidings"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
# Backoff keys newer systemd knows; older versions warn and ignore them (the units say so).
BACKOFF_KEYS = {"RestartSteps": 254, "RestartMaxDelaySec": 254}

Unit = dict[str, list[tuple[str, str]]]


def parse_unit(path: Path) -> Unit:
    """Sections → (key, value) in order; systemd's syntax: keys repeat, `\\` continues."""
    unit: Unit = {}
    section: list[tuple[str, str]] = []
    logical = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    for raw in logical.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], [])
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not a key=value line: {raw!r}"
        section.append((key.strip(), value.strip()))
    return unit


def values(unit: Unit, key: str, section: str = "Service") -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def value(unit: Unit, key: str, section: str = "Service") -> str:
    found = values(unit, key, section)
    assert len(found) == 1, f"{key}= appears {len(found)} times in [{section}]"
    return found[0]


def seconds(span: str) -> float:
    """A systemd time span: "30s", "1min 30s", "90" (seconds)."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", span)
    assert parts, span
    return sum(float(n) * units[u] for n, u in parts)


def env_assignments(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """(set, commented out) assignments of TIDINGS_* variables in an env file."""
    active: dict[str, str] = {}
    commented: dict[str, str] = {}
    for line in text.splitlines():
        found = re.fullmatch(r"(#?)\s*(TIDINGS_[A-Z0-9_]+)=(.*)", line.strip())
        if found:
            (commented if found.group(1) else active)[found.group(2)] = found.group(3)
    return active, commented


def known_variables() -> set[str]:
    """The variables tidings reads: every one of Settings, and the catalogue's path."""
    source = (ROOT / "tidings" / "settings.py").read_text(encoding="utf-8")
    return set(re.findall(r'"(TIDINGS_[A-Z0-9_]+)"', source)) | {catalogue.PATH_VARIABLE}


@pytest.mark.parametrize(
    ("path", "role"), [(ROUTER_UNIT, "router"), (WORKER_UNIT, "worker")], ids=["router", "worker"]
)
def test_every_command_a_unit_runs_is_a_tidings_command_with_its_arguments(path: Path, role: str):
    unit = parse_unit(path)
    commands = [*values(unit, "ExecStartPre"), value(unit, "ExecStart")]
    argvs = [shlex.split(line.lstrip("-@:+!")) for line in commands]
    for argv in argvs:
        assert argv[0] == INSTALLED, argv
        assert argv[1] in COMMANDS, argv
        try:
            build_parser().parse_args(argv[1:])
        except SystemExit:
            pytest.fail(f"`tidings` does not take {shlex.join(argv[1:])}")
    # Checked before each start, its broker topology declared, then the process itself.
    assert [argv[1:] for argv in argvs] == [
        ["check", f"--{role}"],
        ["setup", "--quiet"],
        [role, *argvs[-1][2:]],
    ]
    assert value(unit, "EnvironmentFile") == "/etc/tidings/tidings.env"


@pytest.mark.parametrize("path", [ROUTER_UNIT, WORKER_UNIT], ids=["router", "worker"])
def test_a_unit_restarts_on_failure_and_stops_after_publishes_in_flight(path: Path):
    unit = parse_unit(path)
    assert value(unit, "Restart") == "on-failure"
    assert seconds(value(unit, "RestartSec")) > 0
    assert value(unit, "KillSignal") == "SIGTERM"
    # A worker told to stop waits up to TIDINGS_PUBLISH_TIMEOUT for the router's
    # acknowledgements before it acks and exits; systemd must not kill it before.
    active, commented = env_assignments(ENV_FILE.read_text(encoding="utf-8"))
    given = [
        float(m["TIDINGS_PUBLISH_TIMEOUT"])
        for m in (active, commented)
        if m.get("TIDINGS_PUBLISH_TIMEOUT")
    ]
    longest = max([Settings().publish_timeout, *given])
    assert seconds(value(unit, "TimeoutStopSec")) > longest


@pytest.mark.parametrize("path", [ROUTER_UNIT, WORKER_UNIT], ids=["router", "worker"])
def test_a_unit_runs_sandboxed_as_its_own_user(path: Path):
    unit = parse_unit(path)
    expected = {
        "User": "tidings",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
    }
    assert {key: value(unit, key) for key in expected} == expected
    if path == ROUTER_UNIT:
        # The one place the router writes: its directory, which the env file names.
        active, _ = env_assignments(ENV_FILE.read_text(encoding="utf-8"))
        assert value(unit, "ReadWritePaths") == active["TIDINGS_CBDIR"]
    else:
        assert values(unit, "ReadWritePaths") == []


def test_each_worker_instance_has_its_own_metrics_port():
    unit = parse_unit(WORKER_UNIT)
    assigned = [a for line in values(unit, "Environment") for a in shlex.split(line)]
    assert "TIDINGS_WORKER_METRICS_PORT=%i" in assigned
    # EnvironmentFile= wins over Environment=: the file must leave it to the instance.
    active, commented = env_assignments(ENV_FILE.read_text(encoding="utf-8"))
    assert "TIDINGS_WORKER_METRICS_PORT" not in {**active, **commented}


def test_the_env_file_names_what_tidings_reads_and_its_values_are_valid():
    active, commented = env_assignments(ENV_FILE.read_text(encoding="utf-8"))
    named = {*active, *commented}
    known = known_variables()
    assert named <= known, f"not read by tidings: {sorted(named - known)}"
    # Every variable production may need is there, set or explained.
    instance = {"TIDINGS_DEV", "TIDINGS_WORKER_METRICS_PORT"}
    assert known - instance - named == set()
    assert "TIDINGS_DEV" not in named
    assert {"TIDINGS_SECRET", "TIDINGS_BACKEND_SECRET", "TIDINGS_BROKER_URL"} <= set(active)
    # No real secret in it: the secrets are left empty.
    assert active["TIDINGS_SECRET"] == active["TIDINGS_BACKEND_SECRET"] == ""
    # Once the secrets are filled in, what it sets, and every example it gives, is valid.
    filled = {"TIDINGS_SECRET": "s" * 48, "TIDINGS_BACKEND_SECRET": "b" * 48}
    settings = Settings.from_environ({**commented, **active, **filled})
    assert settings.cbdir == Path(active["TIDINGS_CBDIR"])
    assert not settings.dev


@pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="needs systemd-analyze (apt install systemd; .ci/run does)"
)
def test_systemd_analyze_verifies_the_units_and_rates_their_sandbox(tmp_path: Path):
    """`systemd-analyze verify` checks the syntax and that the commands exist (the checkout's
    `tidings` stands in for the release's); `security --offline` rates the sandbox."""
    assert SYSTEMD_ANALYZE is not None
    here = str(ROOT / ".venv" / "bin" / "tidings")
    assert Path(here).is_file()
    for path in (ROUTER_UNIT, WORKER_UNIT):
        text = path.read_text(encoding="utf-8")
        assert INSTALLED in text
        (tmp_path / path.name).write_text(text.replace(INSTALLED, here), encoding="utf-8")
    (tmp_path / "tidings-worker@9465.service").symlink_to(tmp_path / WORKER_UNIT.name)
    units = [
        str(tmp_path / "tidings-router.service"),
        str(tmp_path / "tidings-worker@9465.service"),
    ]

    version = subprocess.run(
        [SYSTEMD_ANALYZE, "--version"], capture_output=True, text=True, check=True
    ).stdout
    major = int(re.match(r"systemd (\d+)", version).group(1))  # type: ignore[union-attr]
    verify = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", *units], capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0, verify.stderr
    tolerated = [key for key, since in BACKOFF_KEYS.items() if major < since]
    complaints = [
        line
        for line in verify.stderr.splitlines()
        if line.strip() and not any(f"Unknown key '{key}'" in line for key in tolerated)
    ]
    assert complaints == []

    for unit in units:
        # The exposure level in tenths: 2.0 or less ("OK"; 10.0 is no sandbox at all).
        rated = subprocess.run(
            [SYSTEMD_ANALYZE, "security", "--offline=true", "--threshold=20", unit],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert rated.returncode == 0, rated.stdout.splitlines()[-1:]
