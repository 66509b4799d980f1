"""Crypto-shredding and erasure by member id, on the real broker and a Redis server of this module's own (with its
append-only file in a temporary folder, so that what reaches the disk can be read back byte for byte)."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from redis.asyncio import Redis

from deploy import runtime
from deploy.vault_cli import upgrade
from services.analytics.app import create_app as analytics_app
from services.analytics.settings import AnalyticsSettings
from services.analytics.store import AnalyticsStore
from services.identity.app import create_app as identity_app
from services.identity.domain import keyed_hash
from services.identity.records import MemberRecord
from services.identity.settings import IdentitySettings
from services.identity.store import MemberStore, Upgraded
from services.identity.vault import MasterKeys, VaultError, new_master_keys
from services.journey.app import create_app as journey_app
from services.journey.settings import JourneySettings
from services.journey.state import ref
from services.notifications.app import create_app as notifications_app
from shared.auth import Keyring
from shared.events import CloudEvent
from shared.events.registry import TYPE_PREFIX
from shared.redis import make_redis
from shared.settings import Settings
from shared.topics import ALL_TOPICS, CAMPAIGNS, DELIVERIES, FRICTIONS, MEMBERS, USAGE, ensure_topics
from tests.support import eventually, own_redis, problem, publish_as_harness, read_to_end, running

pytestmark = pytest.mark.integration

PERSON = {
    "name": "Ermengarde Pothoven-Slingerland",
    "email": "Ermengarde.Pothoven@Voorbeeld.NL",
    "phone": "+31 6 1357 9246",
    "birth_date": "1949-08-17",
    "postcode": "8911 KL",
    "home_library": "oba",
    "platform": "website",
}
# Every spelling of the person that could have been stored: as given, normalised, in parts.
TRACES = (
    "Ermengarde", "Pothoven", "Slingerland", "ermengarde.pothoven@voorbeeld.nl", "Ermengarde.Pothoven@Voorbeeld.NL",
    "0613579246", "+31 6 1357 9246", "1357 9246", "1949-08-17", "8911 KL",
)  # fmt: skip


@pytest.fixture(scope="module")
def redis_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[runtime.RedisNode]:
    """A redis-server with `appendonly yes` and its data folder in a temporary directory."""
    with own_redis(tmp_path_factory.mktemp("redis-aof")) as node:
        yield node


@pytest.fixture
def own(settings: Settings, redis_node: runtime.RedisNode, seed_libraries: list[str]) -> Settings:
    """This test's settings on the module's Redis; services it asks over HTTP (propositions, analytics) are
    nowhere, so pages show what they have without them."""
    nowhere = {"propositions_url": f"http://127.0.0.1:{runtime.free_port()}"}
    return Settings(**{**settings.model_dump(), "redis_url": redis_node.url, **nowhere})


def identity_settings(own: Settings, master_keys: str) -> IdentitySettings:
    return IdentitySettings(**{**own.model_dump(), "identity_master_keys": master_keys})


async def admin(settings: Settings) -> str:
    redis = make_redis(settings)
    try:
        return await Keyring(redis, settings).create("test", ["admin"])
    finally:
        await redis.aclose()


def disk_bytes(folder: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}


async def every_record(settings: Settings) -> list[bytes]:
    """Every record (key, value and headers) on every topic of the test and its dead letters, read at once."""
    names = [settings.topic(name) for topic in ALL_TOPICS for name in (topic.name, topic.dead_letters)]
    return [
        (r.key or b"") + (r.value or b"") + b"".join(k.encode() + v for k, v in r.headers)
        for r in await read_to_end(settings.kafka_bootstrap, *names)
    ]


async def sign_in(client: httpx.AsyncClient, key: str) -> None:
    form = await client.get("/pages/sign-in")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token is not None
    await client.post("/pages/sign-in", data={"csrf": token.group(1), "api_key": key, "next": "/pages/desk"})


async def desk_lookup(client: httpx.AsyncClient, query: str) -> str:
    """The desk page's answer to a lookup (signed in)."""
    page = await client.get("/pages/desk", params={"q": query})
    assert page.status_code == 200, page.text
    return page.text


