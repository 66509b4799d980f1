"""The population side of the analytics store: children per postcode area and band (CBS), the libraries' reach
targets, and the SQL that counts reached members per postcode area, band and first contact.

Tables (created on first use, next to the event facts):
  population        postcode_area, age_band, children: the latest file loaded (a load replaces it whole)
  population_loads  period, synthetic, areas, loaded_at: what was loaded when
  reach_targets     library, target, at: the latest target per library (none: 100%)
"""

# ruff: noqa: S608  (SQL is built from the code's own names; every value travels as a typed query parameter)
from __future__ import annotations

from collections.abc import Sequence

from services.analytics.population import YOUTH_BANDS, Population, Reached, first_contact
from services.analytics.queries import profiles
from services.analytics.store import ACTIVITY, AnalyticsStore, array_literal

SIGNED_UP = "member.signed_up.v1"
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS {db}.population (postcode_area String, age_band LowCardinality(String),
       children UInt32) ENGINE = MergeTree ORDER BY (postcode_area, age_band)""",
    """CREATE TABLE IF NOT EXISTS {db}.population_loads (period String, synthetic UInt8, areas UInt32,
       loaded_at DateTime64(3, 'UTC') DEFAULT now64()) ENGINE = MergeTree ORDER BY loaded_at""",
    """CREATE TABLE IF NOT EXISTS {db}.reach_targets (library String, target Float64,
       at DateTime64(3, 'UTC') DEFAULT now64()) ENGINE = ReplacingMergeTree(at) ORDER BY library""",
)
_BANDS = "(" + ", ".join(f"'{band}'" for band in YOUTH_BANDS) + ")"
_YEAR_MS = 31_557_600_000  # 365.25 days


def band_on(at: str) -> str:
    """SQL: the age band of a profile `p` (with its birth year `y`) on the moment `at` (epoch ms). With a birth year
    (identity publishes it for members signed up under 18): their age on 1 January of that year, as CBS counts the
    children the reach divides by. Without (members signed up before): the youngest they can be, the lowest age of
    their band at sign-up plus the whole years since; a child signed up at 3 is counted 4-11 from 1 January after
    their fourth birthday, or, without a year, four years after the sign-up at the latest."""
    year = f"toYear(fromUnixTimestamp64Milli(toInt64({at})), 'Europe/Amsterdam')"
    lowest = (
        "multiIf(p.age_band = '0-3', 0, p.age_band = '4-11', 4, p.age_band = '12-17', 12, p.age_band = '18-64', 18, "
    )
    lowest += "p.age_band = '65+', 65, -1000)"  # -1000: no band known, never a child
    age = (
        f"if(y.birth_year > 0, greatest(0, {year} - y.birth_year - 1), "
        f"{lowest} + intDiv(greatest(0, toInt64({at}) - p.joined), {_YEAR_MS}))"
    )
    return f"multiIf({age} <= 3, '0-3', {age} <= 11, '4-11', {age} <= 17, '12-17', {age} <= 64, '18-64', '65+')"


def aged_profiles() -> str:
    """SQL: the members' profiles (`p`) with their birth years (`y`, 0 when unknown)."""
    return f"""({profiles()}) AS p
               LEFT JOIN (SELECT cityHash64(member_id) AS member_key, max(birth_year) AS birth_year
                          FROM {{db}}.birth_years GROUP BY member_id) AS y
                 ON p.member_key = y.member_key"""


