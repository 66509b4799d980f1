"""The BoekStart welcome of a baby signed up at the consultatiebureau (identity's POST /v1/families) reaches the
guardian, in the guardian's language, with the BoekStart offering of the child's library: real identity and
notifications services, a real broker and Redis, an SMTP sink. A message never shows an empty placeholder: the
preview refuses it, and so does sending, for the one member it would be empty for."""

from __future__ import annotations

import logging
from datetime import date

import pytest

from services.identity.settings import IdentitySettings
from shared.settings import Settings
from tests.integration.conftest import MakeKey
from tests.integration.test_notifications_support import (
    FakeContacts,
    SmtpSink,
    beside_identity,
    campaign,
    member,
    notifications,
    notifications_settings,
    text_of,
)
from tests.support import eventually

pytestmark = pytest.mark.integration

WELCOME = campaign(
    name="Welkom bij BoekStart",
    trigger={"event_types": ["nl.bibliotheek.member.signed_up.v1"]},
    proposition="boekstart",
    audience={"age_bands": ["0-3"]},
    channels=["email"],
    messages={
        "email": {
            "nl": {"subject": "Welkom bij {{ proposition.name }}", "body": "Beste {{ recipient.name }}, welkom."},
            "en": {
                "subject": "Welcome to {{ proposition.name }}",
                "body": "Dear {{ recipient.name }}, your child is welcome at {{ library.name }}.",
            },
        }
    },
)


async def test_the_welcome_of_a_baby_goes_to_the_guardian_in_their_language_with_the_library_s_offering(
    identity_settings: IdentitySettings, admin_key: str, make_key: MakeKey
) -> None:
    baby = date(date.today().year - 1, 2, 1).isoformat()
    async with beside_identity(identity_settings, admin_key, await make_key("service")) as (n, people, smtp):
        await n.catalogue(
            "offering_changed", "oba.boekstart", offering_id="oba.boekstart", library="oba",
            proposition="boekstart", local_name="BoekStart in de OBA", channels=["offline"],
        )  # fmt: skip
        await eventually(lambda: n.stores.catalogue.offered_by("boekstart"))
        await eventually(lambda: n.stores.catalogue.library("oba"))  # the seed's, on the catalogue topic
        await n.create(WELCOME)

        family = await people.post(
            "/v1/families",
            json={
                "guardian": {"name": "Amira Haddad", "email": "amira@example.nl", "birth_date": "1993-07-09",
                             "postcode": "1034 AB", "language": "en"},
                "children": [{"name": "Yara Haddad", "birth_date": baby}],
                "home_library": "oba", "platform": "partner", "source": "consultatiebureau",
                "proposition": "boekstart", "consents": [{"medium": "email", "purpose": "service"}],
            },
        )  # fmt: skip
        assert family.status_code == 202, family.text
        [child] = family.json()["children"]

        decided = await n.decided_for([child])
        [sent] = decided[child]
        assert (sent.type, sent.data["recipient"], sent.data["medium"]) == ("sent", "guardian", "email")
        [(_, recipients)] = smtp.envelopes
        assert recipients == ["amira@example.nl"]
        [mail] = smtp.received
        assert mail["Subject"] == "Welcome to BoekStart in de OBA"
        assert "Dear Amira Haddad, your child is welcome at OBA Openbare Bibliotheek Amsterdam." in (text_of(mail))


async def test_a_preview_that_would_show_an_empty_placeholder_fails_naming_it(
    settings: Settings, admin_key: str, seed_libraries: list[str]
) -> None:
    async with notifications(notifications_settings(settings), admin_key) as n:
        await eventually(lambda: n.stores.catalogue.library("den-haag"))  # the seed library, from the topic
        campaign_id = await n.create(
            campaign(
                channels=["email"],
                messages={
                    "email": {
                        "nl": {
                            "subject": "Welkom",
                            "body": "Tot in {{ branch.name }}, open {{ branch.opening_hours }}.",
                        }
                    }
                },
            ),
            activate=False,
        )
        filled = await n.client.post(
            f"/v1/campaigns/{campaign_id}/preview", json={"library": "den-haag", "branch": "centrale"}
        )
        assert filled.status_code == 200, filled.text
        assert filled.json()["messages"][0]["body"].startswith("Tot in Centrale Bibliotheek, open ma")

        empty = await n.client.post(f"/v1/campaigns/{campaign_id}/preview", json={"library": "den-haag"})

        assert empty.status_code == 422, empty.text
        assert empty.json()["errors"] == [
            {"field": "messages.email.nl.body", "message": "branch.name: no value for den-haag"}
        ]
        assert "empty placeholder" in empty.json()["detail"]


