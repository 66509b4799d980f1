"""The catalogue pages in a real browser: browse propositions, find who offers what by postcode area, and a
library's key seeing its own library only."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, Page, expect

from tests.browser.conftest import PHONE, Platform, horizontal_overflow, screenshot, sign_in, unlabelled_fields

pytestmark = [pytest.mark.browser, pytest.mark.integration]


async def test_a_parent_in_1034_finds_boekstart_at_the_oba_by_postcode_area(seeded: Platform, page: Page) -> None:
    await sign_in(page, seeded.urls["propositions"], await seeded.key("analyst"))
    await expect(page.get_by_role("heading", level=1)).to_have_text("Catalogus")

    await page.get_by_label("Postcodegebied").fill("1034")
    await page.get_by_label("Propositie", exact=True).select_option(label="BoekStart")
    await page.get_by_role("button", name="Tonen").click()

    await expect(page.get_by_role("status")).to_have_text(
        "Postcodegebied 1034 valt onder OBA Openbare Bibliotheek Amsterdam."
    )
    offerings = page.get_by_role("table", name="Aanbod")
    await expect(offerings.locator("tbody tr")).to_have_count(1)
    row = offerings.locator("tbody tr").first
    await expect(row).to_contain_text("BoekStart in de OBA")
    await expect(row).to_contain_text("OBA Banne")
    assert "postcode_area=1034" in page.url
    await screenshot(page, "catalogue-postcode-1034")


async def test_a_proposition_shows_which_libraries_offer_it_and_where(seeded: Platform, page: Page) -> None:
    await sign_in(page, seeded.urls["propositions"], await seeded.key("marketing"))

    await page.get_by_role("table", name="Proposities").get_by_role("link", name="BoekStart", exact=True).click()

    await expect(page.get_by_role("heading", level=1)).to_have_text("BoekStart")
    where = page.get_by_role("table", name="Waar wordt het aangeboden?")
    await expect(where).to_contain_text("OBA Openbare Bibliotheek Amsterdam")
    await expect(where).to_contain_text("Bibliotheek Rotterdam")
    await expect(where.get_by_role("row", name="BoekStart in de OBA")).to_contain_text("OBA Oosterdok")
    await screenshot(page, "catalogue-proposition")


async def test_a_library_key_sees_only_its_own_library_offerings(seeded: Platform, page: Page) -> None:
    await sign_in(page, seeded.urls["propositions"], await seeded.key("marketing", library="rotterdam"))

    offerings = page.get_by_role("table", name="Aanbod")
    libraries = set(await offerings.locator("tbody tr td:nth-child(2)").all_inner_texts())
    assert libraries == {"Bibliotheek Rotterdam"}

    await page.get_by_label("Postcodegebied").fill("1034")
    await page.get_by_role("button", name="Tonen").click()
    await expect(page.get_by_role("status")).to_have_text("Postcodegebied 1034 valt niet onder rotterdam.")
    await expect(page.get_by_text("Niets gevonden met deze filters.")).to_be_visible()

    await page.goto(f"{seeded.urls['propositions']}/pages/catalogue/boekstart")
    where = page.get_by_role("table", name="Waar wordt het aangeboden? (rotterdam)")
    await expect(where.locator("tbody tr")).to_have_count(1)
    await expect(where).not_to_contain_text("OBA")


async def test_a_wrong_postcode_area_is_named_at_its_field(seeded: Platform, page: Page) -> None:
    await sign_in(page, seeded.urls["propositions"], await seeded.key("analyst"))

    await page.get_by_label("Postcodegebied").fill("12")
    await page.get_by_role("button", name="Tonen").click()

    field = page.get_by_label("Postcodegebied")
    await expect(field).to_have_attribute("aria-invalid", "true")
    await expect(page.get_by_text("Vul vier cijfers in, bijvoorbeeld 1034.")).to_be_visible()


async def test_the_catalogue_fits_a_phone_and_labels_every_field(seeded: Platform, browser: Browser) -> None:
    context = await browser.new_context(viewport=PHONE, locale="nl-NL")
    try:
        page = await context.new_page()
        await sign_in(page, seeded.urls["propositions"], await seeded.key("analyst"))
        await page.goto(f"{seeded.urls['propositions']}/pages/catalogue?postcode_area=3011")

        assert await horizontal_overflow(page) == 0
        assert await unlabelled_fields(page) == []
        await screenshot(page, "catalogue-phone")
        await page.goto(f"{seeded.urls['propositions']}/pages/catalogue/digitaalhuis")
        assert await horizontal_overflow(page) == 0
    finally:
        await context.close()
