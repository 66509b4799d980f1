"""Each service's `GET /metrics` (Prometheus text) moves while a sign-up becomes a friction and a message, on the
real broker and Redis."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.settings import Settings
from tests.integration.test_walking_skeleton import Platform, platform_fixture  # noqa: F401  (the fixture `platform`)
from tests.support import eventually

pytestmark = pytest.mark.integration

SIGNED_UP = "nl.bibliotheek.member.signed_up.v1"
DETECTED = "nl.bibliotheek.friction.detected.v1"
SENT = "nl.bibliotheek.message.sent.v1"
RULE = "online-signup-not-activated"


@dataclass
class Scrape:
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    def value(self, name: str, **labels: str) -> float:
        """The sample `name` with at least these labels, summed over the rest (0 when absent)."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and wanted <= ls)

    def labels(self, name: str) -> list[dict[str, str]]:
        return [dict(ls) for (n, ls) in self.samples if n == name]


async def scrape(client: httpx.AsyncClient) -> Scrape:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    return Scrape(samples)


async def test_each_service_s_metrics_move_as_a_sign_up_becomes_a_friction_and_a_message(
    platform: Platform, settings: Settings
) -> None:
    members, frictions, deliveries = (
        settings.topic(t) for t in ("identity.members.v1", "journey.frictions.v1", "notifications.deliveries.v1")
    )
    before = [await scrape(c) for c in (platform.identity, platform.journey, platform.notifications)]

    member = await platform.sign_up()
    await eventually(lambda: platform.inbox(member))

    async def settled() -> Scrape | None:
        # The inbox write comes just before message.sent is acknowledged and counted.
        found = await scrape(platform.notifications)
        return found if found.value("klantreis_messages_total", outcome="sent") >= 1 else None

    notifications = await eventually(settled)
    identity, journey = await scrape(platform.identity), await scrape(platform.journey)

    produced = "klantreis_events_produced_total"
    assert identity.value(produced, topic=members, type=SIGNED_UP) == 1 + before[0].value(
        produced, topic=members, type=SIGNED_UP
    )
    assert identity.value("http_server_duration_milliseconds_count", http_method="POST") >= 1

    assert journey.value("klantreis_events_consumed_total", topic=members, type=SIGNED_UP) == 1
    assert journey.value("klantreis_frictions_detected_total", rule=RULE) == 1
    assert journey.value(produced, topic=frictions, type=DETECTED) == 1
    assert journey.value("klantreis_handler_duration_seconds_count", group=settings.group("journey")) >= 1
    assert before[1].value("klantreis_frictions_detected_total", rule=RULE) == 0

    assert notifications.value("klantreis_events_consumed_total", topic=frictions, type=DETECTED) == 1
    assert notifications.value("klantreis_messages_total", outcome="sent") == 1
    assert notifications.value(produced, topic=deliveries, type=SENT) == 1
    # Lag per partition of every group this process consumes in; all caught up now.
    lag = notifications.labels("klantreis_consumer_lag")
    assert {(row["group"], row["topic"]) for row in lag} >= {(settings.group("notifications"), frictions)}
    assert notifications.value("klantreis_consumer_lag", group=settings.group("notifications")) == 0
