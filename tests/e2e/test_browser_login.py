"""A real browser signs in through the web UI, sees who it is, and signs out again."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import DEFAULT_PASSWORD, Api

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]


async def test_sign_in_see_who_you_are_and_sign_out(api: Api) -> None:
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is missing (apt-get install -y chromium)")
    async_api = pytest.importorskip("playwright.async_api")
    await api.user("aino.virtanen", "quality", ["tenergia", "kemin-energia"])
    base = str(api.client.make_url("/"))

    async with async_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM),
                                                   args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            await page.goto(base)
            assert await page.get_by_role("heading", name="Sign in").is_visible()
            assert "aino" not in (await page.content())

            await page.get_by_label("Username").fill("aino.virtanen")
            await page.get_by_label("Password").fill("not the password at all")
            await page.get_by_role("button", name="Sign in").click()
            await page.get_by_role("alert").filter(has_text="Wrong username or password").wait_for()

            await page.get_by_label("Password").fill(DEFAULT_PASSWORD)
            await page.get_by_role("button", name="Sign in").click()
            await page.locator("#me-name").wait_for()
            assert (await page.locator("#me-name").inner_text()) == "aino.virtanen"
            assert (await page.locator("#me-role").inner_text()) == "quality"
            companies = await page.locator("#me-companies").inner_text()
            assert "tenergia" in companies and "kemin-energia" in companies
            assert await page.evaluate("sessionStorage.getItem('tallenne.csrf')")
            cookies = await page.context.cookies()
            session = [c for c in cookies if c["name"] == "tallenne_session"]
            assert session and session[0]["httpOnly"] and session[0]["sameSite"] == "Strict"
            assert await page.evaluate("document.cookie") == ""

            await page.get_by_role("button", name="Sign out").click()
            await page.get_by_role("heading", name="Sign in").wait_for()
            assert "aino.virtanen" not in (await page.content())
            await page.reload()
            assert await page.get_by_role("heading", name="Sign in").is_visible()
        finally:
            await browser.close()
