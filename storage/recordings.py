"""SQL of recordings: the pending→stored life cycle, search, erasure, replay windows,
evaluations and what the reconciler needs. Every function takes a scoped connection.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

import asyncpg

from schemas.analysis import ChannelRole
from schemas.phone import to_e164
from schemas.recordings import AudioFormat, Direction, EvaluationIn, Purpose, RecordingMetadata
from storage import keys
from storage.audio import AudioInfo
from storage.db import Scope
from storage.errors import Conflict, NotFound
from storage.keys import KeyOwner

if TYPE_CHECKING:
    from storage.audio.analysis import CallAnalysis

REPLAY_WINDOW = timedelta(minutes=10)
MAX_SUMMARISED_RANGES = 200
# Taken around the decision "first upload of this call or a retry?" per (company, external_id).
_INGEST_LOCK_SPACE = 0x7A11E67

_COLUMNS = "r.*, c.code AS company"


@dataclass(frozen=True)
class Recording:
    """A recording row with its company's code: the call, its audio's properties, and where
    and how its audio is kept. `analysis` is the stored analysis document, None until the
    call is analysed."""

    id: UUID
    company: str
    company_id: UUID
    external_id: str
    started_at: datetime
    ended_at: datetime
    direction: Direction
    agent: str | None
    queue: str | None
    caller: str | None
    callee: str | None
    customer_number: str | None
    customer_id: UUID | None
    purpose: Purpose
    tags: list[str]
    format: AudioFormat
    codec: str
    duration_s: float
    sample_rate: int
    channels: int
    size_bytes: int
    sha256: str
    state: str
    retain_until: datetime | None
    legal_holds: list[str]
    created_at: datetime
    channel_roles: list[ChannelRole] | None
    analysis: dict[str, Any] | None
    object_key: str
    key_owner: KeyOwner
    key_owner_id: UUID
    wrapped_key: bytes


_RECORDING_FIELDS = tuple(f.name for f in fields(Recording))


def _recording(row: asyncpg.Record) -> Recording:
    data = {name: row[name] for name in _RECORDING_FIELDS}
    data["wrapped_key"] = bytes(data["wrapped_key"])
    return Recording(**data)


@dataclass(frozen=True)
class NewRecording:
    id: UUID
    company_id: UUID
    customer_id: UUID | None
    metadata: RecordingMetadata
    audio: AudioInfo
    size_bytes: int
    sha256: str
    object_key: str
    key_owner: KeyOwner
    key_owner_id: UUID
    wrapped_key: bytes


# --- companies and customers ---------------------------------------------------------------


async def company_id_by_code(conn: asyncpg.Connection, code: str) -> UUID | None:
    found: UUID | None = await conn.fetchval("SELECT id FROM companies WHERE code = $1", code)
    return found


async def company_code(conn: asyncpg.Connection, company_id: UUID) -> str | None:
    found: str | None = await conn.fetchval("SELECT code FROM companies WHERE id = $1",
                                            company_id)
    return found


async def customer_id_by_number(
    conn: asyncpg.Connection, company_id: UUID, customer_number: str
) -> UUID | None:
    found: UUID | None = await conn.fetchval(
        "SELECT m.customer_id FROM customer_memberships m JOIN customers c ON c.id = m.customer_id"
        " WHERE m.company_id = $1 AND m.customer_number = $2 AND c.erased_at IS NULL"
        " AND tallenne_membership_current(m.ended_at)",
        company_id,
        customer_number,
    )
    return found


# --- ingest life cycle ---------------------------------------------------------------------


async def lock_call(conn: asyncpg.Connection, company_id: UUID, external_id: str) -> None:
    """Serialise uploads of one call until the end of the transaction."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        _INGEST_LOCK_SPACE,
        f"{company_id}/{external_id}",
    )


async def by_external_id(
    conn: asyncpg.Connection, company_id: UUID, external_id: str
) -> Recording | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM recordings r JOIN companies c ON c.id = r.company_id"
        " WHERE r.company_id = $1 AND r.external_id = $2",
        company_id,
        external_id,
    )
    return _recording(row) if row is not None else None


