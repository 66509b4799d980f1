"""`klantreis keys`: create, list and revoke API keys in the real Redis."""

from __future__ import annotations

import asyncio

import pytest

from deploy.cli import main
from shared.auth import Keyring, Principal
from shared.redis import make_redis
from shared.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, settings: Settings, seed_libraries: list[str]) -> Settings:
    monkeypatch.setenv("KLANTREIS_REDIS_URL", settings.redis_url)
    monkeypatch.setenv("KLANTREIS_KEY_PREFIX", settings.key_prefix)
    # A key's library is checked against the catalogue on its topic.
    monkeypatch.setenv("KLANTREIS_KAFKA_BOOTSTRAP", settings.kafka_bootstrap)
    monkeypatch.setenv("KLANTREIS_TOPIC_PREFIX", settings.topic_prefix)
    return settings


async def verify(settings: Settings, key: str) -> Principal | None:
    redis = make_redis(settings)
    try:
        return await Keyring(redis, settings).verify(key)  # a fresh keyring each time: no cache
    finally:
        await redis.aclose()


def test_a_key_made_on_the_command_line_works_until_it_is_revoked(
    cli_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "create", "--name", "oba website", "--role", "ingest", "--library", "oba"]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("kr_")

    assert main(["keys", "list"]) == 0
    listed = capsys.readouterr().out
    assert "oba website" in listed and "ingest" in listed and "library oba" in listed and "active" in listed
    _, key_id, secret = key.split("_", 2)  # the secret is URL-safe base64: it may hold "_" itself
    assert secret not in listed  # never the secret

    # The CLI runs its own event loop, so this test is synchronous and checks the key through one too.
    principal = asyncio.run(verify(cli_env, key))
    assert principal is not None and principal.library == "oba" and principal.has("ingest")
    assert main(["keys", "revoke", key_id]) == 0
    assert asyncio.run(verify(cli_env, key)) is None
    main(["keys", "list"])
    assert "revoked" in capsys.readouterr().out


def test_a_key_for_a_library_not_in_the_catalogue_is_refused(
    cli_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "create", "--name", "tilburg desk", "--role", "ingest", "--library", "tilburg"]) == 1
    assert capsys.readouterr().err.strip() == (
        "klantreis: no library 'tilburg' in the catalogue (klantreis seed loads the network's)"
    )
    main(["keys", "list"])
    assert "tilburg desk" not in capsys.readouterr().out


def test_an_unknown_role_is_refused_in_one_line(cli_env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["keys", "create", "--name", "x", "--role", "superuser"])
    assert "invalid choice: 'superuser'" in capsys.readouterr().err


def test_revoking_an_unknown_key_says_so(cli_env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "revoke", "nosuchkey"]) == 1
    assert capsys.readouterr().err.strip() == "klantreis: no key with id nosuchkey"
