"""Pure rules of propositions: the catalogue's entities as the latest event of each, what a library may offer, the
postcode areas a library serves, who may still register for a session, and how the catalogue is searched.

No I/O here. The catalogue is held as the latest catalogue event per subject, exactly as the compacted topic holds
it; the entities below are read from those events.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, TypeVar, get_args
from zoneinfo import ZoneInfo

from shared.events import CloudEvent
from shared.events.propositions import (
    ActivityCancelled,
    ActivityScheduled,
    ActivityState,
    LibraryChanged,
    OfferChannel,
    OfferingChanged,
    PropositionRetired,
    PropositionState,
    TargetGroup,
    Theme,
)
from shared.events.registry import typed_data
from shared.events.types import Channel
from shared.libraries import area_range as area_range

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
THEMES: tuple[Theme, ...] = get_args(Theme)
TARGET_GROUPS: tuple[TargetGroup, ...] = get_args(TargetGroup)
# Platforms where a member is online; every other one (desk, kiosk, ils at a branch, school…) is in a building.
ONLINE_PLATFORMS = frozenset({"website", "app", "ebook"})
LIBRARY_SUBJECT_PREFIX = "library:"


def shown(moment: datetime) -> str:
    """Times are stored in UTC and shown in Europe/Amsterdam."""
    return moment.astimezone(AMSTERDAM).isoformat()


def channel_of(platform: str) -> Channel:
    return "online" if platform in ONLINE_PLATFORMS else "offline"


# ---------------------------------------------------------------------------------------------- ids


def offering_id(library: str, proposition: str) -> str:
    """A library offers a proposition at most once: `oba.boekstart`."""
    return f"{library}.{proposition}"


def split_offering_id(offering: str) -> tuple[str, str]:
    library, _, proposition = offering.partition(".")
    return library, proposition


def activity_id(library: str, proposition: str, token: str) -> str:
    """`oba.boekstart.3f9a1c2e7d4b`: two dots, so it never reads as a slug or an offering id."""
    return f"{offering_id(library, proposition)}.{token.replace('-', '')[:12]}"


def library_subject(library: str) -> str:
    """A library's record key, apart from proposition slugs that could be spelled the same (`oba`)."""
    return LIBRARY_SUBJECT_PREFIX + library


# ------------------------------------------------------------------------------------------ entities


@dataclass(frozen=True)
class Proposition:
    data: PropositionState
    retired: bool
    updated_at: datetime

    @property
    def slug(self) -> str:
        return self.data.slug


@dataclass(frozen=True)
class Library:
    data: LibraryChanged
    updated_at: datetime

    @property
    def code(self) -> str:
        return self.data.library

    @property
    def branch_names(self) -> dict[str, str]:
        return {b.code: b.name for b in self.data.branches}

    @property
    def retired(self) -> bool:
        return self.data.retired


@dataclass(frozen=True)
class Offering:
    data: OfferingChanged
    updated_at: datetime

    @property
    def id(self) -> str:
        return self.data.offering_id


@dataclass(frozen=True)
class Activity:
    data: ActivityState
    cancelled: bool
    updated_at: datetime

    @property
    def id(self) -> str:
        return self.data.activity_id


Entity = Proposition | Library | Offering | Activity


def entity(event: CloudEvent) -> Entity:
    """The catalogue entity a catalogue event states (the latest event of a subject is its current state)."""
    data = typed_data(event)
    at = event.utc_time
    if isinstance(data, PropositionState):
        return Proposition(data, isinstance(data, PropositionRetired), at)
    if isinstance(data, LibraryChanged):
        return Library(data, at)
    if isinstance(data, OfferingChanged):
        return Offering(data, at)
    if isinstance(data, ActivityScheduled | ActivityCancelled):
        return Activity(data, isinstance(data, ActivityCancelled), at)
    raise ValueError(f"{event.type} is not a catalogue event")


E = TypeVar("E", Proposition, Library, Offering, Activity)