class PopulationStore:
    def __init__(self, store: AnalyticsStore) -> None:
        self._store = store
        self._ready = False

    async def _tables(self) -> None:
        if not self._ready:
            for statement in SCHEMA:
                await self._store.command(statement)
            self._ready = True

    # ------------------------------------------------------------------------------------ population

    async def load(self, population: Population) -> None:
        """Replace the population with `population` (its values are checked: areas are 4 digits, bands known)."""
        await self._tables()
        await self._store.command("TRUNCATE TABLE {db}.population")
        cells = sorted(population.children.items())
        if cells:
            await self._store.command(
                """INSERT INTO {db}.population (postcode_area, age_band, children)
                   SELECT c.1, c.2, c.3 FROM (SELECT arrayJoin(arrayZip({areas:Array(String)}, {bands:Array(String)},
                                                                        {children:Array(UInt32)})) AS c)""",
                {
                    "areas": array_literal([area for (area, _), _ in cells]),
                    "bands": array_literal([band for (_, band), _ in cells]),
                    "children": "[" + ",".join(str(int(n)) for _, n in cells) + "]",
                },
            )
        areas = len({area for area, _ in population.children})
        await self._store.command(
            "INSERT INTO {db}.population_loads (period, synthetic, areas) VALUES ({p:String}, {s:UInt8}, {a:UInt32})",
            {"p": population.period, "s": int(population.synthetic), "a": areas},
        )

    async def population(self) -> Population:
        await self._tables()
        rows = await self._store.rows("SELECT postcode_area, age_band, children FROM {db}.population")
        loads = await self._store.rows(
            "SELECT period, synthetic FROM {db}.population_loads ORDER BY loaded_at DESC LIMIT 1"
        )
        children = {(str(r["postcode_area"]), str(r["age_band"])): int(r["children"]) for r in rows}
        period, synthetic = (str(loads[0]["period"]), bool(int(loads[0]["synthetic"]))) if loads else ("", False)
        return Population(children, period, synthetic)

    # ---------------------------------------------------------------------------------------- targets

    async def set_target(self, library: str, target: float) -> None:
        await self._tables()
        await self._store.command(
            "INSERT INTO {db}.reach_targets (library, target) VALUES ({l:String}, {t:Float64})",
            {"l": library, "t": target},
        )

    async def targets(self) -> dict[str, float]:
        await self._tables()
        rows = await self._store.rows(
            "SELECT library, argMax(target, at) AS target FROM {db}.reach_targets GROUP BY library"
        )
        return {str(r["library"]): float(r["target"]) for r in rows}

    # ---------------------------------------------------------------------------------------- reached

    async def reached(self, since_ms: int, at_ms: int) -> Reached:
        """Members active since `since_ms`, per postcode area, their band on `at_ms` (the reporting moment) and
        first contact: a child signed up at 3 and now 5 counts in 4-11."""
        sql = f"""
            SELECT p.postcode_area AS area, {band_on("{at:Int64}")} AS band, p.source AS source,
                   s.channel AS channel, count() AS reached
            FROM {aged_profiles()}
            LEFT JOIN (SELECT member_key, any(channel) AS channel FROM {{db}}.events
                       WHERE type = '{SIGNED_UP}' AND merged_from = '' GROUP BY member_key) AS s
              ON p.member_key = s.member_key
            WHERE p.age_band IN {_BANDS} AND p.postcode_area IS NOT NULL AND p.last_active >= {{since:Int64}}
              AND band IN {_BANDS}
            GROUP BY area, band, source, channel
        """
        found = Reached()
        for row in await self._store.rows(sql, {"since": since_ms, "at": at_ms}):
            found.add(
                str(row["area"]), str(row["band"]), first_contact(row["source"], row["channel"]), int(row["reached"])
            )
        return found

    async def reached_by_quarter(self, windows: Sequence[tuple[str, int, int]]) -> dict[str, Reached]:
        """Per (quarter, start ms, end ms): members with any activity in (start, end], in their band at its end."""
        if not windows:
            return {}
        parameters = {
            "labels": array_literal([label for label, _, _ in windows]),
            "starts": "[" + ",".join(str(int(start)) for _, start, _ in windows) + "]",
            "ends": "[" + ",".join(str(int(end)) for _, _, end in windows) + "]",
        }
        sql = f"""
            SELECT p.postcode_area AS area, {band_on("w.3")} AS band, w.1 AS quarter, count() AS reached
            FROM {aged_profiles()}
            INNER JOIN (SELECT member_key, groupUniqArray(toUnixTimestamp(toStartOfHour(time)) * 1000) AS times
                        FROM {{db}}.events WHERE {ACTIVITY} GROUP BY member_key) AS a
              ON p.member_key = a.member_key
            ARRAY JOIN arrayZip({{labels:Array(String)}}, {{starts:Array(Int64)}}, {{ends:Array(Int64)}}) AS w
            WHERE p.age_band IN {_BANDS} AND p.postcode_area IS NOT NULL AND band IN {_BANDS}
              AND arrayExists(t -> t > w.2 AND t <= w.3, a.times)
            GROUP BY area, band, quarter
        """
        found = {label: Reached() for label, _, _ in windows}
        for row in await self._store.rows(sql, parameters):
            found[str(row["quarter"])].add(str(row["area"]), str(row["band"]), "all", int(row["reached"]))
        return found
