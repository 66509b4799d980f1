"""Signing in with an API key in a real browser: the key stays on the server (an HttpOnly, SameSite=Strict session
cookie, never in a URL or a page), roles decide which pages show, one sign-in serves every service, the language
switch is kept in the session, sign-out ends it, and a form post without the session's token is refused."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.async_api import BrowserContext, Page, expect

from tests.browser.conftest import Platform, screenshot, sign_in, unlabelled_fields

pytestmark = [pytest.mark.browser, pytest.mark.integration]


async def test_an_unknown_key_is_refused_without_being_echoed(platform: Platform, page: Page) -> None:
    await page.goto(f"{platform.urls['propositions']}/pages/sign-in")
    assert await unlabelled_fields(page) == []
    await page.get_by_label("API-sleutel").fill("kr_000000000000_not-a-real-secret")
    await page.get_by_role("button", name="Aanmelden").click()

    await expect(page.get_by_role("alert")).to_have_text("Deze sleutel is onbekend of ingetrokken.")
    assert "not-a-real-secret" not in await page.content()
    await expect(page.get_by_label("API-sleutel")).to_have_value("")
    await screenshot(page, "sign-in")


async def test_the_key_stays_on_the_server_behind_an_httponly_strict_cookie(
    platform: Platform, context: BrowserContext, page: Page
) -> None:
    key = await platform.key("analyst", "marketing")
    await sign_in(page, platform.urls["analytics"], key)
    await expect(page.get_by_role("heading", level=1)).to_have_text("Frictiedashboard")

    [cookie] = await context.cookies()
    assert cookie["name"] == "klantreis_session"
    assert (cookie["httpOnly"], cookie["sameSite"]) == (True, "Strict")
    assert key not in cookie["value"] and key not in page.url and key not in await page.content()
    assert await page.evaluate("document.cookie") == ""  # scripts cannot read it


async def test_one_sign_in_serves_every_service_and_roles_decide_the_menu(platform: Platform, page: Page) -> None:
    await sign_in(page, platform.urls["propositions"], await platform.key("analyst"))
    menu = page.get_by_role("navigation", name="Hoofdmenu")
    await expect(menu.get_by_role("link")).to_have_text(["Frictiedashboard", "Catalogus"])

    await menu.get_by_role("link", name="Frictiedashboard").click()  # another service, another port
    await expect(page.get_by_role("heading", level=1)).to_have_text("Frictiedashboard")
    assert page.url.startswith(platform.urls["analytics"])

    await page.goto(f"{platform.urls['notifications']}/pages/campaigns")
    await expect(page.get_by_role("alert")).to_have_text("Je sleutel heeft niet de rol voor Campagnes.")


async def test_the_language_switch_is_kept_in_the_session_across_services(platform: Platform, page: Page) -> None:
    await sign_in(page, platform.urls["propositions"], await platform.key("analyst"))
    await page.get_by_role("button", name="English").click()

    await expect(page.get_by_role("heading", level=1)).to_have_text("Catalogue")
    await expect(page.locator("html")).to_have_attribute("lang", "en")
    await page.get_by_role("navigation", name="Main menu").get_by_role("link", name="Friction dashboard").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Friction dashboard")
    await expect(page.get_by_label("Friction rule")).to_be_visible()

    await page.get_by_role("button", name="Nederlands").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Frictiedashboard")


async def test_sign_out_ends_the_session_everywhere(platform: Platform, context: BrowserContext, page: Page) -> None:
    await sign_in(page, platform.urls["analytics"], await platform.key("analyst"))
    [before] = await context.cookies()

    await page.get_by_role("button", name="Afmelden").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Aanmelden")
    await page.goto(f"{platform.urls['propositions']}/pages/catalogue")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Aanmelden")

    # The old session id is worth nothing now, whoever holds it.
    async with httpx.AsyncClient(base_url=platform.urls["analytics"], cookies={before["name"]: before["value"]}) as old:
        assert (await old.get("/pages/dashboard")).status_code == 303


async def test_a_form_post_without_the_session_token_is_refused(
    platform: Platform, context: BrowserContext, page: Page
) -> None:
    await sign_in(page, platform.urls["notifications"], await platform.key("marketing"))
    [cookie] = await context.cookies()
    async with httpx.AsyncClient(
        base_url=platform.urls["notifications"], cookies={cookie["name"]: cookie["value"]}
    ) as client:
        forged = await client.post("/pages/campaigns/activate-your-card/pause", data={"csrf": "guessed"})
        assert forged.status_code == 403
        assert "Het formulier is verlopen" in forged.text
        campaign = await client.get("/pages/campaigns/activate-your-card")
    assert re.search(r'class="status status-active"', campaign.text)
