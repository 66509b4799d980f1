"""Each deciding rule of notifications on the real broker and Redis: consent, quiet hours, the frequency cap,
holdout, once per trigger, guardians, audiences and propositions, erasure."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.identity.settings import IdentitySettings
from services.notifications.rules import in_holdout
from shared.settings import Settings
from tests.integration.conftest import MakeKey
from tests.integration.test_notifications_support import (
    FakeContacts,
    Notifications,
    SmtpSink,
    TestClock,
    Webhook,
    beside_identity,
    campaign,
    member,
    notifications,
    notifications_settings,
    serving,
    text_of,
)
from tests.support import eventually

pytestmark = pytest.mark.integration

AMSTERDAM = ZoneInfo("Europe/Amsterdam")


@pytest.fixture
def contacts() -> FakeContacts:
    return FakeContacts()


@pytest.fixture
async def service(settings: Settings, admin_key: str, contacts: FakeContacts) -> AsyncIterator[Notifications]:
    async with notifications(notifications_settings(settings), admin_key, contacts=contacts) as n:
        yield n


async def test_marketing_goes_only_on_a_channel_the_member_agreed_to_and_otherwise_is_suppressed_for_no_consent(
    settings: Settings, admin_key: str, contacts: FakeContacts
) -> None:
    with SmtpSink() as smtp:
        overrides = {"notifications_smtp_port": smtp.port}
        async with notifications(notifications_settings(settings, **overrides), admin_key, contacts=contacts) as n:
            campaign_id = await n.create(
                campaign(
                    purpose="marketing",
                    channels=["email", "in_app"],
                    messages={
                        "email": {"nl": {"subject": "Nieuw bij {{ library.name }}", "body": "Kom kijken."}},
                        "in_app": {"nl": {"title": "Nieuw", "body": "Kom kijken."}},
                    },
                )
            )
            by_email, in_app_only, nothing, withdrawn = member(), member(), member(), member()
            for m in (by_email, in_app_only, nothing, withdrawn):
                contacts.add(m, "email", f"{m[:8]}@example.nl")
            t = n.clock()
            await n.member_event("consent_changed", by_email, t, medium="email", purpose="marketing", granted=True)
            await n.member_event("consent_changed", in_app_only, t, medium="in_app", purpose="marketing", granted=True)
            await n.member_event("consent_changed", withdrawn, t, medium="email", purpose="marketing", granted=True)
            later = t + timedelta(minutes=1)
            await n.member_event(
                "consent_changed", withdrawn, later, medium="email", purpose="marketing", granted=False
            )

            async def projected() -> bool:
                return (
                    await n.stores.projections.consents(withdrawn) == {"email:marketing": False}
                    and await n.stores.projections.consents(by_email) == {"email:marketing": True}
                    and await n.stores.projections.consents(in_app_only) == {"in_app:marketing": True}
                )

            await eventually(projected)

            for m in (by_email, in_app_only, nothing, withdrawn):
                await n.friction(m)
            decided = await n.decided_for([by_email, in_app_only, nothing, withdrawn])

            assert [(d.type, d.data.get("medium")) for d in decided[by_email]] == [("sent", "email")]
            assert [(d.type, d.data.get("medium")) for d in decided[in_app_only]] == [("sent", "in_app")]
            assert [(d.type, d.data["reason"]) for d in decided[nothing]] == [("suppressed", "no_consent")]
            assert [(d.type, d.data["reason"]) for d in decided[withdrawn]] == [("suppressed", "no_consent")]
            assert [to for _, tos in smtp.envelopes for to in tos] == [f"{by_email[:8]}@example.nl"]
            assert await n.inbox(nothing) == []
            results = await n.results(campaign_id)
            assert (results["triggered"], results["sent"], results["suppressed"]) == (4, 2, {"no_consent": 2})


async def test_a_message_decided_in_quiet_hours_is_deferred_to_eight_in_amsterdam_and_then_sent(
    settings: Settings, admin_key: str, contacts: FakeContacts
) -> None:
    evening = datetime(2026, 3, 10, 22, 30, tzinfo=AMSTERDAM)
    clock = TestClock(evening.astimezone(UTC))
    async with serving(Webhook()) as webhook:
        overrides = {"notifications_sms_webhook_url": webhook.url}
        async with notifications(
            notifications_settings(settings, **overrides), admin_key, clock=clock, contacts=contacts
        ) as n:
            campaign_id = await n.create(
                campaign(channels=["sms"], messages={"sms": {"nl": {"body": "Je pas wacht bij {{ library.name }}."}}})
            )
            m = member()
            contacts.add(m, "sms", "0612345678")
            await n.friction(m)

            [deferred] = (await n.decisions(lambda ds: any(d.member == m for d in ds)))[-1:]
            assert deferred.type == "deferred"
            until = datetime.fromisoformat(deferred.data["until"])
            assert until == datetime(2026, 3, 11, 8, 0, tzinfo=AMSTERDAM)
            # Stored to be delivered then, not dropped, and not sent meanwhile.
            assert await n.stores.queue.due_at(m, deferred.data["message_id"]) == until
            assert webhook.calls == []

            clock.jump_to(until.astimezone(UTC) + timedelta(seconds=1))
            decided = await n.decided_for([m])
            assert [d.type for d in decided[m]] == ["deferred", "sent"]
            assert [c["to"] for c in webhook.calls] == ["0612345678"]
            results = await n.results(campaign_id)
            assert (results["deferred"], results["sent"], results["waiting"]) == (1, 1, 0)


async def test_the_network_wide_frequency_cap_stops_the_message_that_would_exceed_it_lowest_priority_first(
    settings: Settings, admin_key: str
) -> None:
    async with notifications(notifications_settings(settings, notifications_frequency_cap=2), admin_key) as n:
        high = await n.create(campaign(name="hoog", priority=90))
        low = await n.create(campaign(name="laag", priority=10))
        middle = await n.create(campaign(name="midden", priority=50))
        m = member()
        await n.friction(m)

        found = await n.decisions(lambda ds: len([d for d in ds if d.member == m and d.type != "deferred"]) >= 3)
        outcome = {d.data["campaign_id"]: (d.type, d.data.get("reason")) for d in found if d.member == m}
        assert outcome == {
            high: ("sent", None),
            middle: ("sent", None),
            low: ("suppressed", "frequency_cap"),
        }
        assert (await n.results(low))["suppressed"] == {"frequency_cap": 1}
        assert len(await n.inbox(m)) == 2


async def test_the_holdout_is_a_deterministic_share_of_members_who_are_not_messaged(
    service: Notifications,
) -> None:
    campaign_id = await service.create(campaign(holdout_percent=50))
    members = [member() for _ in range(40)]
    for m in members:
        await service.friction(m)

    decided = await service.decided_for(members)

    held_out = {m for m in members if in_holdout(campaign_id, m, 50)}
    assert {m for m, ds in decided.items() if ds[-1].data.get("reason") == "holdout"} == held_out
    assert {m for m, ds in decided.items() if ds[-1].type == "sent"} == set(members) - held_out
    assert 0 < len(held_out) < len(members)
    results = await service.results(campaign_id)
    assert (results["sent"], results["suppressed"]) == (40 - len(held_out), {"holdout": len(held_out)})
    for m in held_out:
        assert await service.inbox(m) == []


async def test_a_redelivered_trigger_and_the_same_friction_from_a_second_library_give_one_message(
    service: Notifications,
) -> None:
    campaign_id = await service.create(campaign())
    m = member()
    first = await service.friction(m, library="oba")
    await service.publish(first, "journey.frictions.v1")  # the very same event again, as a redelivery
    second = await service.friction(m, library="haarlem")  # the same friction, raised for another library

    found = await service.decisions(lambda ds: len({d.id for d in ds if d.member == m}) >= 2)
    mine = {d.id: d for d in found if d.member == m}
    assert sorted((d.type, d.data["trigger_event_id"]) for d in mine.values()) == sorted(
        [("sent", first.id), ("suppressed", second.id)]
    )
    assert next(d for d in mine.values() if d.type == "suppressed").data["reason"] == "duplicate"
    # A later member's message shows the consumer went past all three.
    later = member()
    await service.friction(later)
    await service.decided_for([later])
    assert len(await service.inbox(m)) == 1
    results = await service.results(campaign_id)
    assert (results["triggered"], results["sent"], results["suppressed"]) == (3, 2, {"duplicate": 1})


async def test_a_message_for_a_minor_goes_to_the_guardian_s_address_from_the_real_identity_service(
    identity_settings: IdentitySettings, admin_key: str, make_key: MakeKey
) -> None:
    ten_years_old = date(date.today().year - 10, 1, 1).isoformat()
    async with beside_identity(identity_settings, admin_key, await make_key("service")) as (n, people, smtp):
        await n.create(
            campaign(
                name="Pas geactiveerd",
                trigger={"event_types": ["nl.bibliotheek.member.card_activated.v1"]},
                channels=["email"],
                messages={
                    "email": {
                        "nl": {
                            "subject": "Welkom in {{ library.name }}",
                            "body": "Beste {{ recipient.name }},{% if recipient.is_guardian %} de pas van uw "
                            "kind is geactiveerd.{% endif %}",
                        }
                    }
                },
            )
        )
        person = {"postcode": "1034 AB", "home_library": "oba", "platform": "website"}
        parent = await people.post(
            "/v1/members",
            json={**person, "name": "Ouder van Nynke", "email": "ouder@example.nl", "birth_date": "1985-02-01"},
        )
        child = await people.post(
            "/v1/members",
            json={**person, "name": "Nynke", "email": "nynke@example.nl", "birth_date": ten_years_old},
        )
        parent_id, child_id = parent.json()["member_id"], child.json()["member_id"]
        guardian = await people.put(f"/v1/members/{child_id}/guardian", json={"guardian_id": parent_id})
        assert guardian.status_code == 202, guardian.text
        activated = await people.post(f"/v1/members/{child_id}/card-activation", json={"library": "oba"})
        assert activated.status_code == 202, activated.text

        decided = await n.decided_for([child_id])
        [sent] = decided[child_id]
        assert (sent.type, sent.data["recipient"], sent.data["medium"]) == ("sent", "guardian", "email")
        [(_, recipients)] = smtp.envelopes
        assert recipients == ["ouder@example.nl"]
        [mail] = smtp.received
        assert "Beste Ouder van Nynke, de pas van uw kind is geactiveerd." in text_of(mail)
        # Neither address nor name stays behind in notifications' Redis.
        stored = await n.everything()
        for personal in ("ouder@example.nl", "nynke@example.nl", "Ouder van Nynke", "Nynke"):
            assert personal not in stored


async def test_a_campaign_about_a_proposition_reaches_only_members_whose_library_offers_it(
    service: Notifications,
) -> None:
    boekstart = campaign(name="BoekStart", proposition="boekstart", audience={"age_bands": ["0-3"]})
    response = await service.client.post("/v1/campaigns", json=boekstart)
    campaign_id = response.json()["id"]
    activated = await service.client.post(f"/v1/campaigns/{campaign_id}/activate")
    # The catalogue is empty so far: the campaign reaches nobody, and says so.
    assert any("reaches nobody" in w for w in activated.json()["warnings"])
    nobody = member()
    await service.friction(nobody, age_band="0-3")
    assert (await service.decided_for([nobody]))[nobody][-1].data["reason"] == "not_offered"

    await service.catalogue(
        "offering_changed", "oba.boekstart", offering_id="oba.boekstart", library="oba", proposition="boekstart",
        local_name="BoekStart in de OBA", channels=["offline"],
    )  # fmt: skip
    await eventually(lambda: service.stores.catalogue.offered_by("boekstart"))
    at_oba, at_haarlem, too_old = member(), member(), member()
    await service.friction(at_oba, library="oba", age_band="0-3")
    await service.friction(at_haarlem, library="haarlem", age_band="0-3")
    await service.friction(too_old, library="oba", age_band="18-64")

    decided = await service.decided_for([at_oba, at_haarlem, too_old])
    assert decided[at_oba][-1].type == "sent"
    assert decided[at_haarlem][-1].data["reason"] == "not_offered"
    assert decided[too_old][-1].data["reason"] == "not_in_audience"
    assert (await service.client.get(f"/v1/campaigns/{campaign_id}")).json()["warnings"] == []


async def test_an_erased_member_leaves_no_inbox_and_no_notifications_state(service: Notifications) -> None:
    await service.create(campaign())
    m = member()
    await service.member_event("signed_up", m, age_band="18-64", home_library="oba", postcode_area="1034")
    await service.member_event("consent_changed", m, medium="email", purpose="marketing", granted=True)
    await service.friction(m)
    await service.decided_for([m])
    assert len(await service.inbox(m)) == 1

    await service.member_event("erased", m)

    async def only_the_tombstone() -> bool:
        return await service.stores.projections.keys_of(m) == [service.settings.key("notifications", "erased", m)]

    await eventually(only_the_tombstone)
    assert await service.inbox(m) == []
    # A late trigger for the erased member sends nothing.
    late = await service.friction(m, rule="reservation-not-collected")
    await service.create(campaign(name="te laat", trigger={"friction_rules": ["reservation-not-collected"]}))
    await service.publish(late, "journey.frictions.v1")
    found = await service.decisions(lambda ds: any(d.data.get("trigger_event_id") == late.id for d in ds))
    assert {d.data["reason"] for d in found if d.data.get("trigger_event_id") == late.id} == {"erased"}
    assert await only_the_tombstone()


async def test_a_merged_member_s_inbox_and_once_per_trigger_move_to_the_survivor(service: Notifications) -> None:
    await service.create(campaign())
    merged, survivor = member(), member()
    await service.friction(merged)
    await service.decided_for([merged])

    await service.member_event("merged", merged, survivor_id=survivor)

    async def moved() -> bool:
        return await service.stores.projections.resolve(merged) == survivor and len(await service.inbox(survivor)) == 1

    await eventually(moved)
    assert len(await service.inbox(merged)) == 1  # the old id reads the survivor's inbox
    # The same friction for the old id is the survivor's: already messaged.
    again = await service.friction(merged)
    found = await service.decisions(lambda ds: any(d.data.get("trigger_event_id") == again.id for d in ds))
    [decision] = [d for d in found if d.data.get("trigger_event_id") == again.id]
    assert (decision.member, decision.data["reason"]) == (survivor, "duplicate")


async def test_a_member_who_signed_up_in_english_reads_the_message_in_english_and_others_in_dutch(
    service: Notifications,
) -> None:
    messages = {"in_app": {"nl": {"title": "Je pas wacht", "body": "Kom langs."},
                           "en": {"title": "Your card is waiting", "body": "Drop by."}}}  # fmt: skip
    await service.create(campaign(messages=messages))
    english, dutch = member(), member()
    for m, language in ((english, "en"), (dutch, "nl")):
        await service.member_event(
            "signed_up", m, age_band="18-64", home_library="oba", postcode_area="1034", language=language
        )

    async def projected() -> bool:
        return all([(await service.stores.projections.member(m)).profile.library for m in (english, dutch)])

    await eventually(projected)
    await service.friction(english)
    await service.friction(dutch)
    await service.decided_for([english, dutch])

    [to_english] = await eventually(lambda: service.inbox(english), within=30)
    [to_dutch] = await eventually(lambda: service.inbox(dutch), within=30)
    assert (to_english["title"], to_english["body"]) == ("Your card is waiting", "Drop by.")
    assert (to_dutch["title"], to_dutch["body"]) == ("Je pas wacht", "Kom langs.")
