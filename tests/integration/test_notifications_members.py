"""Members in control, on the real broker and Redis with the real identity service: a marketing e-mail (text and
HTML from one template) carries RFC 8058 one-click unsubscribe; the one-click POST and the preference centre
change consent and language through identity; transactional mail still goes out; signed links refuse when
expired or changed; hard bounces (refused at send time, or reported by the provider) stop later mail."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from services.identity.settings import IdentitySettings
from services.notifications.links import sign
from shared.settings import Settings
from shared.topics import MEMBERS
from tests.integration.conftest import MakeKey
from tests.integration.test_notifications_support import (
    Decided,
    FakeContacts,
    Notifications,
    SmtpSink,
    beside_identity,
    campaign,
    html_of,
    member,
    notifications,
    notifications_settings,
    text_of,
)
from tests.support import eventually, header, problem, read_to_end

pytestmark = pytest.mark.integration

PUBLIC = "https://voorkeuren.example.nl"
NEWS_RULE = "desk-signup-never-online"
CARD_RULE = "online-signup-not-activated"
NEWS = campaign(
    name="Nieuws",
    purpose="marketing",
    renotify_after="PT1M",  # each test's second round is a minute later: a new message, not a duplicate
    trigger={"friction_rules": [NEWS_RULE]},
    channels=["email"],
    messages={"email": {"nl": {"subject": "Nieuws", "body": "Beste {{ recipient.name }},\n\nLees <dit> & meer."}}},
)
CARD = campaign(
    name="Je pas wacht",
    purpose="service",
    renotify_after="PT1M",
    trigger={"friction_rules": [CARD_RULE]},
    channels=["email"],
    messages={"email": {"nl": {"subject": "Je pas", "body": "Activeer je pas bij {{ library.name }}."}}},
)
PERSON = {"name": "Sanne de Vries", "birth_date": "1991-04-12", "postcode": "1034 AB", "home_library": "oba",
          "platform": "website"}  # fmt: skip


@dataclass
class World:
    n: Notifications
    people: httpx.AsyncClient
    smtp: SmtpSink

    async def sign_up(self, email: str) -> str:
        answer = await self.people.post("/v1/members", json={**PERSON, "email": email})
        assert answer.status_code == 202, answer.text
        return str(answer.json()["member_id"])

    async def consent(self, member_id: str, medium: str, purpose: str, granted: bool) -> None:
        answer = await self.people.put(
            f"/v1/members/{member_id}/consents/{medium}/{purpose}", json={"granted": granted}
        )
        assert answer.status_code == 202, answer.text

    async def identity_consents(self, member_id: str) -> dict[str, str]:
        answer = await self.people.get(f"/v1/members/{member_id}")
        return dict(answer.json()["consents"])


@asynccontextmanager
async def world(
    identity_settings: IdentitySettings, admin_key: str, make_key: MakeKey, **overrides: Any
) -> AsyncIterator[World]:
    key = await make_key("service", "ingest")
    async with beside_identity(identity_settings, admin_key, key, notifications_public_url=PUBLIC, **overrides) as (
        n,
        people,
        smtp,
    ):
        yield World(n, people, smtp)


def local(url: str) -> str:
    """The path and query of one of our public links: the test talks to the service in-process."""
    assert url.startswith(PUBLIC + "/preferences/"), url
    return url.removeprefix(PUBLIC)


async def test_a_marketing_mail_unsubscribes_in_one_click_and_the_card_reminder_still_goes_out(
    identity_settings: IdentitySettings, admin_key: str, make_key: MakeKey
) -> None:
    async with world(identity_settings, admin_key, make_key) as w:
        n = w.n
        await n.create(NEWS)
        await n.create(CARD)
        await pause_built_in_reminder(n)
        m = await w.sign_up("sanne@example.nl")
        await w.consent(m, "email", "marketing", True)
        await eventually(lambda: _consented(n, m, "email:marketing", True))

        await n.friction(m, rule=NEWS_RULE)
        assert [d.type for d in (await n.decided_for([m]))[m]] == ["sent"]
        [mail] = w.smtp.received
        assert mail.get_content_type() == "multipart/alternative"
        [unsubscribe] = re.findall(r"^<(https://[^>]+)>$", mail["List-Unsubscribe"])
        assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        text, html = text_of(mail), html_of(mail)
        assert text.startswith("Beste Sanne de Vries,\n\nLees <dit> & meer.\n")
        assert f"Afmelden: {unsubscribe}" in text
        assert "<p>Lees &lt;dit&gt; &amp; meer.</p>" in html  # the same text, escaped, laid out
        assert f'<a href="{unsubscribe}">' in html and '<html lang="nl">' in html

        # The mail provider posts the one-click unsubscribe, twice (a retry): one consent change at identity.
        for _ in range(2):
            clicked = await n.client.post(
                local(unsubscribe), content="List-Unsubscribe=One-Click",
                headers={"Content-Type": "application/x-www-form-urlencoded", "Authorization": ""},
            )  # fmt: skip
            assert clicked.status_code == 200, clicked.text
            assert "Je bent afgemeld" in clicked.text
        await eventually(lambda: _consented(n, m, "email:marketing", False))
        assert (await w.identity_consents(m))["email:marketing"] == "withdrawn"
        withdrawn = [
            r for r in await read_to_end(n.settings.kafka_bootstrap, n.settings.topic(MEMBERS.name))
            if header(r, "ce_subject") == m and (header(r, "ce_type") or "").endswith("consent_changed.v1")
            and b'"granted":false' in (r.value or b"")
        ]  # fmt: skip
        assert len(withdrawn) == 1

        # No more news by e-mail; the card reminder (a service message) still goes out, without List-Unsubscribe.
        n.clock.jump_to(n.clock() + timedelta(minutes=2))
        await n.friction(m, rule=NEWS_RULE)
        await n.friction(m, rule=CARD_RULE)
        decided = await n.decisions(lambda ds: len([d for d in ds if d.member == m]) >= 3)
        outcomes = sorted((d.type, d.data.get("reason")) for d in decided[1:] if d.member == m)
        assert outcomes == [("sent", None), ("suppressed", "no_consent")]
        reminder = w.smtp.received[-1]
        assert reminder["Subject"] == "Je pas" and reminder["List-Unsubscribe"] is None
        assert "Je voorkeuren: https://voorkeuren.example.nl/preferences/" in text_of(reminder)


async def test_the_preference_centre_shows_and_changes_consent_and_language_and_refuses_bad_links(
    identity_settings: IdentitySettings, admin_key: str, make_key: MakeKey
) -> None:
    async with world(identity_settings, admin_key, make_key) as w:
        n = w.n
        m = await w.sign_up("joost@example.nl")
        secret = n.settings.notifications_link_secret.get_secret_value()
        token = sign(m, n.clock() + timedelta(days=1), secret)

        english = await n.client.get(f"/preferences/{token}", params={"lang": "en"}, headers={"Authorization": ""})
        assert english.status_code == 200, english.text
        assert '<html lang="en">' in english.text and "News, tips and offers" in english.text
        for purpose in ("marketing", "service"):  # every control has its label
            for medium in ("email", "sms", "push", "in_app"):
                assert f'id="{purpose}-{medium}"' in english.text and f'for="{purpose}-{medium}"' in english.text
        assert re.search(r'id="marketing-email"[^>]*value="email:marketing"(?! checked)>', english.text)
        assert re.search(r'id="service-email"[^>]*value="email:service" checked>', english.text)
        dutch = await n.client.get(f"/preferences/{token}")
        assert '<html lang="nl">' in dutch.text and "Nieuws, tips en aanbiedingen" in dutch.text

        # Marketing by e-mail on, service SMS off (it was on by default), messages in English.
        form = [("consent", "email:marketing"), ("consent", "email:service"), ("consent", "push:service"),
                ("consent", "in_app:service"), ("language", "en")]  # fmt: skip
        saved = await n.client.post(
            f"/preferences/{token}?lang=en", content=urlencode(form),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )  # fmt: skip
        assert saved.status_code == 200, saved.text
        assert "Your preferences have been saved." in saved.text
        assert re.search(r'id="marketing-email"[^>]*checked>', saved.text)

        async def changed() -> bool:
            record = await n.stores.projections.member(m)
            return record.profile.language == "en" and record.consents.get("sms:service") is False

        await eventually(changed)
        consents = await w.identity_consents(m)
        assert (consents["email:marketing"], consents["sms:service"]) == ("granted", "withdrawn")
        assert (await w.people.get(f"/v1/members/{m}")).json()["language"] == "en"

        expired = sign(m, n.clock() - timedelta(seconds=1), secret)
        tampered = token.replace(m, member())
        for bad, reason in [(expired, "expired"), (tampered, "not right")]:
            for method, path in [("GET", f"/preferences/{bad}"), ("POST", f"/preferences/{bad}/unsubscribe")]:
                refused = await n.client.request(method, path, params={"lang": "en"})
                assert refused.status_code == 403, (method, path)
                assert reason in refused.text
        assert (await w.identity_consents(m))["email:marketing"] == "granted"  # nothing changed

        # The unsubscribe link in the body: a page that asks first (opening it changes nothing), then its button.
        asked = await n.client.get(f"/preferences/{token}/unsubscribe", params={"lang": "nl"})
        assert asked.status_code == 200 and "Ja, meld me af" in asked.text
        [action] = re.findall(r'<form method="post" action="([^"]+)">', asked.text)
        assert (await w.identity_consents(m))["email:marketing"] == "granted"
        confirmed = await n.client.post(action, headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert confirmed.status_code == 200 and "Je bent afgemeld" in confirmed.text
        assert (await w.identity_consents(m))["email:marketing"] == "withdrawn"


async def test_a_hard_bounce_at_send_time_or_from_the_provider_suppresses_later_mail_to_that_address(
    settings: Settings, admin_key: str
) -> None:
    contacts = FakeContacts()
    with BouncingSmtpSink(refuse={"weg@example.nl"}) as smtp:
        overrides = {"notifications_smtp_port": smtp.port, "notifications_bounce_webhook_token": "provider-secret"}
        async with notifications(notifications_settings(settings, **overrides), admin_key, contacts=contacts) as n:
            await n.create(CARD)
            await pause_built_in_reminder(n)
            gone, moved = member(), member()
            contacts.add(gone, "email", "weg@example.nl")
            contacts.add(moved, "email", "verhuisd@example.nl")
            await n.friction(gone, rule=CARD_RULE)
            await n.friction(moved, rule=CARD_RULE)
            first = await n.decided_for([gone, moved])
            assert [(d.type, d.data["error"]) for d in first[gone]] == [("failed", "SMTP 550 recipient refused")]
            [sent] = first[moved]

            # The provider reports later that the second address bounced hard (with its token; without: 401).
            report = {"message_id": sent.data["message_id"], "kind": "hard"}
            unsigned = await n.client.post("/v1/bounces", json=report)
            assert problem(unsigned) == (401, "the provider's bounce token is missing or wrong")
            marked = await n.client.post(
                "/v1/bounces", json=report, headers={"Authorization": "Bearer provider-secret"}
            )
            assert (marked.status_code, marked.json()["marked_undeliverable"]) == (202, True)

            n.clock.jump_to(n.clock() + timedelta(minutes=2))
            await n.friction(gone, rule=CARD_RULE)
            await n.friction(moved, rule=CARD_RULE)
            later = await n.decisions(lambda ds: len(of(ds, gone)) >= 2 and len(of(ds, moved)) >= 2)
            assert of(later, gone)[1] == of(later, moved)[1] == ("suppressed", "undeliverable")
            assert len(smtp.received) == 1  # only the first mail to the second address

            # A new address is deliverable again: the mark is of the address, not of the member.
            contacts.add(moved, "email", "nieuw@example.nl")
            n.clock.jump_to(n.clock() + timedelta(minutes=2))
            await n.friction(moved, rule=CARD_RULE)
            final = await n.decisions(lambda ds: len(of(ds, moved)) >= 3)
            assert of(final, moved)[2] == ("sent", None)
            assert "nieuw@example.nl" not in await n.everything()


class BouncingSmtpSink(SmtpSink):
    """The SMTP sink, refusing the addresses in `refuse` for good (550), as a mail server does for one that does
    not exist."""

    def __init__(self, refuse: set[str]) -> None:
        super().__init__()
        self.refuse = refuse

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"


def of(decided: list[Decided], member_id: str) -> list[tuple[str, str | None]]:
    """A member's decisions in the order made (one member's events share a partition; the topic's do not)."""
    return [(d.type, d.data.get("reason")) for d in decided if d.member == member_id]


async def pause_built_in_reminder(n: Notifications) -> None:
    """The built-in in-app card reminder answers the same friction first: the tests send it by e-mail instead."""
    paused = await n.client.post("/v1/campaigns/activate-your-card/pause")
    assert paused.status_code == 200, paused.text


async def _consented(n: Notifications, member_id: str, pair: str, granted: bool) -> bool:
    return (await n.stores.projections.consents(member_id)).get(pair) is granted
