"""What members read from notifications outside the messages themselves (the e-mail footer, the preference
centre), in Dutch and English: one place for both, so the footer and the page it links to say the same."""

from __future__ import annotations

from typing import Literal

MemberLanguage = Literal["nl", "en"]

WORDS: dict[MemberLanguage, dict[str, str]] = {
    "nl": {
        "footer.unsubscribe": "Geen berichten als dit meer? Afmelden",
        "footer.preferences": "Je voorkeuren",
        "title": "Je voorkeuren",
        "network": "de Bibliotheek",
        "intro": "Kies welke berichten je van de bibliotheek krijgt, en hoe.",
        "purpose.marketing": "Nieuws, tips en aanbiedingen",
        "purpose.service": "Berichten over je lidmaatschap (zoals je pas activeren)",
        "medium.email": "E-mail",
        "medium.sms": "Sms",
        "medium.push": "Pushbericht in de app",
        "medium.in_app": "Berichtenbox in de app",
        "language": "Taal van je berichten",
        "language.nl": "Nederlands",
        "language.en": "English",
        "save": "Opslaan",
        "saved": "Je voorkeuren zijn opgeslagen.",
        "other_language": "English",
        "unsubscribe.title": "Afmelden",
        "unsubscribe.ask": "Wil je geen nieuws, tips en aanbiedingen per e-mail meer krijgen?",
        "unsubscribe.button": "Ja, meld me af",
        "unsubscribe.done": "Je bent afgemeld: je krijgt geen nieuws, tips en aanbiedingen per e-mail meer.",
        "to_preferences": "Al je voorkeuren",
        "refused.expired": "Deze link is verlopen. Gebruik de link in een recenter bericht.",
        "refused.tampered": "Deze link klopt niet. Gebruik de link uit je bericht zoals hij is.",
        "refused.unknown": "We kennen je niet (meer): er is niets te veranderen.",
        "refused.unavailable": "Dat lukte nu niet. Probeer het over een paar minuten opnieuw.",
        "error.title": "Dat gaat niet",
    },
    "en": {
        "footer.unsubscribe": "No more messages like this? Unsubscribe",
        "footer.preferences": "Your preferences",
        "title": "Your preferences",
        "network": "the Library",
        "intro": "Choose which messages you get from the library, and how.",
        "purpose.marketing": "News, tips and offers",
        "purpose.service": "Messages about your membership (such as activating your card)",
        "medium.email": "E-mail",
        "medium.sms": "Text message",
        "medium.push": "Push notification in the app",
        "medium.in_app": "Inbox in the app",
        "language": "Language of your messages",
        "language.nl": "Nederlands",
        "language.en": "English",
        "save": "Save",
        "saved": "Your preferences have been saved.",
        "other_language": "Nederlands",
        "unsubscribe.title": "Unsubscribe",
        "unsubscribe.ask": "Do you no longer want news, tips and offers by e-mail?",
        "unsubscribe.button": "Yes, unsubscribe me",
        "unsubscribe.done": "You have been unsubscribed: you will no longer get news, tips and offers by e-mail.",
        "to_preferences": "All your preferences",
        "refused.expired": "This link has expired. Use the link in a more recent message.",
        "refused.tampered": "This link is not right. Use the link from your message as it is.",
        "refused.unknown": "We do not know you (any more): there is nothing to change.",
        "refused.unavailable": "That did not work just now. Please try again in a few minutes.",
        "error.title": "That did not work",
    },
}


def member_language(value: str | None) -> MemberLanguage:
    return "en" if value == "en" else "nl"
