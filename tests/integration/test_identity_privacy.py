"""Personal data stays in identity: never in an event, a log line, a trace or an error; erasure leaves no trace."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from redis.asyncio import Redis

from services.identity.app import create_app
from services.identity.domain import keyed_hash
from services.identity.settings import IdentitySettings
from shared.redis import make_redis
from shared.topics import ALL_TOPICS
from tests.integration.conftest import MakeKey
from tests.support import problem, read_to_end, running, spans_kept_in

pytestmark = pytest.mark.integration

# A person whose every datum is distinctive, so that any copy of it is found.
PERSON = {
    "name": "Wilhelmina Zwanenburg-Quist",
    "email": "W.Zwanenburg.Quist@Example.NL",
    "phone": "+31 6 9876 5432",
    "birth_date": "1958-02-27",
    "postcode": "9711 XZ",
    "home_library": "groningen",
    "platform": "website",
}
EXTERNAL_ACCOUNT = "ebook-account-zwanenburg-77"
TRACES = InMemorySpanExporter()


def personal_values(settings: IdentitySettings) -> list[str]:
    key = settings.identity_hmac_key.get_secret_value().encode()
    return [
        "Wilhelmina", "Zwanenburg", "Quist", "w.zwanenburg.quist@example.nl", "W.Zwanenburg.Quist@Example.NL",
        "0698765432", "+31 6 9876 5432", "1958-02-27", "9711 XZ", "9711XZ", EXTERNAL_ACCOUNT,
        # The keyed hashes that index e-mail, phone and account are the person too, as long as the key exists.
        keyed_hash(key, "email", "w.zwanenburg.quist@example.nl"),
        keyed_hash(key, "phone", "0698765432"),
        keyed_hash(key, "account:ebook", EXTERNAL_ACCOUNT),
    ]  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def traces() -> InMemorySpanExporter:
    return spans_kept_in(TRACES)


@pytest.fixture
async def identity(identity_settings: IdentitySettings, admin_key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app(identity_settings), admin_key) as client:
        yield client


@dataclass(frozen=True)
class Family:
    member: str
    twin: str  # the same person signed up again at another library: a duplicate suspicion
    child: str  # a minor with the member as guardian, sharing the e-mail address


async def everything_the_person_did(identity: httpx.AsyncClient, make_key: MakeKey) -> Family:
    """Sign-up, a duplicate, an account, a login, consent, a child with this guardian, and bad input."""
    response = await identity.post("/v1/members", json=PERSON)
    assert response.status_code == 202, response.text
    member = str(response.json()["member_id"])
    twin = await identity.post("/v1/members", json={**PERSON, "home_library": "oba", "phone": None})
    assert twin.status_code == 202
    account = {"platform": "ebook", "external_id": EXTERNAL_ACCOUNT}
    assert (await identity.post(f"/v1/members/{member}/accounts", json=account)).status_code == 202
    login = {**account, "outcome": "failed", "reason": "bad_credentials"}
    assert (await identity.post("/v1/logins", json=login)).status_code == 202
    consent = await identity.put(f"/v1/members/{member}/consents/email/marketing", json={"granted": True})
    assert consent.status_code == 202
    child = await identity.post("/v1/members", json={**PERSON, "name": "Kind Zwanenburg", "birth_date": "2019-05-01"})
    child_id = str(child.json()["member_id"])
    assert (await identity.put(f"/v1/members/{child_id}/guardian", json={"guardian_id": member})).status_code == 202
    service = {"Authorization": f"Bearer {await make_key('service')}"}
    contact = await identity.get(
        f"/internal/v1/members/{child_id}/contact", params={"medium": "email"}, headers=service
    )
    assert contact.json()["recipient"] == "guardian"

    # Bad input that holds personal data, and a conflict about it: the answers must not echo it.
    bad = await identity.post("/v1/members", json={**PERSON, "email": "Wilhelmina at home", "postcode": "9711 XZZ"})
    assert bad.status_code == 422
    taken = await identity.post(f"/v1/members/{twin.json()['member_id']}/accounts", json=account)
    assert taken.status_code == 409
    for answer in (bad, taken):
        for value in ("Wilhelmina", "9711", EXTERNAL_ACCOUNT):
            assert value not in answer.text
    return Family(member, str(twin.json()["member_id"]), child_id)


async def all_records(settings: IdentitySettings) -> list[str]:
    """Every record on every topic of this test (and its dead letters), as text."""
    texts = []
    for topic in ALL_TOPICS:
        for name in (topic.name, topic.dead_letters):
            for r in await read_to_end(settings.kafka_bootstrap, settings.topic(name)):
                headers = json.dumps([(k, v.decode()) for k, v in r.headers])
                texts.append((r.key or b"").decode() + (r.value or b"").decode() + headers)
    return texts


async def dump_redis(redis: Redis, prefix: str) -> str:
    """Every key under the test's prefix, with its value, as text."""
    out = []
    async for key in redis.scan_iter(match=prefix + "*"):
        kind = await redis.type(key)
        value: Any
        if kind == "hash":
            value = await redis.hgetall(key)
        elif kind == "set":
            value = sorted(await redis.smembers(key))
        elif kind == "zset":
            value = await redis.zrange(key, 0, -1, withscores=True)
        elif kind == "list":
            value = await redis.lrange(key, 0, -1)
        else:
            value = await redis.get(key)
        out.append(f"{key} {value}")
    return "\n".join(out)


async def test_no_event_log_line_or_trace_holds_personal_data(
    identity: httpx.AsyncClient, identity_settings: IdentitySettings, make_key: MakeKey,
    caplog: pytest.LogCaptureFixture, traces: InMemorySpanExporter,
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    traces.clear()
    await everything_the_person_did(identity, make_key)

    events = await all_records(identity_settings)
    assert len(events) >= 8  # the sign-ups, suspicion, link, login, switch, consent, guardian
    assert len(traces.get_finished_spans()) >= 8  # publishing events is traced: the scan sees real spans
    spans = json.dumps([{**dict(s.attributes or {}), "name": s.name} for s in traces.get_finished_spans()], default=str)
    for value in personal_values(identity_settings):
        assert all(value not in text for text in events), f"an event holds {value!r}"
        assert value not in caplog.text, f"a log line holds {value!r}"
        assert value not in spans, f"a span holds {value!r}"


async def test_erasure_leaves_no_trace_of_the_person_in_redis_or_any_topic(
    identity: httpx.AsyncClient, identity_settings: IdentitySettings, make_key: MakeKey
) -> None:
    family = await everything_the_person_did(identity, make_key)
    redis = make_redis(identity_settings)
    try:
        before = await dump_redis(redis, identity_settings.key_prefix)
        assert family.member in before and "'sealed'" in before  # the scan sees the member where they are
        # Sealed with the member's own key: not even a living member's data is in Redis in the clear.
        assert "Wilhelmina" not in before and "w.zwanenburg.quist@example.nl" not in before

        # The twin and the child share data with the person: erase all three, as a family asking would.
        for member in (family.member, family.twin, family.child):
            assert (await identity.delete(f"/v1/members/{member}")).status_code == 202
            assert problem(await identity.get(f"/v1/members/{member}")) == (404, "member does not exist")

        after = await dump_redis(redis, identity_settings.key_prefix)
    finally:
        await redis.aclose()
    for value in personal_values(identity_settings):
        assert value not in after, f"Redis still holds {value!r}"

    records = await all_records(identity_settings)
    assert sum("member.erased.v1" in r for r in records) == 3
    for text in records:
        for value in personal_values(identity_settings):
            assert value not in text
