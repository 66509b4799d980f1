"""The simulator's network is the seed's: every library it uses is in the catalogue and serves the postcode area
its members live in (a library code outside the catalogue is refused by identity and the other services)."""

from __future__ import annotations

from services.journey.offline.simulator import LIBRARIES, POSTCODES
from services.propositions.seed import read_seed
from shared.libraries import area_range


def test_every_simulated_library_is_a_seed_library_serving_its_members_area() -> None:
    seeded = {library.code: library for library in read_seed().libraries}
    assert set(LIBRARIES) <= set(seeded)
    for code in LIBRARIES:
        area = int(POSTCODES[code])
        ranges = [area_range(r) for r in seeded[code].postcode_areas]
        assert any(first <= area <= last for first, last in ranges), code