async def pending_age(conn: asyncpg.Connection, recording_id: UUID) -> timedelta | None:
    age: timedelta | None = await conn.fetchval(
        "SELECT now() - created_at FROM recordings WHERE id = $1 AND state = 'pending'",
        recording_id,
    )
    return age


async def is_erased(conn: asyncpg.Connection, company_id: UUID, external_id: str) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM recording_tombstones"
            " WHERE company_id = $1 AND external_id = $2)",
            company_id,
            external_id,
        )
    )


async def insert_pending(conn: asyncpg.Connection, new: NewRecording) -> None:
    m, audio = new.metadata, new.audio
    await conn.execute(
        "INSERT INTO recordings (id, company_id, external_id, state, started_at, ended_at,"
        " direction, agent, queue, caller, callee, customer_number, customer_id, purpose, tags,"
        " format, codec, duration_s, sample_rate, channels, size_bytes, sha256, object_key,"
        " key_owner, key_owner_id, wrapped_key, caller_e164, callee_e164, channel_roles)"
        " VALUES ($1, $2, $3, 'pending', $4, $5, $6, $7,"
        " $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24,"
        " $25, $26, $27, $28)",
        new.id, new.company_id, m.external_id, m.started_at, m.ended_at, m.direction, m.agent,
        m.queue, m.caller, m.callee, m.customer_number, new.customer_id, m.purpose, m.tags,
        audio.format, audio.codec, audio.duration_s, audio.sample_rate, audio.channels,
        new.size_bytes,
        new.sha256, new.object_key, new.key_owner, new.key_owner_id, new.wrapped_key,
        to_e164(m.caller), to_e164(m.callee), m.channel_roles,
    )


async def mark_stored(
    conn: asyncpg.Connection, recording_id: UUID, analysed: StoredAnalysis | None = None
) -> Recording:
    await conn.execute(
        "UPDATE recordings SET state = 'stored', stored_at = now()"
        " WHERE id = $1 AND state = 'pending'",
        recording_id,
    )
    if analysed is not None:
        await save_analysis(conn, recording_id, analysed)
    return await get(conn, recording_id)


# --- analysis ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredAnalysis:
    """A call's analysis with its peaks, sealed under the call's data key."""

    analysis: CallAnalysis
    channels: int
    peaks_size: int
    sealed_peaks: bytes


async def save_analysis(
    conn: asyncpg.Connection, recording_id: UUID, analysed: StoredAnalysis
) -> None:
    a = analysed.analysis
    company_id = await conn.fetchval(
        "UPDATE recordings SET analysis = $2, silence_ratio = $3, overtalk_s = $4, flags = $5"
        " WHERE id = $1 RETURNING company_id",
        recording_id, a.document(), a.silence_ratio, a.overtalk_s, list(a.flags),
    )
    if company_id is None:
        raise NotFound("no such recording")
    await conn.execute(
        "INSERT INTO recording_peaks (recording_id, company_id, channels, size_bytes, sealed)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (recording_id) DO UPDATE SET"
        " channels = EXCLUDED.channels, size_bytes = EXCLUDED.size_bytes,"
        " sealed = EXCLUDED.sealed, created_at = now()",
        recording_id, company_id, analysed.channels, analysed.peaks_size,
        analysed.sealed_peaks,
    )


@dataclass(frozen=True)
class SealedPeaks:
    channels: int
    size: int
    sealed: bytes


async def peaks(conn: asyncpg.Connection, recording_id: UUID) -> SealedPeaks | None:
    row = await conn.fetchrow(
        "SELECT channels, size_bytes, sealed FROM recording_peaks WHERE recording_id = $1",
        recording_id,
    )
    return None if row is None else SealedPeaks(row["channels"], row["size_bytes"],
                                                bytes(row["sealed"]))


async def to_analyse(
    conn: asyncpg.Connection, *, missing_only: bool, after: UUID | None, limit: int
) -> list[UUID]:
    """Stored recordings (without analysis, if `missing_only`) in id order after `after`."""
    rows = await conn.fetch(
        "SELECT id FROM recordings WHERE state = 'stored'"
        " AND ($1::boolean IS FALSE OR analysis IS NULL)"
        " AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3",
        missing_only, after, limit,
    )
    return [r["id"] for r in rows]


