"""Loki push requests, snappy protobuf as Promtail sends them and JSON as Fluent Bit's `loki`
output does, decoded into web-event lines."""

from __future__ import annotations

import json
import tracemalloc
from datetime import UTC, datetime, timedelta
from typing import Any

import cramjam
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.shippers import (
    Limits,
    MalformedRequest,
    RequestTooLarge,
    ShipperRequestError,
    UnsupportedMediaType,
    decode_loki_push,
)
from schemas.shippers.labels import LabelSyntaxError, parse_labels
from schemas.shippers.loki_push import PushRequest
from tests.schemas.shipper_lines import validated

START = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
WEB_LABELS = {"job": "nginx", "site": "www.example.fi", "company": "energia", "host": "web-1"}
APP_LABELS = {"service_name": "oma.example.fi", "env": "prod"}
PER_STREAM = 500


def nanos(ts: datetime) -> int:
    return int(ts.timestamp()) * 1_000_000_000 + ts.microsecond * 1000


def label_text(labels: dict[str, str]) -> str:
    """Prometheus' label-set form, as Promtail writes StreamAdapter.labels."""
    return "{" + ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(labels.items())) + "}"


def web_line(i: int) -> str:
    """A JSON access-log line in the web-event shape (what a site's nginx log_format emits)."""
    return json.dumps({
        "event": "page_view", "url": f"https://www.example.fi/sahko?sivu={i}",
        "session_id": f"s-{i % 40}", "ip": f"198.51.100.{i % 200}",
        "user_agent": "Mozilla/5.0", "customer_number": str(200000 + i) if i % 2 else None,
        "attributes": {"status": 200},
    })


# An entry: (time, line, structured metadata); a stream: (labels, or their raw text, entries).
Entry = tuple[datetime, str, dict[str, str]]
Stream = tuple[dict[str, str] | str, list[Entry]]


def entries() -> list[Stream]:
    web: list[Entry] = [(START + timedelta(seconds=i), web_line(i), {}) for i in range(PER_STREAM)]
    app: list[Entry] = [(START + timedelta(seconds=i, microseconds=7), f"login ok for session {i}",
            {"trace_id": f"{i:032x}"}) for i in range(PER_STREAM)]
    return [(WEB_LABELS, web), (APP_LABELS, app)]


def promtail_body(streams: Any = None) -> bytes:
    """A PushRequest from the compiled messages, snappy block-compressed as Promtail does."""
    request = PushRequest()
    for labels, stream_entries in streams or entries():
        stream = request.streams.add(labels=labels if isinstance(labels, str)
                                     else label_text(labels))
        for ts, line, metadata in stream_entries:
            entry = stream.entries.add(line=line)
            entry.timestamp.FromDatetime(ts)
            for name, value in metadata.items():
                entry.structuredMetadata.add(name=name, value=value)
    return bytes(cramjam.snappy.compress_raw(request.SerializeToString()))


def loki_json(streams: Any = None) -> bytes:
    return json.dumps({"streams": [
        {"stream": labels, "values": [
            [str(nanos(ts)), line, metadata] if metadata else [str(nanos(ts)), line]
            for ts, line, metadata in stream_entries
        ]}
        for labels, stream_entries in streams or entries()
    ]}).encode()


def assert_entries_mapped(batch: Any) -> None:
    assert batch.errors == []
    lines, failures = validated(batch)
    assert failures == {}
    assert sorted(lines) == list(range(1, 2 * PER_STREAM + 1))
    for i in range(PER_STREAM):
        web = lines[i + 1]
        assert web.model_dump() == {
            "ts": START + timedelta(seconds=i), "site": "www.example.fi",
            "event": "page_view", "url": f"https://www.example.fi/sahko?sivu={i}",
            "session_id": f"s-{i % 40}", "customer_number": str(200000 + i) if i % 2 else None,
            "company": "energia", "ip": f"198.51.100.{i % 200}", "user_agent": "Mozilla/5.0",
            "referrer": None, "attributes": {"job": "nginx", "host": "web-1", "status": 200},
        }
        app = lines[PER_STREAM + i + 1]
        assert app.model_dump() == {
            "ts": START + timedelta(seconds=i, microseconds=7), "site": "oma.example.fi",
            "event": "log", "url": None, "session_id": None, "customer_number": None,
            "company": None, "ip": None, "user_agent": None, "referrer": None,
            "attributes": {"env": "prod", "trace_id": f"{i:032x}",
                           "line": f"login ok for session {i}"},
        }


