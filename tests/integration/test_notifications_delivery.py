"""Delivering on the real broker and Redis, to real servers on loopback: e-mail over SMTP, SMS and push webhooks
with retries and dead letters, the in-app inbox, and broadcasts."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from shared.settings import Settings
from tests.integration.conftest import MakeKey
from tests.integration.test_notifications_support import (
    FakeContacts,
    SmtpSink,
    Webhook,
    campaign,
    member,
    notifications,
    notifications_settings,
    serving,
    text_of,
)
from tests.support import eventually, header, problem, read_topic

pytestmark = pytest.mark.integration

PUSH = campaign(
    channels=["push"],
    messages={"push": {"nl": {"title": "{{ library.name }}", "body": "Je pas wacht op je."}}},
)


async def test_an_email_arrives_at_the_smtp_server_with_the_text_rendered_from_the_catalogue(
    settings: Settings, admin_key: str
) -> None:
    contacts = FakeContacts()
    with SmtpSink() as smtp:
        overrides = {"notifications_smtp_port": smtp.port, "notifications_smtp_from": "nieuws@bibliotheek.nl"}
        async with notifications(notifications_settings(settings, **overrides), admin_key, contacts=contacts) as n:
            await n.catalogue(
                "library_changed", "library:oba", library="oba", name="OBA Amsterdam", website="https://www.oba.nl",
                branches=[{"code": "oosterdok", "name": "OBA Oosterdok", "opening_hours": "ma-zo 08.00-22.00"}],
            )  # fmt: skip
            await n.catalogue(
                "offering_changed", "oba.boekstart", offering_id="oba.boekstart", library="oba",
                proposition="boekstart", local_name="BoekStart in de OBA", channels=["offline"],
                url="https://www.oba.nl/boekstart",
            )  # fmt: skip
            await eventually(lambda: n.stores.catalogue.library("oba"))
            await eventually(lambda: n.stores.catalogue.offered_by("boekstart"))
            await n.create(
                campaign(
                    proposition="boekstart",
                    channels=["email"],
                    messages={
                        "email": {
                            "nl": {
                                "subject": "{{ proposition.name }}\nbij {{ library.name }}",
                                "body": "Beste {{ recipient.name }},\n\nKom naar {{ branch.name or library.name }}"
                                " ({{ library.opening_hours }}).\nMeer: {{ links.proposition }}",
                            }
                        }
                    },
                )
            )
            m = member()
            contacts.add(m, "email", "sanne@example.nl", name="Sanne de Vries")
            friction = await n.friction(m)

            decided = await n.decided_for([m])
            assert [d.type for d in decided[m]] == ["sent"]
            [(sender, recipients)] = smtp.envelopes
            assert (sender, recipients) == ("nieuws@bibliotheek.nl", ["sanne@example.nl"])
            [mail] = smtp.received
            assert mail["Subject"] == "BoekStart in de OBA bij OBA Amsterdam"
            assert mail["From"] == "OBA Amsterdam <nieuws@bibliotheek.nl>"
            assert mail["Message-ID"] == f"<{decided[m][0].data['message_id']}@klantreis>"
            body, _, footer = text_of(mail).partition("\n-- \n")
            assert footer.startswith(f"Je voorkeuren: {n.settings.public_url}/preferences/")
            assert body == (
                "Beste Sanne de Vries,\n\nKom naar OBA Amsterdam (ma-zo 08.00-22.00).\nMeer: https://www.oba.nl/boekstart\n"
            )
            assert decided[m][0].data["trigger_event_id"] == friction.id
            assert "sanne@example.nl" not in await n.everything()


async def test_a_failing_webhook_is_retried_with_backoff_then_the_delivery_is_dead_lettered_with_its_reason(
    settings: Settings, admin_key: str
) -> None:
    contacts = FakeContacts()
    async with serving(Webhook(failures=100, status=503)) as webhook:
        overrides = {"notifications_push_webhook_url": webhook.url, "notifications_delivery_retries": 3}
        async with notifications(notifications_settings(settings, **overrides), admin_key, contacts=contacts) as n:
            campaign_id = await n.create(PUSH)
            m = member()
            contacts.add(m, "push", "device-ref-1")
            await n.friction(m)

            [failed] = (await n.decided_for([m]))[m]
            assert failed.type == "failed"
            assert (failed.data["attempts"], failed.data["error"]) == (4, "webhook answered 503")
            assert len(webhook.calls) == 4  # the first attempt and three retries
            assert set(webhook.keys) == {failed.data["message_id"]}  # one Idempotency-Key for all of them

            dlq = n.settings.topic("notifications.deliveries.v1.dlq")
            [dead] = await read_topic(n.settings.kafka_bootstrap, dlq, until=lambda rs: len(rs) >= 1)
            assert dead.key == m.encode()
            assert header(dead, "dlq_reason") == "retries_exhausted"
            assert header(dead, "dlq_error") == "webhook answered 503"
            letter = json.loads(dead.value)
            assert (letter["message_id"], letter["campaign_id"], letter["medium"]) == (
                failed.data["message_id"],
                campaign_id,
                "push",
            )
            assert "device-ref-1" not in dead.value.decode()
            results = await n.results(campaign_id)
            assert (results["sent"], results["failed"], results["waiting"]) == (0, 1, 0)


async def test_a_webhook_failing_twice_is_retried_until_the_message_is_sent(settings: Settings, admin_key: str) -> None:
    contacts = FakeContacts()
    async with serving(Webhook(failures=2, status=500)) as webhook:
        overrides = {"notifications_push_webhook_url": webhook.url}
        async with notifications(notifications_settings(settings, **overrides), admin_key, contacts=contacts) as n:
            await n.create(PUSH)
            m = member()
            contacts.add(m, "push", "device-ref-2")
            await n.friction(m)

            [sent] = (await n.decided_for([m]))[m]
            assert sent.type == "sent"
            assert len(webhook.calls) == 3
            assert webhook.calls[-1]["to"] == "device-ref-2"
            assert webhook.calls[-1]["title"] == "de Bibliotheek"  # the library is not in the catalogue


async def test_a_webhook_refusing_the_message_is_dead_lettered_without_retrying(
    settings: Settings, admin_key: str
) -> None:
    contacts = FakeContacts()
    async with serving(Webhook(failures=100, status=400)) as webhook:
        overrides = {"notifications_push_webhook_url": webhook.url}
        async with notifications(notifications_settings(settings, **overrides), admin_key, contacts=contacts) as n:
            await n.create(PUSH)
            m = member()
            contacts.add(m, "push", "device-ref-3")
            await n.friction(m)

            [failed] = (await n.decided_for([m]))[m]
            assert (failed.type, failed.data["attempts"]) == ("failed", 1)
            assert len(webhook.calls) == 1
            dlq = n.settings.topic("notifications.deliveries.v1.dlq")
            [dead] = await read_topic(n.settings.kafka_bootstrap, dlq, until=lambda rs: len(rs) >= 1)
            assert header(dead, "dlq_reason") == "rejected"


async def test_without_an_address_for_the_first_channel_the_next_one_the_member_agreed_to_is_used(
    settings: Settings, admin_key: str
) -> None:
    contacts = FakeContacts()  # knows no phone number for the member
    async with notifications(notifications_settings(settings), admin_key, contacts=contacts) as n:
        await n.create(
            campaign(
                channels=["sms", "in_app"],
                messages={
                    "sms": {"nl": {"body": "Je pas wacht."}},
                    "in_app": {"nl": {"title": "Pas", "body": "Wacht."}},
                },
            )
        )
        m = member()
        await n.friction(m)

        [sent] = (await n.decided_for([m]))[m]
        assert (sent.type, sent.data["medium"]) == ("sent", "in_app")
        assert contacts.asked == [(m, "sms")]


async def test_the_inbox_marks_messages_read_and_unread_for_the_apps(
    settings: Settings, admin_key: str, make_key: MakeKey
) -> None:
    async with notifications(notifications_settings(settings), admin_key) as n:
        await n.create(campaign())
        m = member()
        await n.friction(m)
        await n.decided_for([m])
        [message] = await n.inbox(m)
        assert (message["read"], message["library"], message["body"]) == (False, "oba", "Kom langs bij de Bibliotheek.")

        path = f"/v1/members/{m}/inbox/{message['message_id']}"
        marked = await n.client.put(path, json={"read": True}, headers={"Idempotency-Key": "read-1"})
        assert marked.status_code == 200, marked.text
        inbox = (await n.client.get(f"/v1/members/{m}/inbox")).json()
        assert (inbox["unread"], inbox["messages"][0]["read"]) == (0, True)
        assert (await n.client.get(f"/v1/members/{m}/inbox", params={"unread_only": True})).json()["messages"] == []
        again = await n.client.put(path, json={"read": True}, headers={"Idempotency-Key": "read-1"})
        assert again.headers.get("idempotent-replayed") == "true"
        assert (await n.client.put(path, json={"read": False})).json()["read"] is False

        unknown = await n.client.put(f"/v1/members/{m}/inbox/nothing", json={"read": True})
        assert problem(unknown) == (404, "message does not exist")
        haarlem = {"Authorization": f"Bearer {await make_key('member-data', library='haarlem')}"}
        assert problem(await n.client.put(path, json={"read": True}, headers=haarlem)) == (
            403,
            "this key is scoped to library 'haarlem'",
        )
        bad = await n.client.put(path, json={"read": "maybe"})
        assert (bad.status_code, [e["field"] for e in bad.json()["errors"]]) == (422, ["body.read"])
        marketing = {"Authorization": f"Bearer {await make_key('marketing')}"}
        assert problem(await n.client.get(f"/v1/members/{m}/inbox", headers=marketing)) == (
            403,
            "this key lacks the role member-data or service",
        )


async def test_a_broadcast_reaches_its_audience_at_its_time_and_a_minor_s_message_goes_to_the_guardian_s_inbox(
    settings: Settings, admin_key: str, seed_libraries: list[str]
) -> None:
    contacts = FakeContacts()
    async with notifications(notifications_settings(settings), admin_key, contacts=contacts) as n:
        baby, toddler, adult, elsewhere, parent = member(), member(), member(), member(), member()
        for m, age_band, library in [
            (baby, "0-3", "oba"), (toddler, "0-3", "oba"), (adult, "18-64", "oba"), (elsewhere, "0-3", "haarlem"),
            (parent, "18-64", "oba"),
        ]:  # fmt: skip
            await n.member_event("signed_up", m, age_band=age_band, home_library=library, postcode_area="1034")
        await n.member_event("guardian_set", baby, guardian_id=parent)
        contacts.add(baby, "in_app", baby, recipient="guardian")

        async def projected() -> bool:
            return (await n.stores.projections.member(baby)).profile.guardian_id == parent and bool(
                (await n.stores.projections.member(elsewhere)).profile.library
            )

        await eventually(projected)
        campaign_id = await n.create(
            {
                "name": "BoekStart-week",
                "kind": "broadcast",
                "purpose": "service",
                "audience": {"libraries": ["oba"], "age_bands": ["0-3"]},
                "schedule": {"send_at": (n.clock() + timedelta(seconds=1)).isoformat()},
                "channels": ["in_app"],
                "messages": {"in_app": {"nl": {"title": "BoekStart-week", "body": "Voorlezen in {{ library.name }}!"}}},
            }
        )

        decided = await n.decided_for([baby, toddler])
        assert [d.type for d in decided[baby] + decided[toddler]] == ["sent", "sent"]
        assert decided[baby][0].data["recipient"] == "guardian"
        [for_parent] = await n.inbox(parent)
        assert (for_parent["about_member_id"], for_parent["title"]) == (baby, "BoekStart-week")
        assert await n.inbox(baby) == []
        assert len(await n.inbox(toddler)) == 1
        assert await n.inbox(adult) == [] and await n.inbox(elsewhere) == []

        async def done() -> bool:
            return (await n.stores.campaigns.broadcast_progress(campaign_id)).status == "done"

        await eventually(done)
        results = await n.results(campaign_id)
        assert (results["triggered"], results["sent"]) == (2, 2)
