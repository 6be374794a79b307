-- Call analytics (storage/audio/analysis.py): the analysis of each call beside its row, the
-- search columns taken from it, and the call's waveform peaks, encrypted with its data key.

ALTER TABLE recordings
    ADD COLUMN channel_roles text[],
    -- NULL until analysed; then the API's `analysis` object.
    ADD COLUMN analysis jsonb,
    ADD COLUMN silence_ratio double precision,
    ADD COLUMN overtalk_s double precision,
    ADD COLUMN flags text[] NOT NULL DEFAULT '{}';

-- `tallenne analyse --missing` finds what still waits for analysis.
CREATE INDEX recordings_unanalysed ON recordings (created_at)
    WHERE analysis IS NULL AND state = 'stored';

-- Peaks are personal data as much as the audio: sealed with the recording's data key (a
-- destroyed key makes them unreadable too) and gone with the row.
CREATE TABLE recording_peaks (
    recording_id uuid PRIMARY KEY REFERENCES recordings(id) ON DELETE CASCADE,
    company_id uuid NOT NULL REFERENCES companies(id),
    channels integer NOT NULL CHECK (channels > 0),
    size_bytes integer NOT NULL CHECK (size_bytes >= 0),
    sealed bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE recording_peaks ENABLE ROW LEVEL SECURITY;
ALTER TABLE recording_peaks FORCE ROW LEVEL SECURITY;
CREATE POLICY recording_peaks_scope ON recording_peaks
    USING (tallenne_in_scope(company_id)) WITH CHECK (tallenne_in_scope(company_id));