def test_snappy_protobuf_push_of_1000_entries_maps_lines_and_labels() -> None:
    assert_entries_mapped(decode_loki_push(promtail_body(), "application/x-protobuf"))


def test_json_push_of_1000_entries_maps_like_protobuf() -> None:
    assert_entries_mapped(decode_loki_push(loki_json(), "application/json"))


def test_an_entry_with_a_bad_timestamp_fails_alone() -> None:
    document = json.loads(loki_json())
    values = document["streams"][1]["values"]
    values[2][0] = "2026-01-01T00:00:00Z"
    values[3][0] = 1_700_000_000_000_000_000
    values[4][0] = "0"

    batch = decode_loki_push(json.dumps(document).encode(), "application/json")

    base = PER_STREAM
    assert dict(batch.errors) == {
        base + 3: "the entry timestamp must be a string of Unix nanoseconds",
        base + 4: "the entry timestamp must be a string of Unix nanoseconds",
        base + 5: "the entry has no timestamp",
    }
    assert len(batch.lines) == 2 * PER_STREAM - 3


def test_a_protobuf_entry_out_of_range_fails_alone() -> None:
    streams = entries()
    request = PushRequest.FromString(bytes(cramjam.snappy.decompress_raw(promtail_body(streams))))
    request.streams[0].entries[10].timestamp.seconds = 10**15
    request.streams[0].entries[11].timestamp.seconds = 946_684_799  # 1999-12-31
    body = bytes(cramjam.snappy.compress_raw(request.SerializeToString()))

    lines, failures = validated(decode_loki_push(body, "application/x-protobuf"))

    assert set(failures) == {11, 12}
    assert failures[11] == "the entry timestamp is out of range"
    assert "before 2000" in failures[12]
    assert len(lines) == 2 * PER_STREAM - 2


def test_a_stream_with_unparsable_labels_fails_only_its_entries() -> None:
    streams = entries()
    streams[0] = ('{job="nginx", site=www.example.fi}', streams[0][1])

    batch = decode_loki_push(promtail_body(streams), "application/x-protobuf")

    assert len(batch.errors) == PER_STREAM
    assert batch.errors[0].error.startswith("stream labels: expected a quoted label value")
    assert [n for n, _ in batch.lines] == list(range(PER_STREAM + 1, 2 * PER_STREAM + 1))


def test_a_compression_bomb_is_refused_at_the_byte_cap() -> None:
    bomb = bytes(cramjam.snappy.compress_raw(b"\0" * (64 * 1024**2)))
    cap = 4 * 1024**2
    assert len(bomb) < cap

    tracemalloc.start()
    try:
        with pytest.raises(RequestTooLarge, match=f"exceeds {cap} bytes once decompressed"):
            decode_loki_push(bomb, "application/x-protobuf", Limits(max_body_bytes=cap))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024**2


def test_snappy_data_longer_than_its_header_says_is_malformed() -> None:
    real = bytes(cramjam.snappy.compress_raw(b"y" * 1000))
    assert real[:2] == b"\xe8\x07"  # the varint length header: 1000
    lying = b"\x10" + real[2:]  # claims 16 bytes, inflates to 1000
    with pytest.raises(MalformedRequest, match="not valid snappy"):
        decode_loki_push(lying, "application/x-protobuf")


def test_a_body_that_is_not_snappy_is_malformed() -> None:
    with pytest.raises(MalformedRequest, match="not snappy-compressed"):
        decode_loki_push(b"\xff\xff\xff\xff\xff\xff not snappy", "application/x-protobuf")


