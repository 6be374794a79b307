"""The EU/EEA: the only place tallenne stores or sends personal data."""

from __future__ import annotations

# EU member states plus Iceland, Liechtenstein and Norway (ISO 3166-1 alpha-2).
EU_EEA: frozenset[str] = frozenset(
    {
        "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE",
        "IT", "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",
        "IS", "LI", "NO",
    }
)

# Object-store regions known to lie inside the EU/EEA (AWS, Google, Azure, UpCloud, Hetzner
# style names); an on-premises MinIO is configured with one of these or "fi-*".
_EU_REGION_PREFIXES = ("eu-", "europe-", "fi-", "se-", "no-", "de-", "nl-", "fr-", "ie-")


def country_in_eu_eea(code: str) -> bool:
    return code.upper() in EU_EEA


def region_in_eu_eea(region: str) -> bool:
    region = region.lower().strip()
    return region.startswith(_EU_REGION_PREFIXES)
