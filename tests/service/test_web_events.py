"""Web-site event ingest: formats, per-line validation, gzip limits, idempotency, reads."""

from __future__ import annotations

import asyncio
import gzip
import json
from typing import Any

import asyncpg

from service.settings import Settings
from tests.helpers import Api, bearer

A = "kemin-energia"
B = "tornion-energia"
NDJSON = "application/x-ndjson"


def event(**changes: Any) -> dict[str, Any]:
    line: dict[str, Any] = {
        "ts": "2026-01-05T10:00:00+02:00",
        "site": "kemin-energia.fi",
        "event": "page_view",
        "url": "https://kemin-energia.fi/sopimukset",
        "session_id": "s-1",
        "ip": "192.0.2.77",
        "user_agent": "Mozilla/5.0",
        "referrer": "https://www.google.fi/",
        "attributes": {"lang": "fi"},
    }
    line.update(changes)
    return line


def ndjson(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(x) + "\n" for x in lines).encode()


async def post(api: Api, token: str, body: bytes, content_type: str = NDJSON,
               **headers: str) -> Any:
    return await api.client.post("/api/v1/web-events", data=body,
                                 headers={**bearer(token), "Content-Type": content_type,
                                          **headers})


async def test_mixed_batch_reports_bad_lines_and_stores_neighbours(
    api: Api, db: asyncpg.Connection
) -> None:
    token = await api.token("ingest", [A])
    body = b"\n".join([
        json.dumps(event(session_id="good-1")).encode(),
        b'{"ts": "2026-01-05T10:00:00+02:00", "site": ',
        json.dumps({k: v for k, v in event().items() if k != "site"}).encode(),
        json.dumps(event(ts="yesterday")).encode(),
        json.dumps(event(session_id="good-2")).encode(),
    ]) + b"\n"
    response = await post(api, token, body)
    assert response.status == 200, await response.text()
    report = await response.json()
    assert report["accepted"] == 2
    assert [r["line"] for r in report["rejected"]] == [2, 3, 4]
    assert "site" in report["rejected"][1]["error"]
    assert "ts" in report["rejected"][2]["error"]
    stored = {r["session_id"] for r in await db.fetch("SELECT session_id FROM web_events")}
    assert stored == {"good-1", "good-2"}


async def test_json_array_and_gzip_are_accepted(api: Api, db: asyncpg.Connection) -> None:
    token = await api.token("ingest", [A])
    array = json.dumps([event(session_id="arr-1"), event(session_id="arr-2"), 7]).encode()
    response = await post(api, token, array, "application/json")
    report = await response.json()
    assert report == {"accepted": 2, "rejected_total": 1, "rejected": [
        {"line": 3, "error": "the element is not a JSON object"}]}
    zipped = gzip.compress(ndjson([event(session_id=f"gz-{i}") for i in range(10)]))
    response = await post(api, token, zipped, **{"Content-Encoding": "gzip"})
    assert (await response.json())["accepted"] == 10
    assert await db.fetchval("SELECT count(*) FROM web_events") == 12


