"""The per-channel player in a real browser: two lanes from the peaks, solo through the Web
Audio graph, skip-silence, a deep link, an annotation as a marker, no horizontal scroll at
1280 px and at 200 % zoom, and an axe-core scan without serious or critical findings."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests import audiogen
from tests.e2e.test_browser_replay import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS
from tests.helpers import DEFAULT_PASSWORD, Api
from tests.service.recording_factory import COMPANY, analysed, metadata, upload

pytestmark = pytest.mark.e2e
REASON = "laadunvarmistus"


def _axe_source() -> str:
    """axe-core's browser bundle as the PyPI package axe-playwright-python ships it."""
    try:
        import axe_playwright_python
    except ImportError:
        if os.environ.get("TALLENNE_REQUIRE_E2E") == "1":
            raise
        pytest.skip("axe-core is missing (pip install axe-playwright-python)")
    return (Path(axe_playwright_python.__file__).parent / "axe.min.js").read_text()


async def _page(playwright: Any, base: str, username: str, *, scale: float = 1) -> Any:
    browser = await playwright.chromium.launch(executable_path=str(CHROMIUM),
                                               args=CHROMIUM_ARGS)
    context = await browser.new_context(viewport={"width": 1280, "height": 900},
                                        device_scale_factor=scale, locale="en-GB")
    page = await context.new_page()
    await page.goto(base)
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(DEFAULT_PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.locator("#me-name").wait_for()
    return browser, page


async def _give_reason(page: Any) -> None:
    await page.get_by_role("button", name="Listen").click()
    await page.locator("#reason-dialog").wait_for(state="visible")
    await page.get_by_label("Reason", exact=True).fill(REASON)
    await page.get_by_role("button", name="Continue").click()
    await page.locator("#reason-dialog").wait_for(state="hidden")


async def test_two_lanes_solo_skip_silence_deep_link_and_a_marker(api: Api) -> None:
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is missing (apt-get install -y chromium)")
    async_api = pytest.importorskip("playwright.async_api")
    axe = _axe_source()
    await api.user("kaisa.laatu", "quality", [COMPANY])
    token = await api.token("ingest", [COMPANY], name="pbx")
    uploaded = await upload(api.client, token,
                            metadata(channel_roles=["agent", "customer"]),
                            audiogen.make_call("wav_pcm", "faulty"))
    assert uploaded.status == 201, await uploaded.text()
    recording = await uploaded.json()
    reader = await api.token("quality", [COMPANY], name="qa")
    assert (await analysed(api.client, reader, recording["id"]))["analysis"] is not None
    base = str(api.client.make_url("/")).rstrip("/")
    url = f"{base}/recordings/{recording['id']}"
    ARTIFACTS.mkdir(exist_ok=True)

    async with async_api.async_playwright() as playwright:
        browser, page = await _page(playwright, base, "kaisa.laatu")
        try:
            await page.goto(url)
            await _give_reason(page)
            await page.wait_for_function(
                "() => document.getElementById('lanes').dataset.drawn === '2'", timeout=20000)
            labels = await page.locator(".lane-label").all_inner_texts()
            assert labels == ["Agent", "Customer"]
            inked = await page.evaluate(
                "Array.from(document.querySelectorAll('#lanes canvas')).map(c => {"
                " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
                " let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;"
                " return n; })")
            assert len(inked) == 2 and all(n > 500 for n in inked)

            # Solo the right channel: the Web Audio graph passes it alone.
            await page.locator(".lane[data-channel='1'] .lane-solo").click()
            gains = await page.evaluate(
                "window.tallennePlayer.gains.map(g => g.gain.value)")
            assert gains == [0, 1]
            assert await page.locator(".lane[data-channel='1'] .lane-solo").get_attribute(
                "aria-pressed") == "true"
            await page.locator(".lane[data-channel='1'] .lane-solo").click()
            assert await page.evaluate(
                "window.tallennePlayer.gains.map(g => g.gain.value)") == [1, 1]

            # Skip-silence jumps over 20-26 s (the end of the call).
            silences = json.loads(await page.locator("#lanes").get_attribute(
                "data-silences"))
            assert any(a <= 20.3 and b >= 25.9 for a, b in silences)
            await page.get_by_label("Skip silences over 2 s").check()
            await page.evaluate("(() => { const a = document.getElementById('audio');"
                                " a.currentTime = 19.5; a.play(); })()")
            await page.wait_for_function(
                "() => { const a = document.getElementById('audio');"
                " return a.ended || a.currentTime >= 25.7; }", timeout=15000)

            # An annotation at 5 s shows in the list and as a marker on the lanes.
            await page.evaluate("(() => { const a = document.getElementById('audio');"
                                " a.pause(); a.currentTime = 5; })()")
            await page.get_by_label("Note", exact=True).fill("tervehdys puuttuu")
            await page.get_by_role("button", name="Add a note here").click()
            await page.locator("#annotations li").filter(has_text="tervehdys puuttuu").wait_for()
            await page.wait_for_function(
                "() => document.getElementById('lanes').dataset.markers === '1'")
            marker = await page.evaluate(
                "(() => { const c = document.querySelector('#lanes canvas');"
                " const x = Math.round(5 / 26 * c.width);"
                " return Array.from(c.getContext('2d').getImageData(x, 1, 1, 1).data); })()")
            assert marker[0] > 150 and marker[3] > 0
            # The shortcuts are listed on the page.
            assert "space" in await page.locator(".shortcuts").inner_text()
            assert await page.evaluate(
                "document.documentElement.scrollWidth <= window.innerWidth")
            await page.screenshot(path=str(ARTIFACTS / "player.png"), full_page=True)

            # Evaluated through the debugging protocol: the page's CSP admits no inline script.
            await page.evaluate(axe + "\n;undefined")
            found = await page.evaluate(
                "axe.run(document, {resultTypes: ['violations']}).then(r => r.violations"
                ".filter(v => v.impact === 'serious' || v.impact === 'critical')"
                ".map(v => v.id + ': ' + v.nodes.map(n => n.target.join(' ')).join(', ')))")
            assert found == []

            # A deep link starts there once the reason is given.
            await page.goto(url + "#t=12.5")
            await page.evaluate("sessionStorage.clear()")
            await page.reload()
            await _give_reason(page)
            await page.wait_for_function(
                "() => document.getElementById('audio').currentTime >= 12.5", timeout=15000)
            assert await page.evaluate("document.getElementById('audio').currentTime") < 16
        finally:
            await browser.close()

        # 200 % zoom: no horizontal scroll either.
        browser, page = await _page(playwright, base, "kaisa.laatu", scale=2)
        try:
            await page.set_viewport_size({"width": 640, "height": 450})
            await page.goto(url)
            await page.locator("#player").wait_for()
            assert await page.evaluate(
                "document.documentElement.scrollWidth <= window.innerWidth")
            await page.screenshot(path=str(ARTIFACTS / "player-zoom-200.png"), full_page=True)
        finally:
            await browser.close()
