"""The web pages' pure parts: words and numbers per language, SVG charts, safe redirects, and the forms of the
catalogue, the dashboard and the campaign editor (read, checked, and mapped back to their fields)."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import get_args

import pytest

from services.analytics.pages import FUNNEL_STEPS, SECTIONS, dashboard_filters, duration
from services.journey.rules import load_rules
from services.notifications.campaign_form import definition_data, field_of, form_values, read_definition
from services.notifications.campaigns import Locale, Status
from services.propositions.pages import CHANNELS, TARGET_GROUPS, THEMES, catalogue_filters
from shared.events.types import AGE_BANDS, Medium
from shared.web.charts import Bar, Series, bar_chart, funnel_chart, line_chart
from shared.web.i18n import LANGUAGES, NO_NUMBER, Translator, catalogue, language_of
from shared.web.site import Form, safe_next

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = [*ROOT.glob("shared/web/templates/*.html"), *ROOT.glob("services/*/templates/*.html")]
RULES = [rule.id for rule in load_rules(None).rules]


# ------------------------------------------------------------------------------------------------- words


def test_both_languages_have_the_same_words() -> None:
    assert set(catalogue("nl")) == set(catalogue("en"))


def test_every_word_a_template_asks_for_is_in_the_catalogue() -> None:
    asked = {key for path in TEMPLATES for key in re.findall(r"\bt\('([a-z_.]+[a-z_])'", path.read_text())}
    assert asked, "the templates ask for words"
    assert sorted(asked - set(catalogue("nl"))) == []


@pytest.mark.parametrize(
    ("prefix", "values"),
    [
        ("themes.", THEMES),
        ("target_groups.", TARGET_GROUPS),
        ("channels.", CHANNELS),
        ("age_bands.", AGE_BANDS),
        ("steps.", FUNNEL_STEPS),
        ("rules.", RULES),
        ("statuses.", get_args(Status)),
        ("media.", get_args(Medium)),
        ("locales.", get_args(Locale)),
    ],
)
def test_every_choice_a_page_offers_has_a_word_in_each_language(prefix: str, values: tuple[str, ...]) -> None:
    for language in LANGUAGES:
        words = catalogue(language)
        assert [v for v in values if prefix + v not in words] == [], language


def test_numbers_read_the_dutch_or_the_english_way() -> None:
    nl, en = Translator("nl"), Translator("en")
    assert (nl.number(1234567.891, 1), en.number(1234567.891, 1)) == ("1.234.567,9", "1,234,567.9")
    assert (nl.percent(0.7143), en.percent(0.7143)) == ("71,4%", "71.4%")
    assert nl.number(None) == nl.percent(None) == NO_NUMBER


def test_times_are_shown_in_amsterdam() -> None:
    assert Translator("nl").moment("2025-03-14T09:02:11+00:00") == "14-03-2025 10:02"
    assert Translator("en").moment("2025-07-14T09:02:11+00:00") == "2025-07-14 11:02"


def test_an_unknown_language_is_dutch() -> None:
    assert (language_of("en"), language_of("fr"), language_of(None)) == ("en", "nl", "nl")


def test_a_median_time_to_resolve_reads_in_the_unit_that_fits() -> None:
    nl = Translator("nl")
    assert [duration(nl, s) for s in (518_400, 5_400, 900, None)] == ["6,0 dagen", "1,5 uur", "15 min", NO_NUMBER]


# ------------------------------------------------------------------------------------------------ charts


def test_a_bar_chart_writes_every_number_and_escapes_labels() -> None:
    svg = str(
        bar_chart(
            [Bar("<script>oba</script>", 30), Bar("haarlem", 10), Bar("utrecht", None)],
            chart_id="c",
            title="Per 1.000 leden",
            shown=lambda v: NO_NUMBER if v is None else f"{v:g}",
            empty="leeg",
        )
    )
    assert "<script>" not in svg and "&lt;script&gt;oba&lt;/script&gt;" in svg
    widths = [float(w) for w in re.findall(r'<rect class="chart-bar"[^>]* width="([\d.]+)"', svg)]
    assert len(widths) == 2 and widths[0] == pytest.approx(3 * widths[1])  # the suppressed one draws no bar
    assert [">30<", ">10<", f">{NO_NUMBER}<"] == [
        m for m in re.findall(r">[^<>]+<", svg) if m in (">30<", ">10<", f">{NO_NUMBER}<")
    ]
    assert 'role="img"' in svg and "<title" in svg and "haarlem: 10" in svg  # the description reads the numbers


def test_an_empty_chart_says_so() -> None:
    assert "geen gegevens" in str(bar_chart([], chart_id="c", title="t", shown=str, empty="geen gegevens"))


def test_line_series_differ_by_dash_and_marker_and_a_suppressed_point_breaks_the_line() -> None:
    svg = str(
        line_chart(
            [Series("a", [1, 2, 3]), Series("b", [3, None, 1, 2])],
            ["w1", "w2", "w3", "w4"],
            chart_id="c",
            title="t",
            shown=lambda v: "-" if v is None else f"{v:g}",
            empty="",
        )
    )
    first, second = svg.split('class="chart-series series-1"')
    assert "<circle" in first and "<rect" in second  # different markers
    assert 'stroke-dasharray="6 3"' in second and "stroke-dasharray" not in first.split("<g")[1]
    assert second.count("<polyline") == 1  # (3) breaks, then (1, 2) is one segment; a lone point has no line


def test_a_funnel_centres_its_steps_and_notes_the_conversion() -> None:
    svg = str(
        funnel_chart(
            [Bar("Aangemeld", 100), Bar("Pas geactiveerd", 50, "(50% door)")],
            chart_id="f",
            title="t",
            shown=lambda v: f"{v:g}",
            empty="",
        )
    )
    xs = [float(x) for x in re.findall(r'<rect class="chart-bar funnel-step" x="([\d.]+)"', svg)]
    assert xs[1] > xs[0]  # the narrower step is centred under the wider one
    assert "50 (50% door)" in svg


# ------------------------------------------------------------------------------------------ site pieces


@pytest.mark.parametrize(
    ("asked", "expected"),
    [
        ("/pages/dashboard?period=day", "/pages/dashboard?period=day"),
        ("https://evil.example/pages/x", "/home"),
        ("//evil.example/pages", "/home"),
        ("/v1/campaigns", "/home"),
        ("/pages\\@evil", "/home"),
        (None, "/home"),
    ],
)
def test_after_sign_in_only_a_page_of_this_host_is_a_destination(asked: str | None, expected: str) -> None:
    assert safe_next(asked, "/home") == expected


def test_a_posted_form_is_trimmed_and_keeps_repeated_fields() -> None:
    form = Form([("name", "  Welkom "), ("band", "0-3"), ("band", ""), ("band", "4-11")])
    assert (form.get("name"), form.all("band"), form.get("missing", "x")) == ("Welkom", ["0-3", "4-11"], "x")


# ------------------------------------------------------------------------------------------- catalogue


def test_the_catalogue_reads_a_postcode_and_names_a_wrong_one_at_its_field() -> None:
    assert catalogue_filters("1034 AB", "", "", "", "").postcode_area == "1034"
    wrong = catalogue_filters("12", "boekstart", "no-theme", "", "")
    assert wrong.errors == {"postcode_area": "catalogue.errors.postcode_area", "theme": "catalogue.errors.choice"}
    assert (wrong.postcode_area, wrong.proposition, wrong.theme) == ("", "boekstart", "")


# ------------------------------------------------------------------------------------------- dashboard


def test_a_library_key_always_gets_its_own_library_on_the_dashboard() -> None:
    filters = dashboard_filters({"library": "haarlem"}, RULES, scope="oba")
    assert filters.library == "oba"
    queries = {section.name: section.query(filters) for section in SECTIONS}
    assert all(query["library"] == "oba" for query in queries.values())


def test_the_dashboard_asks_each_report_what_its_section_shows() -> None:
    filters = dashboard_filters(
        {"from": "2025-03-01", "to": "2025-03-31", "period": "month", "rule": RULES[0], "age_band": "0-3",
         "step1": "member.signed_up.v1", "step2": "usage.loan_borrowed.v1", "split": "platform", "within": "14"},
        RULES,
        scope=None,
    )  # fmt: skip
    queries = {section.name: section.query(filters) for section in SECTIONS}
    assert queries["over-time"] == {"by": "rule", "period": "month", "from": "2025-03-01", "to": "2025-03-31",
                                    "age_band": "0-3", "rule": RULES[0]}  # fmt: skip
    assert queries["libraries"]["by"] == "library"
    funnel = {"steps": "member.signed_up.v1,usage.loan_borrowed.v1", "within": "P14D", "by": "platform"}
    assert queries["funnel"] == {**funnel, "from": "2025-03-01", "to": "2025-03-31", "age_band": "0-3"}
    assert queries["reach"] == {"age_bands": "0-3", "months": "12"}


def test_wrong_dashboard_filters_are_named_and_fall_back_to_defaults() -> None:
    filters = dashboard_filters(
        {"from": "2025-02-30", "period": "year", "rule": "nope", "step1": "member.signed_up.v1", "within": "0"},
        RULES,
        scope=None,
    )
    assert filters.errors == {
        "from": "dashboard.errors.date",
        "period": "dashboard.errors.choice",
        "rule": "dashboard.errors.choice",
        "step2": "dashboard.errors.two_steps",
        "within": "dashboard.errors.within",
    }
    assert (filters.start, filters.period, filters.rule, filters.within_days) == ("", "auto", "", 30)


# -------------------------------------------------------------------------------------- campaign editor


def editor_form(**fields: str) -> Form:
    values = {
        "name": "Welkom",
        "kind": "triggered",
        "purpose": "service",
        "trigger.friction_rules": "desk-signup-never-online",
        "trigger.filters": "library = oba, haarlem\ndata.age_band = 0-3",
        "channels.0": "email",
        "channels.1": "in_app",
        "messages.email.nl.subject": "Welkom bij {{ library.name }}",
        "messages.email.nl.body": "Beste {{ recipient.name }}",
        "messages.in_app.nl.title": "Welkom",
        "messages.in_app.nl.body": "Kom langs.",
        "schedule.starts_at": "2026-03-29T01:30",
        "holdout_percent": "12,5",
        "renotify_after_days": "30",
        **fields,
    }
    pairs = [(name, value) for name, value in values.items()]
    return Form([*pairs, ("audience.age_bands", "0-3"), ("audience.age_bands", "4-11")])


def test_the_editor_form_becomes_the_definition_the_api_takes_and_back() -> None:
    definition, errors = read_definition(editor_form())
    assert errors == {} and definition is not None
    assert definition.trigger is not None and definition.trigger.filters == {
        "library": ["oba", "haarlem"],
        "data.age_band": ["0-3"],
    }
    assert (definition.channels, definition.audience.age_bands) == (["email", "in_app"], ["0-3", "4-11"])
    assert definition.schedule.starts_at is not None and definition.schedule.starts_at.isoformat() == (
        "2026-03-29T01:30:00+01:00"  # read in Amsterdam, before that night's change to summer time
    )
    assert (definition.holdout_percent, definition.renotify_after) == (12.5, timedelta(days=30))
    again = form_values(definition)
    assert again["trigger.filters"] == "library = oba, haarlem\ndata.age_band = 0-3"
    assert (again["channels.1"], again["messages.email.nl.subject"]) == ("in_app", "Welkom bij {{ library.name }}")


def test_a_template_error_is_named_at_its_field_like_the_api_does() -> None:
    definition, errors = read_definition(editor_form(**{"messages.in_app.nl.body": "{{ libary.name }}"}))
    assert definition is None
    assert list(errors) == ["messages.in_app.nl.body"]
    assert "unknown placeholder 'libary'" in errors["messages.in_app.nl.body"]


def test_a_missing_message_and_a_wrong_channel_are_named_at_their_groups() -> None:
    _, errors = read_definition(editor_form(**{"messages.email.nl.subject": "", "messages.email.nl.body": ""}))
    assert "messages.email" in errors
    _, errors = read_definition(editor_form(**{"channels.1": "fax"}))
    assert "channels" in errors


def test_a_filter_line_without_equals_is_named_before_anything_else() -> None:
    _, errors = definition_data(editor_form(**{"trigger.filters": "library oba"}))
    assert errors == {"trigger.filters": "line 1: write field = value, value"}


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("body.messages.email.nl.body", "messages.email.nl.body"),
        ("trigger.event_types.0", "trigger.event_types"),
        ("messages.sms", "messages.sms"),
        ("schedule.ends_at", "schedule.ends_at"),
        ("something.else", ""),
    ],
)
def test_an_error_path_finds_its_form_field(path: str, field: str) -> None:
    from services.notifications.campaign_form import editor_fields

    assert field_of(path, editor_fields()) == field
