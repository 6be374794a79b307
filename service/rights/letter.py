"""The access report as a printable Finnish letter (fpdf2, Source Sans Pro), posted to the
address on record. The sender block is the controller's, configurable through
`TALLENNE_CONTROLLER_*` environment variables."""

from __future__ import annotations

import asyncio
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

import font_source_sans_pro
from fpdf import FPDF
from fpdf.fonts import FontFace
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.access_reports import AccessReport
from schemas.personal_id import mask_personal_id
from schemas.register_statement import REGISTER_NAME

FONT_DIR = Path(font_source_sans_pro.font_directory)
HELSINKI = ZoneInfo("Europe/Helsinki")
SUBJECT = "Tarkastuspyyntö – rekisteriote"


# The controller of the register statement, section 1: the letter's sender by default.
DEFAULT_CONTROLLER: dict[str, str] = {
    "name": "Oulun Sähkönmyynti Oy",
    "business_id": "1703296-5",
    "visiting_address": "Kasarmintie 6, 90130 Oulu",
    "postal_address": "PL 116, 90101 Oulu",
    "phone": "08 5584 3100",
    "email": "osm@pohjoistavoimaa.fi",
    "city": "Oulu",
}


class ControllerSettings(BaseSettings):
    """The controller named in the letter's sender block; `TALLENNE_CONTROLLER_*`."""

    model_config = SettingsConfigDict(env_prefix="TALLENNE_CONTROLLER_", extra="ignore")

    name: str = Field(default=DEFAULT_CONTROLLER["name"], description="Controller's name.")
    business_id: str = Field(default=DEFAULT_CONTROLLER["business_id"],
                             description="Controller's business ID (Y-tunnus).")
    visiting_address: str = Field(default=DEFAULT_CONTROLLER["visiting_address"],
                                  description="Visiting address.")
    postal_address: str = Field(default=DEFAULT_CONTROLLER["postal_address"],
                                description="Postal address, also for prohibitions by post.")
    phone: str = Field(default=DEFAULT_CONTROLLER["phone"], description="Customer service phone.")
    email: str = Field(default=DEFAULT_CONTROLLER["email"],
                       description="Customer service e-mail.")
    city: str = Field(default=DEFAULT_CONTROLLER["city"], description="Where the letter is dated.")


@lru_cache(maxsize=1)
def controller() -> ControllerSettings:
    return ControllerSettings()


VERIFIED_FI = {
    "in_person": "henkilökohtaisesti asiakaspalvelussa",
    "signed_letter": "kirjallisella allekirjoitetulla asiakirjalla",
    "strong_electronic_id": "vahvalla sähköisellä tunnistautumisella",
}
DIRECTION_FI = {"inbound": "saapuva", "outbound": "lähtevä", "internal": "sisäinen"}
PURPOSE_FI = {
    "transaction_verification": "asiakastapahtuman varmentaminen",
    "quality": "laadun kehittäminen",
    "marketing_register": "markkinointirekisteri",
    "distance_selling": "etämyynti",
    "market_research": "markkinatutkimus",
    "opinion_polls": "mielipidetutkimus",
    "subcontractor": "alihankkija",
    "debt_collection": "perintä",
}
USE_FI = {
    "direct_marketing": "suoramainonta",
    "distance_selling": "etämyynti",
    "other_direct_marketing": "muu suoramarkkinointi",
    "market_research": "markkinatutkimus",
    "opinion_polls": "mielipidetutkimus",
    "person_directories": "henkilömatrikkeli",
    "genealogy": "sukututkimus",
}
CHANNEL_FI = {"phone": "puhelimitse", "email": "sähköpostitse", "post": "postitse",
              "in_person": "käynnillä"}
CHANGE_FI = {"created": "luotu", "updated": "muutettu", "membership_added": "asiakkuus lisätty",
             "membership_moved": "asiakasnumero siirretty",
             "number_passed_on": "asiakasnumero siirtynyt toiselle",
             "membership_ended": "asiakkuus päättynyt",
             "membership_resumed": "asiakkuus jatkuu"}
