"""The access letter as a person sees it on paper: rendered with pdftoppm (Debian
poppler-utils) to PNG artifacts under tests/artifacts/ for people to look at."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from tests.helpers import Api, bearer
from tests.service.data_subject_factory import A, B, C, customer, recording_of, report

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


async def test_access_letter_renders_to_a_non_blank_png(api: Api) -> None:
    pdftoppm = shutil.which("pdftoppm")
    if pdftoppm is None:
        pytest.skip("pdftoppm is missing (Debian package poppler-utils)")
    customer_id = await customer(api, [A, B, C])
    await recording_of(api, A, "50010")
    await recording_of(api, C, "50012", kind="mp3")
    service = await api.token("customer_service", [A])
    await api.client.post(f"/api/v1/customers/{customer_id}/prohibitions",
                          json={"use": "direct_marketing", "channel": "post"},
                          headers=bearer(service))
    dpo = await api.token("dpo", all_companies=True)
    await api.client.post("/api/v1/disclosures", headers=bearer(dpo), json={
        "recipient": "Tutkimus Oy", "recipient_country": "FI", "purpose": "market_research",
        "legal_basis": "rekisteriseloste, kohta 6", "company": A, "fields": ["name", "address"],
    })
    response = await report(api, dpo, customer_id, suffix=".pdf",
                            verified_by="strong_electronic_id")
    assert response.status == 200, await response.text()

    ARTIFACTS.mkdir(exist_ok=True)
    pdf = ARTIFACTS / "access-letter.pdf"
    pdf.write_bytes(await response.read())
    for old in ARTIFACTS.glob("access-letter-*.png"):
        old.unlink()
    subprocess.run([pdftoppm, "-png", "-r", "90", str(pdf), str(ARTIFACTS / "access-letter")],
                   check=True, timeout=60)
    pages = sorted(ARTIFACTS.glob("access-letter-*.png"))
    assert pages, "pdftoppm wrote no page"
    with Image.open(pages[0]) as image:
        grey = image.convert("L")
        width, height = grey.size
        assert width > 600 and height > 900  # A4 portrait at 90 dpi
        histogram = grey.histogram()
        inked = sum(histogram[:200])
        assert inked > 0.01 * width * height, "the first page is (nearly) blank"