async def test_after_erasure_no_file_of_redis_and_no_topic_holds_the_person_and_lookups_find_nothing(
    own: Settings, redis_node: runtime.RedisNode
) -> None:
    settings = identity_settings(own, new_master_keys("k1").text())
    key = await admin(settings)
    async with running(identity_app(settings), key) as identity:
        signed = await identity.post("/v1/members", json=PERSON)
        assert signed.status_code == 202, signed.text
        member = signed.json()["member_id"]
        # The same person at another library: duplicate detection works on the keyed hashes.
        twin = await identity.post("/v1/members", json={**PERSON, "home_library": "haarlem"})
        twin_id = twin.json()["member_id"]
        suspected = (await identity.get("/v1/duplicates")).json()
        assert [(s["member_id"], s["other_member_id"], s["matched_on"]) for s in suspected] == [
            (twin_id, member, ["email", "phone"])
        ]
        # The desk finds the person by e-mail address and by phone number, however written.
        await sign_in(identity, key)
        for query in ("ermengarde.pothoven@voorbeeld.nl", "06-13579246", "+31 6 1357 9246"):
            assert "Ermengarde Pothoven-Slingerland" in await desk_lookup(identity, query)
        assert (await identity.get(f"/v1/members/{member}")).json()["email"] == "ermengarde.pothoven@voorbeeld.nl"

        for erased in (member, twin_id):
            assert (await identity.delete(f"/v1/members/{erased}")).status_code == 202
        for query in ("ermengarde.pothoven@voorbeeld.nl", "0613579246"):
            assert "Ermengarde" not in await desk_lookup(identity, query)
        assert problem(await identity.get(f"/v1/members/{member}")) == (404, "member does not exist")

    files = disk_bytes(redis_node.data_dir)
    written = b"".join(files.values())
    assert member.encode() in written and b"sealed" in written  # the append-only file has the member's writes
    for path, content in files.items():
        for trace in TRACES:
            assert trace.encode().lower() not in content.lower(), f"{path.name} holds {trace!r}"
    records = await every_record(settings)
    assert sum(member.encode() in r for r in records) >= 2  # signed up, erased: the read sees the topics
    for text in records:
        for trace in TRACES:
            assert trace.encode().lower() not in text.lower()


async def test_a_rotated_master_key_keeps_members_readable_and_the_upgrade_moves_them_to_it(own: Settings) -> None:
    first = new_master_keys("k1")
    rotated = first.with_new_current("k2")
    redis = make_redis(own)
    try:
        old = MemberStore(redis, identity_settings(own, first.text()))
        member = str(uuid.uuid4())
        await old.create(member, record(), [])
        both = MemberStore(redis, identity_settings(own, rotated.text()))
        assert await both.get(member) == record()

        assert await upgrade(identity_settings(own, rotated.text())) == Upgraded(rewrapped=1)
        assert await upgrade(identity_settings(own, rotated.text())) == Upgraded(unchanged=1)  # nothing left to do

        only_new = identity_settings(own, MasterKeys("k2", {"k2": rotated.keys["k2"]}).text())
        assert await MemberStore(redis, only_new).get(member) == record()
        with pytest.raises(VaultError):
            await old.get(member)  # rewrapped: the retired key opens nothing any more
    finally:
        await redis.aclose()


