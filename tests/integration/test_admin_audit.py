"""Admin actions on the real broker and Redis: each is recorded on the audit topic (who by key id, never the
secret; what; to what), an archived campaign can be restored, a library can be retired and restored, and an
operator reads the trail with `klantreis audit`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.propositions.app import create_app as propositions_app
from shared.audit import AuditEntry, read_trail
from shared.libraries import LibraryDirectory
from shared.problems import Problem
from shared.settings import Settings
from shared.topics import AUDIT
from tests.integration.conftest import MakeKey
from tests.integration.test_notifications_support import Notifications, campaign, notifications, notifications_settings
from tests.integration.test_propositions_catalogue import BOEKSTART
from tests.support import klantreis, problem, read_to_end, running

pytestmark = pytest.mark.integration

MISTAKE = {"name": "Bibliotheek Per Ongeluk", "postcode_areas": ["9990-9991"],
           "branches": [{"code": "centrum", "name": "Per Ongeluk Centrum"}]}  # fmt: skip


def key_id(key: str) -> str:
    return key.removeprefix("kr_").partition("_")[0]


async def trail(settings: Settings, target: str) -> list[AuditEntry]:
    return await read_trail(settings, target=target)


async def audit_bytes(settings: Settings) -> bytes:
    records = await read_to_end(settings.kafka_bootstrap, settings.topic(AUDIT.name))
    return b"".join((r.value or b"") + b"".join(v for _, v in r.headers) for r in records)


@pytest.fixture
async def service(settings: Settings, admin_key: str) -> AsyncIterator[Notifications]:
    async with notifications(notifications_settings(settings), admin_key) as n:
        yield n


async def test_an_archived_campaign_is_restored_paused_and_both_changes_are_on_the_audit_trail(
    service: Notifications, settings: Settings, admin_key: str
) -> None:
    campaign_id = await service.create(campaign(name="Per ongeluk gearchiveerd"), activate=True)

    archived = await service.client.post(f"/v1/campaigns/{campaign_id}/archive")
    restored = await service.client.post(f"/v1/campaigns/{campaign_id}/restore")

    assert (archived.status_code, archived.json()["status"]) == (200, "archived"), archived.text
    assert (restored.status_code, restored.json()["status"]) == (200, "paused"), restored.text
    again = await service.client.post(f"/v1/campaigns/{campaign_id}/restore")
    assert again.status_code == 409 and again.headers["content-type"] == "application/problem+json"
    edited = await service.client.put(f"/v1/campaigns/{campaign_id}", json={**campaign(name="Weer bruikbaar"),
                                                                          "version": 1})  # fmt: skip
    assert edited.status_code == 200, edited.text
    entries = await trail(settings, f"campaign:{campaign_id}")
    assert [(e.action, e.key_id, e.service) for e in entries] == [
        ("campaign.activate", key_id(admin_key), "notifications"),
        ("campaign.archive", key_id(admin_key), "notifications"),
        ("campaign.restore", key_id(admin_key), "notifications"),
    ]
    assert entries[0].roles == ("admin",) and entries[0].scope == "*"
    assert admin_key.encode() not in await audit_bytes(settings)


async def test_a_retired_library_is_refused_as_new_input_offers_nothing_and_is_restored_by_putting_it_again(
    settings: Settings, seed_libraries: list[str], make_key: MakeKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A running service's directory knows the library already; it reads the catalogue again after this long (10 s
    # in production; none here, so that the test need not wait).
    monkeypatch.setattr(LibraryDirectory, "RETIREMENT_SECONDS", 0.0)
    directory = LibraryDirectory(settings)
    admin, oba_admin = await make_key("admin"), await make_key("admin", library="oba")
    async with running(propositions_app(settings), admin) as client:
        by_the_library = await client.delete("/v1/libraries/oba", headers={"Authorization": f"Bearer {oba_admin}"})
        # A library does not retire itself: the network does.
        assert problem(by_the_library) == (403, "this key is scoped to library 'oba'")
        assert (await client.put("/v1/propositions/boekstart", json=BOEKSTART)).status_code == 202
        assert (await client.put("/v1/libraries/per-ongeluk", json=MISTAKE)).status_code == 202
        assert await _refusal(directory, "per-ongeluk") is None
        offered = await client.put("/v1/offerings/per-ongeluk.boekstart", json={"channels": ["offline"],
                                                                               "branches": ["centrum"]})  # fmt: skip
        assert offered.status_code == 202, offered.text

        retired = await client.delete("/v1/libraries/per-ongeluk")

        assert retired.status_code == 202, retired.text
        shown = (await client.get("/v1/libraries/per-ongeluk")).json()
        assert shown["retired"] is True
        active = [item["library"] for item in (await client.get("/v1/libraries")).json()["items"]]
        retired_ones = (await client.get("/v1/libraries", params={"status": "retired"})).json()["items"]
        assert "per-ongeluk" not in active and [item["library"] for item in retired_ones] == ["per-ongeluk"]
        offering = (await client.get("/v1/offerings/per-ongeluk.boekstart")).json()
        assert offering["active"] is True and offering["available"] is False
        assert (await client.put("/v1/offerings/per-ongeluk.boekstart", json={"channels": ["offline"],
                                 "branches": ["centrum"]})).status_code == 409  # fmt: skip
        assert (await client.delete("/v1/libraries/per-ongeluk")).status_code == 409
        refused = await _refusal(directory, "per-ongeluk")
        assert refused is not None and refused.status == 422
        assert [(e.field, e.message) for e in refused.errors] == [("body.home_library", "the library is retired")]

        assert (await client.put("/v1/libraries/per-ongeluk", json=MISTAKE)).status_code == 202

        assert (await client.get("/v1/libraries/per-ongeluk")).json()["retired"] is False
        assert (await client.get("/v1/offerings/per-ongeluk.boekstart")).json()["available"] is True
        assert await _refusal(directory, "per-ongeluk") is None
    await directory.close()
    entries = await trail(settings, "library:per-ongeluk")
    assert [(e.action, e.key_id) for e in entries] == [
        ("library.put", key_id(admin)),
        ("library.retire", key_id(admin)),
        ("library.put", key_id(admin)),
    ]
    assert await trail(settings, "library:oba") == []


async def _refusal(directory: LibraryDirectory, code: str) -> Problem | None:
    """What a service checking a sign-up's home library answers now."""
    try:
        await directory.require({"body.home_library": code})
        return None
    except Problem as problem:
        return problem


async def test_keys_made_and_revoked_at_the_command_line_are_on_the_trail_that_klantreis_audit_shows(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in (("KAFKA_BOOTSTRAP", settings.kafka_bootstrap), ("REDIS_URL", settings.redis_url),
                        ("TOPIC_PREFIX", settings.topic_prefix), ("KEY_PREFIX", settings.key_prefix)):  # fmt: skip
        monkeypatch.setenv(f"KLANTREIS_{name}", value)

    created = await klantreis(capsys, "keys", "create", "--name", "dashboard", "--role", "analyst")
    made = key_id(created.strip())
    await klantreis(capsys, "keys", "revoke", made)
    shown = await klantreis(capsys, "audit", "--target", f"key:{made}")

    lines = shown.splitlines()
    assert len(lines) == 2, shown
    assert "key.create" in lines[0] and "key.revoke" in lines[1]
    assert all(f"key:{made}" in line and "command line via cli" in line for line in lines)
    assert created.strip().encode() not in await audit_bytes(settings)