FIELD_FI = {"name": "nimi", "address": "osoite", "email": "sähköposti", "phone": "puhelin",
            "ended_at": "päättymispäivä",
            "customer_number": "asiakasnumero", "personal_id": "henkilötunnus"}


def _date(moment: datetime | None) -> str:
    if moment is None:
        return "–"
    local = moment.astimezone(HELSINKI)
    return f"{local.day}.{local.month}.{local.year}"


def _datetime(moment: datetime) -> str:
    local = moment.astimezone(HELSINKI)
    return f"{local.day}.{local.month}.{local.year} {local:%H.%M}"


def _duration(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 60} min {whole % 60:02d} s"


class Letter(FPDF):
    def __init__(self, sender: ControllerSettings) -> None:
        super().__init__(format="A4", unit="mm")
        self.sender = sender
        self.add_font("SourceSans", "", str(FONT_DIR / "SourceSansPro-Regular.ttf"))
        self.add_font("SourceSans", "B", str(FONT_DIR / "SourceSansPro-Bold.ttf"))
        self.set_margins(20, 18, 20)
        self.set_auto_page_break(True, margin=20)
        self.set_title(SUBJECT)
        self.set_author(sender.name)
        self.set_lang("fi")

    def footer(self) -> None:
        self.set_y(-14)
        self.set_font("SourceSans", "", 8)
        self.set_text_color(110)
        self.cell(0, 5, f"{self.sender.name} · Y-tunnus {self.sender.business_id} · "
                        f"{self.sender.postal_address} · {self.sender.phone} · "
                        f"{self.sender.email}", align="L")
        self.cell(0, 5, f"Sivu {self.page_no()}/{{nb}}", align="R")
        self.set_text_color(0)

    def heading(self, text: str) -> None:
        if self.get_y() > self.h - 45:
            self.add_page()
        self.ln(3)
        self.set_font("SourceSans", "B", 12)
        self.cell(0, 7, text, new_x="LMARGIN", new_y="NEXT")
        self.set_font("SourceSans", "", 10)

    def paragraph(self, text: str) -> None:
        self.set_font("SourceSans", "", 10)
        self.multi_cell(0, 5, text, new_x="LMARGIN", new_y="NEXT")
        self.ln(1)

    def grid(self, headings: list[str], rows: list[list[str]], widths: tuple[int, ...],
             empty: str = "Ei tietoja.") -> None:
        if not rows:
            self.paragraph(empty)
            return
        self.set_font("SourceSans", "", 9)
        style = FontFace(emphasis="BOLD", fill_color=(230, 234, 240))
        with self.table(col_widths=widths, text_align="LEFT", headings_style=style,
                        line_height=4.6, padding=1.2) as table:
            table.row(headings)
            for cells in rows:
                table.row(cells)
        self.ln(2)
        self.set_font("SourceSans", "", 10)