def entities(events: Iterable[CloudEvent], kind: type[E]) -> list[E]:
    return [e for e in map(entity, events) if isinstance(e, kind)]


# -------------------------------------------------------------------------------------- postcode areas


def _text(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}-{last}"


def normalise_areas(ranges: Iterable[str]) -> list[str]:
    """Sorted, with overlapping and adjacent ranges joined: ["1034", "1000-1033", "1035-1109"] → ["1000-1109"]."""
    merged: list[list[int]] = []
    for first, last in sorted(area_range(r) for r in ranges):
        if merged and first <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], last)
        else:
            merged.append([first, last])
    return [_text(first, last) for first, last in merged]


def serves(library: Library, area: str) -> bool:
    number = int(area)
    return any(first <= number <= last for first, last in map(area_range, library.data.postcode_areas))


def overlaps(ranges: Sequence[str], others: Sequence[str]) -> list[str]:
    """The parts of `ranges` that `others` cover as well, as ranges."""
    mine = [area_range(r) for r in ranges]
    shared = []
    for first, last in (area_range(o) for o in others):
        for own_first, own_last in mine:
            low, high = max(first, own_first), min(last, own_last)
            if low <= high:
                shared.append(_text(low, high))
    return normalise_areas(shared)


def area_conflicts(library: str, ranges: Sequence[str], libraries: Iterable[Library]) -> dict[str, list[str]]:
    """Per other library, the areas it serves already: one library serves an area, so a query has one answer."""
    conflicts = {}
    for other in libraries:
        if other.code == library or other.retired:  # a retired library's areas are free for another
            continue
        shared = overlaps(ranges, other.data.postcode_areas)
        if shared:
            conflicts[other.code] = shared
    return conflicts


def library_serving(libraries: Iterable[Library], area: str) -> Library | None:
    return next((library for library in libraries if not library.retired and serves(library, area)), None)


# --------------------------------------------------------------------------------------------- catalogue


def normalise_target_groups(groups: Iterable[TargetGroup]) -> list[TargetGroup]:
    """Without repeats, in the catalogue's own order (youngest first), so that equal lists compare equal."""
    wanted = set(groups)
    return [g for g in TARGET_GROUPS if g in wanted]


def offered_channels(proposition: OfferChannel) -> set[Channel]:
    return {"online", "offline"} if proposition == "both" else {proposition}


@dataclass(frozen=True)
class Refusal:
    """Why a request cannot be done, naming the field of the request it is about."""

    field: str
    message: str


def offering_refusals(
    proposition: Proposition, library: Library, branches: Sequence[str], channels: Sequence[Channel]
) -> list[Refusal]:
    """What is wrong with a library's offering of a proposition (empty: nothing)."""
    refusals = []
    unknown = [b for b in branches if b not in library.branch_names]
    if unknown:
        refusals.append(Refusal("branches", f"not a branch of {library.code}: {', '.join(unknown)}"))
    allowed = offered_channels(proposition.data.channels)
    beyond = sorted(set(channels) - allowed)
    if beyond:
        refusals.append(
            Refusal("channels", f"{proposition.slug} is offered {proposition.data.channels} only, not {beyond[0]}")
        )
    if "offline" in channels and not branches:
        refusals.append(Refusal("branches", "an offline offering names the branches where it is offered"))
    return refusals


