"""Active reach 0-18 without I/O: reading a CBS StatLine file, and the report from known figures."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.analytics.population import (
    Population,
    PopulationFileError,
    Reached,
    age_band_of,
    first_contact,
    parse_population,
    reach_rows,
    trend_rows,
)
from services.analytics.population_api import quarter_windows
from shared.libraries import KnownLibrary

SAMPLE = Path(__file__).resolve().parents[2] / "services" / "analytics" / "population_sample.csv"
OBA = KnownLibrary("oba", "OBA", ((1000, 1109),))
HAARLEM = KnownLibrary("haarlem", "Haarlem", ((2000, 2037),))
HEADER = '"Geslacht";"Leeftijd";"Postcode";"Perioden";"Bevolking (aantal)"'


def csv(*rows: str) -> str:
    return "\n".join([HEADER, *rows])


def test_ages_fall_into_the_goal_s_bands_as_cbs_writes_them() -> None:
    assert [age_band_of(f"{age} jaar") for age in (0, 3, 4, 11, 12, 17)] == [
        "0-3",
        "0-3",
        "4-11",
        "4-11",
        "12-17",
        "12-17",
    ]
    assert age_band_of("0 tot 4 jaar") == "0-3"  # CBS: up to, not including, 4
    assert age_band_of("4 tot 12 jaar") == "4-11"
    assert age_band_of("18 jaar") is None  # not a child: left out
    assert age_band_of("0 tot 5 jaar") is False  # spans two bands: cannot be split
    assert age_band_of("baby's") is False


def test_a_cbs_file_gives_children_per_area_and_band_of_its_latest_period() -> None:
    population = parse_population(
        csv(
            '"Totaal mannen en vrouwen";"0 jaar";"1034";"2025";"90"',
            '"Totaal mannen en vrouwen";"0 jaar";"1034";"2026";"100"',
            '"Totaal mannen en vrouwen";"3 jaar";"1034";"2026";"20"',
            '"Mannen";"3 jaar";"1034";"2026";"11"',
            '"Totaal mannen en vrouwen";"4 tot 12 jaar";"1034";"2026";"400"',
            '"Totaal mannen en vrouwen";"18 jaar";"1034";"2026";"70"',
            '"Totaal mannen en vrouwen";"5 jaar";"2011";"2026";"."',
        )
    )
    assert population.children == {("1034", "0-3"): 120, ("1034", "4-11"): 400}
    assert (population.period, population.synthetic) == ("2026", False)


def test_a_wrong_file_is_refused_line_by_line() -> None:
    with pytest.raises(PopulationFileError) as refused:
        parse_population(
            csv(
                '"Totaal mannen en vrouwen";"0 jaar";"10345";"2026";"100"',
                '"Totaal mannen en vrouwen";"0 tot 5 jaar";"1034";"2026";"100"',
                '"Totaal mannen en vrouwen";"1 jaar";"1034";"2026";"veel"',
            )
        )
    assert refused.value.problems == [
        "line 2: postcode area '10345' is not 4 digits",
        "line 3: age '0 tot 5 jaar' is not a year or a group within one band (0 jaar, 4 tot 12 jaar)",
        "line 4: children 'veel' is not a whole number",
    ]
    with pytest.raises(PopulationFileError, match="no column 'Postcode'"):
        parse_population('"Leeftijd";"Perioden";"Bevolking (aantal)"\n"0 jaar";"2026";"1"')


def test_the_shipped_sample_is_marked_synthetic_and_covers_every_seeded_library() -> None:
    population = parse_population(SAMPLE.read_text(encoding="utf-8"))
    assert population.synthetic
    assert len({area for area, _ in population.children}) == 18
    assert all(population.children[(area, band)] > 0 for area, band in population.children)


def test_reach_is_reached_members_in_the_library_s_areas_over_its_children() -> None:
    population = Population(
        {("1034", "0-3"): 200, ("1102", "0-3"): 200, ("2011", "0-3"): 100, ("1034", "4-11"): 50}, "2026"
    )
    reached = Reached()
    reached.add("1034", "0-3", "consultatiebureau", 60)
    reached.add("1102", "0-3", "online", 20)
    reached.add("2011", "0-3", "library", 10)
    reached.add("9999", "0-3", "library", 7)  # lives outside every library's areas: in no library's reach

    rows = {(r["library"], r["age_band"]): r for r in reach_rows(population, reached, [OBA, HAARLEM], {"oba": 0.5}, 5)}

    oba = rows[("oba", "0-3")]
    assert (oba["children"], oba["reached"], oba["share"], oba["target"], oba["gap"]) == (400, 80, 0.2, 0.5, 120)
    assert oba["by_first_contact"]["consultatiebureau"] == 60 and oba["by_first_contact"]["online"] == 20
    assert rows[("haarlem", "0-3")]["share"] == 0.1 and rows[("haarlem", "0-3")]["gap"] == 90  # default target 100%
    assert rows[("oba", "4-11")]["share"] == 0.0 and rows[("oba", "12-17")]["share"] is None  # no children there
    network = rows[("*", "*")]
    assert (network["children"], network["reached"], network["share"]) == (550, 90, round(90 / 550, 4))
    assert network["target"] == 0.75  # the libraries' targets, as one figure


def test_a_small_number_of_reached_children_is_suppressed() -> None:
    population = Population({("1034", "0-3"): 100}, "2026")
    reached = Reached()
    reached.add("1034", "0-3", "school", 3)
    [row] = [
        r for r in reach_rows(population, reached, [OBA], {}, 5) if r["age_band"] == "0-3" and r["library"] == "oba"
    ]
    assert (row["reached"], row["share"], row["gap"], row["suppressed"]) == (None, None, None, True)
    assert row["by_first_contact"]["school"] is None and row["by_first_contact"]["online"] == 0


def test_first_contact_is_the_partner_else_where_the_member_signed_up() -> None:
    assert first_contact("consultatiebureau", "offline") == "consultatiebureau"
    assert first_contact("kinderopvang", "online") == "kinderopvang"
    assert first_contact(None, "online") == "online"
    assert first_contact("open dag", "offline") == "library"


def test_the_trend_has_one_point_per_quarter_for_each_library_and_the_network() -> None:
    clock = int(datetime(2026, 12, 6, 12, tzinfo=UTC).timestamp() * 1000)
    windows = quarter_windows(clock, 12, quarters=3)
    assert [label for label, _, _ in windows] == ["2026-Q2", "2026-Q3", "2026-Q4"]
    assert windows[-1][2] == clock
    assert datetime.fromtimestamp(windows[0][2] / 1000, UTC).isoformat() == "2026-06-30T21:59:59.999000+00:00"
    population = Population({("1034", "0-3"): 100}, "2026")
    by_quarter = {label: Reached() for label, _, _ in windows}
    by_quarter["2026-Q4"].add("1034", "0-3", "all", 25)
    rows = trend_rows(population, by_quarter, [OBA], 5)
    assert [(r["quarter"], r["library"], r["share"]) for r in rows if r["library"] == "*"] == [
        ("2026-Q2", "*", 0.0),
        ("2026-Q3", "*", 0.0),
        ("2026-Q4", "*", 0.25),
    ]
