"""`tidings router` writes each node's configuration from the one you edit, on the node's ports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from cli.router import node_directory
from harness.processes import ROOT
from tidings.settings import Settings


def config_of(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def test_a_second_node_gets_its_own_ports_and_folder(tmp_path: Path):
    cbdir = tmp_path / ".crossbar"
    cbdir.mkdir()
    shutil.copy(ROOT / ".crossbar" / "config.json", cbdir / "config.json")
    settings = Settings.from_environ(
        {"TIDINGS_NODE": "b", "TIDINGS_HTTP_PORT": "8090", "TIDINGS_BACKEND_PORT": "8091"}
    )
    assert settings.router_url == "rs://127.0.0.1:8091"  # its workers find it there
    run = node_directory(cbdir, settings)
    assert run == cbdir / "run" / "b"
    web, rawsocket = config_of(run)["workers"][0]["transports"]
    assert web["endpoint"]["port"] == 8090 and rawsocket["endpoint"]["port"] == 8091
    assert Path(web["paths"]["/"]["directory"]) == (tmp_path / "web").resolve()
    origins = web["paths"]["ws"]["options"]["allowed_origins"]
    assert "http://127.0.0.1:8090" in origins and "http://127.0.0.1:8080" in origins
    # The configuration you edit is left as it is.
    assert config_of(cbdir) == json.loads((ROOT / ".crossbar" / "config.json").read_text())


def test_without_port_variables_the_configured_ports_stay(tmp_path: Path):
    cbdir = tmp_path / ".crossbar"
    cbdir.mkdir()
    config = json.loads((ROOT / ".crossbar" / "config.json").read_text())
    config["workers"][0]["transports"][0]["endpoint"]["port"] = 9000
    (cbdir / "config.json").write_text(json.dumps(config))
    run = node_directory(cbdir, Settings.from_environ({}))
    assert config_of(run)["workers"][0]["transports"][0]["endpoint"]["port"] == 9000
    assert config_of(run)["workers"][0]["transports"][1]["endpoint"]["port"] == 8081
