"""The seed catalogue holds together: every offering names a known proposition and branch, areas never overlap."""

from __future__ import annotations

from services.propositions import domain
from services.propositions.seed import read_seed

SEED = read_seed()
NATIONAL = {
    "boekstart",
    "bibliotheek-op-school",
    "digitaalhuis",
    "klik-en-tik",
    "digisterker",
    "informatiepunt-digitale-overheid",
    "ebooks",
    "luisterboeken",
    "passend-lezen",
    "taalcafe",
}


def test_the_seed_has_the_national_propositions_and_every_theme() -> None:
    slugs = {p.slug for p in SEED.propositions}
    assert slugs >= NATIONAL
    assert {p.theme for p in SEED.propositions} == set(domain.THEMES)
    assert len(slugs) == len(SEED.propositions)


def test_the_seed_has_the_big_city_libraries_with_the_areas_they_serve() -> None:
    codes = {library.code for library in SEED.libraries}
    assert {"oba", "rotterdam", "den-haag", "utrecht", "haarlem", "groningen", "eindhoven"} <= codes
    [oba] = [library for library in SEED.libraries if library.code == "oba"]
    assert oba.postcode_areas == ["1000-1109"]


def test_no_postcode_area_is_served_by_two_seed_libraries() -> None:
    seen: list[tuple[str, tuple[int, int]]] = []
    for library in SEED.libraries:
        for text in library.postcode_areas:
            first, last = domain.area_range(text)
            for other, (other_first, other_last) in seen:
                assert last < other_first or first > other_last, f"{library.code} and {other} share {text}"
            seen.append((library.code, (first, last)))


def test_every_seed_offering_names_a_seed_proposition_and_branches_of_its_library() -> None:
    propositions = {p.slug: p for p in SEED.propositions}
    for library in SEED.libraries:
        branches = {b.code for b in library.branches}
        offered = [o.proposition for o in library.offerings]
        assert len(offered) == len(set(offered)), f"{library.code} offers something twice"
        for offering in library.offerings:
            proposition = propositions[offering.proposition]
            assert set(offering.branches) <= branches, f"{library.code}.{offering.proposition}"
            allowed = domain.offered_channels(proposition.channels)
            assert set(offering.channels) <= allowed, f"{library.code}.{offering.proposition}"
            assert offering.branches or offering.channels == ["online"], f"{library.code}.{offering.proposition}"