def test_snappy_of_something_else_is_malformed() -> None:
    body = bytes(cramjam.snappy.compress_raw(b"\x0a\xff\xff\xff\xff\x0f"))
    with pytest.raises(MalformedRequest, match="not a protobuf Loki PushRequest"):
        decode_loki_push(body, "application/x-protobuf")


@pytest.mark.parametrize("body", [b'{"streams": [', b'{"streams": {}}',
                                  b'{"streams": [{"stream": {}}]}'])
def test_json_that_is_no_push_request_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedRequest):
        decode_loki_push(body, "application/json")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-ndjson", None])
def test_a_content_type_loki_does_not_define_is_unsupported(content_type: str | None) -> None:
    with pytest.raises(UnsupportedMediaType):
        decode_loki_push(loki_json(), content_type)


def test_entry_and_line_caps() -> None:
    with pytest.raises(RequestTooLarge, match="holds 1000 entries; at most 999"):
        decode_loki_push(promtail_body(), "application/x-protobuf", Limits(max_records=999))
    streams = entries()
    streams[1][1][0] = (START, "x" * 2000, {})
    batch = decode_loki_push(loki_json(streams), "application/json", Limits(max_line_bytes=1000))
    assert dict(batch.errors) == {PER_STREAM + 1: "the line exceeds 1000 bytes"}


def test_line_fields_win_over_labels_and_unstorable_text_fails_alone() -> None:
    streams: list[Stream] = [(
        {"job": "promtail", "site": "www.example.fi", "event": "access"},
        [
            (START, json.dumps({"site": "oma.example.fi", "company": "verkko", "event": "x"}), {}),
            (START, "plain text", {}),
            (START, json.dumps({"url": "/a\u0000b"}), {}),
            (START, "GET /\x00", {}),
            (START, json.dumps({"attributes": [1, 2]}), {}),
        ],
    )]

    batch = decode_loki_push(promtail_body(streams), "application/x-protobuf")

    first, second = (line for _, line in batch.lines)
    assert (first["site"], first["company"], first["event"]) == ("oma.example.fi", "verkko", "x")
    assert first["attributes"] == {"job": "promtail", "site": "www.example.fi",
                                   "event": "access"}
    assert (second["site"], second["event"]) == ("www.example.fi", "access")
    assert second["attributes"] == {"job": "promtail", "line": "plain text"}
    assert dict(batch.errors) == {
        3: "the line contains a NUL character (\\u0000)",
        4: "the line contains a NUL character",
        5: "attributes in the line must be a JSON object",
    }


@pytest.mark.parametrize(("text", "labels"), [
    ('{job="web", site="www.example.fi"}', {"job": "web", "site": "www.example.fi"}),
    ("{}", {}),
    (' { a = "1" , } ', {"a": "1"}),
    (r'{msg="say \"hi\"\n\tbye \\ \u00e4\x41\101"}', {"msg": 'say "hi"\n\tbye \\ äAA'}),
    ('{a=`raw \\n`}', {"a": "raw \\n"}),
    ('{"service.name"="x"}', {"service.name": "x"}),
])
def test_label_sets_parse_as_prometheus_writes_them(text: str, labels: dict[str, str]) -> None:
    assert parse_labels(text) == labels


@pytest.mark.parametrize("text", ['job="web"', '{job="web"', '{job=web}', '{job="a", job="b"}',
                                  '{job="\\q"}', '{job="web"} x', '{1a="b"}', '{a!="b"}'])
def test_text_that_is_no_label_set_is_refused(text: str) -> None:
    with pytest.raises(LabelSyntaxError):
        parse_labels(text)


_LOKI_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(["streams", "stream", "values", "site", "event"]),
                      inner, max_size=4),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(_LOKI_JSON)
def test_any_json_body_gives_a_batch_or_one_request_error(document: Any) -> None:
    try:
        decode_loki_push(json.dumps(document).encode(), "application/json")
    except ShipperRequestError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_snappy_body_gives_a_batch_or_one_request_error(payload: bytes) -> None:
    for body in (payload, bytes(cramjam.snappy.compress_raw(payload))):
        try:
            decode_loki_push(body, "application/x-protobuf")
        except ShipperRequestError:
            pass
