-- What exports leave behind. A call's small files in an export (its metadata: numbers,
-- customer, tags, evaluations) lose their bytes when the call's row is deleted, whichever path
-- deletes it (erasure of the call or of its customer, the purge, a restore re-applying
-- erasures). Housekeeping drops the bytes of jobs that ended without a result to download and
-- removes what ended `s3` jobs wrote, noting it in `objects_removed_at`.

CREATE INDEX export_files_content_by_call ON export_files (recording_id)
    WHERE content IS NOT NULL;
CREATE INDEX export_files_content_by_job ON export_files (job_id) WHERE content IS NOT NULL;

-- In the deleting transaction's scope: the files of a call are its company's, as the call is.
CREATE FUNCTION tallenne_export_files_of_deleted_calls() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE export_files f SET content = NULL FROM deleted
        WHERE f.recording_id = deleted.id AND f.content IS NOT NULL;
    RETURN NULL;
END
$$;
CREATE TRIGGER recordings_deleted_from_exports AFTER DELETE ON recordings
    REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION tallenne_export_files_of_deleted_calls();

ALTER TABLE export_jobs ADD COLUMN objects_removed_at timestamptz;
CREATE INDEX export_jobs_s3_left ON export_jobs (created_at)
    WHERE format = 's3' AND objects_removed_at IS NULL;
