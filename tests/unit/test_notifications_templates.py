"""Message templates, without I/O: what a template may use per medium, errors refused on save, rendering
with catalogue values and their fallbacks."""

from __future__ import annotations

from typing import Any

import pytest

from services.notifications.campaigns import CampaignDefinition
from services.notifications.templates import (
    LibraryInfo,
    PropositionInfo,
    Sample,
    check,
    check_one,
    context,
    one_line,
    render,
)

OBA = LibraryInfo(
    "oba",
    "OBA",
    "https://www.oba.nl",
    branches={"oosterdok": "OBA Oosterdok", "banne": "OBA Banne", "osdorp": "OBA Osdorp"},
    branch_hours={"oosterdok": "ma-zo 10-22", "osdorp": "di-za 10-17"},
)


def definition(body: str, medium: str = "email", **overrides: Any) -> CampaignDefinition:
    message: dict[str, str] = {"body": body}
    if medium == "email":
        message["subject"] = "Onderwerp"
    elif medium in ("push", "in_app"):
        message["title"] = "Titel"
    return CampaignDefinition.model_validate(
        {
            "name": "test",
            "trigger": {"friction_rules": ["reservation-not-collected"]},
            "channels": [medium],
            "messages": {medium: {"nl": message}},
            **overrides,
        }
    )


@pytest.mark.parametrize(
    ("body", "medium", "error"),
    [
        ("{{ library.name", "email", "template syntax error"),
        ("{% if %}", "email", "template syntax error"),
        ("{{ bibliotheek.naam }}", "email", "unknown placeholder 'bibliotheek'"),
        ("{{ library.naam }}", "email", "unknown placeholder 'library.naam'"),
        ("{{ recipient.name }}", "in_app", "unknown placeholder 'recipient'"),
        ("{{ proposition.name }}", "email", "unknown placeholder 'proposition'"),
        ("{{ links.proposition }}", "email", "unknown placeholder 'links.proposition'"),
        ("{{ library.__class__ }}", "email", "unknown placeholder 'library.__class__'"),
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "email", "cannot be rendered"),
        ("{{ 'x' * 1000000000 }}", "sms", "repetition too large"),
        ("{{ library.name | frobnicate }}", "email", "No filter named 'frobnicate'"),
    ],
)
def test_a_template_that_cannot_be_sent_is_refused_with_the_reason(body: str, medium: str, error: str) -> None:
    [problem] = check(definition(body, medium))
    assert problem.field == f"messages.{medium}.nl.body"
    assert error in problem.message


def test_a_template_using_only_known_placeholders_passes() -> None:
    body = (
        "Beste {{ recipient.name }}, {% for b in library.branches %}{{ b }} {% endfor %}"
        "{{ branch.name or library.name }} {{ proposition.name }} {{ links.proposition }} {{ trigger.rule }}"
    )
    assert check(definition(body, proposition="boekstart")) == []
    assert check_one("{{ library['name'] | upper }}", {"library": {"name": "x"}}) is None


def test_rendering_fills_placeholders_from_the_catalogue() -> None:
    d = definition("{{ library.name }} ({{ branch.name }}), {{ library.opening_hours }}: {{ proposition.name }} "
                   "{{ links.proposition }}", proposition="boekstart")  # fmt: skip
    sample = Sample(
        library=OBA, branch="oosterdok", proposition=PropositionInfo("boekstart", "BoekStart in de OBA"),
        recipient_name="Sanne",
    )  # fmt: skip
    values = context(d, "email", sample, app_link="https://app.example")
    assert render(d.messages["email"]["nl"].body, values) == (
        "OBA (OBA Oosterdok), ma-zo 10-22: BoekStart in de OBA https://app.example/propositions/boekstart"
    )
    assert values["recipient"] == {"name": "Sanne", "is_guardian": False}
    assert "recipient" not in context(d, "in_app", sample, app_link="https://app.example")


def test_a_branch_shows_its_own_opening_hours_else_those_of_the_main_branch() -> None:
    d = definition("{{ branch.name }}: {{ branch.opening_hours }}")
    for branch, text in [("osdorp", "OBA Osdorp: di-za 10-17"), ("banne", "OBA Banne: ma-zo 10-22")]:
        values = context(d, "email", Sample(library=OBA, branch=branch), app_link="https://app.example")
        assert render(d.messages["email"]["nl"].body, values) == text


def test_a_library_missing_from_the_catalogue_falls_back_to_the_network() -> None:
    d = definition("{{ library.name }} {{ library.website }} [{{ branch.name }}]")
    values = context(d, "email", Sample(library_code="nergens"), app_link="https://app.example")
    assert render(d.messages["email"]["nl"].body, values) == "de Bibliotheek https://www.bibliotheek.nl []"
    assert values["library"]["code"] == "nergens"


def test_subjects_and_titles_are_single_lines() -> None:
    assert one_line("Welkom\r\nBcc: iedereen@example.nl") == "Welkom Bcc: iedereen@example.nl"
