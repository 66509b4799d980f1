"""A campaign's results against a scripted scenario on the real broker and Redis: what was triggered, sent and
suppressed, and the measured effect (frictions resolved within N days, messaged versus holdout)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from services.notifications.rules import in_holdout
from shared.settings import Settings
from tests.integration.test_notifications_support import campaign, member, notifications, notifications_settings
from tests.support import eventually

pytestmark = pytest.mark.integration


async def test_the_results_of_a_campaign_match_a_scripted_scenario(settings: Settings, admin_key: str) -> None:
    # The scenario replays a month of frictions as if they had arrived live: the freshness limit (what a history
    # loaded later would meet) is set beyond it.
    fresh_for_the_scenario = timedelta(days=60)
    async with notifications(
        notifications_settings(
            settings, notifications_effect_days=14, notifications_freshness_limit=fresh_for_the_scenario
        ),
        admin_key,
    ) as n:
        campaign_id = await n.create(campaign(holdout_percent=50))
        now = n.clock()
        month_ago, two_days_ago = now - timedelta(days=30), now - timedelta(days=2)

        # Five messaged and five held-out members whose frictions are a month old, and one of each from two days
        # ago (their 14 days have not passed: not counted yet, either way).
        pool = iter(member() for _ in range(1000))
        messaged: list[str] = []
        held_out: list[str] = []
        for m in pool:
            group = held_out if in_holdout(campaign_id, m, 50) else messaged
            if len(group) < 6:
                group.append(m)
            if len(messaged) == len(held_out) == 6:
                break
        old = {m: await n.friction(m, detected=month_ago) for m in messaged[:5] + held_out[:5]}
        recent = {m: await n.friction(m, detected=two_days_ago) for m in (messaged[5], held_out[5])}
        # The same friction raised again for a messaged member, from another library: a duplicate.
        await n.friction(messaged[0], detected=month_ago, library="haarlem")
        await n.decided_for(messaged + held_out)

        # Messaged: four resolved within 3 days, one after 20 days. Holdout: two within 3 days, one after 20 days,
        # two never. One recent friction resolves the next day, and still does not count.
        for m in messaged[:4] + held_out[:2]:
            await n.resolution(old[m], month_ago + timedelta(days=3))
        for m in (messaged[4], held_out[2]):
            await n.resolution(old[m], month_ago + timedelta(days=20))
        await n.resolution(recent[messaged[5]], two_days_ago + timedelta(days=1))

        expected_effect = {
            "within_days": 14,
            "messaged": {"frictions": 5, "resolved": 4, "share": 0.8},
            "holdout": {"frictions": 5, "resolved": 2, "share": 0.4},
            "difference": 0.4,
            "too_recent": 2,
        }

        def shares(effect: Any) -> tuple[object, object, object]:
            return effect["messaged"]["share"], effect["holdout"]["share"], effect["difference"]

        async def settled() -> dict[str, object] | None:
            # Every resolution read, the late ones too (they are on other partitions than the early ones, so the
            # 14-day figures alone can settle before them).
            results = await n.results(campaign_id)
            wider = (await n.results(campaign_id, within_days=25))["effect"]
            return results if results["effect"] == expected_effect and shares(wider) == (1.0, 0.6, 0.4) else None

        results = await eventually(settled)
        assert (results["triggered"], results["sent"], results["failed"], results["waiting"]) == (13, 6, 0, 0)
        assert results["suppressed"] == {"duplicate": 1, "holdout": 6}
        # Within 25 days, the resolutions after 20 days count as well.
        wider = (await n.results(campaign_id, within_days=25))["effect"]
        assert shares(wider) == (1.0, 0.6, 0.4)
        # Within 30 days, a month-old friction's window has not closed yet: nothing is counted either way.
        widest = (await n.results(campaign_id, within_days=30))["effect"]
        assert (widest["messaged"]["frictions"], widest["holdout"]["frictions"], widest["too_recent"]) == (0, 0, 12)
