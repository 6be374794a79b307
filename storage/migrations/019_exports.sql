-- Export jobs: a recording filter turned into files (a zip, vCons, or a partitioned prefix in
-- the export bucket) by a background worker of the service. One replica at a time holds a
-- job's lease (claimed with SKIP LOCKED); a replica that dies leaves its lease to run out and
-- another picks the job up where it stopped: calls already done are never written again, and
-- a call written but not committed is rewritten under the same names.

-- True when the current transaction's scope covers every company of a job's scope.
CREATE FUNCTION tallenne_covers(job_all_companies boolean, job_company_ids uuid[])
RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT coalesce(current_setting('tallenne.all_companies', true), 'off') = 'on'
        OR (NOT job_all_companies
            AND job_company_ids <@ coalesce(nullif(current_setting('tallenne.company_ids', true),
                                                   ''), '{}')::uuid[])
$$;

CREATE TABLE export_jobs (
    id uuid PRIMARY KEY,
    created_by text NOT NULL,
    created_by_kind text NOT NULL,
    created_by_role text NOT NULL,
    created_by_id uuid,          -- the account (user or token); NULL for `tallenne export`
    -- The creator's scope when the job was made: what the job may read, and who may see it.
    all_companies boolean NOT NULL,
    company_ids uuid[] NOT NULL,
    filter jsonb NOT NULL,
    reason text NOT NULL,
    format text NOT NULL CHECK (format IN ('zip', 'vcon', 's3')),
    recipient text,
    recipient_country text,
    legal_basis text,
    purpose text,
    recipient_public_key text,
    target_bucket text,
    target_prefix text,
    state text NOT NULL DEFAULT 'queued'
        CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    total integer,
    done integer NOT NULL DEFAULT 0,
    bytes bigint NOT NULL DEFAULT 0,
    held_back integer NOT NULL DEFAULT 0,
    error text,
    audit_seq bigint,            -- the export's own audit event (export.create)
    lease_owner text,
    lease_until timestamptz,
    attempts integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    finished_at timestamptz,
    expires_at timestamptz NOT NULL
);
CREATE INDEX export_jobs_open ON export_jobs (created_at) WHERE state IN ('queued', 'running');

-- The calls of a job, fixed when the job is planned, in the order they are written.
CREATE TABLE export_items (
    job_id uuid NOT NULL REFERENCES export_jobs(id) ON DELETE CASCADE,
    seq integer NOT NULL,
    recording_id uuid NOT NULL,
    company_id uuid NOT NULL REFERENCES companies(id),
    state text NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'done', 'held_back', 'erased')),
    PRIMARY KEY (job_id, seq),
    UNIQUE (job_id, recording_id)
);

-- Every file of a job once (the primary key): small files keep their bytes here, audio is
-- re-read from the audio bucket when the result is downloaded; `s3` files name their key.
CREATE TABLE export_files (
    job_id uuid NOT NULL REFERENCES export_jobs(id) ON DELETE CASCADE,
    name text NOT NULL,
    seq integer NOT NULL,
    recording_id uuid NOT NULL,
    company_id uuid NOT NULL REFERENCES companies(id),
    kind text NOT NULL CHECK (kind IN ('audio', 'metadata', 'vcon')),
    size bigint NOT NULL,
    sha256 text NOT NULL,
    content bytea,
    object_key text,
    PRIMARY KEY (job_id, name)
);
CREATE INDEX export_files_order ON export_files (job_id, seq);

ALTER TABLE export_jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE export_jobs FORCE ROW LEVEL SECURITY;
CREATE POLICY export_jobs_scope ON export_jobs
    USING (tallenne_covers(all_companies, company_ids))
    WITH CHECK (tallenne_covers(all_companies, company_ids));

ALTER TABLE export_items ENABLE ROW LEVEL SECURITY;
ALTER TABLE export_items FORCE ROW LEVEL SECURITY;
CREATE POLICY export_items_scope ON export_items
    USING (tallenne_in_scope(company_id)) WITH CHECK (tallenne_in_scope(company_id));

ALTER TABLE export_files ENABLE ROW LEVEL SECURITY;
ALTER TABLE export_files FORCE ROW LEVEL SECURITY;
CREATE POLICY export_files_scope ON export_files
    USING (tallenne_in_scope(company_id)) WITH CHECK (tallenne_in_scope(company_id));
