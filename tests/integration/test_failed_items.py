"""Bad rows kept, on the real broker and Redis: every item identity's ingest refuses (in a batch, or posted alone)
goes to the failed-events topic with its reason and its body (personal fields removed), `klantreis dead-letters`
lists it, and after the fix a replay posts it again through the same validation: handled once, however often it
is replayed."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from deploy import runtime
from services.identity.app import create_app as identity_app
from services.identity.settings import IdentitySettings
from services.propositions.app import create_app as propositions_app
from shared.events import BATCH, STRUCTURED
from shared.failed_items import REDACTED
from shared.settings import Settings
from shared.topics import FAILED_INGEST, MEMBERS
from tests.integration.conftest import MakeKey
from tests.integration.test_propositions_catalogue import HAARLEM, OBA
from tests.support import header, klantreis, posted_event, read_to_end, read_topic

pytestmark = pytest.mark.integration

TYPE_PREFIX = "nl.bibliotheek.member."


def posted(kind: str, subject: str | None, **data: Any) -> dict[str, Any]:
    return posted_event(f"{TYPE_PREFIX}{kind}.v1", subject, data)


async def test_refused_items_are_kept_with_their_reason_and_a_replay_after_the_fix_has_its_effect_once(
    identity_settings: IdentitySettings, make_key: MakeKey, admin_key: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    settings = identity_settings
    key = await make_key("ingest", library="oba")
    late = str(uuid.uuid4())  # a member whose sign-up arrives after their card activation
    activated = posted("card_activated", late, branch="oosterdok")
    leaky = posted("login_failed", str(uuid.uuid4()), login_platform="app", email="wilhelmina@example.nl")
    no_subject = posted("card_activated", None)
    async with runtime.serving(identity_app(settings), lifespan="on") as url:
        for name, value in [("IDENTITY_URL", url), ("KAFKA_BOOTSTRAP", settings.kafka_bootstrap),
                            ("REDIS_URL", settings.redis_url), ("TOPIC_PREFIX", settings.topic_prefix),
                            ("KEY_PREFIX", settings.key_prefix)]:  # fmt: skip
            monkeypatch.setenv(f"KLANTREIS_{name}", value)
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}) as http:
            batch = await http.post(
                "/v1/events", content=json.dumps([activated, leaky]), headers={"Content-Type": BATCH}
            )
            assert batch.status_code == 422, batch.text  # nothing acceptable
            single = await http.post("/v1/events", content=json.dumps(no_subject), headers={"Content-Type": STRUCTURED})
            assert single.status_code == 422, single.text

            failed = settings.topic(FAILED_INGEST.name)
            kept = await read_topic(settings.kafka_bootstrap, failed, until=lambda rs: len(rs) >= 3)
            by_id = {json.loads(r.value)["id"]: r for r in kept}
            assert header(by_id[activated["id"]], "dlq_reason") == "not_found"
            assert json.loads(by_id[activated["id"]].value) == activated  # the body as posted
            assert header(by_id[leaky["id"]], "dlq_reason") == "invalid"
            assert "data.email" in (header(by_id[leaky["id"]], "dlq_error") or "")
            assert json.loads(by_id[leaky["id"]].value)["data"]["email"] == REDACTED
            assert all(b"wilhelmina" not in r.value for r in kept)
            assert (header(by_id[no_subject["id"]], "failed_index"), header(by_id[no_subject["id"]], "dlq_reason")) == (
                "0", "invalid")  # fmt: skip
            assert {header(r, "failed_service") for r in kept} == {"identity"}
            assert {header(r, "failed_library") for r in kept} == {"oba"}

            listed = await klantreis(capsys, "dead-letters", "list", "--topic", FAILED_INGEST.name)
            assert [line.split() for line in listed.splitlines() if line.startswith(failed)] == [
                [failed, "invalid", "2"], [failed, "not_found", "1"]]  # fmt: skip

            # The fix: the member's sign-up arrives. The refused activation is replayed, and (by mistake) again.
            registration = posted("registration_started", late, home_library="oba")
            fixed = await http.post(
                "/v1/events", content=json.dumps(registration), headers={"Content-Type": STRUCTURED}
            )
            assert fixed.status_code == 202, fixed.text
            signed_up = await http.post(
                "/v1/members",
                json={"name": "Sanne de Vries", "email": "sanne@example.nl", "birth_date": "1991-04-12",
                      "postcode": "1034 AB", "home_library": "oba", "platform": "website", "registration_id": late},
                headers={"Authorization": f"Bearer {admin_key}"},
            )  # fmt: skip
            assert signed_up.status_code == 202, signed_up.text
        replayed = await klantreis(
            capsys, "dead-letters", "replay", "--topic", FAILED_INGEST.name, "--reason", "not_found"
        )
        assert "reposted 1 to identity: 1 accepted, 0 refused again" in replayed
        again = await klantreis(
            capsys, "dead-letters", "replay", "--topic", FAILED_INGEST.name, "--reason", "not_found"
        )
        assert "reposted 1 to identity: 1 accepted, 0 refused again" in again
        # The item that is still wrong is refused again, and kept again; the one kept without its personal data is
        # not posted with the placeholder.
        still = await klantreis(capsys, "dead-letters", "replay", "--topic", FAILED_INGEST.name, "--reason", "invalid")
        assert "reposted 1 to identity: 0 accepted, 1 refused again" in still and "1 left alone" in still

    members = await read_to_end(settings.kafka_bootstrap, settings.topic(MEMBERS.name))
    activations = [r for r in members if header(r, "ce_id") == activated["id"]]
    assert len(activations) == 1
    assert header(activations[0], "ce_subject") == late
    kept_again = await read_to_end(settings.kafka_bootstrap, settings.topic(FAILED_INGEST.name))
    assert sorted(json.loads(r.value)["id"] for r in kept_again) == sorted(
        [activated["id"], leaky["id"], no_subject["id"], no_subject["id"]]
    )


async def test_refused_loan_reports_are_kept_and_replayed_under_the_original_key_s_library_scope(
    settings: Settings, admin_key: str, make_key: MakeKey, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    key = await make_key("ingest", library="oba")
    elsewhere = loan(library="haarlem", branch=None)  # an oba key may not report haarlem's loans
    nowhere = loan(branch="nowhere")  # no such branch of the oba
    async with runtime.serving(propositions_app(settings), lifespan="on") as url:
        for name, value in [("PROPOSITIONS_URL", url), ("KAFKA_BOOTSTRAP", settings.kafka_bootstrap),
                            ("REDIS_URL", settings.redis_url), ("TOPIC_PREFIX", settings.topic_prefix),
                            ("KEY_PREFIX", settings.key_prefix)]:  # fmt: skip
            monkeypatch.setenv(f"KLANTREIS_{name}", value)
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}) as http:
            admin = {"Authorization": f"Bearer {admin_key}"}
            for code, library in [("oba", OBA), ("haarlem", HAARLEM)]:
                assert (await http.put(f"/v1/libraries/{code}", json=library, headers=admin)).status_code in (200, 202)
            batch = await http.post("/v1/loans/batch", json={"loans": [loan(), elsewhere]})
            assert (batch.status_code, len(batch.json()["accepted"])) == (202, 1), batch.text
            single = await http.post("/v1/loans", json=nowhere)
            assert single.status_code == 422, single.text

            failed = settings.topic(FAILED_INGEST.name)
            kept = await read_topic(settings.kafka_bootstrap, failed, until=lambda rs: len(rs) >= 2)
            assert {header(r, "failed_endpoint") for r in kept} == {"/v1/loans/batch"}
            assert {header(r, "failed_service") for r in kept} == {"propositions"}
            by_reason = {header(r, "dlq_reason"): json.loads(r.value) for r in kept}
            assert by_reason["forbidden"]["id"] == elsewhere["id"]
            assert by_reason["invalid"]["branch"] == "nowhere"

        # Replayed with the oba scope it was posted with: still not oba's to report (an admin key would pass it).
        replayed = await klantreis(capsys, "dead-letters", "replay", "--topic", FAILED_INGEST.name, "--all")
        assert "reposted 2 to propositions: 0 accepted, 2 refused again" in replayed


def loan(**overrides: Any) -> dict[str, Any]:
    report = {
        "id": str(uuid.uuid4()), "event": "borrowed", "member_id": str(uuid.uuid4()), "library": "oba",
        "branch": "oosterdok", "channel": "offline", "platform": "kiosk", "item_id": "9789021416011",
        "format": "book", "time": datetime.now(UTC).isoformat(), "loan_id": f"L-{uuid.uuid4().hex[:8]}",
    }  # fmt: skip
    return {**report, **overrides}