def _letter_head(pdf: Letter, report: AccessReport) -> None:
    sender = pdf.sender
    pdf.set_font("SourceSans", "B", 13)
    pdf.cell(100, 6, sender.name, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("SourceSans", "", 9)
    for line in (f"Y-tunnus {sender.business_id}", f"Käyntiosoite: {sender.visiting_address}",
                 f"Postiosoite: {sender.postal_address}",
                 f"Puhelin {sender.phone} · {sender.email}"):
        pdf.cell(100, 4.5, line, new_x="LMARGIN", new_y="NEXT")
    pdf.set_xy(130, 18)
    pdf.set_font("SourceSans", "", 10)
    pdf.cell(60, 6, f"{sender.city} {_date(report.generated_at)}", align="R")

    # Recipient where a C5/DL window envelope shows it.
    customer = report.customer
    address = customer.address
    pdf.set_xy(20, 50)
    pdf.set_font("SourceSans", "", 11)
    lines = [customer.name or "", address.street or "",
             " ".join(p for p in (address.postal_code, address.city) if p)]
    if address.country and address.country.upper() not in ("FI", "SUOMI", "FINLAND"):
        lines.append(address.country)
    for line in filter(None, lines):
        pdf.cell(90, 5.5, line, new_x="LMARGIN", new_y="NEXT")
    pdf.set_y(88)
    pdf.set_font("SourceSans", "B", 14)
    pdf.cell(0, 8, SUBJECT, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    request = report.request
    pdf.paragraph(
        f"Olette {_date(request.received_at)} pyytäneet tarkastaa, mitä tietoja teistä on "
        f"tallennettu rekisteriin {REGISTER_NAME}. Henkilöllisyytenne on varmennettu "
        f"{VERIFIED_FI[request.verified_by]}. Tässä rekisteriotteessa ovat kaikki teistä "
        f"tallennetut tiedot sekä niiden käyttötarkoitus, tietolähteet, luovutukset ja "
        f"säilytysajat. Rekisteriotteen määräpäivä on {_date(report.due_at)}."
    )


def _customer_section(pdf: Letter, report: AccessReport) -> None:
    c = report.customer
    address = ", ".join(p for p in (c.address.street, c.address.postal_code, c.address.city,
                                    c.address.country) if p)
    code = mask_personal_id(c.personal_id) if c.personal_id else "–"
    pdf.heading("1. Asiakastiedot")
    pdf.grid(["Tieto", "Tallennettu arvo"], [
        ["Nimi", c.name or "–"],
        ["Henkilötunnus", f"{code} (tallennettu salattuna)"],
        ["Postiosoite", address or "–"],
        ["Sähköposti", c.email or "–"],
        ["Puhelin", c.phone or "–"],
        ["Tallennettu", _date(c.created_at)],
        ["Viimeksi muutettu", _date(c.updated_at)],
    ], (45, 125))
    pdf.heading("2. Asiakkuudet")
    pdf.grid(["Yhtiö", "Asiakasnumero", "Voimassa", "Alkaen"], [
        [m.company_name, m.customer_number, "kyllä" if m.active else "ei", _date(m.since)]
        for m in report.memberships
    ], (80, 40, 20, 30))
    if report.history:
        pdf.heading("Tietojen muutoshistoria")
        pdf.grid(["Aika", "Muutos", "Muuttuneet tiedot", "Aiemmat arvot"], [
            [_datetime(h.changed_at), CHANGE_FI.get(h.change, h.change),
             ", ".join(FIELD_FI.get(f, f) for f in h.changed_fields) or "–",
             "; ".join(f"{k}: {v}" for k, v in (h.old_values or {}).items()) or "–"]
            for h in report.history
        ], (30, 30, 40, 70))


def _activity_sections(pdf: Letter, report: AccessReport) -> None:
    names = {m.company: m.company_name for m in report.memberships}

    def company(code: str) -> str:
        return names.get(code, code)

    pdf.heading("3. Puhelutallenteet")
    pdf.grid(["Aika", "Yhtiö", "Suunta", "Kesto", "Käyttötarkoitus", "Säilytetään"], [
        [_datetime(r.started_at), company(r.company), DIRECTION_FI.get(r.direction, r.direction),
         _duration(r.duration_s), PURPOSE_FI.get(r.purpose, r.purpose),
         _date(r.retain_until) if r.retain_until else "toistaiseksi"]
        for r in report.recordings
    ], (28, 42, 20, 20, 35, 25), empty="Teistä ei ole tallennettu puheluita.")
    pdf.heading("4. Puheluiden laatuarvioinnit")
    pdf.grid(["Aika", "Yhtiö", "Lomake", "Kommentti"], [
        [_date(e.created_at), company(e.company), e.form, e.comment or "–"]
        for e in report.evaluations
    ], (25, 45, 40, 60))
    if report.annotations:
        pdf.paragraph("Puheluihin tehdyt muistiinpanot:")
        pdf.grid(["Aika", "Yhtiö", "Kohta", "Muistiinpano"], [
            [_date(a.created_at), company(a.company), _duration(a.at_s), a.text]
            for a in report.annotations
        ], (25, 45, 20, 80))
    pdf.heading("5. Verkkosivujen käyttötiedot")
    events = report.web_events
    pdf.paragraph(f"Kirjautuneena tehtyjä tapahtumia on tallennettu {events.total} kpl."
                  + (f" Alla viimeisimmät {len(events.items)}; loput toimitetaan pyynnöstä."
                     if events.total > len(events.items) else ""))
    shown = events.items[:40]
    pdf.grid(["Aika", "Sivusto", "Tapahtuma", "Osoite (URL)"], [
        [_datetime(e.ts), e.site, e.event, e.url or "–"] for e in shown
    ], (30, 35, 30, 75), empty="")
    pdf.heading("6. Kiellot")
    pdf.grid(["Kielletty käyttö", "Vastaanotettu", "Tapa", "Peruttu"], [
        [USE_FI.get(p.use, p.use), _date(p.received_at), CHANNEL_FI.get(p.channel, p.channel),
         _date(p.withdrawn_at) if p.withdrawn_at else "voimassa"]
        for p in report.prohibitions
    ], (55, 35, 35, 45), empty="Ette ole kieltänyt tietojenne käyttöä.")
    pdf.heading("7. Tietojen luovutukset")
    pdf.grid(["Aika", "Vastaanottaja", "Tarkoitus", "Peruste", "Tiedot"], [
        [_date(d.disclosed_at), f"{d.recipient} ({d.recipient_country})",
         PURPOSE_FI.get(d.purpose, d.purpose), d.legal_basis,
         ", ".join(FIELD_FI.get(f, f) for f in d.fields)]
        for d in report.disclosures
    ], (22, 40, 30, 40, 38), empty="Tietojanne ei ole luovutettu.")
    if report.legal_holds:
        pdf.heading("Käsittelyn rajoitus")
        pdf.paragraph("Tietojanne säilytetään oikeudellisen pidon vuoksi: "
                      + ", ".join(report.legal_holds) + ".")


def _closing_sections(pdf: Letter, report: AccessReport) -> None:
    sender = pdf.sender
    pdf.heading("8. Käyttötarkoitus, tietolähteet, luovutukset ja säilytys")
    pdf.grid(["Tiedot", "Käyttötarkoitus", "Tietolähde", "Luovutukset", "Säilytys"], [
        [k.title, k.purpose, k.source, k.recipients, k.retention] for k in report.data_kinds
    ], (29, 33, 34, 42, 32))
    pdf.heading("9. Tallenteiden kopiot")
    pdf.paragraph(
        "Saatte pyynnöstä kopiot yllä luetelluista puhelutallenteista. Pyytäkää kopioita "
        f"asiakaspalvelusta puhelimitse {sender.phone}, sähköpostitse {sender.email} tai "
        f"postitse {sender.name}, Asiakaspalvelu, {sender.postal_address}. Kopiot toimitetaan "
        "teille tallenteina, joiden eheyden voi tarkistaa mukana tulevista SHA-256-"
        "tarkistussummista."
    )
    pdf.heading("10. Kielto-oikeus ja muut oikeutenne")
    pdf.paragraph(
        "Teillä on oikeus kieltää tietojenne käsittely suoramainontaan, etämyyntiin ja muuhun "
        "suoramarkkinointiin sekä markkina- ja mielipidetutkimukseen, henkilömatrikkeleihin ja "
        "sukututkimukseen. Teillä on myös oikeus vaatia virheellisten tietojen oikaisemista ja "
        "tietojen poistamista, ellei laki velvoita säilyttämään niitä, sekä oikeus tehdä "
        "valitus tietosuojavaltuutetulle. Tietoja ei luovuteta EU:n tai ETA:n ulkopuolelle."
    )
    pdf.ln(4)
    pdf.paragraph("Ystävällisin terveisin")
    pdf.paragraph(f"{sender.name}\nAsiakaspalvelu")


def render_pdf(report: AccessReport, sender: ControllerSettings | None = None) -> bytes:
    pdf = Letter(sender or controller())
    pdf.alias_nb_pages()
    pdf.add_page()
    _letter_head(pdf, report)
    _customer_section(pdf, report)
    _activity_sections(pdf, report)
    _closing_sections(pdf, report)
    return bytes(pdf.output())


async def render_letter(report: AccessReport) -> bytes:
    """Render off the event loop: laying out a long letter takes a while."""
    return await asyncio.to_thread(render_pdf, report)
