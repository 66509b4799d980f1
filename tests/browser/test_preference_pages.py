"""The member's preference centre in a real browser, with the keyboard only: every control labelled, the page in
the language asked for, a box ticked with the space bar, the language chosen with the arrow keys, the form sent
with Enter on its button; identity has the change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from playwright.async_api import Page, expect

from services.notifications.links import sign
from services.notifications.settings import NotificationsSettings
from services.propositions.seed import load_seed
from tests.browser.conftest import Platform, screenshot, unlabelled_fields
from tests.support import eventually

pytestmark = [pytest.mark.browser, pytest.mark.integration]


async def focused_id(page: Page) -> str:
    found: str = await page.evaluate("document.activeElement && document.activeElement.id || ''")
    return found


async def tab_to(page: Page, element_id: str) -> None:
    for _ in range(20):
        await page.keyboard.press("Tab")
        if await focused_id(page) == element_id:
            return
    raise AssertionError(f"#{element_id} is not reachable with Tab")


async def test_a_member_changes_consent_and_language_with_the_keyboard_alone(platform: Platform, page: Page) -> None:
    key = await platform.key("admin")
    async with platform.client("propositions", key) as catalogue:
        await load_seed(catalogue)  # identity learns the libraries from the catalogue topic
    admin = platform.client("identity", key)
    async with admin:

        async def signed_up() -> str | None:
            answer = await admin.post(
                "/v1/members",
                json={"name": "Fatima el Amrani", "email": "fatima@example.nl", "birth_date": "1988-02-03",
                      "postcode": "1034 AB", "home_library": "oba"},
                headers={"Idempotency-Key": "browser-preferences-fatima"},
            )  # fmt: skip
            return str(answer.json()["member_id"]) if answer.status_code == 202 else None

        member = await eventually(signed_up, within=30)
        secret = NotificationsSettings().notifications_link_secret.get_secret_value()  # the development secret
        token = sign(member, datetime.now(UTC) + timedelta(days=1), secret)

        await page.goto(f"{platform.urls['notifications']}/preferences/{token}?lang=en")
        await expect(page.locator("html")).to_have_attribute("lang", "en")
        await expect(page.get_by_role("heading", level=1)).to_have_text("Your preferences")
        assert await unlabelled_fields(page) == []
        news = page.get_by_role("group", name="News, tips and offers")
        await expect(news.get_by_label("E-mail")).not_to_be_checked()

        await tab_to(page, "marketing-email")
        await page.keyboard.press("Space")
        await expect(news.get_by_label("E-mail")).to_be_checked()
        await tab_to(page, "language")
        await page.keyboard.press("ArrowDown")  # Nederlands → English
        await expect(page.get_by_label("Language of your messages")).to_have_value("en")
        await tab_to(page, "save")
        await page.keyboard.press("Enter")  # sends the form

        await expect(page.get_by_role("status")).to_have_text("Your preferences have been saved.")
        await screenshot(page, "preferences-saved")

        async def changed() -> bool:
            answer = (await admin.get(f"/v1/members/{member}")).json()
            return bool(answer["consents"].get("email:marketing") == "granted" and answer["language"] == "en")

        await eventually(changed, within=15)
