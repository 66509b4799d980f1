"""Active reach 0-18 against the population (the SOOB KPI), without I/O: children per postcode area and age from a
CBS StatLine CSV, and the reach of each library among the children living in its areas.

Reach of a library in an age band = members of that band active in the last 12 months who live in the library's
postcode areas / children of that band living there (CBS). The network's reach adds up the libraries'. Each row
has the library's target (default 100%) and the gap: how many more children to reach to meet it; reached members
are split by first contact (the partner of their sign-up, else the library or online), and a trend gives the reach
at the end of each quarter.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.libraries import KnownLibrary

YOUTH_BANDS: tuple[str, ...] = ("0-3", "4-11", "12-17")
ALL = "*"
# Where a member first met the network: a partner named as the sign-up's source, else the library or online.
PARTNERS: tuple[str, ...] = ("consultatiebureau", "kinderopvang", "school")
FIRST_CONTACTS: tuple[str, ...] = (*PARTNERS, "library", "online")
DEFAULT_TARGET = 1.0

_AGE = re.compile(r"^\s*(\d{1,2})\s*(?:tot\s*(\d{1,2})\s*)?jaar\s*$", re.IGNORECASE)
_AREA = re.compile(r"^[1-9][0-9]{3}$")


class PopulationFileError(ValueError):
    """What is wrong with a population file, by line."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems[:10]))
        self.problems = list(problems)


def band_of_years(first: int, last: int) -> str | None:
    """The youth band holding every age first..last, or None when the ages are 18+ or span two bands."""
    for band in YOUTH_BANDS:
        low, high = (int(v) for v in band.split("-"))
        if low <= first and last <= high:
            return band
    return None


def age_band_of(label: str) -> str | bool | None:
    """`0 jaar` → 0-3, `0 tot 4 jaar` → 0-3 (CBS: up to, not including, 4), `18 jaar` → None (not a child);
    False for a label that is not an age, or a group spanning two bands."""
    match = _AGE.match(label)
    if match is None:
        return False
    first = int(match.group(1))
    last = int(match.group(2)) - 1 if match.group(2) else first
    if last < first:
        return False
    if first >= 18:
        return None
    return band_of_years(first, last) or False


@dataclass(frozen=True)
class Population:
    """Children per (postcode area, band), as of the file's latest period; `synthetic` when the file says so."""

    children: Mapping[tuple[str, str], int]
    period: str
    synthetic: bool = False

    def in_areas(self, library: KnownLibrary, band: str) -> int:
        return sum(n for (area, b), n in self.children.items() if b == band and library.serves(area))


def parse_population(text: str) -> Population:
    """A CBS StatLine CSV (`;`-separated, quoted): columns `Leeftijd`, `Postcode` (4 digits), `Perioden` and a
    count column whose name starts with `Bevolking` or `Aantal`; with a `Geslacht` column only the totals of men
    and women count. Lines starting with `#` are comments (`# synthetic` marks made-up figures). CBS's `.` (no
    figure) counts as none. The latest period of each area and age counts."""
    lines = text.splitlines()
    synthetic = any(line.lstrip().startswith("#") and "synthetic" in line.lower() for line in lines)
    rows = list(csv.reader(io.StringIO("\n".join(x for x in lines if not x.lstrip().startswith("#"))), delimiter=";"))
    if not rows:
        raise PopulationFileError(["the file has no header line"])
    header = [h.strip() for h in rows[0]]
    columns = {name: header.index(name) for name in ("Leeftijd", "Postcode", "Perioden") if name in header}
    counted = next((i for i, h in enumerate(header) if h.startswith(("Bevolking", "Aantal"))), None)
    missing = [name for name in ("Leeftijd", "Postcode", "Perioden") if name not in columns]
    if missing or counted is None:
        wanted = [*missing, *([] if counted is not None else ["Bevolking (aantal)"])]
        raise PopulationFileError([f"line 1: no column {name!r}" for name in wanted])
    sex = header.index("Geslacht") if "Geslacht" in header else None
    latest: dict[tuple[str, str], tuple[str, int]] = {}  # (area, age label) → (period, children)
    problems: list[str] = []
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            problems.append(f"line {number}: {len(row)} fields, the header has {len(header)}")
            continue
        if sex is not None and not row[sex].strip().lower().startswith("totaal"):
            continue
        area, age, period = row[columns["Postcode"]].strip(), row[columns["Leeftijd"]].strip(), row[columns["Perioden"]]
        raw = row[counted].strip()
        if not _AREA.match(area):
            problems.append(f"line {number}: postcode area {area!r} is not 4 digits")
            continue
        if age_band_of(age) is False:
            problems.append(
                f"line {number}: age {age!r} is not a year or a group within one band (0 jaar, 4 tot 12 jaar)"
            )
            continue
        if raw in ("", "."):
            continue
        if not raw.isdigit():
            problems.append(f"line {number}: children {raw!r} is not a whole number")
            continue
        key = (area, age)
        if key not in latest or latest[key][0] <= period.strip():
            latest[key] = (period.strip(), int(raw))
    if problems:
        raise PopulationFileError(problems)
    children: dict[tuple[str, str], int] = {}
    for (area, age), (_, count) in latest.items():
        band = age_band_of(age)
        if isinstance(band, str):
            children[(area, band)] = children.get((area, band), 0) + count
    period = max((p for p, _ in latest.values()), default="")
    return Population(children, period, synthetic)


