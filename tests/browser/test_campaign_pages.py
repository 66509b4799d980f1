"""The campaign pages in a real browser: write a campaign with a live preview, save it, see the rendered text,
activate it; an archived one restored; template errors named at their field; a library's key sees its own library's
campaigns only."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import Browser, Page, expect

from tests.browser.conftest import PHONE, Platform, horizontal_overflow, screenshot, sign_in, unlabelled_fields

pytestmark = [pytest.mark.browser, pytest.mark.integration]

OBA = "OBA Openbare Bibliotheek Amsterdam"


async def write_campaign(page: Page, name: str, body: str) -> None:
    await page.get_by_role("link", name="Nieuwe campagne").click()
    await page.get_by_label("Naam", exact=True).fill(name)
    await page.get_by_label("Frictieregels").fill("desk-signup-never-online")
    in_app = page.get_by_role("group", name="In de app · Nederlands")
    await in_app.get_by_label("Titel").fill("Welkom online")
    await in_app.get_by_label("Tekst").fill(body)
    await page.get_by_label("Voorbeeld voor bibliotheek").fill("oba")


async def test_a_new_campaign_previews_live_saves_as_draft_and_activates(seeded: Platform, page: Page) -> None:
    key = await seeded.key("marketing")
    await sign_in(page, seeded.urls["notifications"], key)
    await expect(page.get_by_role("heading", level=1)).to_have_text("Campagnes")

    await write_campaign(page, "Welkom online", "Log in op de website van {{ library.name }}: {{ links.app }}")

    # The live preview renders the unsaved text for a member of the OBA, without a page load.
    preview = page.locator("#preview")
    await expect(preview).to_contain_text(
        f"Log in op de website van {OBA}: https://www.bibliotheek.nl/app", timeout=30_000
    )
    await expect(preview).to_contain_text("Welkom online")
    await screenshot(page, "campaign-editor")

    await page.get_by_role("button", name="Opslaan").click()
    await expect(page.get_by_role("status")).to_have_text("De campagne is opgeslagen als concept.")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Welkom online")
    await expect(page.locator(".status")).to_have_text("concept")
    campaign_id = page.url.rsplit("/", 1)[-1].split("?")[0]

    # The saved campaign's preview, for the library typed in the sample field.
    await page.get_by_label("Voorbeeld voor bibliotheek").fill("oba")
    await page.get_by_role("button", name="Voorbeeld bijwerken").click()
    message = page.get_by_role("article", name="In de app · nl")
    await expect(message).to_contain_text(f"Log in op de website van {OBA}")

    await page.get_by_role("button", name="Activeren").click()
    await expect(page.get_by_role("status")).to_have_text("De campagne is actief.")
    await expect(page.locator(".status")).to_have_text("actief")
    await screenshot(page, "campaign")

    async with seeded.client("notifications", key) as api:
        stored = (await api.get(f"/v1/campaigns/{campaign_id}")).json()
    assert (stored["status"], stored["version"], stored["name"]) == ("active", 1, "Welkom online")
    assert stored["messages"]["in_app"]["nl"]["body"] == "Log in op de website van {{ library.name }}: {{ links.app }}"

    await page.get_by_role("link", name="Campagnes").first.click()
    row = page.get_by_role("row", name=re.compile("Welkom online"))
    await expect(row).to_contain_text("actief")
    await expect(row).to_contain_text("desk-signup-never-online")
    await screenshot(page, "campaigns")


async def test_a_template_error_is_named_at_its_field_and_nothing_is_saved(seeded: Platform, page: Page) -> None:
    key = await seeded.key("marketing")
    await sign_in(page, seeded.urls["notifications"], key)
    await write_campaign(page, "Met een tikfout", "Kom langs bij {{ libary.name }}")

    await expect(page.locator("#preview")).to_contain_text("unknown placeholder 'libary'", timeout=30_000)
    await page.get_by_role("button", name="Opslaan").click()

    body = page.get_by_role("group", name="In de app · Nederlands").get_by_label("Tekst")
    await expect(body).to_have_attribute("aria-invalid", "true")
    await expect(body).to_have_value("Kom langs bij {{ libary.name }}")  # what was typed stays
    await expect(page.get_by_role("alert")).to_contain_text("unknown placeholder 'libary'")
    async with seeded.client("notifications", key) as api:
        names = [c["name"] for c in (await api.get("/v1/campaigns")).json()["campaigns"]]
    assert "Met een tikfout" not in names


async def test_an_archived_campaign_is_restored_paused_from_its_page(seeded: Platform, page: Page) -> None:
    key = await seeded.key("marketing")
    await sign_in(page, seeded.urls["notifications"], key)
    await write_campaign(page, "Per ongeluk gearchiveerd", "Kom langs bij {{ library.name }}")
    await page.get_by_role("button", name="Opslaan").click()
    await expect(page.locator(".status")).to_have_text("concept")
    campaign_id = page.url.rsplit("/", 1)[-1].split("?")[0]

    await page.get_by_role("button", name="Archiveren").click()
    await expect(page.get_by_role("status")).to_have_text("De campagne is gearchiveerd.")
    await expect(page.get_by_role("button", name="Activeren")).to_have_count(0)  # archived: only a restore
    await page.get_by_role("button", name="Herstellen").click()
    await expect(page.get_by_role("status")).to_contain_text("De campagne is hersteld en gepauzeerd")
    await expect(page.locator(".status")).to_have_text("gepauzeerd")
    await expect(page.get_by_role("button", name="Herstellen")).to_have_count(0)
    await expect(page.get_by_role("button", name="Activeren")).to_have_count(1)  # sends again once activated

    async with seeded.client("notifications", key) as api:
        stored = (await api.get(f"/v1/campaigns/{campaign_id}")).json()
    assert stored["status"] == "paused"


async def test_a_library_key_manages_its_own_library_campaigns_only(seeded: Platform, page: Page) -> None:
    admin = await seeded.key("admin")
    async with seeded.client("notifications", admin) as api:
        rotterdam = {
            "name": "Rotterdam leest",
            "library": "rotterdam",
            "purpose": "service",
            "trigger": {"friction_rules": ["reservation-not-collected"]},
            "channels": ["in_app"],
            "messages": {"in_app": {"nl": {"title": "Je boek ligt klaar", "body": "Haal het op."}}},
        }
        assert (await api.post("/v1/campaigns", json=rotterdam)).status_code == 201

    await sign_in(page, seeded.urls["notifications"], await seeded.key("marketing", library="oba"))
    await expect(page.get_by_role("table", name="Campagnes")).not_to_contain_text("Rotterdam leest")

    await page.get_by_role("link", name="Nieuwe campagne").click()
    library = page.get_by_label("Bibliotheek van de campagne")
    await expect(library).to_have_value("oba")
    await expect(library).to_have_attribute("readonly", "")


async def test_the_campaign_pages_fit_a_phone_and_label_every_field(seeded: Platform, browser: Browser) -> None:
    context = await browser.new_context(viewport=PHONE, locale="nl-NL")
    try:
        page = await context.new_page()
        await sign_in(page, seeded.urls["notifications"], await seeded.key("marketing"))
        assert await horizontal_overflow(page) == 0
        await page.get_by_role("link", name="Nieuwe campagne").click()
        assert await horizontal_overflow(page) == 0
        assert await unlabelled_fields(page) == []
        await page.goto(f"{seeded.urls['notifications']}/pages/campaigns/activate-your-card")
        assert await horizontal_overflow(page) == 0
        await screenshot(page, "campaign-phone")
    finally:
        await context.close()
