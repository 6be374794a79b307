-- Time-coded notes and bookmarks on a call: private to their author or shared with everyone
-- who may see the call; gone with the call.
CREATE TABLE recording_annotations (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    recording_id uuid NOT NULL REFERENCES recordings(id) ON DELETE CASCADE,
    company_id uuid NOT NULL REFERENCES companies(id),
    author text NOT NULL,
    at_s double precision NOT NULL CHECK (at_s >= 0),
    end_s double precision CHECK (end_s >= at_s),
    text text NOT NULL,
    visibility text NOT NULL CHECK (visibility IN ('private', 'team')),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX recording_annotations_recording ON recording_annotations (recording_id, at_s);

ALTER TABLE recording_annotations ENABLE ROW LEVEL SECURITY;
ALTER TABLE recording_annotations FORCE ROW LEVEL SECURITY;
CREATE POLICY recording_annotations_scope ON recording_annotations
    USING (tallenne_in_scope(company_id)) WITH CHECK (tallenne_in_scope(company_id));
