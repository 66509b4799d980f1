"""The member's own links and e-mail parts, without I/O: signed tokens refused when changed or expired, the e-mail
as text and HTML from one rendering with the right footer, and the preference form turned into events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.notifications.links import LinkRefused, member_links, sign, verify
from services.notifications.mail import email_parts
from services.notifications.preferences import Wanted, changes, unsubscribed

NOW = datetime(2026, 3, 10, 11, 0, tzinfo=UTC)
MEMBER = "3f2b8c1e-7d4a-4e9b-a1c2-5d6e7f809a1b"


def test_a_signed_link_names_its_member_until_it_expires() -> None:
    token = sign(MEMBER, NOW + timedelta(days=60), "secret")
    assert verify(token, "secret", NOW) == MEMBER
    with pytest.raises(LinkRefused) as expired:
        verify(token, "secret", NOW + timedelta(days=60))
    assert expired.value.reason == "expired"


@pytest.mark.parametrize(
    "change",
    [
        lambda t: t.replace(MEMBER, "00000000-7d4a-4e9b-a1c2-5d6e7f809a1b"),  # another member
        lambda t: t.rsplit(".", 2)[0] + ".9999999999." + t.rsplit(".", 1)[1],  # a later expiry
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # the signature
        lambda t: "garbage",
    ],
)
def test_a_changed_link_is_refused_as_tampered(change: object) -> None:
    token = sign(MEMBER, NOW + timedelta(days=1), "secret")
    with pytest.raises(LinkRefused) as refused:
        verify(change(token), "secret", NOW)  # type: ignore[operator]
    assert refused.value.reason == "tampered"
    with pytest.raises(LinkRefused):
        verify(token, "another secret", NOW)


def test_marketing_mail_gets_unsubscribe_and_preferences_and_the_html_is_the_same_text_escaped() -> None:
    links = member_links("https://voorkeuren.example.nl/", "tok.1.sig", "en")
    assert links.unsubscribe == "https://voorkeuren.example.nl/preferences/tok.1.sig/unsubscribe?lang=en"
    parts = email_parts(
        "Dear Sam,\n\nSee <b>this</b> at https://oba.nl/x?a=1&b=2\nBye", "News", "en", "marketing", links
    )
    assert parts.text == (
        "Dear Sam,\n\nSee <b>this</b> at https://oba.nl/x?a=1&b=2\nBye\n\n-- \n"
        f"No more messages like this? Unsubscribe: {links.unsubscribe}\nYour preferences: {links.preferences}\n"
    )
    assert '<html lang="en">' in parts.html and "<title>News</title>" in parts.html
    assert "<p>Dear Sam,</p>" in parts.html
    assert 'See &lt;b&gt;this&lt;/b&gt; at <a href="https://oba.nl/x?a=1&amp;b=2">' in parts.html
    assert f'<a href="{links.unsubscribe.replace("&", "&amp;")}">' in parts.html


def test_a_service_mail_links_only_the_preferences_in_dutch_for_plain_dutch() -> None:
    links = member_links("https://v.example.nl", "tok", "nl-plain")
    parts = email_parts("Je pas wacht.", "Je pas", "nl-plain", "service", links)
    assert parts.text == f"Je pas wacht.\n\n-- \nJe voorkeuren: {links.preferences}\n"
    assert "Afmelden" not in parts.html and '<html lang="nl">' in parts.html


def test_the_form_becomes_the_events_of_what_differs() -> None:
    consents = {"email:marketing": False, "sms:service": True}
    wanted = Wanted(frozenset({("email", "marketing"), ("email", "service"), ("push", "service")}), "en")
    events = changes(MEMBER, consents, "nl", wanted, "request-1")
    said = sorted(str(sorted(e.data.items())) for e in events)
    expected: list[dict[str, object]] = [
        {"medium": "email", "purpose": "marketing", "granted": True},
        {"medium": "in_app", "purpose": "service", "granted": False},
        {"medium": "sms", "purpose": "service", "granted": False},
        {"language": "en"},
    ]
    assert said == sorted(str(sorted(d.items())) for d in expected)
    assert all(e.subject == MEMBER for e in events)
    assert [e.id for e in changes(MEMBER, consents, "nl", wanted, "request-1")] == [e.id for e in events]
    assert changes(MEMBER, {}, "nl", Wanted(frozenset({(m, "service") for m in ("email", "sms", "push", "in_app")}),
                                            "nl"), "r") == []  # fmt: skip


def test_one_click_twice_is_one_event_but_a_later_subscription_can_be_withdrawn_again() -> None:
    first = unsubscribed(MEMBER, "tok", "1|1000")
    assert unsubscribed(MEMBER, "tok", "1|1000").id == first.id
    assert unsubscribed(MEMBER, "tok", "1|5000").id != first.id
    assert (first.data["medium"], first.data["purpose"], first.data["granted"]) == ("email", "marketing", False)