async def count_to_analyse(conn: asyncpg.Connection, *, missing_only: bool) -> int:
    found: int = await conn.fetchval(
        "SELECT count(*) FROM recordings WHERE state = 'stored'"
        " AND ($1::boolean IS FALSE OR analysis IS NULL)",
        missing_only,
    )
    return found


async def delete_pending(conn: asyncpg.Connection, recording_id: UUID) -> str | None:
    """Forget an upload that did not complete; returns its object key."""
    key: str | None = await conn.fetchval(
        "DELETE FROM recordings WHERE id = $1 AND state = 'pending' RETURNING object_key",
        recording_id,
    )
    return key


async def mark_corrupt(conn: asyncpg.Connection, recording_id: UUID) -> None:
    await conn.execute("UPDATE recordings SET state = 'corrupt' WHERE id = $1", recording_id)


async def rewrap_for_customer(
    conn: asyncpg.Connection,
    masters: keys.MasterKeys,
    *,
    company_id: UUID,
    customer_number: str,
    customer_id: UUID,
) -> int:
    """Put the data keys of the company's calls with this customer number that belong to no
    customer yet under the customer's key (and link the calls), so that destroying that key
    covers them too; an earlier holder's calls stay under the earlier holder's key.
    Only keys are re-wrapped; audio is never re-encrypted. Returns the calls moved."""
    rows = await conn.fetch(
        "SELECT id, key_owner, key_owner_id, wrapped_key FROM recordings"
        " WHERE company_id = $1 AND customer_number = $2 AND customer_id IS NULL"
        " AND NOT (key_owner = 'customer' AND key_owner_id = $3) FOR UPDATE",
        company_id, customer_number, customer_id,
    )
    if not rows:
        return 0
    target = await keys.customer_key(conn, masters, customer_id)
    for row in rows:
        current = await keys.owner_key(
            conn, masters, owner=row["key_owner"], owner_id=row["key_owner_id"], create=False
        )
        data_key = keys.unwrap_data_key(current, row["id"], bytes(row["wrapped_key"]))
        await conn.execute(
            "UPDATE recordings SET key_owner = 'customer', key_owner_id = $2, customer_id = $2,"
            " wrapped_key = $3 WHERE id = $1",
            row["id"], customer_id, keys.wrap_data_key(target, row["id"], data_key),
        )
    return len(rows)


# --- reading -------------------------------------------------------------------------------


async def get(conn: asyncpg.Connection, recording_id: UUID) -> Recording:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM recordings r JOIN companies c ON c.id = r.company_id"
        " WHERE r.id = $1 AND r.state <> 'pending'",
        recording_id,
    )
    if row is None:
        raise NotFound("no such recording")
    return _recording(row)


async def get_for_replay(
    conn: asyncpg.Connection, scope: Scope, recording_id: UUID
) -> tuple[Recording, int | None, bytes | None]:
    """The recording and its key owner's wrapped key with the master-key version that wraps
    it (both None once that key has been destroyed), read in `scope` by one statement that
    scopes itself: `conn` need not be in a transaction, and replay's hot path saves the
    round trips of one."""
    row = await conn.fetchrow(
        "SELECT (f.recording).*, f.company, f.owner_kek_version, f.owner_wrapped_key"
        " FROM tallenne_recording_for_replay($1, $2, $3) f",
        scope.all_companies, sorted(scope.company_ids), recording_id,
    )
    if row is None:
        raise NotFound("no such recording")
    wrapped = row["owner_wrapped_key"]
    return (_recording(row), row["owner_kek_version"],
            bytes(wrapped) if wrapped is not None else None)


@dataclass(frozen=True)
class SearchFilter:
    company_id: UUID | None = None
    started_from: datetime | None = None
    started_before: datetime | None = None
    agent: str | None = None
    queue: str | None = None
    direction: str | None = None
    customer_id: UUID | None = None
    tag: str | None = None
    external_id: str | None = None
    phone_e164: str | None = None  # caller or callee
    min_duration_s: float | None = None
    max_duration_s: float | None = None
    min_silence_ratio: float | None = None
    min_overtalk_s: float | None = None
    flag: str | None = None


