"""The web UI's strings in Finnish (the default) and English, and the choice between them:
a `lang` cookie first, then the browser's Accept-Language, then Finnish.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from aiohttp import web

Language = Literal["fi", "en"]
LANGUAGES: tuple[Language, ...] = ("fi", "en")
DEFAULT: Language = "fi"
COOKIE = "lang"

STRINGS: dict[str, dict[Language, str]] = {
    # chrome
    "skip": {"fi": "Siirry sisältöön", "en": "Skip to content"},
    "nav.main": {"fi": "Päävalikko", "en": "Main"},
    "nav.home": {"fi": "Etusivu", "en": "Home"},
    "nav.recordings": {"fi": "Puhelut", "en": "Recordings"},
    "nav.customers": {"fi": "Asiakkaat", "en": "Customers"},
    "nav.forms": {"fi": "Arviointilomakkeet", "en": "Evaluation forms"},
    "nav.audit": {"fi": "Tapahtumaloki", "en": "Audit"},
    "nav.sites": {"fi": "Verkkosivustot", "en": "Web sites"},
    "lang.switch": {"fi": "In English", "en": "Suomeksi"},
    "lang.label": {"fi": "Kieli", "en": "Language"},
    "signout": {"fi": "Kirjaudu ulos", "en": "Sign out"},
    "forbidden.title": {"fi": "Ei oikeutta", "en": "Not allowed"},
    "forbidden.text": {
        "fi": "Roolisi ei salli tämän sivun käyttöä.",
        "en": "Your role does not allow this page.",
    },
    "notfound.title": {"fi": "Ei löytynyt", "en": "Not found"},
    "notfound.text": {
        "fi": "Tietuetta ei ole tai se ei kuulu yhtiöihisi.",
        "en": "The record does not exist or is outside your companies.",
    },
    # sign-in and home
    "signin": {"fi": "Kirjaudu sisään", "en": "Sign in"},
    "username": {"fi": "Käyttäjätunnus", "en": "Username"},
    "password": {"fi": "Salasana", "en": "Password"},
    "signin.nojs": {
        "fi": "Kirjautuminen vaatii, että JavaScript on käytössä selaimessa.",
        "en": "Signing in needs JavaScript enabled in the browser.",
    },
    "signin.wrong": {"fi": "Väärä käyttäjätunnus tai salasana.",
                     "en": "Wrong username or password."},
    "signin.throttled": {
        "fi": "Liian monta epäonnistunutta yritystä. Yritä uudelleen {n} s kuluttua.",
        "en": "Too many failed attempts. Try again in {n} seconds.",
    },
    "unreachable": {"fi": "Palveluun ei saatu yhteyttä. Yritä uudelleen.",
                    "en": "The service could not be reached. Try again."},
    "signedin": {"fi": "Kirjautuneena", "en": "Signed in"},
    "name": {"fi": "Nimi", "en": "Name"},
    "role": {"fi": "Rooli", "en": "Role"},
    "companies": {"fi": "Yhtiöt", "en": "Companies"},
    "allcompanies": {"fi": "Kaikki yhtiöt", "en": "All companies"},
    # search
    "search.title": {"fi": "Puheluhaku", "en": "Search calls"},
    "search.filters": {"fi": "Hakuehdot", "en": "Filters"},
    "company": {"fi": "Yhtiö", "en": "Company"},
    "any": {"fi": "Kaikki", "en": "Any"},
    "from": {"fi": "Alkaen", "en": "From"},
    "to": {"fi": "Päättyen", "en": "To"},
    "agent": {"fi": "Asiakaspalvelija", "en": "Agent"},
    "queue": {"fi": "Jono", "en": "Queue"},
    "direction": {"fi": "Suunta", "en": "Direction"},
    "direction.inbound": {"fi": "Saapuva", "en": "Inbound"},
    "direction.outbound": {"fi": "Lähtevä", "en": "Outbound"},
    "direction.internal": {"fi": "Sisäinen", "en": "Internal"},
    "tag": {"fi": "Tunniste", "en": "Tag"},
    "external_id": {"fi": "Puhelun tunnus", "en": "External id"},
    "search": {"fi": "Hae", "en": "Search"},
    "search.next": {"fi": "Seuraava sivu", "en": "Next page"},
    "search.phone": {"fi": "Puhelinnumero", "en": "Phone number"},
    "search.min_duration_s": {"fi": "Kesto vähintään (s)", "en": "Duration at least (s)"},
    "search.max_duration_s": {"fi": "Kesto enintään (s)", "en": "Duration at most (s)"},
    "search.min_silence_ratio": {"fi": "Hiljaisuutta vähintään (0–1)",
                                 "en": "Silence at least (0–1)"},
    "search.min_overtalk_s": {"fi": "Päällekkäispuhetta vähintään (s)",
                              "en": "Overtalk at least (s)"},
    "search.flag": {"fi": "Laatuhuomio", "en": "Health flag"},
    "search.results": {"fi": "Tulokset", "en": "Results"},
    "search.none": {"fi": "Ei hakuehtoja vastaavia puheluita.",
                    "en": "No calls match the filters."},
    "started": {"fi": "Alkoi", "en": "Started"},
    "duration": {"fi": "Kesto", "en": "Duration"},
    "tags": {"fi": "Tunnisteet", "en": "Tags"},
    "open": {"fi": "Avaa", "en": "Open"},
    "loading": {"fi": "Ladataan…", "en": "Loading…"},
    # call page
    "call.title": {"fi": "Puhelu", "en": "Call"},
    "call.metadata": {"fi": "Puhelun tiedot", "en": "Call details"},
    "ended": {"fi": "Päättyi", "en": "Ended"},
    "caller": {"fi": "Soittaja", "en": "Caller"},
    "callee": {"fi": "Vastaanottaja", "en": "Callee"},
    "customer": {"fi": "Asiakas", "en": "Customer"},
    "purpose": {"fi": "Käyttötarkoitus", "en": "Purpose"},
    "purpose.quality": {"fi": "Laadun kehittäminen", "en": "Service quality"},
    "purpose.transaction_verification": {"fi": "Asioinnin todentaminen",
                                         "en": "Transaction verification"},
    "format": {"fi": "Muoto", "en": "Format"},
    "size": {"fi": "Koko", "en": "Size"},
    "state": {"fi": "Tila", "en": "State"},
    "state.stored": {"fi": "Tallessa", "en": "Stored"},
    "state.corrupt": {"fi": "Vioittunut", "en": "Corrupt"},
    "retain_until": {"fi": "Säilytetään asti", "en": "Kept until"},
    "player": {"fi": "Kuuntelu", "en": "Playback"},
    "play": {"fi": "Kuuntele", "en": "Listen"},
    "pause": {"fi": "Tauko", "en": "Pause"},
    "speed": {"fi": "Nopeus", "en": "Speed"},
    "position": {"fi": "Kohta", "en": "Position"},
    "player.back10": {"fi": "10 s taaksepäin", "en": "Back 10 s"},
    "player.fwd10": {"fi": "10 s eteenpäin", "en": "Forward 10 s"},
    "player.skip_silence": {"fi": "Ohita yli 2 s hiljaisuudet", "en": "Skip silences over 2 s"},
    "player.solo": {"fi": "Soolo", "en": "Solo"},
    "player.mute": {"fi": "Mykistä", "en": "Mute"},
    "player.channel": {"fi": "Kanava {n}", "en": "Channel {n}"},
    "player.lanes": {"fi": "Aaltomuoto kanavittain", "en": "Waveform per channel"},
    "player.shortcuts": {"fi": "Pikanäppäimet", "en": "Keyboard shortcuts"},
    "player.key.space": {"fi": "välilyönti: kuuntele / tauko", "en": "space: play / pause"},
    "player.key.arrows": {"fi": "← / →: 10 s taakse / eteen", "en": "← / →: back / forward 10 s"},
    "player.key.speed": {"fi": "[ / ]: hitaammin / nopeammin", "en": "[ / ]: slower / faster"},
    "player.key.mark": {"fi": "m: kirjanmerkki tähän kohtaan", "en": "m: bookmark this point"},
    "player.mark_default": {"fi": "Kirjanmerkki", "en": "Bookmark"},
    "role.agent": {"fi": "Asiakaspalvelija", "en": "Agent"},
    "role.customer": {"fi": "Asiakas", "en": "Customer"},
    "role.other": {"fi": "Muu", "en": "Other"},
    "analysis.title": {"fi": "Puheanalyysi", "en": "Call analysis"},
    "analysis.none": {"fi": "Puhelua ei ole vielä analysoitu.",
                      "en": "The call has not been analysed yet."},
    "analysis.talk": {"fi": "Puheosuus", "en": "Talk share"},
    "analysis.silence": {"fi": "Hiljaisuus", "en": "Silence"},
    "analysis.longest_silence": {"fi": "pisin {s} s", "en": "longest {s} s"},
    "analysis.overtalk": {"fi": "Päällekkäispuhe", "en": "Overtalk"},
    "analysis.overtalk_value": {"fi": "{s} s, {n} kertaa", "en": "{s} s, {n} times"},
    "analysis.flags": {"fi": "Huomiot", "en": "Flags"},
    "analysis.flags_none": {"fi": "ei huomioita", "en": "none"},
    "flag.silent_channel": {"fi": "hiljainen kanava", "en": "silent channel"},
    "flag.one_sided": {"fi": "yksipuolinen", "en": "one-sided"},
    "flag.clipping": {"fi": "säröä (leikkautuminen)", "en": "clipping"},
    "flag.dropout": {"fi": "katkoja", "en": "dropouts"},
    "flag.mono_mixdown": {"fi": "kanavat samat (mono)", "en": "mono mixdown"},
    "annotations.title": {"fi": "Merkinnät", "en": "Annotations"},
    "annotations.none": {"fi": "Ei merkintöjä.", "en": "No annotations."},
    "annotation.text": {"fi": "Merkintä", "en": "Note"},
    "annotation.visibility": {"fi": "Näkyvyys", "en": "Visibility"},
    "visibility.team": {"fi": "tiimille", "en": "team"},
    "visibility.private": {"fi": "vain minulle", "en": "only me"},
    "annotation.add": {"fi": "Lisää merkintä nykyiseen kohtaan", "en": "Add a note here"},
    "annotation.delete": {"fi": "Poista", "en": "Delete"},
    "reason.title": {"fi": "Kuuntelun syy", "en": "Reason for listening"},
    "reason.help": {
        "fi": "Kerro, miksi kuuntelet puhelun. Syy tallentuu lokiin.",
        "en": "Say why you listen to the call. The reason is kept in the audit trail.",
    },
    "reason.label": {"fi": "Syy", "en": "Reason"},
    "reason.required": {"fi": "Syy on pakollinen.", "en": "A reason is required."},
    "reason.current": {"fi": "Syy", "en": "Reason"},
    "continue": {"fi": "Jatka", "en": "Continue"},
    "cancel": {"fi": "Peruuta", "en": "Cancel"},
    "audio.error": {"fi": "Äänen toisto epäonnistui.", "en": "The audio could not be played."},
    "evaluations": {"fi": "Arvioinnit", "en": "Evaluations"},
    "evaluations.none": {"fi": "Ei arviointeja.", "en": "No evaluations yet."},
    "evaluation.new": {"fi": "Arvioi puhelu", "en": "Evaluate the call"},
    "evaluation.form": {"fi": "Lomake", "en": "Form"},
    "evaluation.noforms": {"fi": "Yhtään arviointilomaketta ei ole käytössä.",
                           "en": "No evaluation form is in use."},
    "evaluation.version": {"fi": "versio {n}", "en": "version {n}"},
    "evaluation.scale": {"fi": "asteikko 0–{n}", "en": "scale 0–{n}"},
    "evaluation.manage": {"fi": "Muokkaa arviointilomakkeita", "en": "Manage evaluation forms"},
    "evaluator": {"fi": "Arvioija", "en": "Evaluator"},
    "comment": {"fi": "Kommentti", "en": "Comment"},
    "save": {"fi": "Tallenna", "en": "Save"},
    "saved": {"fi": "Tallennettu.", "en": "Saved."},
    "criterion.greeting": {"fi": "Tervehdys", "en": "Greeting"},
    "criterion.identification": {"fi": "Tunnistaminen", "en": "Identification"},
    "criterion.solution": {"fi": "Ratkaisu", "en": "Solution"},
    "criterion.courtesy": {"fi": "Kohteliaisuus", "en": "Courtesy"},
    # evaluation forms (admin)
    "forms.title": {"fi": "Arviointilomakkeet", "en": "Evaluation forms"},
    "forms.none": {"fi": "Lomakkeita ei ole.", "en": "There are no forms."},
    "forms.name": {"fi": "Tunnus", "en": "Key"},
    "forms.name.help": {
        "fi": "Pienet kirjaimet a–z, numerot, - ja _. Tunnusta ei voi muuttaa myöhemmin.",
        "en": "Lower-case letters a–z, digits, - and _. The key cannot be changed later.",
    },
    "forms.form_title": {"fi": "Otsikko", "en": "Title"},
    "forms.description": {"fi": "Kuvaus", "en": "Description"},
    "forms.company": {"fi": "Yhtiö", "en": "Company"},
    "forms.group": {"fi": "Koko konserni", "en": "Whole group"},
    "forms.criteria": {"fi": "Arviointikohdat", "en": "Criteria"},
    "forms.criteria.help": {
        "fi": "Täytä vähintään yksi rivi; tyhjät rivit jätetään pois. Pisteet annetaan "
              "nollasta enimmäispisteisiin.",
        "en": "Fill in at least one row; empty rows are left out. Scores run from zero to "
              "the maximum.",
    },
    "forms.criterion": {"fi": "Kohta {n}", "en": "Criterion {n}"},
    "forms.key": {"fi": "Tunnus", "en": "Key"},
    "forms.label": {"fi": "Nimi", "en": "Label"},
    "forms.max": {"fi": "Enimmäispisteet", "en": "Maximum score"},
    "forms.version": {"fi": "Versio", "en": "Version"},
    "forms.state": {"fi": "Tila", "en": "State"},
    "forms.active": {"fi": "Käytössä", "en": "In use"},
    "forms.inactive": {"fi": "Poistettu käytöstä", "en": "Deactivated"},
    "forms.updated": {"fi": "Muutettu", "en": "Changed"},
    "forms.deactivate": {"fi": "Poista käytöstä", "en": "Deactivate"},
    "forms.activate": {"fi": "Ota käyttöön", "en": "Activate"},
    "forms.actions": {"fi": "Toiminnot", "en": "Actions"},
    "forms.more_rows": {"fi": "Lisää rivejä", "en": "More rows"},
    "forms.new": {"fi": "Uusi lomake", "en": "New form"},
    "forms.create": {"fi": "Luo lomake", "en": "Create the form"},
    "forms.created": {"fi": "Lomake {name} luotiin.", "en": "The form {name} was created."},
    "forms.deactivated": {"fi": "Lomake {name} poistettiin käytöstä.",
                          "en": "The form {name} was deactivated."},
    "forms.activated": {"fi": "Lomake {name} otettiin käyttöön.",
                        "en": "The form {name} was activated."},
    "forms.invalid": {"fi": "Lomaketta ei tallennettu:", "en": "The form was not saved:"},
    "forms.csrf": {
        "fi": "Lomakkeen istunto on vanhentunut. Lataa sivu uudelleen ja yritä uudestaan.",
        "en": "The form's session has expired. Reload the page and try again.",
    },
    # site registry
    "sites.title": {"fi": "Verkkosivustot", "en": "Web sites"},
    "sites.help": {
        "fi": "Sivuston tapahtumat, joissa ei ole yhtiötä, kirjataan sen yhtiölle.",
        "en": "A site's events that name no company are stored under its company.",
    },
    "sites.none": {"fi": "Sivustoja ei ole rekisterissä.",
                   "en": "No sites are registered."},
    "sites.site": {"fi": "Sivusto", "en": "Site"},
    "sites.site.help": {
        "fi": "Kuten lokien lähettäjä sen kirjoittaa (site, service.name tai server.address).",
        "en": "As the log shipper writes it (site, service.name or server.address).",
    },
    "sites.company": {"fi": "Yhtiö", "en": "Company"},
    "sites.updated": {"fi": "Muutettu", "en": "Changed"},
    "sites.remove": {"fi": "Poista", "en": "Remove"},
    "sites.set": {"fi": "Tallenna sivusto", "en": "Save the site"},
    "sites.new": {"fi": "Lisää tai siirrä sivusto", "en": "Add or move a site"},
    "sites.saved": {"fi": "Sivusto {site} tallennettiin.", "en": "The site {site} was saved."},
    "sites.removed": {"fi": "Sivusto {site} poistettiin.", "en": "The site {site} was removed."},
    "sites.invalid": {"fi": "Sivustoa ei tallennettu:", "en": "The site was not saved:"},
    # customers
    "customers.title": {"fi": "Asiakashaku", "en": "Find a customer"},
    "customer_number": {"fi": "Asiakasnumero", "en": "Customer number"},
    "personal_id": {"fi": "Henkilötunnus", "en": "Personal identity code"},
    "find": {"fi": "Etsi", "en": "Find"},
    "customer.title": {"fi": "Asiakas", "en": "Customer"},
    "address": {"fi": "Osoite", "en": "Address"},
    "email": {"fi": "Sähköposti", "en": "E-mail"},
    "phone": {"fi": "Puhelin", "en": "Phone"},
    "calls": {"fi": "Puhelut", "en": "Calls"},
    "web_events": {"fi": "Verkkosivutapahtumat", "en": "Web-site events"},
    "web_events.none": {"fi": "Ei tapahtumia.", "en": "No events."},
    "time": {"fi": "Aika", "en": "Time"},
    "site": {"fi": "Sivusto", "en": "Site"},
    "event": {"fi": "Tapahtuma", "en": "Event"},
    "prohibitions": {"fi": "Kiellot", "en": "Prohibitions"},
    "prohibitions.none": {"fi": "Ei voimassa olevia kieltoja.", "en": "No prohibitions in force."},
    "prohibition.add": {"fi": "Kirjaa kielto", "en": "Record a prohibition"},
    "prohibition.withdraw": {"fi": "Peru", "en": "Withdraw"},
    "use": {"fi": "Käyttö", "en": "Use"},
    "channel": {"fi": "Kanava", "en": "Channel"},
    "received_at": {"fi": "Vastaanotettu", "en": "Received"},
    "recorded_by": {"fi": "Kirjaaja", "en": "Recorded by"},
    "withdrawn": {"fi": "Peruttu", "en": "Withdrawn"},
    "use.direct_marketing": {"fi": "Suoramarkkinointi", "en": "Direct marketing"},
    "use.distance_selling": {"fi": "Etämyynti", "en": "Distance selling"},
    "use.other_direct_marketing": {"fi": "Muu suoramainonta", "en": "Other direct marketing"},
    "use.market_research": {"fi": "Markkinatutkimus", "en": "Market research"},
    "use.opinion_polls": {"fi": "Mielipidetutkimus", "en": "Opinion polls"},
    "use.person_directories": {"fi": "Henkilömatrikkelit", "en": "Person directories"},
    "use.genealogy": {"fi": "Sukututkimus", "en": "Genealogy"},
    "channel.phone": {"fi": "Puhelin", "en": "Phone"},
    "channel.email": {"fi": "Sähköposti", "en": "E-mail"},
    "channel.post": {"fi": "Posti", "en": "Post"},
    "channel.in_person": {"fi": "Henkilökohtaisesti", "en": "In person"},
    "error": {"fi": "Virhe", "en": "Error"},
    "access_request": {"fi": "Tarkastuspyyntö", "en": "Access request"},
    "access_request.help": {
        "fi": "Kirjaa asiakkaan henkilöllisyyden tarkastamisen jälkeen. Tietosuojavastaava "
              "laatii rekisteriotteen kuukauden kuluessa.",
        "en": "Record once the customer's identity is verified. The data-protection officer "
              "answers within one month."},
    "access_request.take": {"fi": "Kirjaa tarkastuspyyntö", "en": "Record the access request"},
    "access_request.taken": {"fi": "Kirjattu. Määräpäivä {due}, pyyntö {id}.",
                             "en": "Recorded. Due {due}, request {id}."},
    "verified_by": {"fi": "Henkilöllisyys tarkastettu", "en": "Identity verified"},
    "verified_by.in_person": {"fi": "Henkilökohtaisesti", "en": "In person"},
    "verified_by.signed_letter": {"fi": "Allekirjoitettu kirje", "en": "Signed letter"},
    "verified_by.strong_electronic_id": {"fi": "Vahva sähköinen tunnistus",
                                         "en": "Strong electronic identification"},
}

PROHIBITED_USES = (
    "direct_marketing", "distance_selling", "other_direct_marketing", "market_research",
    "opinion_polls", "person_directories", "genealogy",
)
PROHIBITION_CHANNELS = ("phone", "email", "post", "in_person")
VERIFIED_BY = ("in_person", "signed_letter", "strong_electronic_id")


def language_of(request: web.Request) -> Language:
    """The cookie wins; otherwise the first supported language the browser asks for."""
    chosen = request.cookies.get(COOKIE)
    if chosen in LANGUAGES:
        return chosen
    preferences: list[tuple[float, str]] = []
    for item in request.headers.get("Accept-Language", "").split(","):
        tag, _, params = item.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                continue
        preferences.append((quality, tag.strip().lower().split("-")[0]))
    for _, tag in sorted(preferences, key=lambda p: -p[0]):
        if tag in LANGUAGES:
            return tag
    return DEFAULT


def translator(language: Language) -> Callable[..., str]:
    def t(key: str, **values: object) -> str:
        text = STRINGS[key][language]
        return text.format(**values) if values else text

    return t


def labeller(language: Language) -> Callable[[str, str], str]:
    """`label("criterion", name)`: the translation when there is one, else the name itself
    (criteria and states may come from data)."""

    def label(prefix: str, name: str) -> str:
        texts = STRINGS.get(f"{prefix}.{name}")
        return texts[language] if texts else name

    return label


def catalogue(language: Language, prefix_keys: tuple[str, ...] = ()) -> dict[str, str]:
    """Every string in one language, for the page's scripts."""
    return {key: texts[language] for key, texts in STRINGS.items()
            if not prefix_keys or key.startswith(prefix_keys)}


