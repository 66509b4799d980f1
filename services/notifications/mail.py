"""An e-mail's two parts from the campaign's one template: the rendered text as the plain-text part, and the same
text laid out as HTML (escaped, paragraphs, links made clickable), each with the footer that lets the recipient
manage what they get: an unsubscribe link under marketing, and the preference centre under every message.

Pure: no I/O. The HTML layout is `templates/email.html` (Jinja, autoescaped).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape

from services.notifications.links import MemberLinks
from services.notifications.member_words import WORDS, member_language
from shared.events.types import Purpose

_URL = re.compile(r"https?://[^\s<>\"]+")


@dataclass(frozen=True)
class EmailParts:
    text: str
    html: str


@lru_cache(maxsize=1)
def _layout() -> object:
    env = Environment(
        loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=select_autoescape(["html"])
    )
    return env.get_template("email.html")


def _linked(line: str) -> Markup:
    """One line of text, escaped, with its URLs as links."""
    out, last = [], 0
    for found in _URL.finditer(line):
        out.append(escape(line[last : found.start()]))
        out.append(Markup('<a href="{0}">{0}</a>').format(found.group()))  # format escapes the URL
        last = found.end()
    out.append(escape(line[last:]))
    return Markup("").join(out)


def paragraphs(text: str) -> list[list[Markup]]:
    """The text's paragraphs (split on blank lines), each as its lines."""
    return [[_linked(line) for line in block.split("\n")] for block in re.split(r"\n\s*\n", text.strip()) if block]


def email_parts(body: str, subject: str, locale: str, purpose: Purpose, links: MemberLinks | None) -> EmailParts:
    lang = member_language(locale)
    words = WORDS[lang]
    footer: list[tuple[str, str]] = []
    if links is not None:
        if purpose == "marketing":
            footer.append((words["footer.unsubscribe"], links.unsubscribe))
        footer.append((words["footer.preferences"], links.preferences))
    text = body.rstrip() + "\n"
    if footer:
        text += "\n-- \n" + "".join(f"{label}: {url}\n" for label, url in footer)
    html = _layout().render(  # type: ignore[attr-defined]
        lang=lang, subject=subject, paragraphs=paragraphs(body), footer=footer
    )
    return EmailParts(text=text, html=str(html))
