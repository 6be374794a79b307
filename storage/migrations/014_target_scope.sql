-- Least privilege: the companies each audit event concerns, read under row-level security;
-- the customers and recordings an event read; every token with an owner and an expiry.

-- company_ids: the companies the event concerns. A company-scoped reader sees an event only
-- when every one of them is in its scope; an event that names none (group-wide, or written
-- before this column existed) is seen by all-companies readers only.
-- subject_ids: customers and recordings whose data the event read or changed (at most 1,000
-- of each; past that the event's detail keeps a digest and a count).
ALTER TABLE audit_events ADD COLUMN company_ids uuid[];
ALTER TABLE audit_events ADD COLUMN subject_ids uuid[];
CREATE INDEX audit_events_subjects ON audit_events USING gin (subject_ids);

ALTER TABLE audit_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_events FORCE ROW LEVEL SECURITY;
CREATE POLICY audit_events_append ON audit_events FOR INSERT WITH CHECK (true);
-- A change of a visible event reaches the append-only trigger, which refuses it loudly.
CREATE POLICY audit_events_change ON audit_events FOR UPDATE USING (true);
CREATE POLICY audit_events_remove ON audit_events FOR DELETE USING (true);
CREATE POLICY audit_events_read ON audit_events FOR SELECT
    USING (coalesce(current_setting('tallenne.all_companies', true), 'off') = 'on'
           OR (cardinality(company_ids) > 0
               AND company_ids <@ coalesce(nullif(current_setting('tallenne.company_ids', true),
                                                  ''), '{}')::uuid[]));

-- Tokens: a person's (owner_user_id) or a named system's (owner_name, set by the CLI).
ALTER TABLE api_tokens ADD COLUMN owner_name text;
UPDATE api_tokens SET owner_name = name WHERE owner_user_id IS NULL;
-- A token made before expiries were required gets a year to be replaced.
UPDATE api_tokens SET expires_at = now() + interval '1 year' WHERE expires_at IS NULL;
ALTER TABLE api_tokens ALTER COLUMN expires_at SET NOT NULL;
ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_owned
    CHECK (owner_user_id IS NOT NULL OR owner_name IS NOT NULL);
-- A disabled person's tokens were refused at use; now they are revoked as well.
UPDATE api_tokens t SET revoked_at = now()
  FROM users u WHERE u.id = t.owner_user_id AND u.disabled AND t.revoked_at IS NULL;
