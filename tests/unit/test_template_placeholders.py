"""A message never shows an empty placeholder: the preview names every placeholder a template writes out that
has no value for the sample's library (issue 16: "de Bibliotheek: ." for a library without a value)."""

from __future__ import annotations

from services.notifications.templates import unfilled

VALUES = {
    "library": {"name": "OBA", "opening_hours": "", "branches": ["OBA Oosterdok"]},
    "branch": {"code": "", "name": "", "opening_hours": ""},
    "recipient": {"name": "Sanne", "is_guardian": False},
}


def test_a_placeholder_written_out_without_a_value_is_named() -> None:
    assert unfilled("Open: {{ library.opening_hours }}. Tot in {{ branch.name }}!", VALUES) == [
        "library.opening_hours",
        "branch.name",
    ]
    assert unfilled("{{ branch.name | upper }} {{ branch.name }}", VALUES) == ["branch.name"]  # each once


def test_a_placeholder_only_tested_or_with_a_fallback_is_fine() -> None:
    guarded = (
        "{% if library.opening_hours %}Open: {{ library.opening_hours }}{% endif %}"
        "{{ branch.name or library.name }} {{ branch.name | default('de balie') }}"
    )
    assert unfilled(guarded, VALUES) == []
    assert unfilled("Beste {{ recipient.name }}, welkom bij {{ library.name }}.", VALUES) == []
