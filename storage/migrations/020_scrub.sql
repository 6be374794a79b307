-- When the scrub last re-read a recording's stored object and found its SHA-256 intact. A
-- recording with no row here counts as verified when it was stored (its digest was taken
-- while it was received and its segments sealed from those very bytes).
CREATE TABLE recording_scrubs (
    recording_id uuid PRIMARY KEY REFERENCES recordings(id) ON DELETE CASCADE,
    company_id uuid NOT NULL REFERENCES companies(id),
    verified_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE recording_scrubs ENABLE ROW LEVEL SECURITY;
ALTER TABLE recording_scrubs FORCE ROW LEVEL SECURITY;
CREATE POLICY recording_scrubs_scope ON recording_scrubs
    USING (tallenne_in_scope(company_id)) WITH CHECK (tallenne_in_scope(company_id));