async def search(
    conn: asyncpg.Connection,
    where: SearchFilter,
    *,
    after: tuple[datetime, UUID] | None,
    limit: int,
) -> list[Recording]:
    """Newest first; `after` is the (started_at, id) of the previous page's last row.

    Row-level security decides what is visible, but its company test cannot be an index
    condition: one scan across all companies would wade through the calls of companies
    out of scope. So each company in scope gets its own scan of a company-led index
    (migration 012), LIMITed to one page, and the pages are merged; the full rows are read
    for the merged page only. Tags are searched in recording_tags.
    """
    clauses = ["k.company_id = c.id", "k.state <> 'pending'"]
    # The policy's own test picks the companies to scan; the policy still guards each row.
    company_clauses = ["tallenne_in_scope(c.id)"]
    args: list[Any] = []

    def bind(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    source = "recordings k"
    # (started_at, id) of each table whose index may give the order: the time range and
    # the keyset go to all of them, so that whichever index the plan walks stops early.
    keysets = [("k.started_at", "k.id")]
    if where.tag is not None:
        # One row per tag, indexed per company and tag newest first; joined on the start
        # time too, so that the plan may walk either index and keep the order.
        source += (
            " JOIN recording_tags t ON t.recording_id = k.id AND t.company_id = k.company_id"
            f" AND t.started_at = k.started_at AND t.tag = {bind(where.tag)}"
        )
        keysets.append(("t.started_at", "t.recording_id"))
    if where.company_id is not None:
        company_clauses.append(f"c.id = {bind(where.company_id)}")
    for column in ("agent", "queue", "direction", "customer_id", "external_id"):
        value = getattr(where, column)
        if value is not None:
            clauses.append(f"k.{column} = {bind(value)}")
    if where.phone_e164 is not None:
        number = bind(where.phone_e164)
        clauses.append(f"(k.caller_e164 = {number} OR k.callee_e164 = {number})")
    if where.min_duration_s is not None:
        clauses.append(f"k.duration_s >= {bind(where.min_duration_s)}")
    if where.max_duration_s is not None:
        clauses.append(f"k.duration_s <= {bind(where.max_duration_s)}")
    if where.min_silence_ratio is not None:
        clauses.append(f"k.silence_ratio >= {bind(where.min_silence_ratio)}")
    if where.min_overtalk_s is not None:
        clauses.append(f"k.overtalk_s >= {bind(where.min_overtalk_s)}")
    if where.flag is not None:
        clauses.append(f"{bind(where.flag)}::text = ANY (k.flags)")
    span: list[str] = []
    if where.started_from is not None:
        span.append(f"{{0}} >= {bind(where.started_from)}")
    if where.started_before is not None:
        span.append(f"{{0}} < {bind(where.started_before)}")
    if after is not None:
        span.append(f"({{0}}, {{1}}) < ({bind(after[0])}, {bind(after[1])})")
    clauses += [sql.format(started_at, ident) for sql in span for started_at, ident in keysets]
    page = bind(limit)
    rows = await conn.fetch(
        "WITH page AS (SELECT hit.id, hit.started_at FROM companies c CROSS JOIN LATERAL"
        f" (SELECT k.id, k.started_at FROM {source} WHERE {' AND '.join(clauses)}"
        f" ORDER BY k.started_at DESC, k.id DESC LIMIT {page}) hit"
        f" WHERE {' AND '.join(company_clauses)}"
        f" ORDER BY hit.started_at DESC, hit.id DESC LIMIT {page})"
        f" SELECT {_COLUMNS} FROM page JOIN recordings r ON r.id = page.id"
        " JOIN companies c ON c.id = r.company_id"
        " ORDER BY page.started_at DESC, page.id DESC",
        *args,
    )
    return [_recording(r) for r in rows]


# --- erasure -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tombstone:
    id: UUID
    company_id: UUID
    object_key: str
    erased_at: datetime
    reason: str


async def erase(
    conn: asyncpg.Connection, recording_id: UUID, *, erased_by: str, reason: str
) -> Tombstone:
    """Replace the row by a tombstone; the caller deletes the object after commit (an object
    left behind by a crash has no row, so the reconciler removes it)."""
    row = await conn.fetchrow(
        "SELECT company_id, external_id, object_key, legal_holds FROM recordings"
        " WHERE id = $1 AND state <> 'pending' FOR UPDATE",
        recording_id,
    )
    if row is None:
        raise NotFound("no such recording")
    if row["legal_holds"]:
        raise Conflict("the recording is under a legal hold and cannot be erased")
    erased_at: datetime = await conn.fetchval(
        "INSERT INTO recording_tombstones (id, company_id, external_id, erased_by, reason)"
        " VALUES ($1, $2, $3, $4, $5) RETURNING erased_at",
        recording_id, row["company_id"], row["external_id"], erased_by, reason,
    )
    await conn.execute("DELETE FROM recordings WHERE id = $1", recording_id)
    return Tombstone(recording_id, row["company_id"], row["object_key"], erased_at, reason)


# --- replay windows ------------------------------------------------------------------------


# Two-key advisory locks of one replay window each: a class of their own, apart from the
# single-key locks of the background passes.
REPLAY_WINDOW_LOCK_SPACE = 0x7A11E66


@dataclass(frozen=True)
class ReplayWindow:
    """An open replay window: its audit event and how long it still takes requests."""

    audit_seq: int
    open_for: timedelta


async def touch_replay_window(
    conn: asyncpg.Connection, recording_id: UUID, *, principal: str, reason: str,
    byte_range: str,
) -> ReplayWindow | None:
    """Count one more request (and its range) in the open window, if there is one."""
    row = await conn.fetchrow(
        "UPDATE recording_replay_windows SET requests = requests + 1, last_at = now(),"
        " ranges = CASE WHEN cardinality(ranges) < $5 THEN ranges || $6::text ELSE ranges END"
        " WHERE id = (SELECT id FROM recording_replay_windows WHERE recording_id = $1"
        " AND principal = $2 AND reason = $3 AND opened_at > now() - $4::interval"
        " ORDER BY opened_at DESC LIMIT 1)"
        " RETURNING audit_seq, opened_at + $4::interval - now() AS open_for",
        recording_id, principal, reason, REPLAY_WINDOW, MAX_SUMMARISED_RANGES, byte_range,
    )
    return None if row is None else ReplayWindow(int(row["audit_seq"]), row["open_for"])


@dataclass(frozen=True)
class ReplayRanges:
    """Requests of one listening session to add to its open window at once."""

    recording_id: UUID
    principal: str
    reason: str
    requests: int
    ranges: tuple[str, ...]  # range summaries ("bytes a-b/size"); they hold no comma


async def add_replay_ranges(
    conn: asyncpg.Connection, batch: Sequence[ReplayRanges]
) -> list[ReplayRanges]:
    """Add each entry's requests and ranges to its open window in one statement; returns the
    entries whose window is no longer open (closed or removed elsewhere)."""
    if not batch:
        return []
    rows = await conn.fetch(
        "WITH n AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[],"
        " $5::text[]) AS n(recording_id, principal, reason, requests, ranges)),"
        " open AS (SELECT DISTINCT ON (n.recording_id, n.principal, n.reason) w.id,"
        " n.recording_id, n.principal, n.reason, n.requests, n.ranges"
        " FROM n JOIN recording_replay_windows w USING (recording_id, principal, reason)"
        " WHERE w.opened_at > now() - $6::interval"
        " ORDER BY n.recording_id, n.principal, n.reason, w.opened_at DESC)"
        " UPDATE recording_replay_windows w SET requests = w.requests + open.requests,"
        " last_at = now(), ranges = (w.ranges || string_to_array(open.ranges, ','))[1:$7]"
        " FROM open WHERE w.id = open.id"
        " RETURNING open.recording_id, open.principal, open.reason",
        [e.recording_id for e in batch], [e.principal for e in batch],
        [e.reason for e in batch], [e.requests for e in batch],
        [",".join(e.ranges) for e in batch], REPLAY_WINDOW, MAX_SUMMARISED_RANGES,
    )
    noted = {(r["recording_id"], r["principal"], r["reason"]) for r in rows}
    return [e for e in batch if (e.recording_id, e.principal, e.reason) not in noted]


async def note_replay(
    conn: asyncpg.Connection,
    recording: Recording,
    *,
    principal: str,
    reason: str,
    byte_range: str,
    open_event: Callable[[], Awaitable[int]],
) -> ReplayWindow:
    """Record one replay; opens a new audit event (via `open_event`) only when no window of
    this recording, principal and reason is open.

    Callers come here when they know of no open window (a listening session's later
    requests are added by `add_replay_ranges`), so the lock that lets two concurrent first
    requests open one window between them is taken at once, not after a first look."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))", REPLAY_WINDOW_LOCK_SPACE,
        f"replay/{recording.id}/{principal}",
    )
    found = await touch_replay_window(conn, recording.id, principal=principal, reason=reason,
                                      byte_range=byte_range)
    if found is not None:
        return found
    seq = await open_event()
    await conn.execute(
        "INSERT INTO recording_replay_windows (recording_id, company_id, principal, reason,"
        " audit_seq, ranges) VALUES ($1, $2, $3, $4, $5, ARRAY[$6::text])",
        recording.id, recording.company_id, principal, reason, seq, byte_range,
    )
    return ReplayWindow(seq, REPLAY_WINDOW)


# --- evaluations ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    """An evaluator's scoring of a call; `form_version` is None for evaluations stored
    before forms were defined."""

    id: UUID
    recording_id: UUID
    evaluator: str
    form: str
    form_version: int | None
    scores: dict[str, int]
    comment: str | None
    created_at: datetime
    updated_at: datetime


_EVALUATION_FIELDS = tuple(f.name for f in fields(Evaluation))


def _evaluation(row: asyncpg.Record) -> Evaluation:
    return Evaluation(**{name: row[name] for name in _EVALUATION_FIELDS})


async def save_evaluation(
    conn: asyncpg.Connection, recording: Recording, evaluator: str, evaluation: EvaluationIn,
    form_version: int,
) -> tuple[Evaluation, bool]:
    """Store the evaluator's scoring of the call with this form (checked against
    `form_version` by the caller); True when it is new. Scoring again replaces the scores
    and moves the evaluation to that version."""
    row = await conn.fetchrow(
        "INSERT INTO recording_evaluations (recording_id, company_id, evaluator, form,"
        " form_version, scores, comment) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        " ON CONFLICT (recording_id, evaluator, form) DO UPDATE SET scores = EXCLUDED.scores,"
        " form_version = EXCLUDED.form_version, comment = EXCLUDED.comment, updated_at = now()"
        " RETURNING *, (xmax = 0) AS inserted",
        recording.id, recording.company_id, evaluator, evaluation.form, form_version,
        evaluation.scores, evaluation.comment,
    )
    return _evaluation(row), bool(row["inserted"])


async def evaluations(conn: asyncpg.Connection, recording_id: UUID) -> list[Evaluation]:
    rows = await conn.fetch(
        "SELECT * FROM recording_evaluations WHERE recording_id = $1 ORDER BY created_at, id",
        recording_id,
    )
    return [_evaluation(r) for r in rows]


# --- reconciliation ------------------------------------------------------------------------


async def stale_pending(conn: asyncpg.Connection, older_than: timedelta) -> list[tuple[UUID, str]]:
    rows = await conn.fetch(
        "SELECT id, object_key FROM recordings WHERE state = 'pending'"
        " AND created_at < now() - $1::interval ORDER BY created_at",
        older_than,
    )
    return [(r["id"], r["object_key"]) for r in rows]


async def known_object_keys(conn: asyncpg.Connection, keys: list[str]) -> set[str]:
    rows = await conn.fetch(
        "SELECT object_key FROM recordings WHERE object_key = ANY($1::text[])", keys
    )
    return {r["object_key"] for r in rows}
