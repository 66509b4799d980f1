"""What analytics keeps of a family, from identity's member events: which guardian(s) each child has
(`member.guardian_set`), and the birth year of a member signed up under 18 (`member.signed_up`'s `birth_year`).

The BoekStart funnel follows the guardian's first visit after their child's sign-up (a baby does not log in), and
the reach 0-18 counts a child in the band of their age on the reporting day (docs/soob.md). Both tables hold
pseudonymous ids and a year only:

  guardians    child_id, guardian_id, since: every guardian a child was given (siblings share a guardian)
  birth_years  member_id, birth_year

They are made with the store's other tables (`store.SCHEMA`) and follow members like the events do (`store.py`):
a link or year arriving for a merged member is kept under the survivor, and a merge moves what the merged member
had; an erasure of either member removes the link (and the year), and a replayed event of an erased member stays
out. Writing is idempotent: the tables replace rows of the same key, and readers take distinct rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from services.analytics.facts import ERASED, MERGED, SIGNED_UP
from services.analytics.store import AnalyticsStore, array_literal
from shared.events import CloudEvent
from shared.events.registry import TYPE_PREFIX

GUARDIAN_SET = "member.guardian_set.v1"
_READ = {TYPE_PREFIX + kind: kind for kind in (GUARDIAN_SET, SIGNED_UP, MERGED, ERASED)}


class MemberEvent(Protocol):
    """What the family tables need of an event: its short type, member, time (epoch ms), and the survivor of a
    merge, the guardian of a `guardian_set` and the birth year of a sign-up (None otherwise)."""

    @property
    def type(self) -> str: ...
    @property
    def member_id(self) -> str: ...
    @property
    def time(self) -> int: ...
    @property
    def survivor_id(self) -> str | None: ...
    @property
    def guardian_id(self) -> str | None: ...
    @property
    def birth_year(self) -> int | None: ...


class MemberFact(NamedTuple):
    type: str
    member_id: str
    time: int
    survivor_id: str | None = None
    guardian_id: str | None = None
    birth_year: int | None = None


def member_facts(events: Iterable[CloudEvent]) -> list[MemberFact]:
    """The events the family tables read (guardian set, sign-up, merge, erasure), from decoded CloudEvents."""
    found = []
    for event in events:
        kind = _READ.get(event.type)  # most events are none of these: one look-up each
        if kind is None or event.subject is None:
            continue
        data = event.data
        year = data.get("birth_year")
        found.append(
            MemberFact(
                kind, event.subject, round(event.time.timestamp() * 1000), data.get("survivor_id"),
                data.get("guardian_id"), year if isinstance(year, int) else None,
            )
        )  # fmt: skip
    return found


@dataclass(frozen=True)
class GuardianLink:
    child_id: str
    guardian_id: str
    since: int  # epoch ms


@dataclass(frozen=True)
class BirthYear:
    member_id: str
    year: int


@dataclass(frozen=True)
class FamilyFacts:
    """What a batch of events says about families, and the merges and erasures among them, in order."""

    links: list[GuardianLink]
    births: list[BirthYear]
    changes: list[tuple[str, str, str | None]]  # (merged or erased, member id, survivor id or None)


def family_facts(events: Iterable[MemberEvent]) -> FamilyFacts:
    """Pure: the links, birth years, merges and erasures in a batch."""
    facts = FamilyFacts([], [], [])
    for event in events:
        kind, member = event.type, event.member_id
        if kind == GUARDIAN_SET and event.guardian_id:
            facts.links.append(GuardianLink(member, event.guardian_id, event.time))
        elif kind == SIGNED_UP and event.birth_year is not None:
            facts.births.append(BirthYear(member, event.birth_year))
        elif kind == MERGED and event.survivor_id:
            facts.changes.append((MERGED, member, event.survivor_id))
        elif kind == ERASED:
            facts.changes.append((ERASED, member, None))
    return facts


class Families:
    """The guardians and birth_years tables of the analytics store."""

    def __init__(self, store: AnalyticsStore) -> None:
        self._store = store

    async def write(self, events: Iterable[MemberEvent]) -> None:
        """Store a batch's links and birth years, then apply its merges and erasures in order. Runs after the
        batch's events were stored and merged (the store's `merges` and `erasures` know this batch's too)."""
        facts = family_facts(events)
        if facts.links or facts.births:
            await self._add(facts)
        for change, member, survivor in facts.changes:
            if change == MERGED and survivor is not None:
                await self.merge(member, survivor)
            else:
                await self.erase(member)

    async def _add(self, facts: FamilyFacts) -> None:
        ids = sorted(
            {link.child_id for link in facts.links}
            | {link.guardian_id for link in facts.links}
            | {birth.member_id for birth in facts.births}
        )
        known = await self._store.rows(
            "SELECT member_id, survivor_id FROM {db}.merges FINAL WHERE member_id IN {m:Array(String)} "
            "UNION ALL SELECT member_id, '' FROM {db}.erasures WHERE member_id IN {m:Array(String)}",
            {"m": array_literal(ids)},
        )
        erased = {str(r["member_id"]) for r in known if not r["survivor_id"]}
        survivor = {str(r["member_id"]): str(r["survivor_id"]) for r in known if r["survivor_id"]}
        links = {
            (survivor.get(link.child_id, link.child_id), survivor.get(link.guardian_id, link.guardian_id)): link.since
            for link in facts.links
            if link.child_id not in erased and link.guardian_id not in erased
        }
        links = {(child, guardian): since for (child, guardian), since in links.items() if child != guardian}
        if links:
            await self._store.command(
                "INSERT INTO {db}.guardians (child_id, guardian_id, since) SELECT l.1, l.2, "
                "fromUnixTimestamp64Milli(l.3, 'UTC') FROM (SELECT arrayJoin(arrayZip({c:Array(String)}, "
                "{g:Array(String)}, {s:Array(Int64)})) AS l)",
                {
                    "c": array_literal([child for child, _ in links]),
                    "g": array_literal([guardian for _, guardian in links]),
                    "s": "[" + ",".join(str(int(since)) for since in links.values()) + "]",
                },
            )
        # A merged member's own year stays with their survivor only when the survivor has none (as `merge` does).
        years = {b.member_id: b.year for b in facts.births if b.member_id not in erased and b.member_id not in survivor}
        if years:
            await self._store.command(
                "INSERT INTO {db}.birth_years (member_id, birth_year) SELECT y.1, y.2 FROM "
                "(SELECT arrayJoin(arrayZip({m:Array(String)}, {y:Array(UInt16)})) AS y)",
                {"m": array_literal(list(years)), "y": "[" + ",".join(str(y) for y in years.values()) + "]"},
            )

    async def merge(self, member_id: str, survivor_id: str) -> None:
        """The merged member's links (as child or as guardian) and year become the survivor's; once."""
        params = {"m": member_id, "s": survivor_id}
        await self._store.command(
            "INSERT INTO {db}.guardians (child_id, guardian_id, since) "
            "SELECT if(child_id = {m:String}, {s:String}, child_id) AS child, "
            "if(guardian_id = {m:String}, {s:String}, guardian_id) AS guardian, since FROM {db}.guardians FINAL "
            "WHERE (child_id = {m:String} OR guardian_id = {m:String}) AND child != guardian",
            params,
        )
        await self._store.command(
            "INSERT INTO {db}.birth_years (member_id, birth_year) SELECT {s:String}, birth_year "
            "FROM {db}.birth_years FINAL WHERE member_id = {m:String} "
            "AND {s:String} NOT IN (SELECT member_id FROM {db}.birth_years)",
            params,
        )
        await self._forget(member_id)

    async def erase(self, member_id: str) -> None:
        """Every link of the member, as child or as guardian, and their year go."""
        await self._forget(member_id)

    async def _forget(self, member_id: str) -> None:
        params = {"m": member_id}
        # Most members erased or merged are nobody's family here: one look-up instead of two deletions.
        held = await self._store.rows(
            "SELECT 1 AS x FROM {db}.guardians WHERE child_id = {m:String} OR guardian_id = {m:String} "
            "UNION ALL SELECT 1 FROM {db}.birth_years WHERE member_id = {m:String} LIMIT 1",
            params,
        )
        if not held:
            return
        await self._store.command(
            "DELETE FROM {db}.guardians WHERE child_id = {m:String} OR guardian_id = {m:String}", params
        )
        await self._store.command("DELETE FROM {db}.birth_years WHERE member_id = {m:String}", params)

    async def guardians(self) -> dict[str, set[str]]:
        """Every child's guardians."""
        rows = await self._store.rows("SELECT DISTINCT child_id, guardian_id FROM {db}.guardians")
        found: dict[str, set[str]] = {}
        for row in rows:
            found.setdefault(str(row["child_id"]), set()).add(str(row["guardian_id"]))
        return found

    async def birth_years(self) -> dict[str, int]:
        rows = await self._store.rows("SELECT DISTINCT member_id, birth_year FROM {db}.birth_years")
        return {str(r["member_id"]): int(r["birth_year"]) for r in rows}
