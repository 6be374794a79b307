"""README.md stays true: its configuration table is the settings class."""

from __future__ import annotations

from pathlib import Path

from service.settings import settings_table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_configuration_table_matches_the_settings_class() -> None:
    text = README.read_text()
    block = text.split("<!-- settings-table:start -->")[1].split("<!-- settings-table:end -->")[0]
    assert block.strip() == settings_table().strip(), (
        "regenerate with: .venv/bin/python -m service.settings"
    )
