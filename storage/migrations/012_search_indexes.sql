-- Recording search at ten million calls (storage.recordings.search).
--
-- Row-level security's company test cannot be an index condition, so search scans each
-- company in the caller's scope on its own: every search index is led by company_id and
-- ends in the keyset (started_at DESC, id DESC), so one company's newest matches are one
-- index range, read without a sort. Pending rows are never searched; leaving them out of
-- the indexes lets a scan that needs only indexed columns skip the table.
--
-- A recording's tags go to recording_tags, one row per tag, indexed per company and tag
-- in time order. A GIN index on recordings.tags could not serve search: its operator
-- (@>) is not leakproof, and PostgreSQL does not evaluate such an operator inside an
-- index scan of a table with row-level security.

-- The backfill below reads every company's recordings.
SELECT set_config('tallenne.all_companies', 'on', true);

DROP INDEX recordings_company_started;
DROP INDEX recordings_started;
DROP INDEX recordings_agent;
DROP INDEX recordings_queue;
DROP INDEX recordings_direction;
DROP INDEX recordings_tags;
-- (company_id, external_id) is unique, and search always names the company.
DROP INDEX recordings_external;

CREATE INDEX recordings_search_company ON recordings (company_id, started_at DESC, id DESC)
    WHERE state <> 'pending';
CREATE INDEX recordings_search_agent
    ON recordings (company_id, agent, started_at DESC, id DESC) WHERE state <> 'pending';
CREATE INDEX recordings_search_queue
    ON recordings (company_id, queue, started_at DESC, id DESC) WHERE state <> 'pending';
CREATE INDEX recordings_search_direction
    ON recordings (company_id, direction, started_at DESC, id DESC) WHERE state <> 'pending';
-- A customer's calls are few: recordings_customer (customer_id, started_at DESC, id DESC)
-- serves search as it is, and the other customer queries too.

-- Kept by the triggers below; erasure and purge delete the recording and the cascade
-- takes its tags. company_id and started_at are copies of the recording's.
CREATE TABLE recording_tags (
    recording_id uuid NOT NULL REFERENCES recordings(id) ON DELETE CASCADE,
    tag text NOT NULL,
    company_id uuid NOT NULL,
    started_at timestamptz NOT NULL,
    PRIMARY KEY (recording_id, tag)
);

INSERT INTO recording_tags (recording_id, tag, company_id, started_at)
SELECT DISTINCT r.id, t.tag, r.company_id, r.started_at
  FROM recordings r CROSS JOIN unnest(r.tags) AS t(tag)
 WHERE t.tag IS NOT NULL;

CREATE INDEX recording_tags_search
    ON recording_tags (company_id, tag, started_at DESC, recording_id DESC);

ALTER TABLE recording_tags ENABLE ROW LEVEL SECURITY;
ALTER TABLE recording_tags FORCE ROW LEVEL SECURITY;
CREATE POLICY recording_tags_scope ON recording_tags
    USING (tallenne_in_scope(company_id)) WITH CHECK (tallenne_in_scope(company_id));

-- One statement-level trigger per insert statement (a COPY of millions of rows included):
-- the tags of all new rows in one set-based insert.
CREATE FUNCTION recording_tags_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO recording_tags (recording_id, tag, company_id, started_at)
    SELECT DISTINCT n.id, t.tag, n.company_id, n.started_at
      FROM new_recordings n CROSS JOIN unnest(n.tags) AS t(tag)
     WHERE t.tag IS NOT NULL;
    RETURN NULL;
END
$$;
CREATE TRIGGER recording_tags_insert AFTER INSERT ON recordings
    REFERENCING NEW TABLE AS new_recordings
    FOR EACH STATEMENT EXECUTE FUNCTION recording_tags_insert();

-- Nothing changes a stored call's tags, company or start today; should anything, its tags
-- follow. (Transition tables cannot go with a column list, hence a row trigger.)
CREATE FUNCTION recording_tags_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM recording_tags WHERE recording_id = OLD.id;
    INSERT INTO recording_tags (recording_id, tag, company_id, started_at)
    SELECT DISTINCT NEW.id, t.tag, NEW.company_id, NEW.started_at
      FROM unnest(NEW.tags) AS t(tag)
     WHERE t.tag IS NOT NULL;
    RETURN NULL;
END
$$;
CREATE TRIGGER recording_tags_update AFTER UPDATE OF tags, company_id, started_at ON recordings
    FOR EACH ROW
    WHEN (OLD.tags IS DISTINCT FROM NEW.tags OR OLD.company_id IS DISTINCT FROM NEW.company_id
          OR OLD.started_at IS DISTINCT FROM NEW.started_at)
    EXECUTE FUNCTION recording_tags_update();

-- The search plans read only index columns when the visibility map says a page is all
-- visible; every call is inserted and then updated once (pending → stored), so vacuum
-- these tables after 1 % of their rows changed rather than the default 20 %.
ALTER TABLE recordings SET (autovacuum_vacuum_scale_factor = 0.01,
                            autovacuum_vacuum_insert_scale_factor = 0.01);
ALTER TABLE recording_tags SET (autovacuum_vacuum_insert_scale_factor = 0.01);