async def test_a_member_stored_in_the_clear_is_sealed_by_the_upgrade_and_stays_found(own: Settings) -> None:
    settings = identity_settings(own, new_master_keys("k1").text())
    member, email = str(uuid.uuid4()), "gerrit.klaassen@voorbeeld.nl"
    digest = keyed_hash(settings.identity_hmac_key.get_secret_value().encode(), "email", email)
    redis: Redis = make_redis(settings)
    try:
        # As the store wrote a member before sealing existed.
        await redis.hset(settings.key("identity", "member", "{" + member + "}"), mapping={
            "name": "Gerrit Klaassen", "email": email, "phone": "", "birth_date": "1970-01-30", "postcode": "1034 AB",
            "home_library": "oba", "signed_up_at": "2025-03-01T10:00:00+00:00", "channel": "offline",
            "platform": "desk", "source": "", "language": "nl", "last_channel": "offline", "last_platform": "desk",
            "card_activated_at": "", "guardian_id": "",
        })  # fmt: skip
        await redis.sadd(settings.key("identity", "dup", digest), member)

        assert await upgrade(settings) == Upgraded(sealed=1)
        assert await upgrade(settings) == Upgraded(unchanged=1)  # idempotent

        stored = await redis.hgetall(settings.key("identity", "member", "{" + member + "}"))
        assert "Gerrit" not in str(stored) and email not in str(stored) and set(stored) >= {"sealed", "key"}
        found = await MemberStore(redis, settings).get(member)
        assert found is not None and (found.name, found.email, found.phone) == ("Gerrit Klaassen", email, None)
        key = await admin(settings)
        async with running(identity_app(settings), key) as identity:
            await sign_in(identity, key)
            assert "Gerrit Klaassen" in await desk_lookup(identity, email.upper())
            # Signing up with the same address again is suspected as a duplicate of the sealed member.
            again = await identity.post("/v1/members", json={**PERSON, "email": email, "phone": None})
            suspicions = (await identity.get("/v1/duplicates")).json()
            assert {member, again.json()["member_id"]} in [{s["member_id"], s["other_member_id"]} for s in suspicions]
    finally:
        await redis.aclose()


def record() -> MemberRecord:
    return MemberRecord(
        name="Teuntje de Boer", email="teuntje@voorbeeld.nl", phone="0611122233", birth_date=date(1988, 6, 1),
        postcode="3511 AB", home_library="utrecht", signed_up_at=datetime(2026, 1, 5, 9, 0, tzinfo=UTC),
        channel="online", platform="website",
    )  # fmt: skip


# ------------------------------------------------------------------------------- a member only Kafka knew


def event(kind: str, member: str, at: datetime, **data: Any) -> CloudEvent:
    online = kind == "member.signed_up.v1"
    return CloudEvent(
        id=str(uuid.uuid4()), source="/libraries/oba/app", type=TYPE_PREFIX + kind, time=at, subject=member,
        library="oba", channel="online" if online else "offline", platform="website" if online else "desk", data=data,
    )  # fmt: skip


