"""A real browser finds a call, states a reason, plays it, seeks, changes speed and scores
it; the server answers the player's ranged requests and every tag typed in shows as text."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests import audiogen
from tests.helpers import DEFAULT_PASSWORD, Api
from tests.service.recording_factory import COMPANY, metadata, upload

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
XSS = '<script>alert("xss")</script><img src=x onerror=alert(1)>'
REASON = "laatupoikkeama, tiketti 4711"


def note_dialogs(page: Any, dialogs: list[str]) -> None:
    """Every dialog the page opens (an alert a script from the data would raise) is noted
    and dismissed, so that the page goes on."""

    async def dismiss(dialog: Any) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", dismiss)


@asynccontextmanager
async def signed_in(api: Api, username: str) -> AsyncIterator[tuple[Any, list[str]]]:
    """A headless Chromium page at 1280 px, in English, signed in as `username`; also the
    messages of any dialog a page script opened (there should be none)."""
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is missing (apt-get install -y chromium)")
    async_api = pytest.importorskip("playwright.async_api")
    base = str(api.client.make_url("/")).rstrip("/")
    dialogs: list[str] = []
    async with async_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM),
                                                   args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 900},
                                                locale="en-GB")
            page = await context.new_page()
            note_dialogs(page, dialogs)
            await page.goto(base)
            await page.get_by_label("Username").fill(username)
            await page.get_by_label("Password").fill(DEFAULT_PASSWORD)
            await page.get_by_role("button", name="Sign in").click()
            yield page, dialogs
        finally:
            await browser.close()


async def test_find_listen_seek_and_evaluate_a_call(api: Api) -> None:
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is missing (apt-get install -y chromium)")
    async_api = pytest.importorskip("playwright.async_api")
    await api.user("laura.laatu", "quality", [COMPANY])
    token = await api.token("ingest", [COMPANY], name="pbx")
    audio = audiogen.make_audio("wav_pcm", 600.0)
    meta = metadata(agent=XSS, queue="laskutus", external_id="pbx-call-0042",
                    tags=["laskutus", "takaisinsoitto"])
    uploaded = await upload(api.client, token, meta, audio)
    assert uploaded.status == 201, await uploaded.text()
    recording = await uploaded.json()
    base = str(api.client.make_url("/")).rstrip("/")

    audio_responses: list[dict[str, Any]] = []
    dialogs: list[str] = []

    async def note(response: Any) -> None:
        if "/audio" in response.url:
            audio_responses.append({"status": response.status,
                                    "range": await response.request.header_value("range")})

    async with async_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM),
                                                   args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 900},
                                                locale="fi-FI")
            page = await context.new_page()
            page.on("response", note)
            note_dialogs(page, dialogs)

            # Not signed in: the call page sends the browser to the sign-in form.
            await page.goto(f"{base}/recordings/{recording['id']}")
            await page.get_by_role("heading", name="Kirjaudu sisään").wait_for()
            await page.get_by_label("Käyttäjätunnus").fill("laura.laatu")
            await page.get_by_label("Salasana").fill(DEFAULT_PASSWORD)
            await page.get_by_role("button", name="Kirjaudu sisään").click()
            await page.locator("#me-name").wait_for()

            # Search
            await page.get_by_role("link", name="Puhelut").first.click()
            await page.get_by_role("heading", name="Puheluhaku").wait_for()
            await page.get_by_label("Puhelun tunnus").fill("pbx-call-0042")
            await page.get_by_role("button", name="Hae").click()
            rows = page.locator("#results tbody tr")
            await rows.first.wait_for()
            assert await rows.count() == 1
            assert XSS in await rows.first.inner_text()
            assert await page.evaluate(
                "document.documentElement.scrollWidth <= window.innerWidth")
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "search.png"), full_page=True)
            await rows.first.get_by_role("link").click()

            # Call page: the agent name is text, not markup
            await page.locator("#call-agent").wait_for()
            assert await page.locator("#call-agent").inner_text() == XSS
            assert await page.locator("#call-agent img").count() == 0

            # The reason is asked before the first play; an empty one is refused.
            await page.get_by_role("button", name="Kuuntele").click()
            dialog = page.locator("#reason-dialog")
            await dialog.wait_for(state="visible")
            await page.get_by_role("button", name="Jatka").click()
            assert await page.locator("#reason-error").is_visible()
            await page.get_by_label("Syy", exact=True).fill(REASON)
            await page.get_by_role("button", name="Jatka").click()
            await dialog.wait_for(state="hidden")
            await page.wait_for_function(
                "() => document.getElementById('audio').currentTime > 0.5", timeout=15000)

            await page.get_by_label("Nopeus").select_option("1.5")
            assert await page.evaluate("document.getElementById('audio').playbackRate") == 1.5

            # Seek to 50 % with the position slider.
            await page.evaluate(
                "(() => { const s = document.getElementById('seek'); s.value = '500';"
                " s.dispatchEvent(new Event('input')); s.dispatchEvent(new Event('change')); })()")
            half = await page.evaluate("document.getElementById('audio').duration / 2")
            assert 290 < half < 310
            await page.wait_for_function(
                f"() => document.getElementById('audio').currentTime > {half + 0.5}", timeout=15000)
            assert "/ 10:00" in await page.locator("#clock").inner_text()
            # The waveform lane is drawn from the call's peaks: the played half in the
            # accent colour.
            await page.wait_for_function(
                "() => document.getElementById('lanes').dataset.drawn === '1'", timeout=30000)
            inked, played, ahead = await page.evaluate(
                "(() => { const c = document.querySelector('#lanes canvas');"
                " const g = c.getContext('2d');"
                " const d = g.getImageData(0, 0, c.width, c.height).data;"
                " let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;"
                " const at = x => Array.from(g.getImageData(x, c.height / 2, 1, 1).data);"
                " return [n / (c.width * c.height), at(Math.round(c.width * 0.1)),"
                " at(Math.round(c.width * 0.9))]; })()")
            assert inked > 0.05 and played[3] > 0 and ahead[3] > 0
            assert played[:3] != ahead[:3]  # the played part is drawn in the accent colour
            assert await page.locator("#reason-shown").inner_text() == REASON

            # Evaluate on the seeded form with a comment that is markup; every criterion
            # needs a score before the browser submits.
            await page.get_by_role("radiogroup", name="Tervehdys").get_by_label(
                "5", exact=True).check()
            await page.get_by_label("Kommentti").fill(XSS)
            await page.get_by_role("button", name="Tallenna").click()
            assert await page.locator("#evaluations .evaluation").count() == 0
            for criterion, score in (("Tunnistaminen", "4"), ("Ratkaisu", "3"),
                                     ("Kohteliaisuus", "5")):
                await page.get_by_role("radiogroup", name=criterion).get_by_label(
                    score, exact=True).check()
            await page.get_by_role("button", name="Tallenna").click()
            await page.locator("#evaluation-status").filter(has_text="Tallennettu").wait_for()
            assert "Tervehdys: 5/5" in await page.locator("#evaluations .scores").inner_text()
            comment = page.locator("#evaluations .comment")
            assert await comment.inner_text() == XSS
            assert await page.locator("#evaluations img").count() == 0
            assert await page.evaluate(
                "document.documentElement.scrollWidth <= window.innerWidth")
            await page.evaluate("document.getElementById('audio').pause()")
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "replay.png"), full_page=True)

            # After a reload the reason is remembered for the session: no prompt again.
            await page.reload()
            assert await page.locator("#evaluations .comment").inner_text() == XSS
            assert await page.locator("#reason-shown").inner_text() == REASON
            await page.get_by_role("button", name="Kuuntele").click()
            await page.wait_for_function(
                "() => document.getElementById('audio').currentTime > 0.2", timeout=15000)
            assert not await dialog.is_visible()

            # English on request
            await page.get_by_role("link", name="In English").click()
            await page.get_by_role("heading", name="Call details").wait_for()
        finally:
            await browser.close()

    assert dialogs == [], "a script from the data ran"
    ranged = [r for r in audio_responses if r["range"]]
    assert ranged and all(r["status"] == 206 for r in ranged), audio_responses

    conn = await asyncpg.connect(api.superuser_url)
    try:
        windows = await conn.fetch(
            "SELECT reason, requests, ranges FROM recording_replay_windows"
            " WHERE recording_id = $1", recording["id"])
        evaluations = await conn.fetch(
            "SELECT evaluator, form, form_version, scores, comment FROM recording_evaluations"
            " WHERE recording_id = $1", recording["id"])
        replays = await conn.fetchval(
            "SELECT count(*) FROM audit_events WHERE action = 'recording.replay'"
            " AND target_id = $1 AND reason = $2", recording["id"], REASON)
    finally:
        await conn.close()
    # All of the player's requests are grouped under one audit event with their ranges.
    assert [w["reason"] for w in windows] == [REASON]
    assert windows[0]["requests"] >= len(ranged) >= 1
    summary = windows[0]["ranges"]
    # The waveform's peaks are read in the same window.
    assert all(r.startswith("bytes ") or r in ("not-modified", "peaks") for r in summary), \
        summary
    assert "peaks" in summary
    # Seeking past what was buffered made the player ask for the middle of the file.
    starts = [int(r.split()[1].split("-")[0]) for r in summary if r.startswith("bytes ")]
    assert any(start > recording["size_bytes"] * 0.4 for start in starts), summary
    assert replays == 1
    assert [(e["evaluator"], e["form"], e["form_version"], e["comment"])
            for e in evaluations] == [("laura.laatu", "perus", 1, XSS)]
    assert json.loads(evaluations[0]["scores"]) == {
        "greeting": 5, "identification": 4, "solution": 3, "courtesy": 5}


async def test_customer_service_finds_a_customer_and_records_a_prohibition(api: Api) -> None:
    from tests.helpers import bearer
    from tests.service.data_subject_factory import customer, recording_of

    customer_id = await customer(api, [COMPANY], number="7700", name=XSS)
    await recording_of(api, COMPANY, "77000", seconds=2.0)
    ingest = await api.token("ingest", [COMPANY], name="web")
    events = await api.client.post("/api/v1/web-events", headers=bearer(ingest), json=[{
        "ts": "2026-03-02T09:00:00+02:00", "site": "oulunsahkonmyynti.fi", "event": "login",
        "url": "https://oulunsahkonmyynti.fi/oma", "session_id": "s1", "company": COMPANY,
        "customer_number": "77000"}])
    assert (await events.json())["accepted"] == 1
    await api.user("asta.asiakaspalvelu", "customer_service", [COMPANY])

    async with signed_in(api, "asta.asiakaspalvelu") as (page, dialogs):
        await page.get_by_role("link", name="Customers").first.click()
        await page.get_by_label("Customer number").fill("77000")
        await page.get_by_role("button", name="Find").click()
        await page.locator("#lookup-results a").first.click()

        await page.locator("#customer-calls tbody tr").first.wait_for()
        assert await page.locator("#c-name").inner_text() == XSS
        assert (await page.locator("#c-pid").inner_text()).endswith("-****")
        await page.locator("#customer-events tbody tr").first.wait_for()
        assert await page.locator("#customer-events tbody tr").count() == 1
        assert await page.locator("#p-none").is_visible()

        await page.get_by_label("Use").select_option("direct_marketing")
        await page.get_by_label("Channel").select_option("phone")
        await page.get_by_role("button", name="Save").click()
        row = page.locator("#prohibitions tbody tr")
        await row.first.wait_for()
        assert "Direct marketing" in await row.first.inner_text()
        assert await page.evaluate(
            "document.documentElement.scrollWidth <= window.innerWidth")
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "customer.png"), full_page=True)

        await page.get_by_role("button", name="Withdraw: Direct marketing").click()
        await page.locator("#p-none").wait_for(state="visible")
        assert await row.count() == 0

        # The customer asks what is held about them, by a signed letter: customer service
        # takes the request, the DPO answers it by its id.
        await page.get_by_label("Identity verified").select_option("signed_letter")
        await page.get_by_role("button", name="Record the access request").click()
        status = page.locator("#ar-status", has_text="Recorded.")
        await status.wait_for()
        shown = await status.inner_text()
    assert dialogs == []

    conn = await asyncpg.connect(api.superuser_url)
    try:
        history = await conn.fetch(
            "SELECT use, channel, withdrawn_at IS NOT NULL AS withdrawn FROM customer_prohibitions"
            " WHERE customer_id = $1", customer_id)
        taken = await conn.fetch("SELECT id, verified_by, requested_by FROM access_requests"
                                 " WHERE customer_id = $1", customer_id)
    finally:
        await conn.close()
    assert [(h["use"], h["channel"], h["withdrawn"]) for h in history] == [
        ("direct_marketing", "phone", True)]
    assert [(t["verified_by"], t["requested_by"]) for t in taken] == [
        ("signed_letter", "asta.asiakaspalvelu")]
    assert str(taken[0]["id"]) in shown


async def test_an_admin_defines_an_evaluation_form_in_the_browser(api: Api) -> None:
    await api.user("pirjo.paakayttaja", "admin", all_companies=True)

    async with signed_in(api, "pirjo.paakayttaja") as (page, dialogs):
        await page.get_by_role("navigation", name="Main").get_by_role(
            "link", name="Evaluation forms").click()
        await page.get_by_role("heading", name="New form").wait_for()
        await page.locator("#n-name").fill("asiakaskokemus")
        await page.locator("#n-title").fill(f"Customer experience {XSS}")
        for i, (key, label, top) in enumerate((("empathy", XSS, "4"),
                                               ("accuracy", "Accuracy", "10"))):
            await page.locator(f"#key-{i}").fill(key)
            await page.locator(f"#label-{i}").fill(label)
            await page.locator(f"#max-{i}").fill(top)
        await page.get_by_role("button", name="Create the form").click()
        await page.get_by_role("status").filter(
            has_text="The form asiakaskokemus was created.").wait_for()
        row = page.locator('tr[data-form="asiakaskokemus"]')
        assert XSS in await row.inner_text()  # shown as text, not run
        assert "(0–10)" in await row.inner_text()
        assert await page.evaluate(
            "document.documentElement.scrollWidth <= window.innerWidth")
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "forms.png"), full_page=True)
        await row.get_by_role("button", name="Deactivate").click()
        await page.get_by_role("status").filter(has_text="deactivated").wait_for()
        assert "Deactivated" in await page.locator(
            'tr[data-form="asiakaskokemus"]').inner_text()
    assert dialogs == [], "a script from the data ran"