def dedupe(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


# -------------------------------------------------------------------------------------------- activities


def registration_refusal(activity: Activity, now: datetime) -> str | None:
    """Why nobody can register for this session any more, or None."""
    if activity.cancelled:
        return "the activity is cancelled"
    if activity.data.ends_at <= now:
        return "the activity has ended"
    return None


# Doors open before a session starts: attendance is recorded from this long before the start.
DOORS_OPEN = timedelta(hours=1)


def attendance_refusal(activity: Activity, at: datetime, now: datetime) -> str | None:
    """Why attendance at `at` (as reported; never later than `now`) cannot be recorded, or None."""
    if activity.cancelled:
        return "the activity is cancelled"
    if min(at, now) < activity.data.starts_at - DOORS_OPEN:
        return "the session has not started: attendance is recorded from an hour before its start"
    return None


def places_left(activity: Activity, registered: int) -> int:
    return max(0, activity.data.capacity - registered)


# ---------------------------------------------------------------------------------------------- queries


@dataclass(frozen=True)
class PropositionQuery:
    theme: Theme | None = None
    target_group: TargetGroup | None = None
    channel: Channel | None = None
    programme: str | None = None
    status: Literal["active", "retired", "all"] = "active"


def proposition_matches(proposition: Proposition, query: PropositionQuery) -> bool:
    data = proposition.data
    status = "retired" if proposition.retired else "active"
    return (
        (query.status in ("all", status))
        and (query.theme is None or data.theme == query.theme)
        and (query.target_group is None or query.target_group in data.target_groups)
        and (query.channel is None or query.channel in offered_channels(data.channels))
        and (query.programme is None or (data.programme or "").casefold() == query.programme.casefold())
    )


@dataclass(frozen=True)
class OfferingQuery:
    proposition: str | None = None
    library: str | None = None
    theme: Theme | None = None
    target_group: TargetGroup | None = None
    channel: Channel | None = None
    postcode_area: str | None = None
    status: Literal["active", "withdrawn", "all"] = "active"


def offering_available(offering: Offering, proposition: Proposition | None, library: Library | None = None) -> bool:
    """Offered now: the library has not withdrawn it and the network has retired neither the proposition nor the
    library."""
    retired = library is not None and library.retired
    return offering.data.active and proposition is not None and not proposition.retired and not retired


def find_offerings(
    offerings: Iterable[Offering],
    propositions: Mapping[str, Proposition],
    libraries: Iterable[Library],
    query: OfferingQuery,
) -> list[Offering]:
    """The offerings a query asks for, by offering id. A postcode area selects the library serving it."""
    library = query.library
    if query.postcode_area is not None:
        serving = library_serving(libraries, query.postcode_area)
        if serving is None or (library is not None and library != serving.code):
            return []
        library = serving.code
    found = []
    by_code = {known.code: known for known in libraries}
    for offering in offerings:
        data = offering.data
        proposition = propositions.get(data.proposition)
        available = offering_available(offering, proposition, by_code.get(data.library))
        if (query.status == "active" and not available) or (query.status == "withdrawn" and available):
            continue
        if query.proposition is not None and data.proposition != query.proposition:
            continue
        if library is not None and data.library != library:
            continue
        if query.channel is not None and query.channel not in data.channels:
            continue
        if query.theme is not None and (proposition is None or proposition.data.theme != query.theme):
            continue
        if query.target_group is not None and (
            proposition is None or query.target_group not in proposition.data.target_groups
        ):
            continue
        found.append(offering)
    return sorted(found, key=lambda o: o.id)


@dataclass(frozen=True)
class ActivityQuery:
    proposition: str | None = None
    library: str | None = None
    branch: str | None = None
    starts_from: datetime | None = None
    starts_before: datetime | None = None
    include_cancelled: bool = False


def activity_matches(activity: Activity, query: ActivityQuery) -> bool:
    data = activity.data
    return (
        (query.include_cancelled or not activity.cancelled)
        and (query.proposition is None or data.proposition == query.proposition)
        and (query.library is None or data.library == query.library)
        and (query.branch is None or data.branch == query.branch)
        and (query.starts_from is None or data.starts_at >= query.starts_from)
        and (query.starts_before is None or data.starts_at < query.starts_before)
    )


T = TypeVar("T")


def page(items: Sequence[T], key: Callable[[T], str], cursor: str | None, limit: int) -> tuple[list[T], str | None]:
    """One page of `items` (sorted by `key`) after `cursor`, and the cursor of the next page (None: the last)."""
    start = 0 if cursor is None else next((i for i, item in enumerate(items) if key(item) > cursor), len(items))
    chunk = list(items[start : start + limit])
    more = start + limit < len(items)
    return chunk, key(chunk[-1]) if chunk and more else None