async def test_gzip_bomb_is_refused_with_413_and_nothing_stored(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    token = await api.token("ingest", [A])
    line = (json.dumps(event()) + "\n").encode()
    bomb = gzip.compress(line * (settings.max_batch_bytes // len(line) + 1000), 9)
    assert len(bomb) < settings.max_batch_bytes // 50
    response = await post(api, token, bomb, **{"Content-Encoding": "gzip"})
    assert response.status == 413
    assert response.content_type == "application/problem+json"
    assert await db.fetchval("SELECT count(*) FROM web_events") == 0


async def test_ip_is_truncated_before_storage(api: Api, db: asyncpg.Connection) -> None:
    token = await api.token("ingest", [A])
    body = ndjson([event(ip="192.0.2.77"), event(ip="2001:db8:1234:5678::9"),
                   event(ip="not-an-ip")])
    report = await (await post(api, token, body)).json()
    assert report["accepted"] == 2 and report["rejected"][0]["line"] == 3
    stored = sorted(str(r["ip"]) for r in await db.fetch("SELECT ip FROM web_events"))
    assert stored == ["192.0.2.0/24", "2001:db8:1234::/48"]
    assert "192.0.2.77" not in str(await db.fetch("SELECT * FROM web_events"))


async def test_retry_with_same_idempotency_key_returns_first_answer(
    api: Api, db: asyncpg.Connection
) -> None:
    token = await api.token("ingest", [A])
    body = ndjson([event(), event(site="")])
    first = await post(api, token, body, **{"Idempotency-Key": "batch-1"})
    again = await post(api, token, body, **{"Idempotency-Key": "batch-1"})
    assert await first.json() == await again.json()
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert await db.fetchval("SELECT count(*) FROM web_events") == 1
    # The key is per token: another token's batch with the same key is its own.
    other = await api.token("ingest", [A], name="second-shipper")
    assert (await (await post(api, other, body, **{"Idempotency-Key": "batch-1"})).json()
            )["accepted"] == 1


async def test_concurrent_identical_requests_store_once(
    api: Api, db: asyncpg.Connection
) -> None:
    token = await api.token("ingest", [A])
    body = ndjson([event(session_id=f"c-{i}") for i in range(50)])
    answers = await asyncio.gather(*(
        post(api, token, body, **{"Idempotency-Key": "same"}) for _ in range(3)
    ))
    statuses = [a.status for a in answers]
    assert all(s in (200, 429) for s in statuses)
    reports = [await a.json() for a in answers if a.status == 200]
    assert all(r == {"accepted": 50, "rejected": [], "rejected_total": 0} for r in reports)
    assert await db.fetchval("SELECT count(*) FROM web_events") == 50


async def test_partitions_exist_for_each_month_received(
    api: Api, db: asyncpg.Connection
) -> None:
    token = await api.token("ingest", [A])
    body = ndjson([event(ts="2025-11-30T23:59:59+00:00"), event(ts="2026-01-01T00:00:00Z")])
    assert (await (await post(api, token, body)).json())["accepted"] == 2
    parts = {r["relname"]: r["n"] for r in await db.fetch(
        "SELECT c.relname, (SELECT count(*) FROM web_events e WHERE e.tableoid = c.oid) AS n"
        " FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'web_events'::regclass")}
    assert parts["web_events_2025_11"] == 1 and parts["web_events_2026_01"] == 1
    assert parts["web_events_default"] == 0


async def test_company_rule_for_lines(api: Api, db: asyncpg.Connection) -> None:
    single = await api.token("ingest", [A])
    several = await api.token("ingest", [A, B], name="group-shipper")
    report = await (await post(api, single, ndjson([event(), event(company=B)]))).json()
    assert report["accepted"] == 1 and "company" in report["rejected"][0]["error"]
    report = await (await post(api, several, ndjson([event(), event(company=B)]))).json()
    assert report["accepted"] == 1 and report["rejected"][0]["line"] == 1
    codes = sorted(r["code"] for r in await db.fetch(
        "SELECT c.code FROM web_events e JOIN companies c ON c.id = e.company_id"))
    assert codes == [A, B]


async def test_reads_are_filtered_scoped_and_keyset_paged(api: Api) -> None:
    ingest_a = await api.token("ingest", [A])
    ingest_b = await api.token("ingest", [B])
    lines = [event(ts=f"2026-01-05T10:{i:02d}:00+00:00", session_id=f"p-{i}",
                   event="login" if i % 2 else "page_view") for i in range(25)]
    await post(api, ingest_a, ndjson(lines))
    await post(api, ingest_b, ndjson([event(site="tornion-energia.fi")]))
    reader = await api.token("customer_service", [A])
    seen: list[str] = []
    cursor = None
    while True:
        query = "?limit=10&event=page_view" + (f"&cursor={cursor}" if cursor else "")
        page = await (await api.client.get("/api/v1/web-events" + query,
                                           headers=bearer(reader))).json()
        seen += [item["session_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"p-{i}" for i in range(24, -1, -2)]
    narrow = await (await api.client.get(
        "/api/v1/web-events?from=2026-01-05T10:10:00Z&to=2026-01-05T10:12:00Z",
        headers=bearer(reader))).json()
    assert [i["session_id"] for i in narrow["items"]] == ["p-11", "p-10"]
    assert narrow["items"][0]["ip"] == "192.0.2.0/24"
    everything = await (await api.client.get("/api/v1/web-events?limit=1000",
                                             headers=bearer(reader))).json()
    assert all(i["company"] == A for i in everything["items"])


async def test_batch_is_audited_with_counts_only(api: Api, db: asyncpg.Connection) -> None:
    token = await api.token("ingest", [A])
    await post(api, token, ndjson([event(), event(ts="bad")]))
    detail = await db.fetchval(
        "SELECT detail FROM audit_events WHERE action = 'web_event.ingest'")
    assert json.loads(detail) == {"accepted": 1, "rejected": 1, "replayed": False}


async def test_full_batch_slots_answer_429_with_retry_after(
    api: Api, db: asyncpg.Connection, monkeypatch: Any
) -> None:
    import service.customers.event_ingest

    monkeypatch.setattr(service.customers.event_ingest, "batch_slots", lambda app: 0)
    token = await api.token("ingest", [A])
    response = await post(api, token, ndjson([event()]))
    assert response.status == 429
    assert response.headers["Retry-After"] == "1"
    assert await db.fetchval("SELECT count(*) FROM web_events") == 0


async def test_large_ndjson_batch_streams_in_many_chunks(
    api: Api, db: asyncpg.Connection
) -> None:
    token = await api.token("ingest", [A])
    lines = [event(session_id=f"big-{i}", attributes={"pad": "x" * 200}) for i in range(12000)]

    async def body() -> Any:
        raw = ndjson(lines)
        for i in range(0, len(raw), 7777):  # chunk edges fall inside lines
            yield raw[i:i + 7777]

    response = await api.client.post(
        "/api/v1/web-events", data=body(), headers={**bearer(token), "Content-Type": NDJSON})
    assert (await response.json()) == {"accepted": 12000, "rejected": [], "rejected_total": 0}
    assert await db.fetchval("SELECT count(DISTINCT session_id) FROM web_events") == 12000


async def test_gzip_without_content_encoding_is_inflated_with_a_bound(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    token = await api.token("ingest", [A])
    small = gzip.compress(ndjson([event(), event()]))
    assert (await (await post(api, token, small)).json())["accepted"] == 2
    line = (json.dumps(event()) + "\n").encode()
    bomb = gzip.compress(line * (settings.max_batch_bytes // len(line) + 1000), 9)
    response = await post(api, token, bomb)
    assert response.status == 413
    assert await db.fetchval("SELECT count(*) FROM web_events") == 2


async def test_nan_or_infinite_attribute_fails_only_its_line(
    api: Api, db: asyncpg.Connection
) -> None:
    token = await api.token("ingest", [A])
    body = b"\n".join([
        json.dumps(event(session_id="good-1")).encode(),
        json.dumps(event(attributes={"score": float("nan")})).encode(),  # writes NaN
        json.dumps(event(attributes={"deep": [{"score": float("-inf")}]})).encode(),
        json.dumps(event(attributes={"score": 1})).encode().replace(b": 1}", b": 1e400}"),
        json.dumps(event(session_id="good-2")).encode(),
    ]) + b"\n"
    response = await post(api, token, body)
    assert response.status == 200, await response.text()
    report = await response.json()
    assert report["accepted"] == 2
    assert [r["line"] for r in report["rejected"]] == [2, 3, 4]
    assert all("attributes" in r["error"] and "infinite" in r["error"]
               for r in report["rejected"])
    assert "['deep'][0]['score']" in report["rejected"][1]["error"]
    stored = {r["session_id"] for r in await db.fetch("SELECT session_id FROM web_events")}
    assert stored == {"good-1", "good-2"}


async def test_nul_in_a_json_array_element_fails_only_that_element(
    api: Api, db: asyncpg.Connection
) -> None:
    token = await api.token("ingest", [A])
    array = json.dumps([
        event(session_id="arr-1"),
        event(url="https://kemin-energia.fi/\u0000"),
        event(attributes={"form": {"fields": ["ok", "x\u0000"]}}),
        event(attributes={"k\u0000": 1}),
        event(session_id="arr-2"),
    ]).encode()
    response = await post(api, token, array, "application/json")
    assert response.status == 200, await response.text()
    report = await response.json()
    assert report["accepted"] == 2
    assert [r["line"] for r in report["rejected"]] == [2, 3, 4]
    assert all("NUL" in r["error"] for r in report["rejected"])
    stored = {r["session_id"] for r in await db.fetch("SELECT session_id FROM web_events")}
    assert stored == {"arr-1", "arr-2"}


async def test_identity_codes_in_stored_fields_are_masked(
    api: Api, db: asyncpg.Connection
) -> None:
    token = await api.token("ingest", [A])
    line = event(url="https://kemin-energia.fi/asiakas?hetu=131052-308T&x=1",
                 referrer="https://haku.example/?q=131052-308t",
                 session_id="131052A308X",  # a mistyped code (wrong check) is masked too
                 user_agent="Mozilla/5.0 131052-308T",
                 attributes={"form": {"hetu": "131052-308T", "list": ["a 131052-308T b"]},
                             "131052-308T": "key", "order": "2024-131052"})
    report = await (await post(api, token, ndjson([line]))).json()
    assert report == {"accepted": 1, "rejected": [], "rejected_total": 0}
    row = await db.fetchrow("SELECT * FROM web_events")
    assert row["url"] == "https://kemin-energia.fi/asiakas?hetu=[henkilötunnus]&x=1"
    assert row["referrer"] == "https://haku.example/?q=[henkilötunnus]"
    assert row["session_id"] == "[henkilötunnus]"
    assert row["user_agent"] == "Mozilla/5.0 [henkilötunnus]"
    assert json.loads(row["attributes"]) == {
        "form": {"hetu": "[henkilötunnus]", "list": ["a [henkilötunnus] b"]},
        "[henkilötunnus]": "key", "order": "2024-131052"}
    assert "131052" not in str(dict(row)).replace("2024-131052", "")


async def test_rejection_texts_never_echo_an_identity_code(
    api: Api, db: asyncpg.Connection
) -> None:
    several = await api.token("ingest", [A, B], name="group-shipper")
    body = ndjson([event(site="131052-308T"), event(site="www.131052-308T.fi")])
    response = await post(api, several, body, **{"Idempotency-Key": "hetu-site"})
    report = await response.json()
    assert report["accepted"] == 0 and [r["line"] for r in report["rejected"]] == [1, 2]
    assert all(r["error"].startswith("unknown site '") for r in report["rejected"])
    assert "131052" not in json.dumps(report)
    saved = await db.fetchval("SELECT response::text FROM idempotency_keys")
    assert "unknown site" in saved and "131052" not in saved


async def test_a_named_company_cannot_write_for_a_site_registered_to_another(
    api: Api, db: asyncpg.Connection
) -> None:
    admin = await api.token("admin", all_companies=True, name="site-admin")
    response = await api.client.put(
        "/api/v1/sites", json=[{"site": "kemin-energia.fi", "company": A}],
        headers=bearer(admin))
    assert response.status == 200
    only_b = await api.token("ingest", [B], name="b-shipper")
    both = await api.token("ingest", [A, B], name="group-shipper")
    errors = []
    for token in (only_b, both):
        report = await (await post(api, token, ndjson([event(company=B)]))).json()
        assert report["accepted"] == 0 and report["rejected"][0]["line"] == 1
        errors.append(report["rejected"][0]["error"])
    # The same words whether or not the token covers the site's company, and neither names it.
    assert errors[0] == errors[1]
    assert "registered to another company" in errors[0]
    assert A not in errors[0].replace("kemin-energia.fi", "")
    report = await (await post(api, both, ndjson([event(company=A)]))).json()
    assert report["accepted"] == 1
    codes = [r["code"] for r in await db.fetch(
        "SELECT c.code FROM web_events e JOIN companies c ON c.id = e.company_id")]
    assert codes == [A]