def first_contact(source: str | None, channel: str | None) -> str:
    """Where a member first met the network: the partner of their sign-up, else online or the library."""
    if source in PARTNERS:
        return str(source)
    return "online" if channel == "online" else "library"


# ------------------------------------------------------------------------------------------------ report


@dataclass
class Reached:
    """Members active in the period, per (postcode area, band, first contact)."""

    counts: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def add(self, area: str, band: str, contact: str, count: int) -> None:
        key = (area, band, contact)
        self.counts[key] = self.counts.get(key, 0) + count


def _share(reached: int, children: int) -> float | None:
    return round(reached / children, 4) if children else None


def _shown(count: int, min_cell: int) -> int | None:
    """A count as published: one below `min_cell` (but above 0) is suppressed (None)."""
    return None if 0 < count < min_cell else count


def _reach(count: int, children: int, min_cell: int) -> tuple[int | None, float | None, bool]:
    """The reached count and share as published, and whether they are suppressed (a share would reveal the count)."""
    shown = _shown(count, min_cell)
    hidden = shown is None
    return shown, None if hidden else _share(count, children), hidden


def reach_rows(
    population: Population,
    reached: Reached,
    libraries: Iterable[KnownLibrary],
    targets: Mapping[str, float],
    min_cell: int,
) -> list[dict[str, Any]]:
    """A row per library and band, per library for 0-17 (`*`), and the network (`*`). A number of reached members
    below `min_cell` (but above 0) is suppressed (None), with `suppressed` true; the share is then left out too."""
    known = sorted(libraries, key=lambda library: library.code)
    cells: dict[tuple[str, str], tuple[int, dict[str, int]]] = {}
    for library in known:
        for band in YOUTH_BANDS:
            children = population.in_areas(library, band)
            by_contact = dict.fromkeys(FIRST_CONTACTS, 0)
            for (area, b, contact), count in reached.counts.items():
                if b == band and library.serves(area):
                    by_contact[contact] = by_contact.get(contact, 0) + count
            cells[(library.code, band)] = (children, by_contact)
    rows = []
    for code in [*(library.code for library in known), ALL]:
        for band in [*YOUTH_BANDS, ALL]:
            parts = [v for (c, b), v in cells.items() if (code == ALL or c == code) and (band == ALL or b == band)]
            children = sum(p[0] for p in parts)
            by_contact = {contact: sum(p[1][contact] for p in parts) for contact in FIRST_CONTACTS}
            count = sum(by_contact.values())
            target = targets.get(code, DEFAULT_TARGET) if code != ALL else network_target(known, targets)
            shown, share, hidden = _reach(count, children, min_cell)
            rows.append(
                {
                    "library": code,
                    "age_band": band,
                    "children": children,
                    "reached": shown,
                    "share": share,
                    "target": target,
                    "gap": None if hidden else max(0, round(target * children) - count),
                    "by_first_contact": {contact: _shown(n, min_cell) for contact, n in by_contact.items()},
                    "suppressed": hidden,
                }
            )
    return rows


def network_target(libraries: Sequence[KnownLibrary], targets: Mapping[str, float]) -> float:
    """The network's target: the libraries' (default 100%), as one figure (their mean)."""
    if not libraries:
        return DEFAULT_TARGET
    return round(sum(targets.get(lib.code, DEFAULT_TARGET) for lib in libraries) / len(libraries), 4)


def trend_rows(
    population: Population,
    reached_by_quarter: Mapping[str, Reached],
    libraries: Iterable[KnownLibrary],
    min_cell: int,
) -> list[dict[str, Any]]:
    """Per quarter (oldest first), library and the network: the reach of 0-17 at the quarter's end."""
    known = sorted(libraries, key=lambda library: library.code)
    rows = []
    for quarter in sorted(reached_by_quarter):
        reached = reached_by_quarter[quarter]
        for code in [*(library.code for library in known), ALL]:
            chosen = [lib for lib in known if code in (ALL, lib.code)]
            children = sum(population.in_areas(lib, band) for lib in chosen for band in YOUTH_BANDS)
            count = sum(n for (area, _, _), n in reached.counts.items() if any(lib.serves(area) for lib in chosen))
            shown, share, hidden = _reach(count, children, min_cell)
            rows.append(
                {"quarter": quarter, "library": code, "children": children, "reached": shown, "share": share,
                 "suppressed": hidden}
            )  # fmt: skip
    return rows
