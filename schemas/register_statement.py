"""What the register statement (Asiakastietorekisteriseloste) says of each kind of data:
purpose, source, recipients and retention, in the statement's own Finnish wording."""

from __future__ import annotations

from schemas.access_reports import DataKind

REGISTER_NAME = "Oulun Sähkönmyynti Oy, Asiakastietorekisteri"

_RECIPIENTS = (
    "Oulun Sähkönmyynti Oy:n markkinointirekisteri ja sen alihankkijat ja palveluntuottajat "
    "sekä Oulun Energia Oy ja sen tytäryhtiöt suoramainontaan, etämyyntiin tai muuhun "
    "suoramarkkinointiin, mielipide- tai markkinatutkimukseen (ellei asiakas ole sitä "
    "kieltänyt); alihankkijat asiakkaan valtakirjalla tai pyynnöstä; perintätoimisto "
    "maksamattomien laskujen osalta. Tietoja ei luovuteta EU:n tai ETA:n ulkopuolelle."
)

DATA_KINDS: list[DataKind] = [
    DataKind(
        kind="customer",
        title="Asiakastiedot",
        purpose=(
            "Sähkön siirto- ja myyntilaskutuksen sekä kaukolämmön laskutuksen "
            "asiakassuhteiden hoitaminen ja toiminnan kehittäminen."
        ),
        source=(
            "Laskutus- ja sopimusjärjestelmät: liittymis-, sähkö- ja lämmönmyyntisopimukset, "
            "asiakkaan erikseen ilmoittamat tiedot sekä asiakassuhteeseen liittyvät sähköpostit."
        ),
        recipients=_RECIPIENTS,
        retention=(
            "Asiakassuhteen ajan ja sen jälkeen niin kauan kuin laki (esim. kirjanpitolaki) "
            "edellyttää; muutoshistoria säilytetään salattuna asiakkaan avaimella."
        ),
    ),
    DataKind(
        kind="recording",
        title="Puhelutallenteet",
        purpose=(
            "Puhelinyhteydessä suoritettavan asiakastapahtuman varmentaminen ja palveluiden "
            "laadun kehittäminen."
        ),
        source="Puhelinjärjestelmä (asiakkaan ja asiakaspalvelun väliset puhelut).",
        recipients=(
            "Tallenteita ei luovuteta kolmansille osapuolille; kopio toimitetaan asiakkaalle "
            "pyynnöstä."
        ),
        retention=(
            "Kunkin tallenteen säilytysaika on merkitty tallenteen kohdalle; oikeudellinen "
            "pito (legal hold) estää poiston."
        ),
    ),
    DataKind(
        kind="evaluation",
        title="Puheluiden laatuarvioinnit",
        purpose="Palveluiden laadun kehittäminen.",
        source="Laatutiimin arviot tallennetuista puheluista.",
        recipients="Tietoja ei luovuteta.",
        retention="Poistetaan tallenteen mukana.",
    ),
    DataKind(
        kind="web_event",
        title="Verkkosivujen käyttötiedot",
        purpose="Asiakaspalvelun kehittäminen.",
        source="Pohjoista voimaa -Internet-sivustojen käytöstä kertyvät lokitiedostot.",
        recipients="Tietoja ei luovuteta.",
        retention="Yhtiön säilytyskäytännön mukaan; IP-osoitteet tallennetaan katkaistuina.",
    ),
    DataKind(
        kind="prohibition",
        title="Kiellot",
        purpose="Asiakkaan kielto-oikeuden toteuttaminen (suoramarkkinointi ym.).",
        source="Asiakkaan ilmoitus puhelimitse, sähköpostitse, postitse tai käynnillä.",
        recipients="Tietoja ei luovuteta; kiellot rajaavat luovutuksia.",
        retention="Kiellot ja niiden peruutukset säilytetään asiakassuhteen ajan.",
    ),
    DataKind(
        kind="disclosure",
        title="Tietojen luovutukset",
        purpose="Luovutusten kirjaaminen (kenelle, mitä, millä perusteella, milloin).",
        source="Rekisterinpitäjän luovutusloki.",
        recipients="Tietoja ei luovuteta.",
        retention="Asiakassuhteen ajan ja lain edellyttämän ajan.",
    ),
]