# The subject search page (service/webui_subjects.py).
SUBJECT_STRINGS: dict[str, dict[Language, str]] = {
    "nav.subjects": {"fi": "Rekisteröity", "en": "Data subject"},
    "subjects.title": {"fi": "Rekisteröidyn tiedot", "en": "Everything about a person"},
    "subjects.hint": {
        "fi": "Hae puhelinnumerolla tai henkilötunnuksella. Tunnus lähetetään vain "
              "lomakkeen rungossa, ei koskaan osoitteessa.",
        "en": "Search by phone number or identity code. The code travels only in the form's "
              "body, never in an address."},
    "subjects.customers": {"fi": "Asiakkuudet", "en": "Customers"},
    "subjects.recordings": {"fi": "Puhelut", "en": "Calls"},
    "subjects.matched_by": {"fi": "Löytyi", "en": "Found by"},
    "subjects.disclosures": {"fi": "Luovutukset", "en": "Disclosures"},
    "subjects.reads": {"fi": "Käsittelyt (tapahtumaloki)", "en": "Audited reads"},
    "subjects.none": {"fi": "Ei tietoja.", "en": "Nothing held."},
    "subjects.report": {"fi": "Tarkastusoikeusraportti", "en": "Access report"},
    "subjects.export": {"fi": "Vie puhelut (zip)", "en": "Export the calls (zip)"},
    "subjects.reason": {"fi": "Peruste", "en": "Reason"},
    "subjects.invalid": {"fi": "Haku ei kelpaa: {detail}",
                         "en": "The search is not valid: {detail}"},
    "subjects.started": {"fi": "Vienti {id} aloitettiin.", "en": "Export {id} started."},
    "subjects.progress": {"fi": "Eteneminen", "en": "Progress"},
    "subjects.download": {"fi": "Lataa valmis vienti", "en": "Download when done"},
    "subjects.actor": {"fi": "Käsittelijä", "en": "Actor"},
    "subjects.action": {"fi": "Toimenpide", "en": "Action"},
    "subjects.recipient": {"fi": "Vastaanottaja", "en": "Recipient"},
}
STRINGS.update(SUBJECT_STRINGS)
