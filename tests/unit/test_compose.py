"""docker-compose.yml is a compose file the compose tool accepts, alone and with the scaling override.

Runs where `docker compose` (the v2 plugin) or `docker-compose` is installed; `config` needs no Docker engine.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("identity", "propositions", "journey", "notifications", "analytics")


def compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30, check=False)
        if probe.returncode == 0:
            return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    return [standalone] if standalone is not None else None


COMPOSE = compose_command()
needs_compose = pytest.mark.skipif(COMPOSE is None, reason="no compose tool (docker compose or docker-compose) here")


def config(*files: str) -> dict[str, object]:
    assert COMPOSE is not None
    arguments = [arg for name in files for arg in ("-f", name)]
    result = subprocess.run(
        [*COMPOSE, *arguments, "config", "--format", "json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    parsed: dict[str, object] = json.loads(result.stdout)
    return parsed


@needs_compose
def test_compose_accepts_the_file_and_every_service_waits_for_kafka_redis_and_the_topics() -> None:
    services = config("docker-compose.yml")["services"]
    assert isinstance(services, dict)
    assert {"kafka", "redis", "clickhouse", "otel-collector", "jaeger", "topics", *SERVICES} <= set(services)
    for name in SERVICES:
        service = services[name]
        assert service["command"] == ["python", "-m", f"services.{name}"]
        assert "/readyz" in " ".join(service["healthcheck"]["test"])
        assert service["depends_on"]["topics"]["condition"] == "service_completed_successfully"
        assert service["environment"]["OTEL_TRACES_EXPORTER"] == "otlp"
    assert services["analytics"]["depends_on"]["clickhouse"]["condition"] == "service_healthy"
    assert services["topics"]["command"] == ["python", "-m", "deploy", "topics"]
    assert "--appendonly" in " ".join(services["redis"]["command"])
    assert services["kafka"]["entrypoint"] == ["sh", "/klantreis/compose-start.sh"]
    [collector_config] = services["otel-collector"]["volumes"]
    assert Path(collector_config["source"]) == ROOT / "deploy" / "otel-collector.yaml"


@needs_compose
def test_the_scaling_override_leaves_the_services_without_a_fixed_host_port() -> None:
    services = config("docker-compose.yml", "deploy/compose.scale.yml")["services"]
    assert isinstance(services, dict)
    for name in SERVICES:
        [port] = services[name]["ports"]
        assert "published" not in port or not port["published"], port
        assert port["host_ip"] == "127.0.0.1"
