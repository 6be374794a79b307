"""`tallenne export`: the command runs its own job against the service's database and S3,
shows progress on stderr and leaves a verifiable zip in the directory."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import zipfile
from pathlib import Path

from service.settings import Settings
from tests.helpers import Api, settings_env
from tests.service.export_factory import ingest
from tests.service.recording_factory import COMPANY, OTHER_COMPANY

ROOT = Path(__file__).resolve().parents[2]


async def test_cli_export_writes_a_zip_whose_sums_match_with_progress_on_stderr(
        api: Api, settings: Settings, tmp_path: Path) -> None:
    made = await ingest(api, COMPANY, 2, caller="040 765 4321")
    await ingest(api, COMPANY, 1, caller="+358501112223")  # another caller: left out
    await ingest(api, OTHER_COMPANY, 1, tone=800.0)
    env = {**os.environ, **settings_env(settings)}
    done = await asyncio.to_thread(
        subprocess.run,
        [str(ROOT / ".venv/bin/tallenne"), "export", "--company", COMPANY,
         "--phone", "+358407654321", "--reason",
         "arkistointi", "--format", "zip", str(tmp_path / "out")],
        env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert (summary["state"], summary["total"], summary["done"]) == ("done", 2, 2)
    assert "export [" in done.stderr and "(100%)" in done.stderr
    archive = zipfile.ZipFile(summary["file"])
    for line in archive.read("SHA256SUMS").decode().splitlines():
        digest, name = line.split("  ", 1)
        assert hashlib.sha256(archive.read(name)).hexdigest() == digest
    audio = [n for n in archive.namelist() if n.endswith(".wav")]
    assert sorted(n.rsplit("_", 1)[1].removesuffix(".wav") for n in audio) == sorted(
        r["id"] for r in made)
