"""No Docker engine runs here, so the container files are checked by reading them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from media_api.cli import build_parser
from media_api.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    return data


def _setting_names() -> set[str]:
    return {f"MEDIA_{name.upper()}" for name in Settings.model_fields}


def test_every_app_service_runs_a_real_cli_command() -> None:
    services = _compose()["services"]
    app_services = {n: s for n, s in services.items() if s.get("image") == "media-service:latest"}
    assert set(app_services) >= {"api", "worker", "tagging-worker", "migrate"}
    parser = build_parser()
    for service in app_services.values():
        command = service["command"]
        assert command[0] == "media-api"
        parser.parse_args(command[1:])  # exits (fails the test) on an unknown command or flag


def test_every_media_variable_is_a_real_setting() -> None:
    names = _setting_names()
    used: set[str] = set()
    for service in _compose()["services"].values():
        used |= {k for k in service.get("environment", {}) if k.startswith("MEDIA_")}
    text = (DOCKER / ".env.example").read_text() + (DOCKER / "Dockerfile").read_text()
    used |= set(re.findall(r"\bMEDIA_[A-Z0-9_]+", text))
    assert used
    assert used <= names, used - names


def test_dockerfile_is_non_root_with_healthcheck_and_copies_existing_paths() -> None:
    lines = (DOCKER / "Dockerfile").read_text().splitlines()
    assert any(line.startswith("USER ") and "root" not in line for line in lines)
    assert any(line.startswith("HEALTHCHECK") for line in lines)
    for line in lines:
        if line.startswith("COPY") and "--from" not in line:
            *sources, _dest = line.split()[1:]
            for source in sources:
                assert (ROOT / source).exists(), source
