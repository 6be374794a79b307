-- Call recordings, their erasure tombstones, replay audit windows and evaluations.
-- Row-level security: every table is scoped by its company, like customer_memberships.

CREATE TABLE recordings (
    id uuid PRIMARY KEY,
    company_id uuid NOT NULL REFERENCES companies(id),
    external_id text NOT NULL,
    -- pending: row written, object being uploaded; stored: both durable; corrupt: the stored
    -- bytes failed verification on replay.
    state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'stored', 'corrupt')),
    started_at timestamptz NOT NULL,
    ended_at timestamptz NOT NULL,
    direction text NOT NULL CHECK (direction IN ('inbound', 'outbound', 'internal')),
    agent text,
    queue text,
    caller text,
    callee text,
    customer_number text,
    customer_id uuid REFERENCES customers(id),
    purpose text NOT NULL CHECK (purpose IN ('transaction_verification', 'quality')),
    tags text[] NOT NULL DEFAULT '{}',
    format text NOT NULL,
    codec text NOT NULL,
    duration_s double precision NOT NULL,
    sample_rate integer NOT NULL,
    channels integer NOT NULL,
    size_bytes bigint NOT NULL,
    sha256 text NOT NULL,
    object_key text NOT NULL UNIQUE,
    -- The data key, wrapped by the customer's key (key_owner 'customer') or, for calls with no
    -- known customer, by the company's key (key_owner 'company').
    key_owner text NOT NULL CHECK (key_owner IN ('customer', 'company')),
    wrapped_key bytea NOT NULL,
    retain_until timestamptz,
    legal_holds text[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    stored_at timestamptz,
    UNIQUE (company_id, external_id),
    CHECK (ended_at >= started_at),
    CHECK (key_owner = 'company' OR customer_id IS NOT NULL)
);

-- Search is newest first on started_at, keyset paged on (started_at, id).
CREATE INDEX recordings_company_started ON recordings (company_id, started_at DESC, id DESC);
CREATE INDEX recordings_started ON recordings (started_at DESC, id DESC);
CREATE INDEX recordings_agent ON recordings (agent, started_at DESC, id DESC);
CREATE INDEX recordings_queue ON recordings (queue, started_at DESC, id DESC);
CREATE INDEX recordings_customer ON recordings (customer_id, started_at DESC, id DESC);
CREATE INDEX recordings_direction ON recordings (company_id, direction, started_at DESC, id DESC);
CREATE INDEX recordings_external ON recordings (external_id);
CREATE INDEX recordings_tags ON recordings USING gin (tags);
CREATE INDEX recordings_unlinked ON recordings (company_id, customer_number)
    WHERE customer_id IS NULL AND customer_number IS NOT NULL;
CREATE INDEX recordings_pending ON recordings (created_at) WHERE state = 'pending';

-- What is left of an erased recording: no personal data, only that it existed and why it went.
CREATE TABLE recording_tombstones (
    id uuid PRIMARY KEY,
    company_id uuid NOT NULL REFERENCES companies(id),
    external_id text NOT NULL,
    erased_at timestamptz NOT NULL DEFAULT now(),
    erased_by text NOT NULL,
    reason text NOT NULL,
    UNIQUE (company_id, external_id)
);

-- One audit event per recording, principal and reason per ten minutes; later ranged requests of
-- the same listening session are summarised here instead of in new audit events.
CREATE TABLE recording_replay_windows (
    id bigserial PRIMARY KEY,
    recording_id uuid NOT NULL REFERENCES recordings(id) ON DELETE CASCADE,
    company_id uuid NOT NULL REFERENCES companies(id),
    principal text NOT NULL,
    reason text NOT NULL,
    audit_seq bigint NOT NULL,
    opened_at timestamptz NOT NULL DEFAULT now(),
    last_at timestamptz NOT NULL DEFAULT now(),
    requests integer NOT NULL DEFAULT 1,
    bytes_sent bigint NOT NULL DEFAULT 0,
    ranges text[] NOT NULL DEFAULT '{}'
);
CREATE INDEX recording_replay_windows_open
    ON recording_replay_windows (recording_id, principal, reason, opened_at DESC);

CREATE TABLE recording_evaluations (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    recording_id uuid NOT NULL REFERENCES recordings(id) ON DELETE CASCADE,
    company_id uuid NOT NULL REFERENCES companies(id),
    evaluator text NOT NULL,
    form text NOT NULL,
    scores jsonb NOT NULL,
    comment text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (recording_id, evaluator, form)
);

ALTER TABLE recordings ENABLE ROW LEVEL SECURITY;
ALTER TABLE recordings FORCE ROW LEVEL SECURITY;
CREATE POLICY recordings_scope ON recordings
    USING (tallenne_in_scope(company_id)) WITH CHECK (tallenne_in_scope(company_id));

ALTER TABLE recording_tombstones ENABLE ROW LEVEL SECURITY;
ALTER TABLE recording_tombstones FORCE ROW LEVEL SECURITY;
CREATE POLICY recording_tombstones_scope ON recording_tombstones
    USING (tallenne_in_scope(company_id)) WITH CHECK (tallenne_in_scope(company_id));

ALTER TABLE recording_replay_windows ENABLE ROW LEVEL SECURITY;
ALTER TABLE recording_replay_windows FORCE ROW LEVEL SECURITY;
CREATE POLICY recording_replay_windows_scope ON recording_replay_windows
    USING (tallenne_in_scope(company_id)) WITH CHECK (tallenne_in_scope(company_id));

ALTER TABLE recording_evaluations ENABLE ROW LEVEL SECURITY;
ALTER TABLE recording_evaluations FORCE ROW LEVEL SECURITY;
CREATE POLICY recording_evaluations_scope ON recording_evaluations
    USING (tallenne_in_scope(company_id)) WITH CHECK (tallenne_in_scope(company_id));
