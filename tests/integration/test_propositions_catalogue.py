"""The propositions catalogue on the real broker and Redis: propositions, libraries, offerings (the formula model),
the seed, and the catalogue rebuilt from the compacted topic alone.

`Propositions` and its helpers are used by the other propositions test modules as well."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias

import httpx
import pytest
from aiokafka import ConsumerRecord

from deploy.cli import main
from deploy.runtime import free_port, serving
from services.propositions.app import create_app
from services.propositions.seed import load_seed, read_seed
from shared.events import from_kafka
from shared.settings import Settings
from tests.integration.conftest import MakeKey
from tests.support import problem, read_to_end, running

pytestmark = pytest.mark.integration

Record: TypeAlias = ConsumerRecord[Any, Any]
TYPE_PREFIX = "nl.bibliotheek."
CATALOG = "propositions.catalog.v1"
USAGE = "propositions.usage.v1"

BOEKSTART = {
    "name_nl": "BoekStart",
    "name_en": "BookStart",
    "description_nl": "Samen lezen met baby's en peuters.",
    "theme": "reading-and-language",
    "target_groups": ["babies-and-toddlers", "parents"],
    "channels": "both",
    "programme": "Kunst van Lezen",
}
TAALCAFE = {
    "name_nl": "Taalcafé",
    "name_en": "Language café",
    "theme": "social-participation",
    "target_groups": ["newcomers", "adults"],
    "channels": "offline",
    "programme": "Tel mee met Taal",
}
EBOOKS = {
    "name_nl": "E-books van de online Bibliotheek",
    "name_en": "E-books of the online library",
    "theme": "reading-and-language",
    "target_groups": ["teenagers", "adults", "seniors"],
    "channels": "online",
    "programme": "de online Bibliotheek",
}
OBA = {
    "name": "OBA Openbare Bibliotheek Amsterdam",
    "website": "https://www.oba.nl",
    "postcode_areas": ["1000-1109"],
    "branches": [{"code": "oosterdok", "name": "OBA Oosterdok"}, {"code": "banne", "name": "OBA Banne"}],
}
HAARLEM = {
    "name": "Bibliotheek Zuid-Kennemerland",
    "postcode_areas": ["2000-2037", "2100-2106"],
    "branches": [{"code": "centrum", "name": "Bibliotheek Haarlem Centrum"}],
}


def short_type(record: Record) -> str:
    """`nl.bibliotheek.catalog.proposition_published.v1` → `catalog.proposition_published`."""
    return from_kafka(record.value, record.headers).type.removeprefix(TYPE_PREFIX).removesuffix(".v1")


def fields(response: httpx.Response) -> list[str]:
    """The field paths a problem document names."""
    assert response.headers["content-type"] == "application/problem+json", response.text
    return [e["field"] for e in response.json().get("errors", [])]


def soon(days: float = 1.0, hours: float = 0.0) -> str:
    return (datetime.now(UTC) + timedelta(days=days, hours=hours)).isoformat()


@dataclass
class Propositions:
    """The propositions service under test, talked to with an admin key unless a request says otherwise."""

    client: httpx.AsyncClient
    settings: Settings
    make_key: MakeKey

    async def key(self, *roles: str, library: str = "*") -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.make_key(*roles, library=library)}"}

    async def put(self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
        return await self.client.put(path, json=body, headers=headers)

    async def ok(self, method: str, path: str, body: Any = None, **params: Any) -> dict[str, Any]:
        response = await self.client.request(method, path, json=body, params=params or None)
        assert response.status_code in (200, 202), response.text
        return dict(response.json())

    async def basics(self) -> None:
        """Two libraries, three propositions, and who offers what."""
        await self.ok("PUT", "/v1/libraries/oba", OBA)
        await self.ok("PUT", "/v1/libraries/haarlem", HAARLEM)
        await self.ok("PUT", "/v1/propositions/boekstart", BOEKSTART)
        await self.ok("PUT", "/v1/propositions/taalcafe", TAALCAFE)
        await self.ok("PUT", "/v1/propositions/ebooks", EBOOKS)
        await self.ok(
            "PUT",
            "/v1/offerings/oba.boekstart",
            {
                "local_name": "BoekStart in de OBA",
                "branches": ["banne", "oosterdok"],
                "channels": ["offline", "online"],
            },
        )
        await self.ok("PUT", "/v1/offerings/oba.taalcafe", {"branches": ["banne"], "channels": ["offline"]})
        await self.ok("PUT", "/v1/offerings/haarlem.boekstart", {"branches": ["centrum"], "channels": ["offline"]})

    async def everything(self, path: str, **params: Any) -> list[dict[str, Any]]:
        """Every item of a list endpoint, page by page."""
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = await self.ok("GET", path, **params, limit=2, **({"cursor": cursor} if cursor else {}))
            items.extend(page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                return items

    async def catalogue_records(self) -> list[Record]:
        return await read_to_end(self.settings.kafka_bootstrap, self.settings.topic(CATALOG))

    async def usage_records(self) -> list[Record]:
        return await read_to_end(self.settings.kafka_bootstrap, self.settings.topic(USAGE))


@pytest.fixture
async def propositions(settings: Settings, admin_key: str, make_key: MakeKey) -> AsyncIterator[Propositions]:
    async with running(create_app(settings), admin_key) as client:
        yield Propositions(client, settings, make_key)


def latest(records: list[Record]) -> dict[str, Record]:
    """What compaction keeps: the last record of every key (one key's records share a partition, in order)."""
    return {record.key.decode(): record for record in records}


# ----------------------------------------------------------------------------------------------- propositions


async def test_a_proposition_put_by_network_marketing_is_readable_and_published_under_its_slug(
    propositions: Propositions,
) -> None:
    marketing = await propositions.key("marketing")

    response = await propositions.put("/v1/propositions/boekstart", BOEKSTART, marketing)

    assert response.status_code == 202, response.text
    assert response.json()["changed"] is True
    shown = await propositions.ok("GET", "/v1/propositions/boekstart")
    assert shown["name_nl"] == "BoekStart" and shown["status"] == "active"
    assert shown["target_groups"] == ["babies-and-toddlers", "parents"]
    record = latest(await propositions.catalogue_records())["boekstart"]
    assert short_type(record) == "catalog.proposition_published"
    assert json.loads(record.value)["programme"] == "Kunst van Lezen"
    assert from_kafka(record.value, record.headers).id == response.json()["event_id"]


async def test_putting_a_proposition_as_it_is_publishes_nothing_and_answers_200(propositions: Propositions) -> None:
    await propositions.ok("PUT", "/v1/propositions/boekstart", BOEKSTART)

    again = await propositions.put("/v1/propositions/boekstart", BOEKSTART)

    assert again.status_code == 200
    assert again.json() == {"slug": "boekstart", "event_id": None, "changed": False}
    assert len(await propositions.catalogue_records()) == 1


async def test_a_proposition_of_an_unknown_theme_is_refused_naming_the_field(propositions: Propositions) -> None:
    response = await propositions.put("/v1/propositions/boekstart", {**BOEKSTART, "theme": "cooking"})
    assert response.status_code == 422
    assert fields(response) == ["body.theme"]


async def test_a_proposition_for_nobody_is_refused_naming_target_groups(propositions: Propositions) -> None:
    response = await propositions.put("/v1/propositions/boekstart", {**BOEKSTART, "target_groups": []})
    assert response.status_code == 422
    assert fields(response) == ["body.target_groups"]


async def test_a_slug_with_capitals_is_refused_naming_the_path(propositions: Propositions) -> None:
    response = await propositions.put("/v1/propositions/BoekStart", BOEKSTART)
    assert response.status_code == 422
    assert fields(response) == ["path.slug"]


async def test_a_library_s_marketing_key_cannot_change_the_national_catalogue(propositions: Propositions) -> None:
    response = await propositions.put(
        "/v1/propositions/boekstart", BOEKSTART, await propositions.key("marketing", library="oba")
    )
    assert response.status_code == 403
    assert "oba" in response.json()["detail"]


async def test_an_ingest_key_reads_the_catalogue_but_cannot_change_it(propositions: Propositions) -> None:
    await propositions.basics()
    ingest = await propositions.key("ingest", library="oba")

    refused = await propositions.put("/v1/propositions/boekstart", BOEKSTART, ingest)
    read = await propositions.client.get("/v1/propositions/boekstart", headers=ingest)

    assert problem(refused) == (403, "this key lacks the role marketing")
    assert read.status_code == 200


async def test_an_unknown_proposition_is_a_404(propositions: Propositions) -> None:
    response = await propositions.client.get("/v1/propositions/nonexistent")
    assert problem(response) == (404, "proposition does not exist")
    assert response.json()["title"] == "Not Found"


async def test_a_retired_proposition_stays_readable_and_its_record_says_retired(propositions: Propositions) -> None:
    await propositions.basics()

    retired = await propositions.client.delete("/v1/propositions/taalcafe")

    assert retired.status_code == 202, retired.text
    assert (await propositions.ok("GET", "/v1/propositions/taalcafe"))["status"] == "retired"
    listed = [p["slug"] for p in (await propositions.ok("GET", "/v1/propositions"))["items"]]
    assert listed == ["boekstart", "ebooks"]
    record = latest(await propositions.catalogue_records())["taalcafe"]
    assert short_type(record) == "catalog.proposition_retired"
    assert json.loads(record.value)["name_nl"] == "Taalcafé"  # the record keeps what it was
    offered = await propositions.ok("GET", "/v1/offerings", proposition="taalcafe")
    assert offered["items"] == []
    [withdrawn] = (await propositions.ok("GET", "/v1/offerings", proposition="taalcafe", status="all"))["items"]
    assert (withdrawn["active"], withdrawn["available"]) == (True, False)


async def test_retiring_twice_is_a_409_and_retiring_the_unknown_a_404(propositions: Propositions) -> None:
    await propositions.ok("PUT", "/v1/propositions/boekstart", BOEKSTART)
    await propositions.ok("DELETE", "/v1/propositions/boekstart")

    twice = await propositions.client.delete("/v1/propositions/boekstart")
    unknown = await propositions.client.delete("/v1/propositions/nonexistent")

    assert twice.status_code == 409
    assert problem(unknown) == (404, "proposition does not exist")


async def test_a_retired_proposition_put_again_is_published_again(propositions: Propositions) -> None:
    await propositions.ok("PUT", "/v1/propositions/boekstart", BOEKSTART)
    await propositions.ok("DELETE", "/v1/propositions/boekstart")

    again = await propositions.put("/v1/propositions/boekstart", BOEKSTART)

    assert again.status_code == 202
    assert (await propositions.ok("GET", "/v1/propositions/boekstart"))["status"] == "active"


async def test_propositions_are_found_by_theme_target_group_and_channel_page_by_page(
    propositions: Propositions,
) -> None:
    await propositions.basics()

    def slugs(items: list[dict[str, Any]]) -> list[str]:
        return [p["slug"] for p in items]

    assert slugs(await propositions.everything("/v1/propositions")) == ["boekstart", "ebooks", "taalcafe"]
    assert slugs(await propositions.everything("/v1/propositions", theme="social-participation")) == ["taalcafe"]
    assert slugs(await propositions.everything("/v1/propositions", target_group="seniors")) == ["ebooks"]
    assert slugs(await propositions.everything("/v1/propositions", channel="offline")) == ["boekstart", "taalcafe"]
    bad = await propositions.client.get("/v1/propositions", params={"target_group": "cats"})
    assert bad.status_code == 422
    assert fields(bad) == ["query.target_group"]


# -------------------------------------------------------------------------------------------------- libraries


async def test_a_library_is_published_under_its_code_and_found_by_the_postcode_area_it_serves(
    propositions: Propositions,
) -> None:
    response = await propositions.put(
        "/v1/libraries/oba", {**OBA, "postcode_areas": ["1034", "1000-1033", "1035-1109"]}
    )

    assert response.status_code == 202, response.text
    shown = await propositions.ok("GET", "/v1/libraries/oba")
    assert shown["postcode_areas"] == ["1000-1109"]  # joined
    assert [b["code"] for b in shown["branches"]] == ["oosterdok", "banne"]
    [serving] = (await propositions.ok("GET", "/v1/libraries", postcode_area="1034"))["items"]
    assert serving["library"] == "oba"
    assert (await propositions.ok("GET", "/v1/libraries", postcode_area="9711"))["items"] == []
    record = latest(await propositions.catalogue_records())["library:oba"]
    assert short_type(record) == "catalog.library_changed"


async def test_a_library_claiming_areas_another_library_serves_is_refused_naming_it(
    propositions: Propositions,
) -> None:
    await propositions.ok("PUT", "/v1/libraries/oba", OBA)

    response = await propositions.put(
        "/v1/libraries/amstelland", {"name": "Amstelland", "postcode_areas": ["1100-1189"]}
    )

    assert response.status_code == 409
    assert "1100-1109 by oba" in response.json()["detail"]
    assert problem(await propositions.client.get("/v1/libraries/amstelland")) == (404, "library does not exist")


async def test_a_range_that_runs_backwards_is_refused_naming_postcode_areas(propositions: Propositions) -> None:
    response = await propositions.put("/v1/libraries/oba", {**OBA, "postcode_areas": ["1109-1000"]})
    assert response.status_code == 422
    assert fields(response) == ["body.postcode_areas"]


async def test_a_branch_listed_twice_is_refused_naming_branches(propositions: Propositions) -> None:
    branches = [{"code": "banne", "name": "OBA Banne"}, {"code": "banne", "name": "Banne"}]
    response = await propositions.put("/v1/libraries/oba", {**OBA, "branches": branches})
    assert response.status_code == 422
    assert fields(response) == ["body.branches"]


async def test_only_an_admin_of_the_network_or_of_that_library_changes_a_library(propositions: Propositions) -> None:
    marketing = await propositions.put("/v1/libraries/oba", OBA, await propositions.key("marketing"))
    haarlem_admin = await propositions.put("/v1/libraries/oba", OBA, await propositions.key("admin", library="haarlem"))
    oba_admin = await propositions.put("/v1/libraries/oba", OBA, await propositions.key("admin", library="oba"))
    assert problem(marketing) == (403, "this key lacks the role admin")
    assert problem(haarlem_admin) == (403, "this key is scoped to library 'haarlem'")
    assert oba_admin.status_code == 202


async def test_dropping_a_branch_an_offering_names_is_a_409(propositions: Propositions) -> None:
    await propositions.basics()

    response = await propositions.put(
        "/v1/libraries/oba", {**OBA, "branches": [{"code": "oosterdok", "name": "Oosterdok"}]}
    )

    assert response.status_code == 409
    assert "banne" in response.json()["detail"]


async def test_an_unknown_library_is_a_404(propositions: Propositions) -> None:
    assert problem(await propositions.client.get("/v1/libraries/atlantis")) == (404, "library does not exist")


# -------------------------------------------------------------------------------------------------- offerings


async def test_a_parent_in_1034_finds_boekstart_at_the_oba_with_its_local_name_branches_and_channels(
    propositions: Propositions,
) -> None:
    await propositions.basics()

    answer = await propositions.ok("GET", "/v1/offerings", proposition="boekstart", postcode_area="1034")

    [offering] = answer["items"]
    assert offering["offering_id"] == "oba.boekstart"
    assert offering["library_name"] == "OBA Openbare Bibliotheek Amsterdam"
    assert offering["name"] == "BoekStart in de OBA"
    assert offering["proposition_name_nl"] == "BoekStart"
    assert offering["branches"] == [
        {"code": "banne", "name": "OBA Banne"},
        {"code": "oosterdok", "name": "OBA Oosterdok"},
    ]
    assert offering["channels"] == ["offline", "online"]
    assert answer["next_cursor"] is None
    elsewhere = await propositions.ok("GET", "/v1/offerings", proposition="boekstart", postcode_area="2011")
    assert [o["offering_id"] for o in elsewhere["items"]] == ["haarlem.boekstart"]


async def test_offerings_are_found_by_library_theme_target_group_and_channel(propositions: Propositions) -> None:
    await propositions.basics()

    async def ids(**query: str) -> list[str]:
        return [o["offering_id"] for o in await propositions.everything("/v1/offerings", **query)]

    assert await ids(library="oba") == ["oba.boekstart", "oba.taalcafe"]
    assert await ids(theme="social-participation") == ["oba.taalcafe"]
    assert await ids(target_group="babies-and-toddlers") == ["haarlem.boekstart", "oba.boekstart"]
    assert await ids(channel="online") == ["oba.boekstart"]


async def test_a_postcode_area_that_is_not_four_digits_is_refused_naming_the_query(propositions: Propositions) -> None:
    response = await propositions.client.get("/v1/offerings", params={"postcode_area": "1034AB"})
    assert response.status_code == 422
    assert fields(response) == ["query.postcode_area"]


async def test_a_library_s_marketing_key_manages_its_own_offerings_only(propositions: Propositions) -> None:
    await propositions.basics()
    oba = await propositions.key("marketing", library="oba")
    body = {"branches": ["oosterdok"], "channels": ["offline"]}

    own = await propositions.put("/v1/offerings/oba.boekstart", body, oba)
    other = await propositions.put("/v1/offerings/haarlem.boekstart", body, oba)

    assert own.status_code == 202, own.text
    assert problem(other) == (403, "this key is scoped to library 'oba'")
    assert (await propositions.ok("GET", "/v1/offerings/oba.boekstart"))["branches"] == [
        {"code": "oosterdok", "name": "OBA Oosterdok"}
    ]


async def test_an_offering_at_a_branch_the_library_lacks_is_refused_naming_branches(propositions: Propositions) -> None:
    await propositions.basics()
    response = await propositions.put("/v1/offerings/oba.boekstart", {"branches": ["centrum"], "channels": ["offline"]})
    assert response.status_code == 422
    assert fields(response) == ["body.branches"]


async def test_an_online_only_proposition_offered_offline_is_refused_naming_channels(
    propositions: Propositions,
) -> None:
    await propositions.basics()
    response = await propositions.put("/v1/offerings/oba.ebooks", {"branches": ["banne"], "channels": ["offline"]})
    assert response.status_code == 422
    assert fields(response) == ["body.channels"]


async def test_an_offering_without_a_channel_is_refused_naming_channels(propositions: Propositions) -> None:
    response = await propositions.put("/v1/offerings/oba.ebooks", {"channels": []})
    assert response.status_code == 422
    assert fields(response) == ["body.channels"]


async def test_an_offering_id_that_is_no_library_and_proposition_is_refused_naming_the_path(
    propositions: Propositions,
) -> None:
    response = await propositions.put("/v1/offerings/boekstart", {"channels": ["online"]})
    assert response.status_code == 422
    assert fields(response) == ["path.offering_id"]


async def test_an_offering_of_an_unknown_library_or_proposition_is_a_404(propositions: Propositions) -> None:
    await propositions.basics()
    body = {"channels": ["online"]}
    unknown_library = await propositions.put("/v1/offerings/atlantis.ebooks", body)
    unknown_proposition = await propositions.put("/v1/offerings/oba.cooking", body)
    assert problem(unknown_library) == (404, "library does not exist")
    assert problem(unknown_proposition) == (404, "proposition does not exist")
    assert problem(await propositions.client.get("/v1/offerings/oba.ebooks")) == (404, "offering does not exist")


async def test_a_retired_proposition_cannot_be_offered(propositions: Propositions) -> None:
    await propositions.basics()
    await propositions.ok("DELETE", "/v1/propositions/ebooks")
    response = await propositions.put("/v1/offerings/oba.ebooks", {"channels": ["online"]})
    assert response.status_code == 409


async def test_a_withdrawn_offering_is_not_offered_but_still_readable(propositions: Propositions) -> None:
    await propositions.basics()

    withdrawn = await propositions.client.delete("/v1/offerings/oba.taalcafe")
    again = await propositions.client.delete("/v1/offerings/oba.taalcafe")

    assert (withdrawn.status_code, again.status_code) == (202, 409)
    assert (await propositions.ok("GET", "/v1/offerings/oba.taalcafe"))["active"] is False
    assert (await propositions.ok("GET", "/v1/offerings", library="oba"))["items"][0]["offering_id"] == "oba.boekstart"
    assert [o["offering_id"] for o in (await propositions.ok("GET", "/v1/offerings", status="withdrawn"))["items"]] == [
        "oba.taalcafe"
    ]
    record = latest(await propositions.catalogue_records())["oba.taalcafe"]
    assert json.loads(record.value)["active"] is False
    assert problem(await propositions.client.delete("/v1/offerings/oba.ebooks")) == (404, "offering does not exist")


async def test_a_write_retried_with_the_same_idempotency_key_is_answered_again_and_published_once(
    propositions: Propositions,
) -> None:
    await propositions.basics()
    before = len(await propositions.catalogue_records())
    key = {"Idempotency-Key": "offer-klik-en-tik-1"}
    await propositions.ok(
        "PUT", "/v1/propositions/klik-en-tik", {**EBOOKS, "name_nl": "Klik & Tik", "channels": "both"}
    )
    body = {"branches": ["oosterdok"], "channels": ["offline", "online"]}

    first = await propositions.put("/v1/offerings/oba.klik-en-tik", body, key)
    retried = await propositions.put("/v1/offerings/oba.klik-en-tik", body, key)
    other = await propositions.put("/v1/offerings/oba.klik-en-tik", {**body, "channels": ["online"]}, key)

    assert (first.status_code, retried.status_code, other.status_code) == (202, 202, 422)
    assert retried.json() == first.json()
    assert retried.headers["idempotent-replayed"] == "true"
    assert len(await propositions.catalogue_records()) == before + 2  # the proposition and the offering


# ----------------------------------------------------------------------------------------------- the rebuild


def rebuild(records: list[Record]) -> dict[str, dict[str, dict[str, Any]]]:
    """The catalogue from the compacted topic alone: the latest record of every key, as the API shows it."""
    catalogue: dict[str, dict[str, dict[str, Any]]] = {
        "propositions": {},
        "libraries": {},
        "offerings": {},
        "activities": {},
    }
    for record in latest(records).values():
        event = from_kafka(record.value, record.headers)
        kind = event.type.removeprefix(TYPE_PREFIX).removesuffix(".v1")
        data, at = dict(event.data), event.utc_time
        if kind in ("catalog.proposition_published", "catalog.proposition_retired"):
            status = "retired" if kind.endswith("retired") else "active"
            catalogue["propositions"][data["slug"]] = {**data, "status": status, "updated_at": at}
        elif kind == "catalog.library_changed":
            code = data.pop("library")
            catalogue["libraries"][code] = {"library": code, **data, "updated_at": at}
        elif kind == "catalog.offering_changed":
            catalogue["offerings"][data["offering_id"]] = {**data, "updated_at": at}
        elif kind in ("catalog.activity_scheduled", "catalog.activity_cancelled"):
            status = "cancelled" if kind.endswith("cancelled") else "scheduled"
            times = {name: datetime.fromisoformat(data[name]) for name in ("starts_at", "ends_at")}
            catalogue["activities"][data["activity_id"]] = {**data, **times, "status": status, "updated_at": at}
    for offering in catalogue["offerings"].values():
        library = catalogue["libraries"][offering["library"]]
        proposition = catalogue["propositions"][offering["proposition"]]
        names = {b["code"]: b["name"] for b in library["branches"]}
        offering.update(
            library_name=library["name"],
            proposition_name_nl=proposition["name_nl"],
            proposition_name_en=proposition["name_en"],
            name=offering["local_name"] or proposition["name_nl"],
            branches=[{"code": b, "name": names[b]} for b in offering["branches"]],
            available=offering["active"] and proposition["status"] == "active",
        )
    return catalogue


def as_stored(item: dict[str, Any]) -> dict[str, Any]:
    """An API item with its times read back as instants, and the live counts of a session left out."""
    shown = {k: v for k, v in item.items() if k not in ("registered", "places_left")}
    for name in ("updated_at", "starts_at", "ends_at"):
        if name in shown:
            shown[name] = datetime.fromisoformat(shown[name])
    return shown


async def test_the_catalogue_rebuilt_from_the_compacted_topic_alone_is_what_the_api_shows(
    propositions: Propositions,
) -> None:
    await propositions.basics()
    # A history with changes, a retirement, a withdrawal, a moved library and sessions, one cancelled.
    await propositions.ok("PUT", "/v1/propositions/boekstart", {**BOEKSTART, "name_en": "BookStart for babies"})
    await propositions.ok("DELETE", "/v1/propositions/ebooks")
    await propositions.ok("PUT", "/v1/libraries/haarlem", {**HAARLEM, "name": "Bibliotheek ZK"})
    await propositions.ok("PUT", "/v1/offerings/haarlem.taalcafe", {"branches": ["centrum"], "channels": ["offline"]})
    await propositions.ok("DELETE", "/v1/offerings/haarlem.taalcafe")
    session = {"proposition": "taalcafe", "library": "oba", "branch": "banne", "capacity": 8}
    kept = await propositions.ok("POST", "/v1/activities", {**session, "starts_at": soon(1), "ends_at": soon(1, 2)})
    cancelled = await propositions.ok(
        "POST", "/v1/activities", {**session, "starts_at": soon(2), "ends_at": soon(2, 2)}
    )
    await propositions.ok("DELETE", f"/v1/activities/{cancelled['activity_id']}")

    rebuilt = rebuild(await propositions.catalogue_records())

    shown = {
        "propositions": await propositions.everything("/v1/propositions", status="all"),
        "libraries": await propositions.everything("/v1/libraries"),
        "offerings": await propositions.everything("/v1/offerings", status="all"),
        "activities": await propositions.everything(
            "/v1/activities", include_cancelled="true", **{"from": "2000-01-01T00:00:00Z"}
        ),
    }
    key = {"propositions": "slug", "libraries": "library", "offerings": "offering_id", "activities": "activity_id"}
    for kind, items in shown.items():
        assert {item[key[kind]]: as_stored(item) for item in items} == rebuilt[kind], kind
    assert {a["activity_id"]: a["status"] for a in shown["activities"]} == {
        kept["activity_id"]: "scheduled",
        cancelled["activity_id"]: "cancelled",
    }
    assert len(rebuilt["propositions"]) == 3 and len(rebuilt["offerings"]) == 4


# ---------------------------------------------------------------------------------------------------- seed


async def test_the_seed_loads_through_the_api_and_a_second_load_publishes_nothing(propositions: Propositions) -> None:
    seed = read_seed()

    first = await load_seed(propositions.client, seed)
    published = len(await propositions.catalogue_records())
    second = await load_seed(propositions.client, seed)

    offerings = sum(len(library.offerings) for library in seed.libraries)
    assert first.changed == {
        "libraries": len(seed.libraries),
        "propositions": len(seed.propositions),
        "offerings": offerings,
    }
    assert second.changed == {}
    assert published == len(seed.libraries) + len(seed.propositions) + offerings
    assert len(await propositions.catalogue_records()) == published
    [boekstart] = (await propositions.ok("GET", "/v1/offerings", proposition="boekstart", postcode_area="1034"))[
        "items"
    ]
    assert boekstart["library"] == "oba"
    assert "banne" in [b["code"] for b in boekstart["branches"]]
    [digital] = (await propositions.ok("GET", "/v1/offerings", proposition="informatiepunt-digitale-overheid",
                                      postcode_area="9711"))["items"]  # fmt: skip
    assert digital["library_name"] == "Biblionet Groningen"


@pytest.fixture
async def served(settings: Settings) -> AsyncIterator[str]:
    """The service on a real port, in this event loop (the CLI runs in a thread with one of its own)."""
    async with serving(create_app(settings)) as url:
        yield url


async def test_klantreis_seed_loads_the_catalogue_into_the_running_service_once(
    served: str, admin_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await asyncio.to_thread(main, ["seed", "--url", served, "--key", admin_key]) == 0
    first = capsys.readouterr().out
    assert await asyncio.to_thread(main, ["seed", "--url", served, "--key", admin_key]) == 0
    second = capsys.readouterr().out

    assert "propositions: 16 changed, 0 unchanged" in first
    assert "offerings: 0 changed" in second
    async with httpx.AsyncClient(base_url=served, headers={"Authorization": f"Bearer {admin_key}"}) as client:
        answer = await client.get("/v1/offerings", params={"proposition": "boekstart", "postcode_area": "1034"})
    assert [o["library"] for o in answer.json()["items"]] == ["oba"]


def test_klantreis_seed_without_a_running_service_says_so_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["seed", "--url", f"http://127.0.0.1:{free_port()}", "--key", "kr_x_y"]) == 1
    assert "does not answer" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------- keys

ENDPOINTS: list[tuple[str, str, Any]] = [
    ("GET", "/v1/propositions", None),
    ("GET", "/v1/propositions/boekstart", None),
    ("PUT", "/v1/propositions/boekstart", BOEKSTART),
    ("DELETE", "/v1/propositions/boekstart", None),
    ("GET", "/v1/libraries", None),
    ("GET", "/v1/libraries/oba", None),
    ("PUT", "/v1/libraries/oba", OBA),
    ("GET", "/v1/offerings", None),
    ("GET", "/v1/offerings/oba.boekstart", None),
    ("PUT", "/v1/offerings/oba.boekstart", {"channels": ["online"]}),
    ("DELETE", "/v1/offerings/oba.boekstart", None),
    ("POST", "/v1/activities", {}),
    ("GET", "/v1/activities", None),
    ("GET", "/v1/activities/oba.taalcafe.3f9a1c2e7d4b", None),
    ("DELETE", "/v1/activities/oba.taalcafe.3f9a1c2e7d4b", None),
    ("POST", "/v1/activities/oba.taalcafe.3f9a1c2e7d4b/registrations", {"member_id": "m"}),
    ("POST", "/v1/activities/oba.taalcafe.3f9a1c2e7d4b/attendance", {"member_id": "m"}),
    ("POST", "/v1/loans", {}),
    ("POST", "/v1/loans/batch", {"loans": [{}]}),
    ("POST", "/v1/events", []),
]


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS, ids=[f"{m} {p}" for m, p, _ in ENDPOINTS])
async def test_every_endpoint_refuses_a_request_without_a_valid_key(
    propositions: Propositions, method: str, path: str, body: Any
) -> None:
    response = await propositions.client.request(method, path, json=body, headers={"Authorization": "Bearer kr_no_key"})
    assert problem(response) == (401, "the API key is unknown or revoked")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_the_asyncapi_document_lists_the_catalogue_and_usage_events(propositions: Propositions) -> None:
    document = json.dumps(await propositions.ok("GET", "/asyncapi"))
    for kind in (
        "catalog.proposition_retired",
        "catalog.library_changed",
        "usage.loan_borrowed",
        "usage.activity_attended",
    ):
        assert f"{TYPE_PREFIX}{kind}.v1" in document