@pytest.fixture
async def platform(own: Settings, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    journey = JourneySettings(
        **own.model_dump(), journey_activation_window=timedelta(seconds=3), journey_allowed_lateness=timedelta(0),
        journey_batch_size=50, journey_idle_seconds=0.5,
    )  # fmt: skip
    analytics = AnalyticsSettings(
        **own.model_dump(), analytics_path=tmp_path / "analytics", analytics_cache_seconds=0,
        analytics_allowed_lateness=timedelta(0),
    )  # fmt: skip
    key = await admin(own)
    analytics_service = analytics_app(analytics)
    async with (
        running(identity_app(identity_settings(own, new_master_keys("k1").text())), key) as identity,
        running(journey_app(journey)),
        running(notifications_app(own), key) as notifications,
        running(analytics_service, key) as reports,
    ):
        yield {
            "identity": identity, "notifications": notifications, "analytics": reports, "settings": own,
            "store": analytics_service.state.store, "publisher": analytics_service.state.parts.publisher,
        }  # fmt: skip


async def test_erasing_a_member_only_kafka_knew_removes_their_journey_inbox_and_analytics_rows(
    platform: dict[str, Any],
) -> None:
    member, settings = str(uuid.uuid4()), platform["settings"]
    store: AnalyticsStore = platform["store"]
    # A platform producing straight to Kafka: identity never hears of this member.
    profile = {"age_band": "18-64", "home_library": "oba", "postcode_area": "1034"}
    await publish_as_harness(settings, [event("member.signed_up.v1", member, datetime.now(UTC), **profile)])

    async def inbox() -> list[dict[str, Any]]:
        response = await platform["notifications"].get(f"/v1/members/{member}/inbox")
        return list(response.json()["messages"]) if response.status_code == 200 else []

    async def analytics_rows() -> int:
        counts = [
            (await store.rows(f"SELECT count() AS n FROM {{db}}.{table} WHERE member_id = {{m:String}}", {"m": member}))
            for table in ("events", "members", "frictions", "windows")
        ]
        return sum(int(c[0]["n"]) for c in counts)

    async def journey_state() -> bool:
        redis = make_redis(settings, binary=True)
        try:
            async for key in redis.scan_iter(match=settings.key("journey", "state", "*")):
                if await redis.hexists(key, ref(member)):
                    return True
            return False
        finally:
            await redis.aclose()

    await eventually(inbox)  # the friction of a card not activated: journey, then notifications had it
    await eventually(analytics_rows)
    assert await journey_state()
    timeline = await platform["analytics"].get(f"/v1/members/{member}/timeline")
    assert timeline.status_code == 200

    erased = await platform["identity"].delete(f"/v1/members/{member}")
    assert erased.status_code == 202, erased.text

    async def all_gone() -> bool:
        return not await inbox() and not await analytics_rows() and not await journey_state()

    await eventually(all_gone)
    timeline = await platform["analytics"].get(f"/v1/members/{member}/timeline")
    assert problem(timeline) == (404, "the member does not exist")
    redis = make_redis(settings)
    try:
        left = sorted([k async for k in redis.scan_iter(match=f"*{member}*")])
    finally:
        await redis.aclose()
    # What remains are the tombstones that keep late events out: the id, nothing else.
    assert left == sorted([settings.key("notifications", "erased", member), settings.key("identity", "erased", member)])


# ------------------------------------------------------------------------------------------------ retention


async def test_pseudonymous_topics_keep_events_35_days_also_a_topic_made_before_and_compacted_ones_keep_theirs(
    settings: Settings,
) -> None:
    def resource(name: str, configs: dict[str, str | None]) -> ConfigResource:
        return ConfigResource(ConfigResourceType.TOPIC, settings.topic(name), configs)

    async def retention(*names: str) -> dict[str, str | None]:
        # A describe that races a configuration change may answer a topic without its entries: None, asked again.
        asked = [resource(name, {"retention.ms": None}) for name in names]
        [response] = await kafka.describe_configs(asked)
        return {
            name: dict(e[:2] for e in entries).get("retention.ms") for _, _, _, name, entries, *_ in response.resources
        }

    await ensure_topics(settings)
    kafka = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await kafka.start()
    try:
        # A topic made before retention was set: the broker's default (7 days here).
        week = str(7 * 86_400_000)
        await kafka.alter_configs([resource(MEMBERS.name, {"retention.ms": week})])

        # The broker applies a configuration change shortly after answering it: each step waits until it shows.
        async def week_shown() -> bool:
            return (await retention(MEMBERS.name))[settings.topic(MEMBERS.name)] == week

        async def week_replaced() -> bool:
            shown = (await retention(MEMBERS.name))[settings.topic(MEMBERS.name)]
            return shown is not None and shown != week

        async def all_shown() -> dict[str, str] | None:
            shown = await retention(MEMBERS.name, USAGE.dead_letters, FRICTIONS.name, DELIVERIES.name, CAMPAIGNS.name)
            return None if None in shown.values() else {name: ms for name, ms in shown.items() if ms is not None}

        await eventually(week_shown)
        await ensure_topics(settings)
        await eventually(week_replaced)
        days = {name: int(ms) / 86_400_000 for name, ms in (await eventually(all_shown)).items()}
    finally:
        await kafka.close()
    campaigns = days.pop(settings.topic(CAMPAIGNS.name))
    assert days == {
        settings.topic(MEMBERS.name): 35, settings.topic(USAGE.dead_letters): 35, settings.topic(FRICTIONS.name): 35,
        settings.topic(DELIVERIES.name): 35,
    }  # fmt: skip
    assert campaigns != 35  # compacted: the broker's default, every campaign's latest record kept