async def test_a_campaign_naming_a_library_not_in_the_catalogue_is_refused_naming_the_field(
    settings: Settings, admin_key: str, seed_libraries: list[str]
) -> None:
    async with notifications(notifications_settings(settings), admin_key) as n:
        own = await n.client.post("/v1/campaigns", json=campaign(library="tilburg"))
        reaching = await n.client.post("/v1/campaigns", json=campaign(audience={"libraries": ["oba", "tilburg"]}))
        known = await n.client.post("/v1/campaigns", json=campaign(audience={"libraries": ["midden-brabant"]}))

        assert (own.status_code, own.json()["errors"]) == (
            422, [{"field": "body.library", "message": "no such library in the catalogue"}]
        )  # fmt: skip
        assert [e["field"] for e in reaching.json()["errors"]] == ["body.audience.libraries.1"]
        assert known.status_code == 201, known.text
        preview = await n.client.post(f"/v1/campaigns/{known.json()['id']}/preview", json={"library": "tilburg"})
        assert (preview.status_code, preview.json()["errors"][0]["field"]) == (422, "body.library")


async def test_sending_refuses_a_message_that_would_show_an_empty_value_for_this_member(
    settings: Settings, admin_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    contacts = FakeContacts()
    with SmtpSink() as smtp, caplog.at_level(logging.WARNING, logger="services.notifications.rendering"):
        values = notifications_settings(settings, notifications_smtp_port=smtp.port)
        async with notifications(values, admin_key, contacts=contacts) as n:
            await n.catalogue(
                "library_changed", "library:oba", library="oba", name="OBA Amsterdam", website="https://www.oba.nl",
                branches=[{"code": "oosterdok", "name": "OBA Oosterdok", "opening_hours": "ma-zo 08.00-22.00"}],
            )  # fmt: skip
            await n.catalogue(
                "library_changed", "library:haarlem", library="haarlem", name="Bibliotheek Zuid-Kennemerland",
                website="https://www.bibliotheekzuidkennemerland.nl", branches=[{"code": "centrum", "name": "Centrum"}],
            )  # fmt: skip
            await eventually(lambda: n.stores.catalogue.library("haarlem"))
            campaign_id = await n.create(
                campaign(
                    channels=["email"],
                    messages={
                        "email": {
                            "nl": {"subject": "Je pas wacht",
                                   "body": "Beste {{ recipient.name }}, we zijn open {{ library.opening_hours }}."}
                        }
                    },
                )
            )  # fmt: skip
            filled, nameless, hourless = member(), member(), member()
            contacts.add(filled, "email", "sanne@example.nl", name="Sanne de Vries")
            contacts.add(nameless, "email", "zonder-naam@example.nl", name="")
            contacts.add(hourless, "email", "noor@example.nl", name="Noor Bakker")
            await n.friction(filled)
            await n.friction(nameless)
            await n.friction(hourless, library="haarlem")

            decided = await n.decided_for([filled, nameless, hourless])
            results = await n.results(campaign_id)

    assert [(d.type, d.data.get("reason")) for d in decided[filled]] == [("sent", None)]
    assert [(d.type, d.data.get("reason")) for d in decided[nameless]] == [("suppressed", "empty_placeholder")]
    assert [(d.type, d.data.get("reason")) for d in decided[hourless]] == [("suppressed", "empty_placeholder")]
    assert (results["sent"], results["suppressed"]) == (1, {"empty_placeholder": 2})
    [mail] = smtp.received
    assert "Beste Sanne de Vries, we zijn open ma-zo 08.00-22.00." in text_of(mail)
    logged = [r.getMessage() for r in caplog.records]
    assert any("email.nl.body would show recipient.name empty" in line for line in logged)
    assert any(
        "library haarlem) not sent: email.nl.body would show library.opening_hours empty" in line for line in logged
    )
    assert not any("Noor" in line or "@example.nl" in line for line in logged)  # no member's data
